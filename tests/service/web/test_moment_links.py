"""Links that page through the web view keep the moment the page stands at: the page it leads
to shows the same history, judged at the same time, under the same banner."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from fastapi.testclient import TestClient
from freezegun import freeze_time

from ledger import Ledger, RunProgressed, RunStarted
from ledger.clock import isoformat_utc
from projections import Projector
from service.api import create_app
from service.web.state import PAGE_SIZE
from tests.service.web.support import log_in, web_config

STARTED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# An hour and five minutes after the runs started: past the default stale_after (60m).
AS_OF = STARTED + timedelta(minutes=65)


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    """PAGE_SIZE + 1 runs started at STARTED (the oldest is alone on the second page), then,
    ten minutes later, a heartbeat of the newest: the last event recorded before AS_OF."""
    with freeze_time(STARTED):
        ledger = Ledger.from_url(db_url)
        try:
            runs = ledger.append(
                [RunStarted(source_id=1, connector_name="silent") for _ in range(PAGE_SIZE + 1)]
            ).allocated_run_ids
        finally:
            ledger.close()
    with freeze_time(STARTED + timedelta(minutes=10)):
        ledger = Ledger.from_url(db_url)
        try:
            ledger.append([RunProgressed(run_id=runs[-1])])
            Projector(ledger).run_once()
        finally:
            ledger.close()
    app = create_app(web_config(db_url))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    app.state.web.close()
    app.state.api.close()


def older_link(page: str) -> str:
    found = re.search(r'<a href="([^"]+)" rel="next" id="next-page">', page)
    assert found, page
    return unescape(found.group(1))


def test_the_older_runs_link_keeps_an_as_of_time(client: TestClient) -> None:
    """The runs page as of a time linked its older runs as of the *position* recorded last
    by then: the next page stood at that event's time (ten minutes after the start here, not
    65), under another banner, and the oldest run, silent 65 minutes at the moment asked for
    (the Stuck page lists it), was not highlighted as stuck there."""
    log_in(client, "reader")
    as_of = isoformat_utc(AS_OF)
    first = client.get("/web/runs", params={"as_of": as_of})
    assert first.status_code == 200
    # All but the newest (its heartbeat: 55 minutes silent then).
    assert first.text.count('<tr class="stuck"') == PAGE_SIZE - 1
    link = older_link(first.text)
    assert "as_of=" in link
    assert "at_position" not in link
    second = client.get(link)
    assert second.status_code == 200
    assert second.text.count('<tr class="stuck"') == 1  # the oldest, stuck then as well
    banner = re.search(r'<div class="banner asof".*?</div>', second.text, re.S)
    assert banner
    assert "2026-03-01 13:05:00" in banner.group(0)


def test_back_to_now_opens_the_same_page_live(client: TestClient) -> None:
    """The as-of banner's "Back to now" opened the runs list from every page but the menu's
    four, without its filters: from a run as of a moment, the run was lost."""
    log_in(client, "reader")
    as_of = isoformat_utc(AS_OF)
    pages = {
        f"/web/runs/1?as_of={as_of}&after=1": "/web/runs/1",
        "/web/runs?at_position=3&status=running&connector=silent&before=40": (
            "/web/runs?status=running&amp;connector=silent"
        ),
        "/web/stuck?at_position=3": "/web/stuck",
        "/web/proof?at_position=3": "/web/proof",
        "/web/integrity?at_position=3": "/web/integrity",
    }
    for url, live in pages.items():
        page = client.get(url)
        assert page.status_code == 200, (url, page.text[:300])
        assert f'<a href="{live}" id="back-to-now">Back to now</a>' in page.text, url
        assert client.get(unescape(live)).status_code == 200
