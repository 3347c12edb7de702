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

from ledger import Ledger, RunFinished, RunStarted
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


def test_an_import_refused_for_a_time_ahead_leaves_the_run_id_allocator_where_it_was(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    """The clock skew guard refused the import ("nothing was appended") only inside the
    append, after the import had reserved its highest id for good: a legacy row at the
    highest run id left every later `ledger append` of a new run failing "run ids are
    exhausted". Checked first now, under the reservation's lock, it rolls the reservation
    back."""
    source = legacy_source(tmp_path)
    with sqlite3.connect(tmp_path / "legacy.db") as conn:
        conn.execute(
            "INSERT INTO ingestion_runs VALUES (2147483647, 1, 'SOURCE_1', "
            "'2027-06-01 00:00:00', NULL, NULL, 'running', 0, 0, 0, 0, 0, NULL, NULL, 0, "
            "'2027-06-01 00:00:00')"
        )
    before = ledger.head()
    with freeze_time("2026-02-01 12:00:00"):
        result = CliRunner().invoke(cli, ["import-legacy", "--from-url", source, "--db", db_url])
    assert result.exit_code == 2, result.output
    assert ledger.head() == before  # the allocator (last_run_id) too
    assert (
        "legacy row id 2147483647: occurred_at: 2027-06-01T00:00:00.000000Z is more than 5 "
        "minutes ahead of the ledger clock (2026-02-01T12:00:00.000000Z)" in result.stderr
    )
    assert "nothing was appended" in result.stderr
    assert ledger.start_run(1, "SOURCE_1") == 1


def test_an_import_refused_for_a_payload_over_the_limit_leaves_the_allocator_alone(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    """A fact over the limits of one event was refused by its batch's append, after the
    reservation (and after the batches before it): it is refused before anything is
    written, naming its legacy row."""
    source = legacy_source(tmp_path)
    with sqlite3.connect(tmp_path / "legacy.db") as conn:
        conn.execute(
            "UPDATE ingestion_runs SET errorDetails = ? WHERE id = 1003",
            (json.dumps({"trace": "x" * 1_100_000}),),
        )
    before = ledger.head()
    result = CliRunner().invoke(cli, ["import-legacy", "--from-url", source, "--db", db_url])
    assert result.exit_code == 2, result.output
    assert ledger.head() == before  # the allocator (last_run_id) too
    assert "legacy row id 1003: payload:" in result.stderr
    assert "nothing was appended" in result.stderr
    assert ledger.start_run(1, "SOURCE_1") == 1


def test_a_row_that_ended_since_its_run_was_closed_is_refused_before_reserving(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    """Run 1006, imported open, was closed by an operator; the legacy row then ended too, and
    a new row 5000 came: the second import would append a RunFinished after the run's
    RunFinished. Refused before anything is written, the allocator left below 5000."""
    source = legacy_source(tmp_path)
    first = CliRunner().invoke(cli, ["import-legacy", "--from-url", source, "--db", db_url])
    assert first.exit_code == 0, first.output
    ledger.append([RunFinished(run_id=1006, status="failed", error_message="closed by hand")])
    with sqlite3.connect(tmp_path / "legacy.db") as conn:
        conn.execute(
            "UPDATE ingestion_runs SET status = 'success', "
            "completedAt = '2025-11-05 03:10:00' WHERE id = 1006"
        )
        conn.execute(
            "INSERT INTO ingestion_runs SELECT 5000, sourceId, connectorName, startedAt, "
            "completedAt, duration, status, recordsFetched, recordsCreated, recordsUpdated, "
            "recordsSkipped, claimsCreated, errorMessage, errorDetails, coverageCellsUpdated, "
            "createdAt FROM ingestion_runs WHERE id = 1001"
        )
    before = ledger.head()
    again = CliRunner().invoke(cli, ["import-legacy", "--from-url", source, "--db", db_url])
    assert again.exit_code == 2, again.output
    assert ledger.head() == before  # the allocator (last_run_id) too
    assert "legacy row id 1006 changed since it was imported: RunFinished after" in again.stderr
    assert "nothing was appended" in again.stderr
    assert ledger.start_run(1, "SOURCE_1") == 1007
