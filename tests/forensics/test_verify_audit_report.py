"""Forensics and proof (issue 6): verify, audit, report, legacy import and the demo, on SQLite
and on MariaDB."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, inspect, select, table, text

from forensics.audit import audit_run
from forensics.report import build_report, render_text, report_passed
from forensics.verify import verify_all
from ledger import Ledger, RunFinished, RunProgressed, RunStarted, RunTimedOut, sweep
from ledger.text import is_invisible
from ledger.urls import mask_url
from migrations.runner import upgrade
from projections import Projector, rebuild
from service.cli import cli
from service.demo import DemoRefusedError, run_demo
from tests import support
from tests.projection_support import append_raw, table_rows
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
    table = run("audit", str(second), "--wide", "--db", db_url).stdout  # type: ignore[attr-defined]
    assert "LATE: after the timeout" in table
    assert "silent 4d" in table
    assert run("audit", "99", "--db", db_url).exit_code == 2  # type: ignore[attr-defined]


def test_audit_words_a_timeout_as_the_projection_does(ledger: Ledger, db_url: str) -> None:
    """The threshold and the last activity as in ``errorMessage`` and every other time shown
    to people (``1h``, ``2026-01-28 01:30:00 UTC``), not ``3600s`` and a raw ISO string with
    microseconds that an 80-column table broke mid-token."""
    second = history(ledger)
    summary = audit_run(ledger, second)[2].summary
    assert summary == "stale by sweeper, threshold 1h, last activity 2026-01-28 01:30:00 UTC"
    row = run("runs", "show", str(second), "--format", "json", "--db", db_url).stdout  # type: ignore[attr-defined]
    assert "last activity 2026-01-28 01:30:00 UTC" in json.loads(row)["errorMessage"]


# ---------------------------------------------------------------- report


def test_a_report_as_of_a_position_is_the_report_made_then(ledger: Ledger) -> None:
    """The report at a past position (replayed) equals, section by section, the report made
    live when the ledger stood there, judged at the same time; only the projection's sync (a
    question about now) is left out, and the report says it is as of that position."""
    made_then: list[tuple[int, dict[str, Any]]] = []
    with freeze_time("2026-01-28 01:00:00") as clock:
        first = ledger.start_run(1, "SOURCE_1")
        second = 0

        def start_second() -> None:
            nonlocal second
            second = ledger.start_run(2, "SOURCE_2")

        steps: list[Callable[[], object]] = [
            lambda: ledger.append([RunProgressed(run_id=first, records_fetched=4)]),
            start_second,
            lambda: ledger.append([RunFinished(run_id=first, status="success")]),
            lambda: None,  # the second goes silent: stuck
            lambda: sweep(ledger, older_than=timedelta(minutes=30)),
            lambda: ledger.append([RunProgressed(run_id=second, records_fetched=1)]),  # late
        ]
        for step in steps:
            clock.tick(timedelta(minutes=40))
            step()
            Projector(ledger).run_once()
            made_then.append((ledger.head().last_position, build_report(ledger, latest=3)))
        assert any(live["stuck_runs"] for _, live in made_then)  # a moment with a stuck run
        assert len({report_passed(live) for _, live in made_then}) == 2  # failing and passing
        clock.tick(timedelta(days=3))
        for position, live in made_then:
            at = datetime.fromisoformat(live["generated_at"])
            past = build_report(ledger, latest=3, at_position=position, at=at)
            assert past["as_of"] == {"position": position, "at": live["generated_at"]}
            for section in ("status_distribution", "latest_runs", "transitions", "stuck_runs"):
                assert past[section] == live[section], (position, section)
            in_sync = "projection in sync with the ledger"
            assert past["conditions"] == [c for c in live["conditions"] if c["name"] != in_sync]
    text_form = render_text(build_report(ledger, at_position=made_then[0][0]))
    assert f"As of:     position {made_then[0][0]} (" in text_form


def test_ledger_report_at_a_position_prints_the_report_replayed(
    ledger: Ledger, db_url: str
) -> None:
    with freeze_time("2026-01-28 01:00:00"):
        run_id = ledger.start_run(1, "SOURCE_1")
        position = ledger.head().last_position
        ledger.append([RunFinished(run_id=run_id, status="success", records_fetched=2)])
        Projector(ledger).run_once()
    result = CliRunner().invoke(
        cli, ["report", "--at-position", str(position), "--format", "json", "--db", db_url]
    )
    assert result.exit_code == 1, result.output  # its latest run was still running then
    data = json.loads(result.stdout)
    assert data["as_of"]["position"] == position
    assert data["latest_runs"][0]["status"] == "running"
    now = CliRunner().invoke(cli, ["report", "--format", "json", "--db", db_url])
    assert json.loads(now.stdout)["as_of"] is None
    assert json.loads(now.stdout)["latest_runs"][0]["status"] == "success"
    later = CliRunner().invoke(cli, ["report", "--as-of", "2000-01-01T00:00:00Z", "--db", db_url])
    assert "As of:     position 0 (" in later.stdout


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


# ---------------------------------------------------------------- issue 12: names and output


def test_history_with_names_from_before_the_rule_reads_projects_and_verifies(
    ledger: Ledger, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name rule applies at append only: events stored before it (a trailing space, an
    ESC, a right-to-left override) are no poison: they read, project, rebuild, verify, export
    exactly and show escaped."""
    names = ["SOURCE_1 ", "S\x1b[2J\u202e"]
    with pytest.MonkeyPatch.context() as before:
        support.names_as_before_the_rule(before)
        for name in names:
            run_id = ledger.start_run(1, name, actor=f"connector:{name}")
            ledger.append([RunFinished(run_id=run_id, status="success", actor=name)])
    # From here on the rule is in force, as after an upgrade.
    actors = [actor for name in names for actor in (f"connector:{name}", name)]
    assert [e.event.actor for e in ledger.read_all()] == actors
    assert Projector(ledger).run_once() == 4
    assert [table_rows(ledger)[i]["connectorName"] for i in (1, 2)] == names
    rebuild(ledger)
    assert [table_rows(ledger)[i]["connectorName"] for i in (1, 2)] == names
    assert verify_all(ledger).ok
    exported = run("events", "--format", "jsonl", "--db", db_url).stdout  # type: ignore[attr-defined]
    assert [json.loads(line).get("connector_name") for line in exported.splitlines()][::2] == names
    shown = run("runs", "list", "--db", db_url).stdout  # type: ignore[attr-defined]
    assert "S\\x1b[2J\\u202e" in shown
    assert "\x1b" not in shown


