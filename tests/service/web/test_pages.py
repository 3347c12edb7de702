"""The web view through FastAPI's TestClient, on SQLite and MariaDB: every page on the demo
database, escaping, the security headers, logins, CSRF, the fail form, as-of, the red banner."""

from __future__ import annotations

import hashlib
import html
import inspect
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ledger import Ledger, RunFinished, RunProgressed, RunStarted
from ledger.clock import isoformat_utc, labelled_utc, utcnow
from ledger.events import REASON_MAX
from ledger.hashing import stored_row_hash
from ledger.reads import stored_rows
from projections import Projector
from projections.as_of import parse_as_of
from projections.queries import get_run
from projections.schema import RUN_STATUSES
from service.api import create_app
from service.config import model as config_model
from service.web import integrity, views
from service.web import runs as web_runs
from service.web.state import TIMELINE_PART
from tests.service.support import stop_and_skip_by_hand
from tests.service.web.support import (
    SCRIPT,
    TOKENS,
    csrf_of,
    demo_with_open_run,
    log_in,
    tamper,
    web_config,
)
from tests.support import drop_triggers

PAGES = ["/web/runs", "/web/stuck", "/web/proof", "/web/integrity"]
BEARER = {"Authorization": f"Bearer {TOKENS['reader'][0]}"}


@pytest.fixture
def demo(db_url: str, tmp_path: Path) -> dict[str, int]:
    return demo_with_open_run(db_url, tmp_path / "spool")


def make_client(db_url: str, **web: object) -> TestClient:
    return TestClient(create_app(web_config(db_url, **web)), raise_server_exceptions=False)


@pytest.fixture
def client(db_url: str, demo: dict[str, int]) -> Iterator[TestClient]:
    with make_client(db_url) as test_client:
        yield test_client
    test_client.app.state.web.close()  # type: ignore[attr-defined]
    test_client.app.state.api.close()  # type: ignore[attr-defined]


def test_every_page_renders_on_the_demo_database(client: TestClient, demo: dict[str, int]) -> None:
    log_in(client, "reader")
    for path in [*PAGES, *(f"/web/runs/{run}" for run in range(1, demo["hostile"] + 1))]:
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"].startswith("text/html")
        assert "<h1>" in response.text
    runs = client.get("/web/runs").text
    assert 'class="stuck"' in runs  # the open run is highlighted
    assert "days.svg" in runs  # the per-day bar, an image of its own
    chart = client.get("/web/runs/days.svg")
    assert chart.headers["content-type"].startswith("image/svg+xml")
    assert "s-failed" in chart.text
    assert "night-batch" in client.get("/web/stuck").text
    timeline = client.get(f"/web/runs/{demo['open'] - 1}").text  # the demo's swept run
    assert "RunTimedOut" in timeline
    assert "✓ ok" in timeline
    markdown = client.get("/web/proof.md")
    assert markdown.headers["content-disposition"].startswith("attachment")
    assert markdown.text.startswith("#")
    assert "PASS" in client.get("/web/proof").text


def test_filters_and_keyset_paging(client: TestClient, demo: dict[str, int]) -> None:
    log_in(client, "reader")
    failed = client.get("/web/runs", params={"status": "failed"}).text
    assert "hostile" in failed
    assert "night-batch" not in failed
    assert "night-batch" in client.get("/web/runs", params={"connector": "night-batch"}).text
    assert "No runs match" in client.get("/web/runs", params={"source": "999"}).text
    older = client.get("/web/runs", params={"before": demo["open"]}).text
    assert "night-batch" not in older
    assert "demo-nightly" in older
    assert client.get("/web/runs", params={"status": "bogus"}).status_code == 400


