"""Query parameters a hostile user types into the web view's URLs: every one is an error page
of the 4xx kind, never a 500 (which the issue forbids: no traceback reaches a client)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.guard import _content_length
from tests.service.support import LOOSE_INTEGERS, integer_parameters, with_integer
from tests.service.web.support import demo_web_client, log_in

# "²" and "①" are str.isdigit() but not int(); "١" (Arabic-Indic one) is int() but not ASCII.
ODD_DIGITS = ["%C2%B2", "%E2%91%A0", "%D9%A1", "1%C2%B2"]


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with demo_web_client(db_url, tmp_path / "spool") as test_client:
        yield test_client


@pytest.mark.parametrize("digits", ODD_DIGITS)
def test_non_ascii_digits_are_a_400_page_not_a_500(client: TestClient, digits: str) -> None:
    log_in(client, "reader")
    for path in (
        f"/web/runs?at_position={digits}",
        f"/web/runs?source={digits}",
        f"/web/runs/1?at_position={digits}",
        f"/web/stuck?at_position={digits}",
        f"/web/proof?at_position={digits}",
        f"/web/integrity?at_position={digits}",
    ):
        answer = client.get(path)
        assert answer.status_code == 400, (path, answer.status_code, answer.text[:300])
        assert answer.headers["content-type"].startswith("text/html")
        assert "Traceback" not in answer.text


def test_an_integer_in_a_page_url_is_ascii_digits_only_never_another_run(
    client: TestClient,
) -> None:
    """``/web/runs/1_0`` showed run 10: every integer a page takes (its route's path and
    query, walked from the app's routes, and those it reads itself: at_position, source) is
    the error page for any spelling but ASCII digits, naming the parameter."""
    csrf = log_in(client, "oncall")
    urls: list[tuple[str, str, str, dict[str, str]]] = []
    for path, method, name in integer_parameters(client.app):
        if not path.startswith("/web/"):
            continue
        for loose in LOOSE_INTEGERS:
            url, params = with_integer(path, name, loose)
            urls.append((method, url, name, params))
    assert {url for _, url, _, _ in urls} >= {"/web/runs", "/web/runs/1_0", "/web/runs/1"}
    for page in ("/web/runs", "/web/runs/1", "/web/stuck", "/web/proof", "/web/integrity"):
        urls.extend(("GET", page, "at_position", {"at_position": n}) for n in LOOSE_INTEGERS)
    urls.extend(("GET", "/web/runs", "source", {"source": n}) for n in LOOSE_INTEGERS)
    for method, url, name, params in urls:
        form = {"reason": "a test", "csrf": csrf} if method == "POST" else None
        answer = client.request(method, url, params=params, data=form, follow_redirects=False)
        assert answer.status_code == 400, (method, url, params, answer.text[:300])
        assert answer.headers["content-type"].startswith("text/html")
        assert f"{name}: " in answer.text, (method, url, params, answer.text)
    assert client.get("/web/runs/01").status_code == 200  # ASCII digits: still a number


def test_a_content_length_of_odd_digits_is_not_read_as_a_number() -> None:
    """The guard reads Content-Length itself (h11 refuses "²" first; another HTTP parser may
    not): a header it cannot read is no limit check and no ValueError, i.e. no 500."""
    assert _content_length({"headers": [(b"content-length", "\u00b2".encode("latin-1"))]}) is None
    assert _content_length({"headers": [(b"content-length", b"12")]}) == 12


def test_logout_ends_the_session_even_for_a_copy_of_its_cookie(client: TestClient) -> None:
    """A signed cookie stays valid until it expires; a logout must end it server-side, or a
    copy taken before (a shared machine, a proxy log) reads on for the session's lifetime."""
    csrf = log_in(client, "reader")
    stolen = client.cookies.get("ledger_web_session")
    assert stolen
    out = client.post("/web/logout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303
    client.cookies.clear()
    client.cookies.set("ledger_web_session", stolen)  # the copy, replayed
    replay = client.get("/web/runs", follow_redirects=False)
    assert replay.status_code == 303, replay.text[:300]
    assert replay.headers["location"].startswith("/web/login")
    client.cookies.clear()
    log_in(client, "reader")  # a fresh login works
    assert client.get("/web/runs", follow_redirects=False).status_code == 200


def test_an_integer_with_thousands_of_leading_zeros_is_its_number_not_a_500(
    client: TestClient,
) -> None:
    """``url_integer`` bounded the digits after the zeros but handed the whole text to
    ``int()``, which refuses more than 4,300 digits with a ValueError: ``?at_position=000…01``
    was the 500 page. ASCII digits are a number however many zeros lead them."""
    log_in(client, "reader")
    zeros = "0" * 5000
    for path in (
        f"/web/runs?at_position={zeros}1",
        f"/web/runs/1?at_position={zeros}1",
    ):
        answer = client.get(path)
        assert answer.status_code == 200, (path[:40], answer.status_code, answer.text[:300])
    assert client.get(f"/web/runs?at_position={zeros}").status_code == 200  # position 0


def test_a_refused_value_is_repeated_short(client: TestClient) -> None:
    """A page repeated a refused ``at_position`` whole: 50,000 digits came back in the 400 page
    (``source`` and ``status`` have a length bound of their own)."""
    log_in(client, "reader")
    for url in (
        "/web/runs?at_position=" + "9" * 50_000,
        "/web/runs/1?at_position=" + "x" * 50_000,
        "/web/runs?source=" + "x" * 50_000,
        "/web/runs?status=" + "y" * 50_000,
    ):
        page = client.get(url)
        assert page.status_code == 400, url[:40]
        assert len(page.text) < 2_000, (url[:40], len(page.text))


def test_many_query_parameters_cost_no_more_than_reading_them(client: TestClient) -> None:
    """The repeated-parameter check, made before the session's, asked the query for each
    name's values in turn: 12,000 names (60 KB) took 6 s of CPU, from anyone not logged in."""
    names = "&".join(f"{number:x}" for number in range(12_000))
    began = time.monotonic()
    answer = client.get(f"/web/runs?{names}&f&a", follow_redirects=False)
    took = time.monotonic() - began
    assert answer.status_code == 400, answer.text[:300]
    assert "each query parameter may be given once: a, f" in answer.text
    assert took < 2.0, f"{took:.1f} s for 12,000 query parameters"