def test_a_legacy_name_is_adopted_as_it_was_recorded(tmp_path: Path) -> None:
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            with store.engine.begin() as conn:
                conn.execute(text("UPDATE ingestion_runs SET connectorName = 'SOURCE_1 '"))
            upgrade(store.engine, url)
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
            assert json.loads(result.stdout)["mismatches"] == []  # type: ignore[attr-defined]
            assert {row["connectorName"] for row in table_rows(store).values()} == {"SOURCE_1 "}


REPORT_HEADINGS = (
    "A. Schema: live ingestion_runs against the legacy shape",
    "B. Status distribution",
    "C. Latest 1 run(s), times in UTC",
    "D. Where status transitions come from",
    "E. Stuck runs (from the ledger)",
    "F. Stop conditions",
)


@pytest.fixture(scope="module")
def a_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A real report of one run and one stuck run, whose data each example then replaces."""
    folder = tmp_path_factory.mktemp("report")
    store = Ledger.from_url(support.sqlite_copy(support.make_sqlite_template(folder), folder))
    try:
        with freeze_time("2026-01-28 01:00:00"):
            store.start_run(1, "SOURCE_1")
        store.append([RunFinished(run_id=1, status="failed", error_message="x")])
        with freeze_time("2026-01-28 01:00:00"):
            store.start_run(2, "SOURCE_2")
        Projector(store).run_once()
        return build_report(store, latest=1)
    finally:
        store.close()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(), st.text())
def test_any_data_leaves_the_report_with_exactly_its_sections(
    a_report: dict[str, Any], name: str, message: str
) -> None:
    report = json.loads(json.dumps(a_report))
    report["latest_runs"][0].update(connector=name, error=message, status=message)
    report["stuck_runs"][0]["connector_name"] = name
    report["conditions"][0]["detail"] = message
    report["schema"]["mismatches"] = [message]
    report["transitions"] = {name: {message: 1}}
    text_ = render_text(report)
    lines_ = text_.splitlines()
    assert [line for line in lines_ if line in REPORT_HEADINGS] == list(REPORT_HEADINGS)
    assert len([line for line in lines_ if line.startswith("Result:")]) == 1
    assert not any(is_invisible(char) for char in text_.replace("\n", ""))
    markdown = render_text(report, markdown=True)
    lines_ = markdown.splitlines()
    assert [line for line in lines_ if line.startswith("## ")] == [
        f"## {heading}" for heading in REPORT_HEADINGS
    ]
    assert len([line for line in lines_ if line.startswith("| ")]) == 3
    for row in (line for line in lines_ if line.startswith("| ")):
        assert len(re.findall(r"(?<!\\)(?:\\\\)*\|", row)) == 9, row
    assert not any(is_invisible(char) for char in markdown.replace("\n", ""))


def test_transitions_by_an_actor_that_differs_by_case_are_not_the_sweepers(
    ledger: Ledger,
) -> None:
    """MariaDB grouped "Sweeper" with "sweeper": a lookalike actor was counted as the sweeper."""
    for actor in ("sweeper", "Sweeper"):
        run_id = ledger.start_run(1, "SOURCE_1")
        ledger.append([RunTimedOut(run_id=run_id, reason="stale", detected_by=actor, actor=actor)])
    Projector(ledger).run_once()
    transitions = build_report(ledger)["transitions"]
    assert transitions["sweeper"] == {"failed": 1}
    assert transitions["other"] == {"failed": 1}


# ---------------------------------------------------------------- issue 12: the demo's database


def store_snapshot(store: Ledger) -> dict[str, object]:
    """Every table with its row count, and the head: what a refused demo must leave as it was."""
    with store.engine.connect() as conn:
        names = sorted(inspect(conn).get_table_names())
        counts = {
            name: conn.execute(select(func.count()).select_from(table(name))).scalar_one()
            for name in names
        }
    head = store.head() if "ledger_head" in counts else None
    return {"tables": counts, "head": head}


def test_the_demo_refuses_a_ledger_that_holds_someone_elses_run(
    ledger: Ledger, db_url: str, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It migrated any database, wrote demo runs next to real ones and swept them globally."""
    monkeypatch.chdir(tmp_path)
    with freeze_time(datetime.now(UTC) - timedelta(hours=3)):
        ledger.start_run(1, "stations")  # a real run, open and silent: a global sweep took it
    before = store_snapshot(ledger)
    result = run("demo", "--db", db_url)
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    [line] = result.stderr.splitlines()  # type: ignore[attr-defined]
    assert line.startswith(f"Error: the demo will not write to {mask_url(db_url)}: it holds")
    assert "events other than the demo's (run 1, 'stations')" in line
    assert store_snapshot(ledger) == before
    assert ledger.run(1).state == "open"  # type: ignore[union-attr]


