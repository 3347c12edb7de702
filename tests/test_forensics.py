"""Forensics and proof (issue 6): verify, audit, report, legacy import and the demo, on SQLite
and on MariaDB."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from sqlalchemy import text

from ledger import Ledger, RunFinished, RunProgressed, RunStarted, sweep
from ledger.migrate import upgrade
from ledger_cli import cli
from projections import Projector, rebuild
from projections.audit import audit_run
from projections.report import build_report, report_passed
from projections.verification import verify_all
from tests import support
from tests.projection_support import table_rows
from tests.support import drop_triggers

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


# ---------------------------------------------------------------- verify


def test_verify_is_clean_on_honest_history(ledger: Ledger, db_url: str) -> None:
    history(ledger)
    report = verify_all(ledger)
    assert report.ok, report.problems
    assert (report.events, report.runs) == (7, 2)
    result = run("verify", "--db", db_url)
    assert result.exit_code == 0  # type: ignore[attr-defined]


def test_verify_catches_an_event_altered_with_the_triggers_dropped(
    ledger: Ledger, db_url: str
) -> None:
    history(ledger)
    drop_triggers(ledger.engine)
    with ledger.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE ledger_events SET payload = REPLACE(payload, '15', '150') "
                "WHERE position = 2"
            )
        )
    report = verify_all(ledger)
    chain = report.by_check("chain")
    assert chain
    assert chain[0].position == 2
    result = run("verify", "--format", "json", "--db", db_url)
    assert result.exit_code == 1  # type: ignore[attr-defined]
    problems = json.loads(result.stdout)["problems"]  # type: ignore[attr-defined]
    assert {"check": "chain", "position": 2}.items() <= problems[0].items()


def test_verify_catches_a_deleted_event(ledger: Ledger) -> None:
    history(ledger)
    drop_triggers(ledger.engine)
    with ledger.engine.begin() as conn:  # run 1's progress, from the middle of its stream
        conn.execute(text("DELETE FROM ledger_events WHERE position = 2"))
    report = verify_all(ledger)
    assert report.by_check("chain")[0].position == 2
    (gap,) = report.by_check("streams")
    assert (gap.run_id, gap.position) == (1, 3)
    assert "version 3 where 2 was due" in gap.message


def test_verify_catches_a_deleted_last_event_through_the_registry(ledger: Ledger) -> None:
    history(ledger)
    drop_triggers(ledger.engine)
    with ledger.engine.begin() as conn:  # run 1's RunFinished: its stream still looks whole
        conn.execute(text("DELETE FROM ledger_events WHERE position = 3"))
    report = verify_all(ledger)
    assert report.by_check("chain")[0].position == 3
    columns = {p.column for p in report.by_check("registry") if p.run_id == 1}
    assert {"version", "state"} <= columns


def test_verify_catches_the_legacy_audit_cleanup_update(ledger: Ledger, db_url: str) -> None:
    second = history(ledger)
    with ledger.engine.begin() as conn:  # what the audit did to the legacy table
        conn.execute(
            text(
                "UPDATE ingestion_runs SET status = 'failed', completedAt = "
                "'2026-02-01 23:33:44', errorMessage = :m WHERE id = 1"
            ),
            {"m": AUDIT_CLEANUP},
        )
    report = verify_all(ledger)
    projection = report.by_check("projection")
    assert {p.column for p in projection} >= {"status", "completedAt", "errorMessage"}
    assert all(p.run_id == 1 for p in projection)
    assert not report.by_check("chain")
    text_out = run("verify", "--db", db_url).stdout  # type: ignore[attr-defined]
    assert "ingestion_runs id 1: status is 'failed', the events give 'success'" in text_out
    assert not [p for p in projection if p.run_id == second]


# ---------------------------------------------------------------- audit


def test_audit_shows_the_timeline_silences_and_late_facts(ledger: Ledger, db_url: str) -> None:
    second = history(ledger)
    timeline = audit_run(ledger, second)
    assert [e.event.type for e in timeline] == [
        "RunStarted",
        "RunProgressed",
        "RunTimedOut",
        "RunProgressed",
    ]
    assert [e.status_after for e in timeline] == ["running", "running", "failed", "failed"]
    assert [e.late for e in timeline] == [False, False, False, True]
    assert all(e.hash_ok for e in timeline)
    assert timeline[2].silence_before is not None
    assert timeline[2].silence_before.days == 4
    result = run("audit", str(second), "--format", "json", "--db", db_url)
    entries = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert entries[3]["late"] is True
    assert entries[2]["summary"].startswith("stale by sweeper")
    table = run("audit", str(second), "--db", db_url).stdout  # type: ignore[attr-defined]
    assert "LATE: after the timeout" in table
    assert "silent 4d" in table
    assert run("audit", "99", "--db", db_url).exit_code == 2  # type: ignore[attr-defined]


# ---------------------------------------------------------------- report


def test_report_sections_and_conditions(ledger: Ledger, db_url: str, tmp_path: Path) -> None:
    history(ledger)
    with freeze_time("2026-02-02 00:00:00"):
        data = build_report(ledger, latest=2)
    assert set(data) >= {
        "schema",
        "status_distribution",
        "latest_runs",
        "transitions",
        "stuck_runs",
        "conditions",
        "generated_at",
    }
    assert data["generated_at"] == "2026-02-02T00:00:00.000000Z"
    assert data["schema"]["mismatches"] == []
    assert data["status_distribution"] == {"running": 0, "success": 1, "partial": 0, "failed": 1}
    assert data["transitions"]["sweeper"] == {"failed": 1}
    assert data["latest_runs"][0]["duration"] == "4d22h21m"  # 01:12:44 to 23:33:44, 4 days on
    assert data["latest_runs"][1]["error"] is None
    assert report_passed(data)
    markdown = run(
        "report", "--format", "markdown", "--output", str(tmp_path / "r.md"), "--db", db_url
    )
    assert markdown.exit_code == 0  # type: ignore[attr-defined]
    written = (tmp_path / "r.md").read_text()
    assert "| id | connector | status |" in written
    assert "nulls" not in written
    assert "$(" not in written
    assert "PASS" in written


def test_report_fails_on_a_stuck_run(ledger: Ledger, db_url: str) -> None:
    history(ledger)
    with freeze_time("2026-01-28 01:12:44"):
        ledger.start_run(7, "SOURCE_7")
    Projector(ledger).run_once()
    result = run("report", "--format", "json", "--db", db_url)
    assert result.exit_code == 1  # type: ignore[attr-defined]
    conditions = {c["name"]: c for c in json.loads(result.stdout)["conditions"]}  # type: ignore[attr-defined]
    assert conditions["no stuck runs"]["passed"] is False
    assert conditions["latest run terminal with completedAt"]["passed"] is False
    assert conditions["hash chain verifies"]["passed"] is True


# ---------------------------------------------------------------- legacy import


LEGACY_DDL_SQLITE = """
CREATE TABLE ingestion_runs (
  id INTEGER PRIMARY KEY, sourceId INTEGER NOT NULL, connectorName VARCHAR(100) NOT NULL,
  startedAt TIMESTAMP NOT NULL, completedAt TIMESTAMP NULL, duration INTEGER NULL,
  status VARCHAR(7) NOT NULL DEFAULT 'running', recordsFetched INTEGER NOT NULL DEFAULT 0,
  recordsCreated INTEGER NOT NULL DEFAULT 0, recordsUpdated INTEGER NOT NULL DEFAULT 0,
  recordsSkipped INTEGER NOT NULL DEFAULT 0, claimsCreated INTEGER NOT NULL DEFAULT 0,
  errorMessage TEXT NULL, errorDetails JSON NULL,
  coverageCellsUpdated INTEGER NOT NULL DEFAULT 0, createdAt TIMESTAMP NOT NULL
)
"""


def seed_legacy_table(store: Ledger) -> None:
    """Made like the seed: ids 1-37 failed by the audit cleanup (duration NULL), a success
    with id 30002 and counters 15/10/3/2, and a row still running."""
    with store.engine.begin() as conn:
        if store.engine.dialect.name == "sqlite":
            conn.exec_driver_sql(LEGACY_DDL_SQLITE)
        else:
            ddl = (
                Path(__file__).resolve().parent.parent / "projections" / "ingestion_runs.mysql.sql"
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


def test_import_legacy_then_rebuild_reproduces_every_row(tmp_path: Path) -> None:
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            upgrade(store.engine, url)  # moves the old table to ingestion_runs_legacy
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
            summary = json.loads(result.stdout)  # type: ignore[attr-defined]
            assert (summary["rows"], summary["imported"], summary["left_open"]) == (39, 39, [30003])
            assert summary["duration_repaired"] == list(range(1, 38))
            assert summary["mismatches"] == []
            again = json.loads(run("import-legacy", "--db", url).stdout)  # type: ignore[attr-defined]
            assert (again["imported"], again["already_imported"]) == (0, 39)
            rebuild(store)
            rows = table_rows(store)
            assert rows[30002]["recordsFetched"] == 15
            assert (
                rows[30002]["recordsCreated"],
                rows[30002]["recordsUpdated"],
                rows[30002]["recordsSkipped"],
            ) == (10, 3, 2)
            assert rows[30002]["duration"] == 2
            assert rows[30002]["errorDetails"] == {"proof": True}
            assert rows[30002]["createdAt"] == datetime(2026, 2, 1, 19, 59, 33, tzinfo=UTC)
            assert rows[36]["errorMessage"] == AUDIT_CLEANUP
            assert rows[36]["duration"] == int(
                (
                    datetime(2026, 2, 1, 23, 33, 44, tzinfo=UTC) - rows[36]["startedAt"]
                ).total_seconds()
            )
            assert rows[30003]["status"] == "running"
            assert verify_all(store).ok
            assert store.start_run(1, "SOURCE_1") == 30004  # the allocator continues above
            with freeze_time("2026-02-03 12:00:00"):
                swept = sweep(store)
            assert [r.run_id for r in swept.timed_out] == [30003]
            Projector(store).run_once()
            assert table_rows(store)[30003]["status"] == "failed"
            audit = audit_run(store, 30002)
            assert audit[0].event.actor == "import:legacy"
            assert audit[0].event.payload_data["metadata"]["imported"] is True


def test_a_legacy_row_that_cannot_be_a_fact_stops_the_import(tmp_path: Path) -> None:
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            with store.engine.begin() as conn:
                conn.execute(text("UPDATE ingestion_runs SET recordsFetched = -5 WHERE id = 7"))
            upgrade(store.engine, url)
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 2  # type: ignore[attr-defined]
            assert "legacy row id 7: records_fetched" in result.stderr  # type: ignore[attr-defined]
            assert store.head().last_position == 0


# ---------------------------------------------------------------- demo


def test_the_demo_from_an_empty_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, db_url: str
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["demo"] if backend == "sqlite" else ["demo", "--db", db_url]
    result = run(*args)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    out = result.stdout  # type: ignore[attr-defined]
    assert "the sweeper timed run 4 out" in out
    assert "Result: 5/5 conditions pass" in out
    assert "ledger audit 4" in out
    if backend == "sqlite":
        assert (tmp_path / "ledger-demo.db").exists()
    store = Ledger.from_url(db_url if backend == "mysql" else "sqlite:///ledger-demo.db")
    try:
        rows = table_rows(store)
        assert [rows[i]["status"] for i in (1, 2, 3, 4)] == [
            "success",
            "partial",
            "failed",
            "failed",
        ]
        assert rows[1]["recordsCreated"] > 0
        head = store.head()
        again = run(*args)
        assert again.exit_code == 0  # type: ignore[attr-defined]
        assert "already ran" in again.stdout  # type: ignore[attr-defined]
        assert store.head() == head  # idempotent: nothing appended
    finally:
        store.close()


def test_report_to_a_folder_that_does_not_exist_is_a_usage_error(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    target = tmp_path / "missing" / "report.md"
    result = CliRunner().invoke(cli, ["report", "--output", str(target), "--db", db_url])
    assert result.exit_code == 2, result.output
    assert "cannot write the report" in result.output
    assert "Traceback" not in result.output


def test_verify_while_appenders_and_a_projector_write_reports_no_false_problem(
    ledger: Ledger, db_url: str
) -> None:
    """The registry and projection checks each compare two tables: read at different moments,
    a write in flight would look like tampering."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def keep_writing(work: Callable[[Ledger], object]) -> None:
        store = Ledger.from_url(db_url)
        try:
            while not stop.is_set():
                work(store)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            store.close()

    def append(store: Ledger) -> None:
        run_id = store.start_run(1, "LIVE")
        store.append([RunProgressed(run_id=run_id, records_fetched=1) for _ in range(3)])
        store.append([RunFinished(run_id=run_id, status="success")])

    writers = [
        threading.Thread(target=keep_writing, args=(append,)),
        threading.Thread(
            target=keep_writing, args=(lambda s: Projector(s, batch_size=7).run_once(),)
        ),
    ]
    for writer in writers:
        writer.start()
    reports = []
    deadline = time.monotonic() + 120
    try:
        # Verify over and over until the writers have visibly written during the verifies
        # (a loaded machine may start them late), at least 15 times.
        first_head = ledger.head().last_position
        while len(reports) < 15 or ledger.head().last_position < first_head + 50:
            assert time.monotonic() < deadline, "the writers made no progress"
            assert not errors, errors
            reports.append(verify_all(ledger))
    finally:
        stop.set()
        for writer in writers:
            writer.join(timeout=60)
    assert not errors, errors
    assert [p for r in reports for p in r.problems] == []


def test_each_check_reports_at_most_fifty_problems(ledger: Ledger, db_url: str) -> None:
    ledger.append([RunStarted(source_id=1, connector_name="S") for _ in range(120)])
    drop_triggers(ledger.engine)
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE ledger_events SET version = 5"))
    report = verify_all(ledger)
    assert len(report.by_check("streams")) == 50  # of 120: the rest are not listed
    assert report.runs == 120  # yet every run was replayed for the registry check
