"""``ledger demo``: the whole story of the seed, on a fresh database, in a few seconds.

A real csv run on the shipped sample (success, non-zero counters), a run over bad rows
(partial), a run whose source raises (failed), a run left open as if its process had been
SIGKILLed two hours ago, then a sweep that times it out, the projection, and the proof report.
Idempotent: on a database where the demo already ran it appends nothing and shows the result.

It never touches a real ledger: before migrating or writing anything it refuses a database that
holds anything but the demo's own runs (:func:`check_demo_database`), and its sweep times out
only its own run.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, inspect

import connectors.schema  # noqa: F401 (its tables are run-ledger's own)
import service.schema  # noqa: F401 (its tables are run-ledger's own)
from connectors import SAMPLE_CSV, Connector, CsvConnector, RunContext, Spool
from connectors.sdk import connector_actor
from forensics.audit import TimelineEntry, audit_run
from forensics.report import build_report
from ledger import ConfigurationError, Ledger, RunStarted, StuckRun, sweep
from ledger.clock import utcnow
from ledger.database import version_rows
from ledger.reads import count_events, first_events
from ledger.schema import (
    LEGACY_TABLE,
    REVISIONS,
    SHARED_VERSION_TABLE,
    VERSION_TABLE,
    metadata,
)
from ledger.urls import mask_url
from migrations.runner import upgrade
from projections import Projector
from projections.schema import OLD, SHADOW

SAMPLE_WITH_ERRORS = SAMPLE_CSV.parent / "records_with_errors.csv"
ORPHAN_SILENCE = timedelta(hours=2)
DEMO_THRESHOLD = timedelta(minutes=60)
DEMO_TRIGGER = "demo"
# Every run the demo ever made: one of these connectors, with trigger "demo" in RunStarted's
# metadata (what every version of the demo wrote, so older demo databases are recognised).
DEMO_CONNECTORS = frozenset({"demo-stations", "demo-api", "demo-nightly"})
# A demo database holds 4 runs (a few more if a demo was interrupted and run again); one with
# more is not a demo's, and is refused without reading it all.
MOST_DEMO_RUNS = 40


class DemoRefusedError(ConfigurationError):
    """The database holds someone else's data: the demo writes nothing to it."""


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
    check_demo_database(ledger)
    upgrade(ledger)
    if _already_ran(ledger):
        Projector(ledger).run_once()
        return DemoResult(already_ran=True)
    spool = Spool(spool_dir or Path(tempfile.gettempdir()) / "run-ledger-demo-spool")
    options: dict[str, Any] = {"spool": spool, "trigger": DEMO_TRIGGER, "progress_interval": 0.0}
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
                    actor=connector_actor("demo-nightly", socket.gethostname(), os.getpid()),
                    metadata={
                        "trigger": DEMO_TRIGGER,
                        "note": "its process was killed (simulated)",
                    },
                )
            ]
        )
        .events[0]
        .run_id
    )
    swept = sweep(ledger, older_than=DEMO_THRESHOLD, run_ids={orphan})  # no one else's run
    Projector(ledger).run_once()
    found = next((run for run in swept.timed_out if run.run_id == orphan), None)
    return DemoResult(False, success.run_id, partial.run_id, failed_run, orphan, found)


def check_demo_database(ledger: Ledger) -> None:
    """Refuse, before anything is created or written, a database that is neither empty nor the
    demo's own: one with tables run-ledger does not own, a legacy ``ingestion_runs`` (moved or
    not), or events of any run the demo did not make."""
    with ledger.connect("demo") as conn:
        catalogue = inspect(conn)
        tables = set(catalogue.get_table_names()) | set(catalogue.get_view_names())
        if not tables:
            return
        if "ledger_events" not in tables:
            _refuse(ledger, f"holds tables but no ledger ({_some(tables)})")
        foreign = {t for t in tables if t.removesuffix(SHADOW).removesuffix(OLD) not in _OWN_TABLES}
        if SHARED_VERSION_TABLE in tables and _others_revisions(conn):
            foreign.add(SHARED_VERSION_TABLE)  # another application's Alembic revision
        if foreign:
            _refuse(ledger, f"holds tables that are not run-ledger's ({_some(foreign)})")
        if LEGACY_TABLE in tables and _rows(conn, LEGACY_TABLE):
            _refuse(ledger, f"holds a legacy ingestion_runs table ({LEGACY_TABLE})")
        own = _demo_runs(ledger, conn)
        others = count_events(conn, except_runs=own)
        if others:
            _refuse(ledger, f"holds {others} event(s) of runs the demo did not make")


# Tables of the schema `ledger migrate` creates (every module's tables are on one MetaData),
# and alembic_version, where releases before 2026-12-07 kept the revision (if it holds no
# other application's).
_OWN_TABLES = frozenset(metadata.tables) | {VERSION_TABLE, SHARED_VERSION_TABLE, LEGACY_TABLE}


def _others_revisions(conn: Connection) -> bool:
    rows = version_rows(conn, SHARED_VERSION_TABLE)
    if rows is None:  # not a version table of Alembic's: another application's table
        return True
    return any(revision not in REVISIONS for revision in rows)


def _demo_runs(ledger: Ledger, conn: Connection) -> list[int]:
    """The runs the demo made; a run it did not make refuses the database. A run's version 1
    is its RunStarted (I5)."""
    starts = first_events(conn, MOST_DEMO_RUNS + 1)
    if len(starts) > MOST_DEMO_RUNS:
        _refuse(ledger, f"holds more than {MOST_DEMO_RUNS} runs: more than the demo ever makes")
    own: list[int] = []
    for event in starts:
        data = event.payload_data if event.type == "RunStarted" else {}
        name = data.get("connector_name")
        trigger = (data.get("metadata") or {}).get("trigger")
        if name not in DEMO_CONNECTORS or trigger != DEMO_TRIGGER:
            _refuse(ledger, f"holds events other than the demo's (run {event.run_id}, {name!r})")
        own.append(event.run_id)
    return own


def _rows(conn: Connection, table: str) -> bool:
    quoted = conn.dialect.identifier_preparer.quote(table)
    return conn.exec_driver_sql(f"SELECT 1 FROM {quoted} LIMIT 1").first() is not None


def _some(names: set[str]) -> str:
    shown = sorted(names)[:3]
    return ", ".join(shown) + (f" and {len(names) - len(shown)} more" if len(names) > 3 else "")


def _refuse(ledger: Ledger, why: str) -> None:
    raise DemoRefusedError(
        f"the demo will not write to {mask_url(ledger.url)}: it {why}; the demo runs only on an "
        "empty database or one it made itself (give --db a new one)"
    )


def _already_ran(ledger: Ledger) -> bool:
    return demo_orphan(ledger) is not None


def demo_orphan(ledger: Ledger) -> int | None:
    """The run the demo left open as if its process had been killed (None before the demo)."""
    runs = ledger.runs(connector_name="demo-nightly", limit=1)
    return runs[0].run_id if runs else None


# --- what `ledger demo` shows, in one call


@dataclass(frozen=True)
class DemoStory:
    """The demo's runs, the proof report after them, and the killed run's audit timeline."""

    result: DemoResult
    proof: dict[str, Any]  # forensics.report.build_report's
    orphan: int | None
    timeline: list[TimelineEntry]


def tell_demo(ledger: Ledger) -> DemoStory:
    """Run the demo (or find it already run), then read the proof report and the timeline."""
    result = run_demo(ledger)
    proof = build_report(ledger)
    orphan = demo_orphan(ledger)
    return DemoStory(result, proof, orphan, audit_run(ledger, orphan) if orphan else [])
