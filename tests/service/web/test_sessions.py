"""The web view's sessions over many logins and logouts, on SQLite and MariaDB: what a
logout keeps in the process stays bounded, and no copy of a logged-out cookie reads again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.web import sessions
from tests.service.web.support import csrf_of, demo_web_client, log_in

SESSION = "ledger_web_session"


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with demo_web_client(db_url, tmp_path / "spool") as test_client:
        yield test_client


def log_in_and_out(client: TestClient, name: str) -> str:
    """A login, then its logout: the session's cookie, as a copy taken before the logout."""
    log_in(client, name)
    cookie = client.cookies[SESSION]
    csrf = csrf_of(client.get("/web/login").text)  # the logout form of the header
    out = client.post("/web/logout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303
    client.cookies.clear()
    return cookie


def reads(client: TestClient, cookie: str) -> bool:
    client.cookies.clear()
    client.cookies.set(SESSION, cookie, path="/web")
    answer = client.get("/web/runs", follow_redirects=False)
    client.cookies.clear()
    return answer.status_code == 200


def test_logouts_kept_are_bounded_and_every_copy_stays_refused(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every logout was kept for a session's lifetime (8 h by default), with no bound: any
    token holder logging in and out in a loop grew the process's memory, and each logout
    scanned all of them (854 cycles in 20 s from one client of a live `ledger api`). Now a
    token past REVOKED_PER_TOKEN logouts has every session ended instead: the store stays
    within the bound, no copy of a logged-out cookie reads again, another token's session
    reads on, and the token logs in again."""
    bound = 5
    monkeypatch.setattr(sessions, "REVOKED_PER_TOKEN", bound)
    web = client.app.state.web  # type: ignore[attr-defined]
    log_in(client, "oncall")
    other_token = client.cookies[SESSION]
    client.cookies.clear()
    log_in(client, "reader")
    still_logged_in = client.cookies[SESSION]  # a reader's session never logged out
    client.cookies.clear()
    copies = [log_in_and_out(client, "reader") for _ in range(bound)]
    assert web.sessions.remembered() == bound
    assert not any(reads(client, copy) for copy in copies)
    assert reads(client, still_logged_in)
    copies.append(log_in_and_out(client, "reader"))  # one more than the bound
    assert web.sessions.remembered() == 0
    assert not any(reads(client, copy) for copy in copies)
    assert not reads(client, still_logged_in)  # ended with the token's other sessions
    assert "token 'reader' logged out more than 5 sessions" in caplog.text
    assert reads(client, other_token)
    log_in(client, "reader")
    assert reads(client, client.cookies[SESSION])
    for _ in range(bound * 3):
        log_in_and_out(client, "reader")
    assert web.sessions.remembered() <= bound
