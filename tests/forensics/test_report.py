"""The proof report (``build_report`` and ``ledger report``), on SQLite and on MariaDB: its
sections and stop conditions, a report as of a past position equal to the one made then,
exactly its sections whatever the data holds, transitions counted by the exact actor, and a
one-line error where no report can be made (an unmigrated database, a missing folder) or a
failed condition where the projection cannot replay."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forensics.report import build_report, report_passed
from forensics.report_render import render_text
from ledger import Ledger, RunFinished, RunProgressed, RunTimedOut, sweep
from ledger.clock import isoformat_utc, labelled_utc, parse_utc, utcnow
from ledger.events import (
    CONNECTOR_PREFIX,
    RECORDED_NAMES,
    RUN_WATCHDOG_PREFIX,
    SERVE_PREFIX,
    actor_kind,
)
from ledger.text import is_invisible
from projections import Projector
from projections.queries import get_run
from service.cli import cli
from tests import support
from tests.forensics.support import history, run
from tests.projection_support import append_raw


def test_a_report_as_of_a_position_is_the_report_made_then(ledger: Ledger) -> None:
    """The report at a past position (replayed) equals, section by section, the report made
    live when the ledger stood there, judged at the same time; only the projection's sync and
    verify's other checks (questions about now) are left out, and the report says it is as of
    that position."""
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
            now_only = ("projection in sync with the ledger", "ledger verify finds no problem")
            assert past["conditions"] == [
                c for c in live["conditions"] if c["name"] not in now_only
            ]
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
    # Before the epoch, as before the first event (it was "Error: at: not before 1970", exit
    # 2, naming the stuck query's own argument; review 56).
    earlier = CliRunner().invoke(cli, ["report", "--as-of", "1969-07-20T20:17:00Z", "--db", db_url])
    assert "As of:     position 0 (" in earlier.stdout, earlier.output


def test_a_report_as_of_a_future_time_is_the_report_of_now(ledger: Ledger, db_url: str) -> None:
    """The audit's ``--as-of 2099-01-01``: the report judged a live run stuck at that future
    time (FAIL no stuck runs, exit 1) where the web's Proof page, clamping the time to now,
    showed PASS. A time ahead of the ledger's clock is now, as the web makes it."""
    with freeze_time("2026-01-28 01:00:00") as clock:
        done = ledger.start_run(1, "SOURCE_1")
        ledger.append([RunFinished(run_id=done, status="success", records_fetched=2)])
        alive = ledger.start_run(2, "SOURCE_2")
        clock.tick(timedelta(minutes=10))
        ledger.append([RunProgressed(run_id=alive, records_fetched=1)])
        Projector(ledger).run_once()
        clock.tick(timedelta(minutes=10))
        future = "2099-01-01T00:00:00Z"
        result = run("report", "--format", "json", "--as-of", future, "--db", db_url)
        text = run("report", "--as-of", future, "--db", db_url)
        now = isoformat_utc(utcnow())
    data = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert (data["generated_at"], data["as_of"]["at"]) == (now, now)
    assert data["as_of"]["position"] == ledger.head().last_position
    assert data["stuck_runs"] == []
    stuck = next(c for c in data["conditions"] if c["name"] == "no stuck runs")
    assert stuck["passed"], stuck  # (the latest-run condition fails: run 2 is running)
    assert "2099" not in text.stdout  # type: ignore[attr-defined]
    assert "Generated: 2026-01-28T01:20:00.000000Z (UTC)" in text.stdout  # type: ignore[attr-defined]
    assert "PASS  no stuck runs" in text.stdout  # type: ignore[attr-defined]


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