def test_the_stuck_page_shows_the_longest_silent_and_says_how_many_more(
    client: TestClient, db_url: str, demo: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Stuck page listed every stuck run: 20,000 (a ledger left without its sweeper) made a
    7 MB page that took 2.5 s. It shows the first STUCK_PAGE_ROWS of the stuck query's order,
    the longest silent first, and says how many it left out and where every one is listed."""
    monkeypatch.setattr(web_runs, "STUCK_PAGE_ROWS", 3)
    ledger = Ledger.from_url(db_url)
    try:
        now = utcnow()
        started = ledger.append(
            [
                RunStarted(
                    source_id=5, connector_name="silent", occurred_at=now - timedelta(hours=h)
                )
                for h in (9, 3, 8, 4, 7)
            ]
        ).allocated_run_ids
        Projector(ledger).run_once()
    finally:
        ledger.close()
    log_in(client, "reader")
    page = client.get("/web/stuck")
    assert page.status_code == 200
    shown = [int(i) for i in re.findall(r'<td><a href="/web/runs/(\d+)">', page.text)]
    assert shown == [started[0], started[2], started[4]]  # silent 9, 8 and 7 hours
    # The demo's open run is stuck too: 3 of the silent runs and it are left out.
    assert "… and 3 more stuck run(s) not shown here" in page.text
    monkeypatch.setattr(web_runs, "STUCK_PAGE_ROWS", 500)
    assert 'id="not-shown"' not in client.get("/web/stuck").text


def test_a_page_as_of_a_past_moment_highlights_the_runs_stuck_then(
    client: TestClient, db_url: str, demo: dict[str, int]
) -> None:
    """As of the moment before the demo's sweep, the run it timed out was open and silent
    past its threshold: the runs page and its own page say it was stuck then, judged from its
    own events up to that moment (a page as of a past moment highlighted nothing)."""
    ledger = Ledger.from_url(db_url)
    try:
        swept = demo["open"] - 1
        (timeout,) = [e for e in ledger.read_run(swept) if e.type == "RunTimedOut"]
    finally:
        ledger.close()
    before = timeout.position - 1
    log_in(client, "reader")
    page = re.sub(r">\s+<", "><", client.get("/web/runs", params={"at_position": before}).text)
    assert f'<tr class="stuck" title="stuck (stale)"><td><a href="/web/runs/{swept}' in page
    run_page = client.get(f"/web/runs/{swept}", params={"at_position": before}).text
    assert "stuck (stale)" in run_page
    # At the sweep, the run is no longer open: neither says stuck.
    after = client.get("/web/runs", params={"at_position": timeout.position}).text
    assert f'title="stuck (stale)"><td><a href="/web/runs/{swept}' not in re.sub(
        r">\s+<", "><", after
    )
    assert (
        "stuck ("
        not in client.get(f"/web/runs/{swept}", params={"at_position": timeout.position}).text
    )


def test_a_page_of_runs_judges_only_its_own_runs_stuck(
    client: TestClient, db_url: str, demo: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runs page and a run's page read which of *their* runs are stuck: both read every
    stuck run of the ledger on each view (20,000 stuck runs, no sweeper: the runs page took
    0.8 s instead of 30 ms, a run's page 1.2 s), so a page's time grew with the stuck runs,
    not with its 50 rows. The highlight itself is as before, on every page."""
    ledger = Ledger.from_url(db_url)
    try:
        long_ago = utcnow() - timedelta(hours=3)
        ledger.append(
            [
                RunStarted(source_id=5, connector_name="silent", occurred_at=long_ago)
                for _ in range(60)
            ]
        )
        Projector(ledger).run_once()
    finally:
        ledger.close()
    judged: list[set[int]] = []
    real = config_model.stuck_runs

    def recorded(*args: Any, **kwargs: Any) -> Any:
        found = real(*args, **kwargs)
        judged.append({run.run_id for run in found})
        return found

    monkeypatch.setattr(config_model, "stuck_runs", recorded)
    log_in(client, "reader")
    first = client.get("/web/runs")
    shown = {int(i) for i in re.findall(r'<td><a href="/web/runs/(\d+)">', first.text)}
    assert len(shown) == 50
    assert first.text.count('<tr class="stuck"') == 50  # the 50 newest: all silent
    assert judged[-1] == shown  # not the ledger's 61 stuck runs
    older = client.get("/web/runs", params={"before": min(shown)})
    rows = {int(i) for i in re.findall(r'<td><a href="/web/runs/(\d+)">', older.text)}
    assert len(judged[-1]) == 11  # the 10 other silent runs and the demo's open one
    assert judged[-1] <= rows
    assert older.text.count('<tr class="stuck"') == 11
    assert f'title="stuck (stale)"><td><a href="/web/runs/{demo["open"]}">' in re.sub(
        r">\s+<", "><", older.text
    )
    run_page = client.get(f"/web/runs/{demo['open']}")
    assert "stuck (stale)" in run_page.text
    assert judged[-1] == {demo["open"]}


def test_data_is_escaped_everywhere(client: TestClient, demo: dict[str, int]) -> None:
    log_in(client, "reader")
    for path in ["/web/runs", f"/web/runs/{demo['hostile']}"]:
        page = client.get(path).text
        assert SCRIPT not in page
        assert "&lt;script&gt;" in page
    error = client.get("/web/runs", params={"as_of": SCRIPT, "connector": '"><b>x'})
    assert error.status_code == 400
    assert SCRIPT not in error.text
    assert "&lt;script&gt;" in error.text
    echoed = client.get("/web/runs", params={"connector": '"><script>x</script>'}).text
    assert "<script>x" not in echoed
    assert "&#34;&gt;&lt;script&gt;" in echoed


def test_security_headers(client: TestClient) -> None:
    for path in ["/web/login", "/web/runs", "/web/nowhere"]:
        headers = client.get(path, follow_redirects=False).headers
        csp = headers["content-security-policy"]
        assert "unsafe-inline" not in csp
        assert "script-src" not in csp
        assert "default-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"


def test_security_headers_on_answers_made_outside_the_pages(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's own answers under /web (its redirect of /web, the guard's 413 and 500) are
    web responses too: framed or sniffed without the headers otherwise."""

    def broken() -> None:
        raise RuntimeError("unexpected")

    log_in(client, "reader")
    monkeypatch.setattr(client.app.state.web.verify, "refresh", broken)  # type: ignore[attr-defined]
    answers = {
        "redirect": client.get("/web", follow_redirects=False),
        "too large": client.post(
            "/web/login", content=b"x", headers={"content-length": str(10**12)}
        ),
        "internal error": client.get("/web/integrity"),
    }
    assert [a.status_code for a in answers.values()] == [303, 413, 500]
    for what, answer in answers.items():
        csp = answer.headers.get("content-security-policy", "")
        assert csp.startswith("default-src 'none'"), what
        assert answer.headers.get("x-frame-options") == "DENY", what
        assert answer.headers.get("x-content-type-options") == "nosniff", what


def test_a_method_a_page_does_not_take_is_405_naming_those_it_does(client: TestClient) -> None:
    """The web view's 405 carried no ``Allow`` (RFC 9110 15.5.6: a 405 must name the methods
    the resource takes): its error page dropped the header Starlette gave it. A page answers
    GET and HEAD; the fail form's URL only POST, the login's GET, HEAD and POST."""
    for method, path in (("DELETE", "/web/runs"), ("PUT", "/web/runs/1"), ("POST", "/web/")):
        refused = client.request(method, path)
        assert refused.status_code == 405, (method, path, refused.status_code)
        assert refused.headers.get("allow") == "GET, HEAD", (method, path, refused.headers)
        assert "text/html" in refused.headers["content-type"]
        assert "405 · Method not allowed" in refused.text, (method, path)
        assert refused.headers.get("cache-control") == "no-store"  # still a web answer
    for path in ("/web/runs/1/fail", "/web/logout"):
        refused = client.get(path)
        assert refused.status_code == 405, path
        assert refused.headers.get("allow") == "POST", path
    # /web/login has a GET route and a POST route: Allow names both (each route's own 405
    # knew only its own methods).
    refused = client.delete("/web/login")
    assert refused.status_code == 405
    assert sorted(refused.headers.get("allow", "").split(", ")) == ["GET", "HEAD", "POST"]


def test_no_redirect_names_a_host_or_a_scheme(client: TestClient) -> None:
    """Behind a TLS proxy the app sees http and the client's Host: a redirect built from them
    sends a browser to http:// (the session cookie in clear) or to any host a request names."""
    forged = {"host": "evil.example"}
    home = client.get("/web", headers=forged, follow_redirects=False)
    assert home.status_code == 303
    assert home.headers["location"] == "/web/runs"
    for path in ["/web/runs/", "/web/runs/?status=failed", "/v1/runs/"]:
        answer = client.get(path, headers=forged, follow_redirects=False)
        assert "evil.example" not in answer.headers.get("location", ""), path
        assert answer.status_code == 404, (path, answer.status_code)


