"""A refused form (the login, the fail form, the logout) says why, on SQLite and MariaDB: every
refusal of the login read "the login form expired or did not come from this site: reload it",
and of the other forms "the form's CSRF token is missing or wrong: reload the page", whatever
the cause. Behind a reverse proxy that does not pass the browser's Host on (a careless
config), every form is "another site's": nobody could log in, the page said to reload (which
never helps) and the server's log said nothing."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from freezegun import freeze_time

from tests.service.web.support import TOKENS, csrf_of, demo_web_client, log_in, web_client

PROXY_ORIGIN = "https://ledger.example.com"


@pytest.fixture
def demo(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with demo_web_client(db_url, tmp_path / "spool") as test_client:
        yield test_client


def assert_names_the_proxy(answer_text: str) -> None:
    assert f"posted from &#39;{PROXY_ORIGIN}&#39;" in answer_text, answer_text
    assert "answers as &#39;testserver&#39; (the request&#39;s Host)" in answer_text
    assert "proxy_set_header Host $host" in answer_text
    assert "reload" not in answer_text.split('id="error-detail"')[1]


def test_a_form_behind_a_proxy_that_drops_the_host_names_both_and_logs_it(
    demo: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ledger.web")
    page = demo.get("/web/login")
    login = demo.post(
        "/web/login",
        data={"token": TOKENS["oncall"][0], "csrf": csrf_of(page.text)},
        headers={"Origin": PROXY_ORIGIN},
    )
    assert login.status_code == 403
    assert_names_the_proxy(login.text)
    csrf = log_in(demo, "oncall")
    for path, form in (
        ("/web/runs/1/fail", {"csrf": csrf, "reason": "dead", "confirm": "yes"}),
        ("/web/logout", {"csrf": csrf}),
    ):
        refused = demo.post(path, data=form, headers={"Origin": PROXY_ORIGIN})
        assert refused.status_code == 403, (path, refused.text)
        assert_names_the_proxy(refused.text)
    # Without an Origin, the Referer's origin is named, never the rest of its address.
    by_referer = demo.post(
        "/web/logout",
        data={"csrf": csrf},
        headers={"Referer": PROXY_ORIGIN + "/web/stuck?private=1"},
    )
    assert by_referer.status_code == 403
    assert_names_the_proxy(by_referer.text)
    assert "private" not in by_referer.text
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("web form")]
    assert len(logged) == 4, logged
    assert all(PROXY_ORIGIN in line and "'testserver'" in line for line in logged)
    assert demo.get("/web/runs", follow_redirects=False).status_code == 200  # still logged in


def test_a_form_from_a_page_without_an_origin_says_so(demo: TestClient) -> None:
    csrf = log_in(demo, "oncall")
    refused = demo.post("/web/logout", data={"csrf": csrf}, headers={"Origin": "null"})
    assert refused.status_code == 403
    assert "posted from a page without an origin (Origin: null" in refused.text


def test_a_login_form_posted_without_its_cookie_says_so(db_url: str) -> None:
    """Cookies blocked, or ``secure_cookies = true`` on a page served over plain http (the
    browser drops a Secure cookie from an http page): a reload never logs in."""
    for secure in (False, True):
        with web_client(db_url, secure_cookies=secure) as client:
            page = client.get("/web/login")
            client.cookies.clear()
            refused = client.post(
                "/web/login", data={"token": TOKENS["reader"][0], "csrf": csrf_of(page.text)}
            )
            assert refused.status_code == 403
            assert "sent the login form without its cookie: allow cookies" in refused.text
            assert ("secure_cookies = true" in refused.text) is secure, refused.text


def test_an_expired_login_form_and_another_tabs_say_so(demo: TestClient) -> None:
    sessions = demo.app.state.web.sessions  # type: ignore[attr-defined]
    with freeze_time(datetime.now(UTC) - timedelta(minutes=31)):
        old_nonce = sessions.login_nonce()
    demo.cookies.set("ledger_web_login", old_nonce)
    expired = demo.post(
        "/web/login",
        data={"token": TOKENS["reader"][0], "csrf": sessions.csrf_token(old_nonce)},
    )
    assert expired.status_code == 403
    assert "the login form expired (it is valid for 30 minutes): reload it" in expired.text
    demo.cookies.clear()
    first_tab = demo.get("/web/login")
    demo.get("/web/login")  # a second tab: its cookie replaces the first tab's
    refused = demo.post(
        "/web/login", data={"token": TOKENS["reader"][0], "csrf": csrf_of(first_tab.text)}
    )
    assert refused.status_code == 403
    assert "does not match the browser&#39;s login cookie" in refused.text
    # A forged token is no better off than a stale one, and a fresh form logs in.
    assert "does not match" in demo.post("/web/login", data={"csrf": "forged"}).text
    log_in(demo, "reader")