def _times(value: object, path: str = "") -> dict[str, str]:
    """Every text in a JSON value that starts with a date, by its path (``latest_runs.0.started``).
    A condition's detail is a sentence (it starts with a word): not a time of its own."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    elif isinstance(value, str) and re.match(r"\d{4}-\d\d-\d\d", value):
        return {path: value}
    else:
        return {}
    found: dict[str, str] = {}
    for key, item in items:
        found |= _times(item, f"{path}.{key}" if path else str(key))
    return found


def test_every_time_in_the_json_report_is_iso_8601_as_precise_as_stored(
    ledger: Ledger, db_url: str
) -> None:
    """``ledger report --format json`` wrote the runs' times as people read them
    (``2026-01-28 01:03:00 UTC``), beside a ``generated_at`` in ISO-8601. Every time in it
    now parses with ``parse_utc`` and gives back the value stored: the ledger's to the
    microsecond, the projection's in whole seconds (as ``ledger runs`` writes them); live and
    as of a past moment. The text and Markdown forms still show them to the second."""
    with freeze_time("2026-01-28 01:00:00.123456") as clock:
        done = ledger.start_run(1, "SOURCE_1")
        clock.tick(timedelta(minutes=3, microseconds=250001))
        ledger.append([RunFinished(run_id=done, status="success", records_fetched=4)])
        silent = ledger.start_run(2, "SOURCE_2")
        clock.tick(timedelta(seconds=7, microseconds=777))
        ledger.append([RunProgressed(run_id=silent, records_fetched=1)])
        clock.tick(timedelta(hours=2))
        ledger.start_run(3, "SOURCE_3")  # at 03:03:07.374234: after the moment below
        Projector(ledger).run_once()
        clock.tick(timedelta(minutes=1, microseconds=5))
        generated_at = utcnow()
        reports = {
            "live": run("report", "--format", "json", "--db", db_url),
            "as of": run(
                "report", "--format", "json", "--as-of", "2026-01-28T03:03:00Z", "--db", db_url
            ),
        }
        text_form = run("report", "--db", db_url).stdout  # type: ignore[attr-defined]
        markdown = run("report", "--format", "markdown", "--db", db_url).stdout  # type: ignore[attr-defined]
    stored = ledger.run(silent)  # the stuck run, as the ledger holds it
    assert stored is not None
    assert stored.started_at.microsecond != 0  # so that whole seconds would not round-trip
    assert stored.last_event_at.microsecond != 0
    for moment, result in reports.items():
        assert result.exit_code == 1, (moment, result.output)  # type: ignore[attr-defined]
        data = json.loads(result.stdout)  # type: ignore[attr-defined]
        times = _times(data)
        for path, value in times.items():
            try:
                parse_utc(value, naive="refuse")
            except ValueError as exc:
                raise AssertionError(f"{moment}: {path} {value!r} {exc}") from None
        expected = {"generated_at", "stuck_runs.0.started_at", "stuck_runs.0.last_event_at"}
        for index, summary in enumerate(data["latest_runs"]):
            expected |= {f"latest_runs.{index}.started", f"latest_runs.{index}.completed"}
            row, _ = get_run(ledger, summary["id"])
            assert row is not None
            assert parse_utc(summary["started"], naive="refuse") == row["startedAt"]
            if row["completedAt"] is None:
                expected.remove(f"latest_runs.{index}.completed")
                assert summary["completed"] is None
            else:
                assert parse_utc(summary["completed"], naive="refuse") == row["completedAt"]
        if moment == "as of":
            expected.add("as_of.at")
            assert data["as_of"]["at"] == "2026-01-28T03:03:00.000000Z"
            assert [summary["id"] for summary in data["latest_runs"]] == [silent, done]
        else:
            assert data["generated_at"] == isoformat_utc(generated_at)
            assert len(data["latest_runs"]) == 3
        assert set(times) == expected, moment
        [stuck] = data["stuck_runs"]
        assert stuck["run_id"] == silent
        assert parse_utc(stuck["started_at"], naive="refuse") == stored.started_at
        assert parse_utc(stuck["last_event_at"], naive="refuse") == stored.last_event_at
    assert f"started {labelled_utc(stored.started_at)}, silent for 2h1m" in text_form
    assert "| success | 2026-01-28 01:00:00 UTC | 2026-01-28 01:03:00 UTC | 3m |" in markdown


def test_report_to_a_folder_that_does_not_exist_is_a_usage_error(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    target = tmp_path / "missing" / "report.md"
    result = CliRunner().invoke(cli, ["report", "--output", str(target), "--db", db_url])
    assert result.exit_code == 2, result.output
    assert "cannot write the report" in result.output
    assert "Traceback" not in result.output


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
    """MariaDB grouped "Sweeper" with "sweeper": a lookalike actor was counted as the sweeper.
    (A new event can no longer say "Sweeper"; one recorded before that rule still reads.)"""
    for actor in ("sweeper", "Sweeper"):
        run_id = ledger.start_run(1, "SOURCE_1")
        fields = {"run_id": run_id, "reason": "stale", "detected_by": actor, "actor": actor}
        ledger.append([RunTimedOut.model_validate(fields, context=RECORDED_NAMES)])
    Projector(ledger).run_once()
    transitions = build_report(ledger)["transitions"]
    assert transitions["sweeper"] == {"failed": 1}
    assert transitions["other"] == {"failed": 1}


def test_transitions_by_serve_and_the_run_watchdog_are_the_ledgers_own(ledger: Ledger) -> None:
    """``ledger serve`` and ``ledger run``'s watchdog time runs out under actors the ledger
    reserves (``serve:HOST:PID``, ``ledger-run:HOST:PID``): the report counts them by those
    kinds, from the same vocabulary the writers use (it counted them as "other")."""
    for actor in (f"{RUN_WATCHDOG_PREFIX}host:1", f"{SERVE_PREFIX}host:2"):
        run_id = ledger.start_run(1, "SOURCE_1", actor=f"{CONNECTOR_PREFIX}SOURCE_1@host:3")
        timed_out = RunTimedOut(
            run_id=run_id, reason="max_run_time", detected_by=actor, actor=actor
        )
        ledger.append([timed_out])
    Projector(ledger).run_once()
    assert build_report(ledger)["transitions"] == {
        "connectors": {"running": 2},
        "ledger-run": {"failed": 1},
        "serve": {"failed": 1},
    }
    assert [actor_kind(a) for a in (None, "connector:x@h:1", "sweeper", "operator:al")] == [
        "unknown",
        "connectors",
        "sweeper",
        "operators",
    ]
    assert [actor_kind(a) for a in ("import:legacy", "Serve:h:1", "someone")] == [
        "import",
        "other",
        "other",
    ]


def test_report_on_an_unmigrated_database_is_one_line(tmp_path: Path) -> None:
    url = support.sqlite_without_schema(tmp_path / "new.db")
    result = CliRunner().invoke(cli, ["report", "--db", url])
    assert result.exit_code == 1
    assert "ledger migrate" in result.stderr
    assert "Traceback" not in result.output


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
