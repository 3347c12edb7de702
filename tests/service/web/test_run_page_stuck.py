"""A run's page says the run is stuck from the ledger, as the Stuck page does: the projector
being down (the usual cause of stuck runs going unseen) must not hide it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ledger import Ledger, RunStarted
from ledger.clock import utcnow
from service.api import create_app
from tests.service.web.support import demo_with_open_run, log_in, web_config


@pytest.fixture
def unprojected(db_url: str, tmp_path: Path) -> int:
    """A run started two hours ago and silent since, which no projector has seen."""
    demo_with_open_run(db_url, tmp_path / "spool")
    ledger = Ledger.from_url(db_url)
    try:
        started = RunStarted(
            source_id=9, connector_name="unprojected", occurred_at=utcnow() - timedelta(hours=2)
        )
        run_id = ledger.append([started]).events[0].run_id
    finally:
        ledger.close()
    assert run_id is not None
    return run_id


@pytest.fixture
def client(db_url: str, unprojected: int) -> Iterator[TestClient]:
    app = create_app(web_config(db_url))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    app.state.web.close()
    app.state.api.close()


def test_a_stuck_run_without_a_row_is_stuck_on_its_page(
    client: TestClient, unprojected: int
) -> None:
    """The page asked whether the run was stuck only when the projection's row said
    "running": a run the projector never saw (no row) showed "running" from its timeline and
    no stuck badge, while the Stuck page listed it."""
    log_in(client, "reader")
    assert f'href="/web/runs/{unprojected}"' in client.get("/web/stuck").text
    page = client.get(f"/web/runs/{unprojected}")
    assert page.status_code == 200
    assert "No row: the projection is behind" in page.text
    assert '<span class="badge">stuck (stale)</span>' in page.text
