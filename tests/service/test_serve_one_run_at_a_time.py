"""One run of a connector at a time in a serve process: the run at start and the interval's
first tick are two scheduler jobs, and a start a few milliseconds before a tick's boundary made
both run at once (each claimed its own tick, and the second's open-run check came before the
first's RunStarted was committed): two runs of one source, and only one ended at SIGTERM."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest
from freezegun import freeze_time

from connectors import SAMPLE_CSV
from ledger import Ledger
from ledger.clock import utcnow
from ledger.rules import OPEN
from service.claims import TICK_ORIGIN, interval_tick
from service.config import ConnectorConfig, LedgerConfig
from service.serve import LedgerService

MINUTE = timedelta(minutes=1)
WAIT_S = 60.0


def every_minute(db_url: str) -> LedgerConfig:
    return LedgerConfig.model_validate(
        {
            "database_url": db_url,
            "connectors": [
                {
                    "name": "minutely",
                    "type": "csv",
                    "source_id": 1,
                    "schedule": {"interval": "1m"},
                    "options": {"path": str(SAMPLE_CSV), "key": "id"},
                }
            ],
        }
    )


def test_the_run_at_start_and_the_first_tick_never_run_at_once(
    ledger: Ledger, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = every_minute(db_url)
    (connector,) = config.connectors
    # In the past of the database's clock (the skew guard refuses events from its future).
    tick = interval_tick(utcnow() - timedelta(hours=1), MINUTE, TICK_ORIGIN)
    caplog.set_level(logging.INFO, logger="service.serve")
    with freeze_time(tick + MINUTE - timedelta(milliseconds=10)) as clock:
        service = LedgerService(config)
        starting, go = threading.Event(), threading.Event()
        run_connector = service.connector_jobs._run_connector
        calls = 0

        def slow_first_start(connector: ConnectorConfig, name: str) -> None:
            """The run at start, held between its open-run check and its RunStarted."""
            nonlocal calls
            calls += 1
            if calls == 1:
                starting.set()
                assert go.wait(WAIT_S)
            run_connector(connector, name)

        service.connector_jobs._run_connector = slow_first_start  # type: ignore[method-assign]
        at_start = threading.Thread(target=service.connector_jobs.tick, args=(connector,))
        try:
            at_start.start()
            assert starting.wait(WAIT_S)
            clock.tick(timedelta(milliseconds=20))  # the first tick of the interval's grid
            service.connector_jobs.tick(connector)
        finally:
            go.set()
            at_start.join(WAIT_S)
            service.ledger.close()
            service.scrape_ledger.close()
            service.shutdown_ledger.close()
    assert not at_start.is_alive()
    started = [event for event in ledger.read_all() if event.type == "RunStarted"]
    assert len(started) == 1
    assert any(
        "tick skipped, its previous run is still going" in record.getMessage()
        for record in caplog.records
    )
    assert not ledger.runs(state=OPEN)  # the one run ended, nothing left open