def test_the_demo_refuses_a_demo_database_someone_else_wrote_to(
    ledger: Ledger, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run("demo", "--db", db_url).exit_code == 0  # type: ignore[attr-defined]
    assert run("demo", "--db", db_url).exit_code == 0  # type: ignore[attr-defined]
    ledger.start_run(9, "demo-stations")  # a demo name, but not a demo run (no trigger)
    before = store_snapshot(ledger)
    result = run("demo", "--db", db_url)
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    assert "(run 5, 'demo-stations')" in result.stderr  # type: ignore[attr-defined]
    assert store_snapshot(ledger) == before


def test_the_demo_refusal_masks_the_password(ledger: Ledger) -> None:
    ledger.start_run(1, "stations")
    disguised = Ledger(ledger.engine, "mysql+pymysql://ops:hunter22secret@db.example:3306/prod")
    with pytest.raises(DemoRefusedError) as refused:
        run_demo(disguised)
    assert "mysql+pymysql://ops:***@db.example:3306/prod" in str(refused.value)
    assert "hunter22secret" not in str(refused.value)


def test_the_demo_refuses_a_database_that_is_not_empty_before_migrating_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            with store.engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE app_users (id INTEGER PRIMARY KEY)")
            before = store_snapshot(store)
            result = run("demo", "--db", url)
            assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
            assert "holds tables but no ledger (app_users)" in result.stderr  # type: ignore[attr-defined]
            assert store_snapshot(store) == before  # not migrated
            with store.engine.begin() as conn:
                conn.exec_driver_sql("DROP TABLE app_users")
            seed_legacy_table(store)  # a legacy ingestion_runs, that migrate would move
            before = store_snapshot(store)
            assert run("demo", "--db", url).exit_code == 2  # type: ignore[attr-defined]
            assert store_snapshot(store) == before
            upgrade(store.engine, url)  # now ingestion_runs_legacy, waiting for an import
            before = store_snapshot(store)
            result = run("demo", "--db", url)
            assert result.exit_code == 2  # type: ignore[attr-defined]
            assert "legacy ingestion_runs" in result.stderr  # type: ignore[attr-defined]
            assert store_snapshot(store) == before


def test_import_legacy_keeps_reserved_detail_keys_apart_and_says_so(tmp_path: Path) -> None:
    """A legacy row's own `reason` or `late` cannot pose as the ledger's bookkeeping: they are
    kept under errorDetails.reported, and the import names those rows (not as mismatches)."""
    details = {"reason": "HTTP 500", "late": False, "proof": True}
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            with store.engine.begin() as conn:
                conn.execute(
                    text("UPDATE ingestion_runs SET errorDetails = :d WHERE id = 30002"),
                    {"d": json.dumps(details)},
                )
            upgrade(store.engine, url)
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
            summary = json.loads(result.stdout)  # type: ignore[attr-defined]
            assert (summary["details_kept_apart"], summary["mismatches"]) == ([30002], [])
            assert table_rows(store)[30002]["errorDetails"] == {
                "proof": True,
                "reported": {"reason": "HTTP 500", "late": False},
            }


def test_import_legacy_adopts_any_details_the_legacy_column_held(tmp_path: Path) -> None:
    """An array, or an object nested deeper than the ledger takes, is adopted under
    legacy_error_details (the deep one as its JSON text) and named as kept apart; a time that
    is not one stops the import naming the row and the column, before anything is appended."""
    deep: dict[str, object] = {"leaf": 1}
    for _ in range(24):
        deep = {"d": deep}
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            with store.engine.begin() as conn:
                for row_id, details in ((7, [1, 2]), (30002, deep)):
                    conn.execute(
                        text("UPDATE ingestion_runs SET errorDetails = :d WHERE id = :id"),
                        {"d": json.dumps(details), "id": row_id},
                    )
            upgrade(store.engine, url)
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
            summary = json.loads(result.stdout)  # type: ignore[attr-defined]
            assert (summary["details_kept_apart"], summary["mismatches"]) == ([7, 30002], [])
            rows = table_rows(store)
            assert rows[7]["errorDetails"] == {"legacy_error_details": [1, 2]}
            kept = rows[30002]["errorDetails"]["legacy_error_details"]
            assert json.loads(kept) == deep
            assert verify_all(store).ok


def test_import_legacy_names_a_time_that_is_not_one(tmp_path: Path) -> None:
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            if store.engine.dialect.name != "sqlite":
                continue  # a MariaDB TIMESTAMP column cannot hold such text
            seed_legacy_table(store)
            with store.engine.begin() as conn:
                conn.execute(text("UPDATE ingestion_runs SET startedAt = 'yesterday' WHERE id = 7"))
            upgrade(store.engine, url)
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 2  # type: ignore[attr-defined]
            assert "legacy row id 7: startedAt: 'yesterday' is not a time" in result.stderr  # type: ignore[attr-defined]
            assert "Traceback" not in result.output  # type: ignore[attr-defined]
            assert store.head().last_position == 0


def test_report_on_an_unmigrated_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "new.db").touch()  # an empty SQLite database (a missing one is refused)
    result = CliRunner().invoke(cli, ["report", "--db", f"sqlite:///{tmp_path / 'new.db'}"])
    assert result.exit_code == 1
    assert "ledger migrate" in result.stderr
    assert "Traceback" not in result.output


