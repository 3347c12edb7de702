"""The login page reached from another site's link, on SQLite and MariaDB. The session cookie
is SameSite=Strict, so a browser withholds it from a navigation another site starts (a link
to a run in a ticket, as the issue wants pages linked): a reader logged in landed on the
login page and was asked for a token again, and reloading it did not help. The page now
offers the page asked for as a link of this site, which a browser follows with the cookie
(tests/service/web/test_browser.py shows it in Chromium)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.service.web.support import demo_web_client, log_in

CROSS_SITE = {"Sec-Fetch-Site": "cross-site"}


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with demo_web_client(db_url, tmp_path / "spool") as test_client:
        yield test_client


def test_a_link_from_another_site_offers_the_page_it_asked_for(client: TestClient) -> None:
    # What a browser without the cookie does: the page sends it to the login page.
    sent = client.get("/web/runs/1?at_position=2", headers=CROSS_SITE, follow_redirects=False)
    assert sent.status_code == 303
    page = client.get(sent.headers["location"], headers=CROSS_SITE)
    assert page.status_code == 200
    assert 'id="from-another-site"' in page.text
    assert '<a href="/web/runs/1?at_position=2" id="open-page">' in page.text
    assert 'name="token"' in page.text  # the form as before, for one not logged in


@pytest.mark.parametrize(
    "headers",
    [{}, {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}],
    ids=["no-fetch-metadata", "same-origin", "typed-in"],
)
def test_the_offer_is_only_for_a_navigation_from_another_site(
    client: TestClient, headers: dict[str, str]
) -> None:
    """From this site, or typed in, the browser sent whatever cookie it had: no session is
    none, and the page says nothing of one."""
    page = client.get("/web/login", params={"next": "/web/runs/1"}, headers=headers)
    assert "from-another-site" not in page.text


def test_no_offer_without_a_page_asked_for_or_once_logged_in(client: TestClient) -> None:
    assert "from-another-site" not in client.get("/web/login", headers=CROSS_SITE).text
    log_in(client, "reader")
    page = client.get("/web/login", params={"next": "/web/runs/1"}, headers=CROSS_SITE)
    assert "from-another-site" not in page.text


def test_the_offered_link_never_leaves_the_web_view(client: TestClient) -> None:
    page = client.get("/web/login", params={"next": "//evil.example/x"}, headers=CROSS_SITE)
    assert '<a href="/web/runs" id="open-page">' in page.text
    assert "evil" not in page.text
