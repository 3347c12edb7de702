"""``ledger import-legacy`` knows the runs it imported by their RunStarted's event id: a run of
the ledger with a legacy row's id is refused before anything is appended, even one that has
the row's source, connector and start second, and a re-run of the import is recognised."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner
from freezegun import freeze_time

from ledger import Ledger, RunStarted
from service.cli import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "legacy_ingestion_runs.sql"


def legacy_source(folder: Path) -> str:
    path = folder / "legacy.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(EXAMPLE.read_text(encoding="utf-8"))
    return f"sqlite:///{path}"


def test_a_run_that_only_looks_imported_is_refused_before_appending(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    source = legacy_source(tmp_path)
    with freeze_time(datetime(2025, 11, 3, 1, 0, 0, 400_000, tzinfo=UTC)):
        ledger.append([RunStarted(run_id=1001, source_id=1, connector_name="SOURCE_1")])
    head = ledger.head().last_position
    result = CliRunner().invoke(cli, ["import-legacy", "--from-url", source, "--db", db_url])
    assert result.exit_code == 2, result.output
    assert "1001" in result.stderr
    assert "RunStarted may appear only once" not in result.stderr
    assert ledger.head().last_position == head


def test_a_second_import_is_recognised_as_a_retry(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    source = legacy_source(tmp_path)
    first = CliRunner().invoke(cli, ["import-legacy", "--from-url", source, "--db", db_url])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli, ["import-legacy", "--from-url", source, "--db", db_url])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert (summary["imported"], summary["already_imported"]) == (0, 6)


def test_a_row_changed_since_it_was_imported_is_refused_before_appending(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    """Row 1006 renamed and a new row 1000 added after a first import: the second import
    refuses 1006 up front (it failed half-way with an event_id reused for another fact)."""
    source = legacy_source(tmp_path)
    first = CliRunner().invoke(cli, ["import-legacy", "--from-url", source, "--db", db_url])
    assert first.exit_code == 0, first.output
    with sqlite3.connect(tmp_path / "legacy.db") as conn:
        conn.execute("UPDATE ingestion_runs SET connectorName = 'SOURCE_9' WHERE id = 1006")
        conn.execute(
            "INSERT INTO ingestion_runs SELECT 1000, sourceId, connectorName, startedAt, "
            "completedAt, duration, status, recordsFetched, recordsCreated, recordsUpdated, "
            "recordsSkipped, claimsCreated, errorMessage, errorDetails, coverageCellsUpdated, "
            "createdAt FROM ingestion_runs WHERE id = 1001"
        )
    head = ledger.head().last_position
    again = CliRunner().invoke(cli, ["import-legacy", "--from-url", source, "--db", db_url])
    assert again.exit_code == 2, again.output
    assert "legacy run id(s) 1006 already exist" in again.stderr
    assert ledger.head().last_position == head