def test_import_legacy_without_the_table_says_where_it_looked_and_why(tmp_path: Path) -> None:
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            upgrade(store.engine, url)  # no ingestion_runs to rename: no legacy table
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 1  # type: ignore[attr-defined]
            error = result.stderr  # type: ignore[attr-defined]
            assert f"no legacy table 'ingestion_runs_legacy' in {mask_url(url)}" in error
            assert "`ledger migrate` renames an existing ingestion_runs" in error
            result = run("import-legacy", "--from-url", url, "--table", "old_runs", "--db", url)
            assert f"no legacy table 'old_runs' in {mask_url(url)}" in result.stderr  # type: ignore[attr-defined]
            assert "--table" in result.stderr  # type: ignore[attr-defined]
            result = run("import-legacy", "--table", "ledger_head", "--db", url)
            assert result.exit_code == 1  # type: ignore[attr-defined]
            assert "'ledger_head' in" in result.stderr  # type: ignore[attr-defined]
            assert (
                "is not a legacy ingestion_runs table: it has no sourceId, connectorName"
                in result.stderr
            )  # type: ignore[attr-defined]


def test_import_legacy_over_runs_with_the_same_ids_refuses_before_appending(
    tmp_path: Path,
) -> None:
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            upgrade(store.engine, url)
            store.start_run(7, "SOURCE_7", run_id=1)  # the ledger's own, not legacy row 1
            store.start_run(7, "SOURCE_7", run_id=30002)
            head = store.head().last_position
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
            error = result.stderr  # type: ignore[attr-defined]
            assert "legacy run id(s) 1, 30002 already exist in the ledger" in error
            assert "nothing was appended" in error
            assert "Import into a fresh ledger" in error
            assert "RunStarted may appear only once" not in error
            assert store.head().last_position == head