def test_no_cookie_means_the_login_page(client: TestClient) -> None:
    response = client.get("/web/runs?status=failed", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/web/login?next=%2Fweb%2Fruns%3Fstatus%3Dfailed"
    assert client.get("/web/proof.md", follow_redirects=False).status_code == 303


def test_login_sets_a_strict_httponly_cookie_and_refuses_a_wrong_token(
    client: TestClient,
) -> None:
    page = client.get("/web/login")
    wrong = client.post(
        "/web/login", data={"token": "not-a-token-at-all", "csrf": csrf_of(page.text)}
    )
    assert wrong.status_code == 401
    assert "not valid" in wrong.text
    assert "ledger_web_session" not in wrong.headers.get("set-cookie", "")
    page = client.get("/web/login")
    ok = client.post(
        "/web/login",
        data={"token": TOKENS["reader"][0], "csrf": csrf_of(page.text), "next": "/web/stuck"},
        follow_redirects=False,
    )
    assert ok.headers["location"] == "/web/stuck"
    cookie = ok.headers["set-cookie"]
    assert "ledger_web_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/web" in cookie
    assert TOKENS["reader"][0] not in cookie


def test_a_login_from_an_https_page_gets_a_secure_cookie_and_a_warning(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind a TLS proxy without ``[web] secure_cookies = true`` (the server sees only http),
    the session cookie went without Secure: a browser sends it over plain http to that host.
    The form's Origin says the page was https: the cookie is Secure, and a WARNING (once) says
    what to set."""
    caplog.set_level(logging.WARNING, logger="ledger.web")

    def log_in_from(origin: str) -> Any:  # the test client's response
        page = client.get("/web/login")
        return client.post(
            "/web/login",
            data={"token": TOKENS["reader"][0], "csrf": csrf_of(page.text)},
            headers={"Origin": origin},
            follow_redirects=False,
        )

    for _ in range(2):
        ok = log_in_from("https://testserver")
        assert ok.status_code == 303
        assert "Secure" in ok.headers["set-cookie"]
        client.cookies.clear()
    said = [r.getMessage() for r in caplog.records if "secure_cookies" in r.getMessage()]
    assert len(said) == 1, said
    plain = log_in_from("http://testserver")
    assert "Secure" not in plain.headers["set-cookie"]  # an http page keeps its cookie


def test_login_without_its_csrf_token_is_refused(client: TestClient) -> None:
    client.get("/web/login")
    response = client.post("/web/login", data={"token": TOKENS["reader"][0], "csrf": "forged"})
    assert response.status_code == 403


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/x",
        "https://evil.example",
        "/\\evil",
        "/x",
        "/web/../docs",  # a browser resolves the dots: /docs, outside the web view
        "/web/%2e%2e/%2E%2e/evil",
        "/web/runs/./../../v1/runs",
    ],
)
def test_login_next_never_leaves_the_web_view(client: TestClient, target: str) -> None:
    page = client.get("/web/login", params={"next": target})
    assert target not in page.text
    response = client.post(
        "/web/login",
        data={"token": TOKENS["reader"][0], "csrf": csrf_of(page.text), "next": target},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/web/runs"


def test_a_tampered_or_foreign_cookie_is_no_login(client: TestClient) -> None:
    log_in(client, "reader")
    cookie = client.cookies["ledger_web_session"]
    body, mac = cookie.split(".")
    # One MAC character changed where all six of its bits are data: the last two characters
    # carry only 10 (the decoder ignores the others), and replacing them with "AA" was the
    # same MAC about once in 1,024 runs.
    other_mac = mac[:-3] + ("B" if mac[-3] == "A" else "A") + mac[-2:]
    for forged in [body + "x." + mac, body + "." + other_mac, "e30.AAAA", "garbage"]:
        client.cookies.clear()
        client.cookies.set("ledger_web_session", forged, path="/web")
        assert client.get("/web/runs", follow_redirects=False).status_code == 303


def test_a_token_without_read_cannot_read(client: TestClient) -> None:
    log_in(client, "operator")
    response = client.get("/web/runs")
    assert response.status_code == 403
    assert "lacks the &#39;read&#39; scope" in response.text


def test_a_token_with_only_append_cannot_log_in(client: TestClient) -> None:
    """A connector's append token has nothing to read or do in the web view: its login is
    refused (403, no session), and as a right token it counts no failure against the address.
    It logged in, every page then 403, and each login and logout it made was kept."""
    page = client.get("/web/login")
    response = client.post(
        "/web/login",
        data={"token": TOKENS["appender"][0], "csrf": csrf_of(page.text), "next": "/web/runs"},
        follow_redirects=False,
    )
    assert response.status_code == 403, response.text
    assert "neither the &#39;read&#39; nor the &#39;operate&#39; scope" in response.text
    assert "ledger_web_session" not in response.headers.get("set-cookie", "")
    assert "ledger_web_session" not in client.cookies
    assert len(client.app.state.web.auth_failures) == 0  # type: ignore[attr-defined]
    log_in(client, "reader")  # the same form still logs a reader in


def test_a_read_only_token_cannot_fail_a_run(client: TestClient, demo: dict[str, int]) -> None:
    csrf = log_in(client, "reader")
    assert "Fail…" not in client.get("/web/stuck").text
    response = client.post(
        f"/web/runs/{demo['open']}/fail", data={"csrf": csrf, "reason": "x", "confirm": "yes"}
    )
    assert response.status_code == 403
    assert "operate" in response.text
    assert "running" in client.get(f"/web/runs/{demo['open']}").text


def test_the_fail_form_needs_its_csrf_token_then_a_confirmation(
    client: TestClient, demo: dict[str, int]
) -> None:
    run = demo["open"]
    csrf = log_in(client, "oncall")
    assert "Fail…" in client.get("/web/stuck").text
    for forged in [{}, {"csrf": "forged"}]:
        response = client.post(
            f"/web/runs/{run}/fail", data={"reason": "dead", "confirm": "yes", **forged}
        )
        assert response.status_code == 403
    cross_site = client.post(
        f"/web/runs/{run}/fail",
        data={"csrf": csrf, "reason": "dead", "confirm": "yes"},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403
    confirm = client.post(f"/web/runs/{run}/fail", data={"csrf": csrf, "reason": SCRIPT})
    assert confirm.status_code == 200
    assert 'id="confirm-fail"' in confirm.text
    assert "s-running" in confirm.text  # a reader sees the run it is about to fail
    assert SCRIPT not in confirm.text
    assert "running" in client.get(f"/web/runs/{run}").text  # nothing appended yet
    done = client.post(
        f"/web/runs/{run}/fail",
        data={"csrf": csrf, "reason": "process killed", "confirm": "yes"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert re.fullmatch(rf"/web/runs/{run}\?notice=failed&failed_at=\d+", done.headers["location"])
    page = client.get(done.headers["location"]).text
    assert "operator:oncall" in page
    assert "s-failed" in page
    assert "its timeline shows the RunTimedOut you appended" in page
    again = client.post(
        f"/web/runs/{run}/fail", data={"csrf": csrf, "reason": "again", "confirm": "yes"}
    )
    assert again.status_code == 409


def test_the_confirm_step_refuses_what_the_append_would_and_shows_rows_to_readers_only(
    client: TestClient, demo: dict[str, int]
) -> None:
    """The first step of the fail form asks what the append would (a closed run is 409 there,
    not a page that offers to fail it), and a token with `operate` but not `read` learns
    nothing of the run from it: walking the run ids showed every run's connector and status."""
    csrf = log_in(client, "operator")
    assert client.get(f"/web/runs/{demo['open']}").status_code == 403  # no read scope
    closed = client.post("/web/runs/1/fail", data={"csrf": csrf, "reason": "probe"})
    assert closed.status_code == 409
    assert "only open runs can be failed" in closed.text
    assert "demo-stations" not in closed.text
    unknown = client.post("/web/runs/999999/fail", data={"csrf": csrf, "reason": "probe"})
    assert unknown.status_code == 404
    confirm = client.post(f"/web/runs/{demo['open']}/fail", data={"csrf": csrf, "reason": "x"})
    assert confirm.status_code == 200
    assert 'id="confirm-fail"' in confirm.text
    assert "started" not in confirm.text
    assert "s-running" not in confirm.text


def test_the_fail_form_refuses_a_reason_that_shows_nothing(
    client: TestClient, demo: dict[str, int]
) -> None:
    """A reason of zero-width characters went on to the confirm step, which then asked to
    fail the run "because" of nothing a reader sees (the append refused it only at the end)."""
    csrf = log_in(client, "oncall")
    for reason in ["  ", "\u200b", "\x00"]:
        answer = client.post(
            f"/web/runs/{demo['open']}/fail", data={"csrf": csrf, "reason": reason}
        )
        assert answer.status_code == 400, answer.text
        assert "give a reason for failing the run" in answer.text
        assert 'id="confirm-fail"' not in answer.text
    assert "running" in client.get(f"/web/runs/{demo['open']}").text


def test_the_style_sheet_may_be_cached_and_pages_may_not(client: TestClient) -> None:
    assert client.get("/web/static/style.css").headers["cache-control"] == "public, max-age=3600"
    assert client.get("/web/login").headers["cache-control"] == "no-store"


def test_a_changed_style_sheet_has_a_new_address(client: TestClient) -> None:
    """Browsers keep the style sheet an hour: after an upgrade that changed it, pages were laid
    out by the old one for that long. Its address carries a digest of its content."""
    stylesheet = (Path(views.__file__).parent / "static" / "style.css").read_bytes()
    digest = hashlib.sha256(stylesheet).hexdigest()[:12]
    for page in (client.get("/web/login"), client.get("/web/nothing")):
        assert f'href="/web/static/style.css?v={digest}"' in page.text
    answer = client.get(f"/web/static/style.css?v={digest}")
    assert answer.status_code == 200
    assert answer.content == stylesheet


def test_the_fail_notice_shows_on_a_run_longer_than_a_timeline_part(
    client: TestClient, db_url: str
) -> None:
    """The notice looked for the RunTimedOut in the part of the timeline shown: a run of more
    than 500 events shows its first 500, and the operator who had just failed it saw none."""
    ledger = Ledger.from_url(db_url)
    try:
        run = ledger.start_run(9, "long-run")
        ledger.append([RunProgressed(run_id=run, records_fetched=1) for _ in range(TIMELINE_PART)])
        Projector(ledger).run_once()
    finally:
        ledger.close()
    csrf = log_in(client, "oncall")
    done = client.post(
        f"/web/runs/{run}/fail",
        data={"csrf": csrf, "reason": "process killed", "confirm": "yes"},
        follow_redirects=False,
    )
    page = client.get(done.headers["location"]).text
    assert 'id="next-part"' in page  # only the first part is shown
    assert "its timeline shows the RunTimedOut you appended" in page


def _events_of(client: TestClient, run: int) -> list[dict[str, Any]]:
    ledger = client.app.state.web.ledger  # type: ignore[attr-defined]
    return [{"type": e.type, "position": e.position} for e in ledger.read_run(run)]


def test_a_link_cannot_make_a_run_page_claim_the_run_was_failed(
    client: TestClient, demo: dict[str, int]
) -> None:
    """``?notice=failed`` is the fail form's redirect, a URL anyone can send: on a run no
    operator failed it said "The run was failed" all the same. An event without an actor
    showed the word None."""
    log_in(client, "oncall")
    # The demo's first run succeeded; the hostile one failed; the sweeper timed the one before
    # the open run out (its RunTimedOut, by "sweeper", is the last position of that run).
    swept = demo["open"] - 1
    (timed_out,) = [e for e in _events_of(client, swept) if e["type"] == "RunTimedOut"]
    for run, at in [(1, None), (1, 1), (demo["hostile"], None), (swept, timed_out["position"])]:
        query = "notice=failed" + ("" if at is None else f"&failed_at={at}")
        page = client.get(f"/web/runs/{run}?{query}").text
        assert 'class="notice"' not in page
        assert "RunTimedOut you appended" not in page
        assert "<td>None</td>" not in page
    hostile = client.get(f"/web/runs/{demo['hostile']}").text
    assert "<td>—</td>" in hostile  # appended without an actor


def test_a_reason_over_the_events_limit_is_refused_before_the_confirm_step(
    client: TestClient, demo: dict[str, int]
) -> None:
    """The form took 10,000 characters and showed them for confirmation; only the confirmed
    post was refused, by the event's own limit."""
    csrf = log_in(client, "oncall")
    form = client.get("/web/stuck").text
    assert f'maxlength="{REASON_MAX}"' in form
    response = client.post(
        f"/web/runs/{demo['open']}/fail", data={"csrf": csrf, "reason": "x" * (REASON_MAX + 1)}
    )
    assert response.status_code == 400
    assert "confirm-fail" not in response.text


def test_public_read_needs_no_login_but_failing_still_does(
    db_url: str, demo: dict[str, int]
) -> None:
    with make_client(db_url, public_read=True) as client:
        for path in PAGES:
            assert client.get(path).status_code == 200
        assert "Log in</a> with an operate token" in client.get("/web/stuck").text
        response = client.post(
            f"/web/runs/{demo['open']}/fail",
            data={"reason": "x", "confirm": "yes"},
            follow_redirects=False,
        )
        assert response.status_code == 303
        assert "/web/login" in response.headers["location"]
    client.app.state.web.close()  # type: ignore[attr-defined]
    client.app.state.api.close()  # type: ignore[attr-defined]


def test_the_headers_log_in_comes_back_to_the_page_it_was_on(
    db_url: str, demo: dict[str, int]
) -> None:
    """With public_read, the header's "Log in" led to the runs list after the login: a
    visitor on a run, or as of a moment, lost it."""
    page_url = f"/web/runs/{demo['open']}?at_position=2"
    with make_client(db_url, public_read=True) as client:
        page = client.get(page_url)
        found = re.search(r'<a href="([^"]+)" id="log-in">Log in</a>', page.text)
        assert found, page.text
        # An address too long for the login's next, or a form's: the plain login.
        long_url = "/web/runs?connector=" + "x" * 2100
        assert 'href="/web/login" id="log-in"' in client.get(long_url).text
        refused = client.post("/web/login", data={"token": "x", "csrf": "forged"})
        assert refused.status_code == 403
        assert 'href="/web/login" id="log-in"' in refused.text
        login = client.get(html.unescape(found.group(1)))
        assert f'name="next" value="{html.escape(page_url)}"' in login.text
        back = client.post(
            "/web/login",
            data={"token": TOKENS["reader"][0], "csrf": csrf_of(login.text), "next": page_url},
            follow_redirects=False,
        )
        assert back.headers["location"] == page_url
    client.app.state.web.close()  # type: ignore[attr-defined]
    client.app.state.api.close()  # type: ignore[attr-defined]


def test_as_of_shows_a_banner_and_history_as_it_was(
    client: TestClient, demo: dict[str, int]
) -> None:
    log_in(client, "reader")
    early = client.get("/web/runs", params={"at_position": 1}).text
    assert 'id="asof-banner"' in early
    assert "position 1" in early
    assert "night-batch" not in early
    assert "at_position=1" in early  # links keep the moment
    run = client.get(f"/web/runs/{demo['hostile']}", params={"at_position": 1}).text
    assert "later event(s) are not shown" in run
    for path in PAGES:
        page = client.get(path, params={"as_of": "2000-01-01T00:00:00Z"}).text
        assert 'id="asof-banner"' in page
    assert 'id="asof-banner"' not in client.get("/web/runs").text
    assert client.get("/web/runs", params={"as_of": "x", "at_position": 1}).status_code == 400


def test_the_proof_page_shows_the_runs_times_as_the_markdown_does(
    client: TestClient, db_url: str, demo: dict[str, int]
) -> None:
    """The report's data holds ISO-8601 times (its JSON); the page shows a run's times to the
    second with their zone, as the Markdown download and the text report do."""
    ledger = Ledger.from_url(db_url)
    try:
        stuck = ledger.run(demo["open"])
        row, _ = get_run(ledger, demo["hostile"])
    finally:
        ledger.close()
    assert stuck is not None
    assert row is not None
    log_in(client, "reader")
    page = client.get("/web/proof").text
    markdown = client.get("/web/proof.md").text
    last_activity = labelled_utc(stuck.last_event_at)
    assert f"<td>night-batch</td><td>7</td><td>{last_activity}</td>" in page
    started, completed = labelled_utc(row["startedAt"]), labelled_utc(row["completedAt"])
    assert f"<td>{started}</td><td>{completed}</td>" in page
    assert f"| {started} | {completed} |" in markdown
    assert isoformat_utc(stuck.last_event_at) not in page


def test_the_proof_names_the_databases_kind_never_where_it_is(
    client: TestClient, db_url: str, demo: dict[str, int]
) -> None:
    """The page and its download are read over the network (by anyone when the view is
    public): the database's kind, as /v1/status names it, never its URL, user, host or file."""
    ledger = Ledger.from_url(db_url)
    try:
        ledger.head()  # connected: MariaDB is told from MySQL by the server's version
        kind = ledger.database_kind
    finally:
        ledger.close()
    log_in(client, "reader")
    page, markdown = client.get("/web/proof").text, client.get("/web/proof.md").text
    assert f"on {kind}." in page
    assert f"Database:  {kind}" in markdown
    where = db_url.split("://", 1)[1].split("?")[0]  # the file, or user@host:port/name
    for text_shown in (page, markdown):
        assert where not in text_shown
        assert db_url.split("://", 1)[0] + "://" not in text_shown  # nor any part of the URL


def test_proof_and_integrity_show_the_ledger_as_it_stood(
    client: TestClient, db_url: str, demo: dict[str, int]
) -> None:
    """Proof as of a position is the report replayed up to it (its latest run still running
    there); Integrity as of it verifies the chain up to it and shows the head as it stood."""
    ledger = Ledger.from_url(db_url)
    try:
        run_id = ledger.start_run(9, "asof-check")
        started_at = ledger.head()
        ledger.append([RunFinished(run_id=run_id, status="success", records_fetched=3)])
        Projector(ledger).run_once()
    finally:
        ledger.close()
    log_in(client, "reader")
    pinned = {"at_position": str(started_at.last_position)}
    live = client.get("/web/proof").text
    assert f"run {run_id} is success" in live
    then = client.get("/web/proof", params=pinned).text
    assert f"run {run_id} is running" in then
    assert f"As the ledger stood at position {started_at.last_position}" in then
    assert "projection in sync" in live
    assert "projection in sync" not in then
    markdown = client.get("/web/proof.md", params=pinned).text
    assert f"As of:     position {started_at.last_position} (" in markdown
    assert 'href="/web/proof.md?at_position=' in then  # the download keeps the moment
    integrity = client.get("/web/integrity", params=pinned).text
    assert f"{started_at.last_position} event(s) checked" in integrity
    assert f"{started_at.last_position} {started_at.last_hash} " in integrity  # the anchor then
    assert "Head anchor at position" in integrity
    assert (
        f"{started_at.last_position} {started_at.last_hash} "
        not in client.get("/web/integrity").text
    )


def test_integrity_lists_a_skip_as_the_cli_shows_it(
    client: TestClient, db_url: str, demo: dict[str, int]
) -> None:
    """A skip is a ``SkippedEvent`` holding the projection's ``Skip`` and the run (issue 13):
    the page reads its fields through it."""
    ledger = Ledger.from_url(db_url)
    try:
        head = ledger.head().last_position
        (event,) = ledger.read_all(after=head - 1)
        stop_and_skip_by_hand(ledger, head, event.type)
    finally:
        ledger.close()
    log_in(client, "reader")
    page = html.unescape(client.get("/web/integrity").text)
    assert (
        f"position {head} ({event.type}, run {event.run_id}) skipped by <code>operator:bob</code> "
        "2026-12-04 23:40:00 UTC: <q>r</q>"
    ) in page  # the operator's name and words set apart from the page's own


def test_hostile_moments_are_refused_or_shown_as_they_resolve(
    client: TestClient, db_url: str, demo: dict[str, int]
) -> None:
    log_in(client, "reader")
    for path in ("/web/runs", "/web/proof", "/web/integrity"):
        for value in ("1" * 4301, "1" * 6000):  # int() refuses more than 4,300 digits
            assert client.get(path, params={"at_position": value}).status_code == 400
        late = client.get(path, params={"as_of": "9999-12-31T23:59:59-14:00"})
        assert late.status_code == 400, late.text  # past the last UTC time
        assert "out of range" in late.text
    ledger = Ledger.from_url(db_url)
    try:
        head = ledger.head().last_position
    finally:
        ledger.close()
    beyond = client.get("/web/proof", params={"at_position": "999999"}).text
    assert f'href="/web/proof.md?at_position={head}"' in beyond  # the position shown


def test_integrity_as_of_a_forged_position_anchors_nothing(
    client: TestClient, db_url: str, demo: dict[str, int]
) -> None:
    """The last row of the range rewritten with a recomputed hash: the chain up to it is
    refused (the next row vouches for it) and no anchor is offered for the forged hash."""
    ledger = Ledger.from_url(db_url)
    try:
        drop_triggers(ledger.engine)
        with ledger.connect() as conn:
            row = list(stored_rows(conn, 2, 1)[0])
        row[9] = "mallory"  # the actor
        forged_hash = stored_row_hash(row[10], row)
        with ledger.engine.begin() as conn:
            conn.execute(
                text("UPDATE ledger_events SET actor = :a, hash = :h WHERE position = 3"),
                {"a": "mallory", "h": forged_hash},
            )
    finally:
        ledger.close()
    log_in(client, "reader")
    page = client.get("/web/integrity", params={"at_position": "3"}).text
    assert 'id="verify-verdict">PROBLEMS' in page
    assert 'id="no-anchor"' in page
    assert forged_hash not in page


def test_the_stuck_page_shows_the_runs_stuck_as_the_ledger_stood(
    client: TestClient, db_url: str, demo: dict[str, int]
) -> None:
    log_in(client, "reader")
    ledger = Ledger.from_url(db_url)
    try:
        events = list(ledger.read_all())
    finally:
        ledger.close()
    timed_out = next(e for e in events if e.type == "RunTimedOut")  # the demo's killed run
    opened = next(e for e in events if e.run_id == demo["open"])  # started 2 h before it
    live = client.get("/web/stuck").text
    assert "night-batch" in live
    assert f"/web/runs/{timed_out.run_id}" not in live  # the sweeper timed it out
    # Just before the sweep, the demo's killed run was open and silent past the threshold.
    before_sweep = client.get("/web/stuck", params={"at_position": timed_out.position - 1}).text
    assert f"/web/runs/{timed_out.run_id}?at_position" in before_sweep
    assert "night-batch" not in before_sweep  # not started yet
    assert "as the ledger stood at" in before_sweep
    assert "this page is computed on the ledger as it is" not in before_sweep
    at_open = client.get("/web/stuck", params={"at_position": opened.position}).text
    assert "night-batch" in at_open  # recorded now, silent since two hours before


def test_a_tampered_ledger_shows_the_red_banner(client: TestClient, db_url: str) -> None:
    log_in(client, "reader")
    assert client.get("/web/integrity").status_code == 200
    assert 'id="verify-banner"' not in client.get("/web/runs").text
    tamper(db_url)
    integrity = client.get("/web/integrity").text
    assert "PROBLEMS" in integrity
    assert "chain" in integrity
    # No anchor of a head whose chain is broken, as the page as of a past moment says.
    assert 'id="no-anchor"' in integrity
    assert 'id="anchor"' not in integrity
    for path in ["/web/runs", "/web/stuck", "/web/proof"]:
        assert 'id="verify-banner"' in client.get(path).text


def test_pages_that_read_the_whole_history_share_the_apis_slots(
    client: TestClient, demo: dict[str, int]
) -> None:
    """Proof, Integrity and every page as of a past moment replay or verify the whole ledger:
    with every ``[api] max_expensive`` slot taken (by the API's own verify, say) they answer a
    429 page with Retry-After instead of queueing full scans on every worker thread; live
    pages do not wait for a slot."""
    log_in(client, "reader")
    api = client.app.state.api  # type: ignore[attr-defined]
    web = client.app.state.web  # type: ignore[attr-defined]
    assert web.expensive_slots is api.expensive_slots  # one budget for the process
    taken = 0
    while api.expensive_slots.acquire(blocking=False):
        taken += 1
    try:
        assert taken == web_config("sqlite://").api.max_expensive
        pinned = {"at_position": "3"}
        for path, params in [
            ("/web/proof", {}),
            ("/web/proof.md", {}),
            ("/web/integrity", {}),
            ("/web/runs", pinned),
            (f"/web/runs/{demo['open']}", pinned),
            ("/web/stuck", pinned),
        ]:
            busy = client.get(path, params=params)
            assert busy.status_code == 429, (path, busy.text)
            assert busy.headers["retry-after"] == "5"
            assert "max_expensive" in busy.text
        for path in ["/web/runs", f"/web/runs/{demo['open']}", "/web/stuck"]:
            assert client.get(path).status_code == 200, path
    finally:
        for _ in range(taken):
            api.expensive_slots.release()
    assert client.get("/web/integrity").status_code == 200
    assert client.get("/web/runs", params={"at_position": "3"}).status_code == 200


def test_a_later_timeline_part_and_the_day_chart_take_a_slot(
    client: TestClient, demo: dict[str, int]
) -> None:
    """A later part of a run's timeline folds the run's earlier events, and the per-day chart
    counts a fortnight of runs: with every ``[api] max_expensive`` slot taken they are the busy
    page (429, Retry-After), not more scans on the worker threads. The first part of the
    timeline, and the chart while its minute's cache holds, take none."""
    log_in(client, "reader")
    slots = client.app.state.api.expensive_slots  # type: ignore[attr-defined]
    run = demo["hostile"]  # RunStarted, RunFinished: two parts of one event
    first = client.get(f"/web/runs/{run}", params={"limit": "1"})
    assert first.status_code == 200
    later = re.search(r'href="(/web/runs/[^"]*after=[^"]*)" rel="next"', first.text)
    assert later is not None, first.text
    later_part = html.unescape(later.group(1))
    taken = 0
    while slots.acquire(blocking=False):
        taken += 1
    try:
        for path in [later_part, "/web/runs/days.svg"]:  # the chart's cache is cold
            busy = client.get(path)
            assert busy.status_code == 429, (path, busy.text)
            assert busy.headers["retry-after"] == "5"
            assert "max_expensive" in busy.text
        assert client.get(f"/web/runs/{run}", params={"limit": "1"}).status_code == 200
    finally:
        for _ in range(taken):
            slots.release()
    assert client.get(later_part).status_code == 200
    assert client.get("/web/runs/days.svg").status_code == 200  # counted, and cached
    while slots.acquire(blocking=False):
        taken -= 1
    try:
        assert client.get("/web/runs/days.svg").status_code == 200  # from the cache
    finally:
        while taken < 0:
            slots.release()
            taken += 1


def blocked_on_the_lock(thread: threading.Thread) -> bool:
    """Whether ``thread`` is at VerifyCache.refresh's ``with self._lock`` (waiting on it)."""
    lines, first = inspect.getsourcelines(integrity.VerifyCache.refresh)
    at = first + next(i for i, line in enumerate(lines) if "with self._lock" in line)
    frame = sys._current_frames().get(thread.ident or 0)
    return (
        frame is not None
        and frame.f_code is integrity.VerifyCache.refresh.__code__
        and frame.f_lineno == at
    )


def test_visitors_arriving_during_a_verify_take_its_result(
    db_url: str, demo: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Integrity page while a verify runs waits for it and shows its result: no second
    full scan queued behind it."""
    ledger = Ledger.from_url(db_url)
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []
    real_verify = integrity.verify_all

    def slow_verify(store: Ledger) -> object:
        calls.append(1)
        started.set()
        assert release.wait(30)
        return real_verify(store)

    monkeypatch.setattr(integrity, "verify_all", slow_verify)
    cache = integrity.VerifyCache(ledger, timedelta(0))
    outcomes: list[object] = []
    first = threading.Thread(target=lambda: outcomes.append(cache.refresh()))
    first.start()
    try:
        assert started.wait(30)
        second = threading.Thread(target=lambda: outcomes.append(cache.refresh()))
        second.start()
        # Once the second caller waits for the first verify's end (blocked on the lock):
        deadline = time.monotonic() + 30
        while not blocked_on_the_lock(second):
            assert time.monotonic() < deadline, "the second visit never reached the lock"
            time.sleep(0.01)
    finally:
        release.set()
        first.join(30)
    second.join(30)
    assert len(calls) == 1
    assert len(outcomes) == 2
    assert outcomes[0] is outcomes[1]
    assert cache.refresh() is not outcomes[0]  # a later visit verifies again
    ledger.close()


def waiting_for_the_verify() -> bool:
    """Whether some thread (a page's, in the test client's pool) is at VerifyCache.refresh's
    ``with self._lock``, waiting for a verify that is running."""
    return any(blocked_on_the_lock(thread) for thread in threading.enumerate())


def test_visitors_without_a_login_never_hold_every_slot(
    db_url: str, demo: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With public_read, visitors without a login run at most half of the ``[api]
    max_expensive`` pages that read the whole history at once, so the API's clients and
    logged-in readers keep the rest. Before, two anonymous Integrity visits (one verifying,
    one waiting for it) held both slots, and the API's verify and a reader's Proof page were
    429 for as long as anonymous visitors kept coming."""
    started, release = threading.Event(), threading.Event()
    real_verify = integrity.verify_all

    def slow_verify(store: Ledger) -> object:
        started.set()
        assert release.wait(30)
        return real_verify(store)

    monkeypatch.setattr(integrity, "verify_all", slow_verify)
    with make_client(db_url, public_read=True) as anonymous:
        reader = TestClient(anonymous.app, raise_server_exceptions=False)
        log_in(reader, "reader")
        answers: dict[str, Any] = {}

        def visit(name: str) -> None:
            answers[name] = anonymous.get("/web/integrity")

        first = threading.Thread(target=visit, args=("first",))
        first.start()
        try:
            assert started.wait(30)
            second = threading.Thread(target=visit, args=("second",))
            second.start()
            # Refused at once, or (as before) waiting for the first verify, holding a slot:
            deadline = time.monotonic() + 30
            while second.is_alive() and not waiting_for_the_verify():
                assert time.monotonic() < deadline, "the second visit neither ended nor waited"
                time.sleep(0.01)
            assert reader.get("/web/proof").status_code == 200
            verify = anonymous.get("/v1/verify", params={"chain_only": "true"}, headers=BEARER)
            assert verify.status_code == 200, verify.text
            assert anonymous.get("/web/proof").status_code == 429
        finally:
            release.set()
            first.join(30)
        second.join(30)
        assert answers["first"].status_code == 200
        refused = answers["second"]
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "5"
        assert "visitors without a login may run 1 such request(s)" in refused.text
        assert "or log in" in refused.text
        assert anonymous.get("/web/proof").status_code == 200  # the share is free again
    anonymous.app.state.web.close()  # type: ignore[attr-defined]
    anonymous.app.state.api.close()  # type: ignore[attr-defined]


def test_an_unreachable_database_is_a_503_page_with_retry_after() -> None:
    """The web view's pages answer an outage as the API does: 503, Retry-After, no secret."""
    url = "mysql+pymysql://ledger:secret@127.0.0.1:1/ledger"
    with make_client(url, public_read=True) as client:
        for path in [*PAGES, "/web/runs/1"]:
            response = client.get(path)
            assert response.status_code == 503, (path, response.text)
            assert int(response.headers["retry-after"]) > 0
            assert "secret" not in response.text
    client.app.state.web.close()  # type: ignore[attr-defined]
    client.app.state.api.close()  # type: ignore[attr-defined]


def test_an_outage_page_says_nothing_of_resending_a_body() -> None:
    """The 503 page of every page read "retry in 5 s; an append retried with the same body is
    not appended twice": the API's advice to a client resending events, to an auditor who sent
    none (and the fail form sends no body of events). The API's problem keeps it."""
    url = "mysql+pymysql://ledger:secret@127.0.0.1:1/ledger"
    with make_client(url, public_read=True) as client:
        for path in [*PAGES, "/web/runs/1"]:
            page = client.get(path)
            assert page.status_code == 503, path
            detail = re.search(r'id="error-detail">(.*?)</p>', page.text, re.S)
            assert detail, page.text
            assert "retry in 5 s" in detail.group(1)
            assert "body" not in detail.group(1), (path, detail.group(1))
        problem = client.get("/v1/runs", headers=BEARER).json()
        assert "an append retried with the same body is not appended twice" in problem["detail"]
    client.app.state.web.close()  # type: ignore[attr-defined]
    client.app.state.api.close()  # type: ignore[attr-defined]


def test_integrity_visits_in_an_outage_log_it_once(caplog: pytest.LogCaptureFixture) -> None:
    """The Integrity page's verify logged its database failure apart from the shared outage:
    a WARNING for every visit while the database was away, beside the outage's one."""
    caplog.set_level(logging.WARNING)
    url = "mysql+pymysql://ledger:secret@127.0.0.1:1/ledger"
    with make_client(url, public_read=True) as client:
        for _ in range(5):
            assert client.get("/web/integrity").status_code == 503
    client.app.state.web.close()  # type: ignore[attr-defined]
    client.app.state.api.close()  # type: ignore[attr-defined]
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1, said
    assert said[0].startswith("API requests cannot proceed, retrying until it can: ")


def test_a_form_posted_without_a_login_returns_to_its_run_after_login(
    client: TestClient, demo: dict[str, int]
) -> None:
    """The login redirects with GET, which the fail form's own URL does not answer: its next
    is the run's page."""
    response = client.post(
        f"/web/runs/{demo['open']}/fail", data={"reason": "x"}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/web/login?next=%2Fweb%2Fruns%2F{demo['open']}"
    assert client.get(f"/web/runs/{demo['open']}").status_code in (200, 303)


def test_the_fail_form_asks_for_a_login_and_the_scope_before_it_reads_the_form(
    client: TestClient, demo: dict[str, int]
) -> None:
    """FastAPI checked the form's fields before the handler asked for a login: a visitor with
    no login posting a reason over its limit was answered 400, not sent to log in (the API's
    fail answered a bad body before its 401 the same way)."""
    path = f"/web/runs/{demo['open']}/fail"
    too_long = [
        {"reason": "x" * (REASON_MAX + 1)},
        {"reason": "x", "csrf": "c" * 201},
        {"reason": "x", "confirm": "y" * 11},
    ]
    for form in too_long:
        response = client.post(path, data=form, follow_redirects=False)
        assert response.status_code == 303, (form, response.text)
        assert response.headers["location"].startswith("/web/login")
    csrf = log_in(client, "reader")
    for form in too_long:
        refused = client.post(path, data={"csrf": csrf, **form}, follow_redirects=False)
        assert refused.status_code == 403, (form, refused.text)
        assert "lacks the &#39;operate&#39; scope" in refused.text
    assert "running" in client.get(f"/web/runs/{demo['open']}").text


def test_a_repeated_query_parameter_is_refused_as_the_api_refuses_it(client: TestClient) -> None:
    log_in(client, "reader")
    response = client.get("/web/runs", params=[("at_position", "1"), ("at_position", "2")])
    assert response.status_code == 400
    assert "each query parameter may be given once: at_position" in response.text


def test_a_logged_in_request_is_logged_with_its_viewer(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    log_in(client, "reader")
    with caplog.at_level(logging.INFO, logger="ledger.api"):
        assert client.get("/web/runs").status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("GET /web/runs")]
    assert lines
    assert lines[-1].endswith("caller=reader"), lines


FORGED = (
    "\x1b]8;;http://evil.example\x07click\x1b]8;;\x07\n\nF. Stop conditions\n  PASS  x\n"
    "Result: 5/5 conditions pass\u202eesrever\u200b"
)


def test_control_and_format_characters_are_shown_as_escapes_on_every_page(
    client: TestClient, db_url: str
) -> None:
    """As in the CLI: a newline, ESC, BEL, U+202E or U+200B from a connector shows as its
    escape, so a message cannot lay out a fake section, a link or reversed text."""
    ledger = Ledger.from_url(db_url)
    run_id = ledger.start_run(3, "forger")
    ledger.append([RunFinished(run_id=run_id, status="failed", error_message=FORGED)])
    Projector(ledger).run_once()
    log_in(client, "reader")
    for path in ["/web/runs", f"/web/runs/{run_id}", "/web/proof", "/web/stuck"]:
        page = client.get(path).text
        for raw in ("\x1b", "\x07", "\u202e", "\u200b"):
            assert raw not in page, (path, raw)
        assert "Result: 5/5 conditions pass" not in page.replace("\\n", "\n").splitlines()
        if path != "/web/stuck":  # the runs list and the proof clip the message
            assert "\\x1b]8;;http://evil.example\\x07" in page, path
    page = client.get(f"/web/runs/{run_id}").text
    assert "\\n\\nF. Stop conditions\\n" in page
    assert "\\u202eesrever\\u200b" in page


def test_the_runs_list_clips_a_message_as_the_cli_does(client: TestClient, db_url: str) -> None:
    """The list cuts an error message with the project's one clip (80 characters of the
    visible text, ``…``), not Jinja's ``truncate`` (up to 85 kept, cut at a word, ``...``)."""
    ledger = Ledger.from_url(db_url)
    messages = {
        "words": "disk full " * 20,
        "within truncate's leeway": "x" * 83,
        "an escape at the cut": "y" * 76 + "\x1b" + "z" * 10,
    }
    for name, message in messages.items():
        run_id = ledger.start_run(3, name.replace(" ", "-").replace("'", ""))
        ledger.append([RunFinished(run_id=run_id, status="failed", error_message=message)])
    Projector(ledger).run_once()
    ledger.close()
    log_in(client, "reader")
    cells = re.findall(r'<td class="msg">(.*?)</td>', client.get("/web/runs").text)
    assert "disk full " * 7 + "disk full…" in cells
    assert "x" * 79 + "…" in cells
    assert "y" * 76 + "\\x1…" in cells  # the escape counts as the four characters shown
    assert not [cell for cell in cells if "..." in cell or len(html.unescape(cell)) > 80]


def test_the_day_chart_has_a_colour_for_every_status() -> None:
    """The chart's fills are listed by hand beside the stylesheet: one per status, no other."""
    assert sorted(views.COLOURS) == sorted(RUN_STATUSES)
    stylesheet = (Path(views.__file__).parent / "static" / "style.css").read_text(encoding="utf-8")
    assert all(colour in stylesheet for colour in views.COLOURS.values())


def test_the_confirm_step_sends_the_reason_exactly_as_typed(
    client: TestClient, demo: dict[str, int], db_url: str
) -> None:
    """The page shows a tab or a newline as its escape, but the hidden field carries the text
    itself: what is stored is what the operator typed."""
    run = demo["open"]
    csrf = log_in(client, "oncall")
    typed = 'disk full\r\nrestarted\tok "quoted" <b>'
    confirm = client.post(f"/web/runs/{run}/fail", data={"csrf": csrf, "reason": typed})
    assert confirm.status_code == 200
    hidden = re.search(r'name="reason" value="([^"]*)"', confirm.text)
    assert hidden is not None
    assert html.unescape(hidden.group(1)) == typed
    assert "disk full\\r\\nrestarted\\tok" in confirm.text  # shown as escapes
    done = client.post(
        f"/web/runs/{run}/fail",
        data={"csrf": csrf, "reason": html.unescape(hidden.group(1)), "confirm": "yes"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    stored = Ledger.from_url(db_url).read_run(run)[-1].event
    assert stored.reason == typed  # type: ignore[union-attr]


def test_integrity_page_does_not_show_the_database_when_verify_cannot_run(
    db_url: str, demo: dict[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    """Verify failing on the database: the Integrity page (any reader, anyone with
    public_read) says so without the URL, user, host, file or driver message, as a 503 does;
    the server's log keeps them."""
    parsed = make_url(db_url)
    secrets = [
        word for word in (parsed.database, parsed.host, parsed.username, parsed.drivername) if word
    ]
    engine = create_engine(db_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE ingestion_runs RENAME TO ingestion_runs_gone"))
        with make_client(db_url, public_read=True) as client:
            with caplog.at_level(logging.WARNING):
                page = client.get("/web/integrity")
            assert "Verify could not run" in page.text, page.text
            shown = html.unescape(page.text)
            for word in [*secrets, "ingestion_runs_gone", "ingestion_runs'", "(1146"]:
                assert word not in shown, word
        client.app.state.web.close()  # type: ignore[attr-defined]
        client.app.state.api.close()  # type: ignore[attr-defined]
        logged = "\n".join(record.getMessage() for record in caplog.records)
        assert str(parsed.database) in logged
    finally:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE ingestion_runs_gone RENAME TO ingestion_runs"))
        engine.dispose()


def test_an_operator_bound_to_connectors_fails_only_their_runs(
    db_url: str, demo: dict[str, int]
) -> None:
    """A token with ``connectors`` gets the fail form only for runs of those connectors, and a
    forged post for another connector's run is refused (403), nothing appended."""
    config = web_config(db_url, bound={"oncall": ["night-batch-2"]})
    with TestClient(create_app(config), raise_server_exceptions=False) as client:
        csrf = log_in(client, "oncall")
        stuck = client.get("/web/stuck").text
        assert "Fail…" not in stuck
        assert "not a connector of token oncall" in stuck
        refused = client.post(
            f"/web/runs/{demo['open']}/fail",
            data={"csrf": csrf, "reason": "dead", "confirm": "yes"},
        )
        assert refused.status_code == 403
        assert "may write for (&#39;night-batch-2&#39;)" in refused.text
        asked = client.post(f"/web/runs/{demo['open']}/fail", data={"csrf": csrf, "reason": "x"})
        assert asked.status_code == 403  # the confirm step too: no other connector's run shown
        assert 'id="confirm-fail"' not in asked.text
        assert "running" in client.get(f"/web/runs/{demo['open']}").text
    client.app.state.web.close()  # type: ignore[attr-defined]
    client.app.state.api.close()  # type: ignore[attr-defined]


def test_the_red_banner_outlives_a_verify_that_could_not_run(
    client: TestClient, db_url: str
) -> None:
    """A verify that cannot run (the database away for a moment) found nothing: the banner of
    the verify before it, which found a problem, stays, also once the database is back. It
    went, and stayed away until the next verify that ran."""
    log_in(client, "reader")
    tamper(db_url)
    assert "PROBLEMS" in client.get("/web/integrity").text
    engine = create_engine(db_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE ingestion_runs RENAME TO ingestion_runs_gone"))
        try:
            page = client.get("/web/integrity")
            assert "Verify could not run" in page.text, page.text
            assert 'id="verify-banner"' in page.text
        finally:
            with engine.begin() as connection:
                connection.execute(text("ALTER TABLE ingestion_runs_gone RENAME TO ingestion_runs"))
    finally:
        engine.dispose()
    for path in ["/web/runs", "/web/stuck", "/web/proof"]:
        assert 'id="verify-banner"' in client.get(path).text, path


def test_the_red_banner_is_for_readers_only(client: TestClient, db_url: str) -> None:
    """Whether the ledger failed verify is the readers' to know: the login page and an error
    page showed the banner, with the count of problems, to anyone who reached the port."""
    log_in(client, "reader")
    tamper(db_url)
    assert 'id="verify-banner"' in client.get("/web/integrity").text
    client.cookies.clear()
    for path in ["/web/login", "/web/nowhere"]:
        assert 'id="verify-banner"' not in client.get(path).text, path
    log_in(client, "operator")  # logged in, but without the read scope
    assert 'id="verify-banner"' not in client.get("/web/runs").text


def test_a_run_whose_stored_payload_cannot_be_read_shows_its_timeline(
    client: TestClient, db_url: str, demo: dict[str, int]
) -> None:
    """A hostile DBA's row that is not JSON: the run's page is its timeline with that event
    marked (its hash check fails, its summary says it cannot be read), which is what an auditor
    opens the page for. It was a 400 "Invalid request: after: …", naming a parameter nobody
    gave."""
    log_in(client, "reader")
    run = demo["hostile"]
    last = Ledger.from_url(db_url).read_run(run)[-1].position
    engine = create_engine(db_url)
    try:
        drop_triggers(engine)
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE ledger_events SET payload = '{not json' WHERE position = :p"),
                {"p": last},
            )
    finally:
        engine.dispose()
    page = client.get(f"/web/runs/{run}")
    assert page.status_code == 200, page.text
    assert "cannot read" in page.text
    assert "✗ mismatch" in page.text


def test_an_as_of_ahead_of_the_clock_is_now(client: TestClient, db_url: str) -> None:
    """``?as_of=`` tomorrow is no history yet: the page stands now. The Stuck page judged the
    runs at tomorrow (a run started a minute ago was "stuck, silent for 1 d"), and links kept
    the future time, so that the next page or the download moved on with every append."""
    log_in(client, "reader")
    ledger = Ledger.from_url(db_url)
    try:
        ledger.append([RunStarted(source_id=9, connector_name="just-started")])
    finally:
        ledger.close()
    tomorrow = (utcnow() + timedelta(days=1)).isoformat()
    stuck = client.get("/web/stuck", params={"as_of": tomorrow})
    assert stuck.status_code == 200, stuck.text
    assert "just-started" not in stuck.text
    assert "night-batch" in stuck.text  # silent for two hours: stuck now, as it should be
    proof = client.get("/web/proof", params={"as_of": tomorrow}).text
    download = re.search(r'href="/web/proof\.md\?as_of=([^"]+)"', proof)
    assert download, proof
    shown = parse_as_of(unquote(download.group(1)), None)
    assert shown is not None
    assert shown <= utcnow()


def test_an_unexpected_error_of_a_page_is_the_error_page_not_a_bare_500(
    client: TestClient, demo: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page that raised anything but a library error was answered by Starlette's plain-text
    "Internal Server Error": the web view's 500 is its error page, with its headers, saying
    no more than the API's 500 (the server's log has the traceback)."""
    import service.web.runs

    def broken(*_args: object, **_kwargs: object) -> None:
        raise TypeError("an unforeseen bug")

    log_in(client, "reader")
    monkeypatch.setattr(service.web.runs, "audit_page", broken)
    page = client.get(f"/web/runs/{demo['open']}")
    assert page.status_code == 500, page.text[:300]
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert "Internal error" in page.text
    assert "unforeseen" not in page.text
