"""What the forensics tests share: a small history with a run the sweeper timed out and a late
fact, the ``ledger`` command run in process, and a legacy ``ingestion_runs`` table made like
the seed's (rows failed by the audit cleanup, a success, a run still running) to import."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from freezegun import freeze_time
from sqlalchemy import text

from benchmarks.child import LEGACY_DDL
from ledger import Ledger, RunFinished, RunProgressed, sweep
from projections import Projector
from service.cli import cli

AUDIT_CLEANUP = "Marked as failed during audit cleanup - run was stuck since 2026-01-28"


def history(ledger: Ledger) -> int:
    with freeze_time("2026-01-28 01:12:44"):
        first = ledger.start_run(1, "SOURCE_1")
        ledger.append([RunProgressed(run_id=first, records_fetched=15, records_created=10)])
        ledger.append([RunFinished(run_id=first, status="success")])
        second = ledger.start_run(2, "SOURCE_2")
    with freeze_time("2026-01-28 01:30:00"):
        ledger.append([RunProgressed(run_id=second, records_fetched=3)])
    with freeze_time("2026-02-01 23:33:44"):
        sweep(ledger)
        ledger.append([RunProgressed(run_id=second, records_fetched=2)])  # late
    Projector(ledger).run_once()
    return second


def run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# The legacy table as a SQLite database of the legacy system held it (the benchmark's too).
LEGACY_DDL_SQLITE = LEGACY_DDL


def seed_legacy_table(store: Ledger) -> None:
    """Made like the seed: ids 1-37 failed by the audit cleanup (duration NULL), a success
    with id 30002 and counters 15/10/3/2, and a row still running."""
    with store.engine.begin() as conn:
        if store.engine.dialect.name == "sqlite":
            conn.exec_driver_sql(LEGACY_DDL_SQLITE)
        else:
            ddl = (
                Path(__file__).resolve().parents[2] / "projections" / "ingestion_runs.mysql.sql"
            ).read_text()
            conn.exec_driver_sql("\n".join(line.split("--")[0] for line in ddl.splitlines()))
        insert = text(
            "INSERT INTO ingestion_runs (id, sourceId, connectorName, startedAt, completedAt, "
            "duration, status, recordsFetched, recordsCreated, recordsUpdated, recordsSkipped, "
            "errorMessage, errorDetails, createdAt) VALUES (:id, :src, :name, :started, "
            ":completed, :duration, :status, :f, :c, :u, :s, :error, :details, :started)"
        )
        rows = [
            dict(
                id=i,
                src=i % 2 + 1,
                name=f"SOURCE_{i % 2 + 1}",
                started=f"2026-01-28 01:12:{i:02d}",
                completed="2026-02-01 23:33:44",
                duration=None,
                status="failed",
                f=0,
                c=0,
                u=0,
                s=0,
                error=AUDIT_CLEANUP,
                details=None,
            )
            for i in range(1, 38)
        ]
        rows.append(
            dict(
                id=30002,
                src=99,
                name="test_connector_proof",
                started="2026-02-01 19:59:33",
                completed="2026-02-01 19:59:35",
                duration=2,
                status="success",
                f=15,
                c=10,
                u=3,
                s=2,
                error=None,
                details='{"proof": true}',
            )
        )
        rows.append(
            dict(
                id=30003,
                src=1,
                name="SOURCE_1",
                started="2026-02-02 10:00:00",
                completed=None,
                duration=None,
                status="running",
                f=4,
                c=0,
                u=0,
                s=0,
                error=None,
                details=None,
            )
        )
        conn.execute(insert, rows)