def test_a_report_as_of_after_an_event_the_projection_cannot_apply_fails_it(
    ledger: Ledger, db_url: str
) -> None:
    """An event of a type this code does not know (a newer writer's) before the moment: the
    replay stops there as the projector does, and the report fails that condition (exit 1),
    rather than calling it the caller's mistake; once skipped, it replays past it."""
    run_id = ledger.start_run(1, "SOURCE_1")
    poison = append_raw(ledger, run_id, "RunPaused", "{}")
    ledger.append([RunProgressed(run_id=run_id, records_fetched=2)])
    position = ledger.head().last_position
    result = CliRunner().invoke(
        cli, ["report", "--at-position", str(position), "--format", "json", "--db", db_url]
    )
    assert result.exit_code == 1, result.output
    failed = [c for c in json.loads(result.stdout)["conditions"] if not c["passed"]]
    assert any(
        c["name"] == f"the projection replays to position {position}"
        and f"stopped at position {poison}" in c["detail"]
        for c in failed
    )
    Projector(ledger).skip(poison, "a newer writer's type", "operator:test")
    after_skip = build_report(ledger, at_position=position)
    names = [c["name"] for c in after_skip["conditions"]]
    assert f"the projection replays to position {position}" not in names
    assert after_skip["latest_runs"][0]["fetched_created_updated_skipped"].startswith("2/")
