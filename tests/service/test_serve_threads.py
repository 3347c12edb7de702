"""Serve's jobs beside many long runs, and after a wall clock stepped back. Long runs: the
projector, the sweeper and the spool flush ran in the scheduler's one pool of 10 threads,
shared with every connector's runs. Ten runs still going (a backfill, sources that are slow or
hang until ``max_run_time``) took every thread: the projector applied nothing (its lag grew for
as long as the runs went on), the sweeper timed nothing out, the spool was not flushed, an
eleventh connector never started, and nothing was logged. The service's jobs now have threads
of their own, and every enabled connector can run at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import freezegun.api
import pytest
from freezegun import freeze_time

from ledger import Ledger
from ledger.clock import utcnow
from projections.checkpoints import read_checkpoint
from projections.schema import PROJECTION_NAME
from service import clock_steps
from service.config import LedgerConfig
from service.serve import LedgerService
from tests.net_support import JsonServer

WAIT_S = 60.0
# One more connector than APScheduler's default pool has threads.
CONNECTORS = 11


def wait_for(condition: Any, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        threading.Event().wait(0.05)


def checkpoint(ledger: Ledger) -> int:
    with ledger.engine.connect() as conn:
        return read_checkpoint(conn, PROJECTION_NAME).position


@pytest.fixture
def hanging_source() -> Iterator[tuple[str, set[str]]]:
    """A JSON source whose every call hangs until the test ends; the set of the connectors
    whose run is in that call (named by the ``who`` query parameter)."""
    release = threading.Event()
    calling: set[str] = set()

    def slow(query: dict[str, str], _call: int) -> tuple[int, Any]:
        calling.add(query["who"])
        release.wait(WAIT_S * 2)
        return 200, []

    with JsonServer({"/slow": slow}) as api:
        try:
            yield f"{api.base}/slow", calling
        finally:
            release.set()


def test_long_runs_of_many_connectors_leave_the_projector_and_sweeper_their_threads(
    ledger: Ledger, db_url: str, hanging_source: tuple[str, set[str]]
) -> None:
    url, calling = hanging_source
    config = LedgerConfig.model_validate(
        {
            "database_url": db_url,
            "projector": {"interval": "1s"},
            "sweeper": {"interval": "1h"},
            "serve": {"grace_period": "1s"},
            "connectors": [
                {
                    "name": f"slow{n}",
                    "type": "http-json",
                    "source_id": n,
                    "schedule": {"interval": "1h"},
                    "options": {
                        "url": f"{url}?who=slow{n}",
                        "single_page": True,
                        "timeout": WAIT_S * 2,
                        "retries": 0,
                    },
                }
                for n in range(1, CONNECTORS + 1)
            ],
        }
    )
    service = LedgerService(config)
    try:
        service.add_jobs()
        service.scheduler.start()
        wait_for(lambda: len(calling) >= CONNECTORS - 1, "ten runs to be in their source's call")
        # Meanwhile the sweeper ran at start, and the projector keeps following the ledger.
        wait_for(lambda: service.last_sweep_at is not None, "the sweep at start")
        head = ledger.head().last_position
        wait_for(lambda: checkpoint(ledger) >= head, f"the projector to reach position {head}")
        # Every connector's run is in its source's call at once: none waits for a thread.
        wait_for(lambda: len(calling) == CONNECTORS, "every connector's run to start")
    finally:
        service.shutdown()
    assert sum(e.type == "RunFinished" for e in ledger.read_all()) == CONNECTORS


def test_the_jobs_go_on_after_the_wall_clock_steps_back(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """APScheduler times its jobs on the wall clock: stepped back an hour (an NTP step on a
    host that booted with its clock ahead), every job, the projector's every second included,
    waited that hour. The monotonic clock is held to the real one, so only the wall clock
    steps (freezegun moves both)."""
    config = LedgerConfig.model_validate(
        {
            "database_url": db_url,
            "projector": {"interval": "1s"},
            "sweeper": {"interval": "1h"},
            "serve": {"run_at_start": False},
        }
    )
    ran: list[datetime] = []
    with freeze_time(datetime(2026, 1, 28, 10, 0, 0, tzinfo=UTC), tick=True) as clock:
        monkeypatch.setattr(
            clock_steps, "clock_offset", lambda: time.time() - freezegun.api.real_monotonic()
        )
        # The stepped clock in every thread: freezegun gives a thread's own frames real time.
        monkeypatch.setattr(freezegun.api, "call_stack_inspection_limit", 0)
        service = LedgerService(config)
        service.projector_job = lambda: ran.append(utcnow())  # type: ignore[method-assign]
        try:
            service.add_jobs()
            service.scheduler.start()
            wait_for(lambda: len(ran) >= 2, "the projector's first ticks")
            clock.move_to(datetime(2026, 1, 28, 9, 0, 0, tzinfo=UTC))
            stepped = len(ran)
            wait_for(lambda: len(ran) >= stepped + 2, "the projector's ticks after the step")
        finally:
            service.stop.set()
            service.scheduler.shutdown(wait=False)
            service.close_ledgers()
    assert ran[-1] < datetime(2026, 1, 28, 9, 1, tzinfo=UTC)  # on the clock's new time
    assert any("the wall clock stepped back 1h" in r.getMessage() for r in caplog.records)
