"""``ledger demo``: the whole story of the seed, on a fresh database, in a few seconds.

A real csv run on the shipped sample (success, non-zero counters), a run over bad rows
(partial), a run whose source raises (failed), a run left open as if its process had been
SIGKILLed two hours ago, then a sweep that times it out, the projection, and the proof report.
Idempotent: on a database where the demo already ran it appends nothing and shows the result.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from connectors import SAMPLE_CSV, Connector, CsvConnector, RunContext, Spool
from ledger import Ledger, RunStarted, StuckRun, sweep
from ledger.clock import utcnow
from ledger.migrate import upgrade
from ledger.schema import ledger_runs
from projections import Projector

SAMPLE_WITH_ERRORS = SAMPLE_CSV.parent / "records_with_errors.csv"
ORPHAN_SILENCE = timedelta(hours=2)
DEMO_THRESHOLD = timedelta(minutes=60)


class UnreachableSource(Connector):
    """A connector whose source refuses the connection: the run ends ``failed``."""

    name = "demo-api"

    def ingest(self, run: RunContext) -> None:
        run.progress(fetched=0)
        raise ConnectionRefusedError("api.example.invalid:443 refused the connection")


@dataclass(frozen=True)
class DemoResult:
    already_ran: bool
    success_run: int | None = None
    partial_run: int | None = None
    failed_run: int | None = None
    orphan_run: int | None = None
    swept: StuckRun | None = None


def run_demo(ledger: Ledger, spool_dir: Path | None = None) -> DemoResult:
    upgrade(ledger.engine, ledger.url)
    if _already_ran(ledger):
        Projector(ledger).run_once()
        return DemoResult(already_ran=True)
    spool = Spool(spool_dir or Path(tempfile.gettempdir()) / "run-ledger-demo-spool")
    options: dict[str, Any] = {"spool": spool, "trigger": "demo", "progress_interval": 0.0}
    success = CsvConnector(1, SAMPLE_CSV, name="demo-stations").run(ledger, **options)
    partial = CsvConnector(2, SAMPLE_WITH_ERRORS, name="demo-stations").run(ledger, **options)
    failed_run = None
    try:
        UnreachableSource(3).run(ledger, **options)
    except ConnectionRefusedError:
        failed_run = ledger.head().last_run_id
    # A run whose process was SIGKILLed two hours ago: RunStarted, then silence.
    orphan = (
        ledger.append(
            [
                RunStarted(
                    source_id=4,
                    connector_name="demo-nightly",
                    occurred_at=utcnow() - ORPHAN_SILENCE,
                    actor=f"connector:demo-nightly@{socket.gethostname()}:{os.getpid()}",
                    metadata={"trigger": "demo", "note": "its process was killed (simulated)"},
                )
            ]
        )
        .events[0]
        .run_id
    )
    swept = sweep(ledger, older_than=DEMO_THRESHOLD)
    Projector(ledger).run_once()
    found = next((run for run in swept.timed_out if run.run_id == orphan), None)
    return DemoResult(False, success.run_id, partial.run_id, failed_run, orphan, found)


def _already_ran(ledger: Ledger) -> bool:
    query = (
        select(ledger_runs.c.run_id).where(ledger_runs.c.connector_name == "demo-nightly").limit(1)
    )
    with ledger.engine.connect() as conn:
        return conn.execute(query).first() is not None


def demo_orphan(ledger: Ledger) -> int | None:
    query = (
        select(ledger_runs.c.run_id)
        .where(ledger_runs.c.connector_name == "demo-nightly")
        .order_by(ledger_runs.c.run_id)
    )
    with ledger.engine.connect() as conn:
        return conn.execute(query).scalar()
