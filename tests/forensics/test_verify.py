"""``verify`` (``verify_all`` and ``ledger verify``), on SQLite and on MariaDB: clean on honest
history; an event altered or deleted with the triggers dropped is caught by the chain, the
streams and the registry, and the legacy audit cleanup's UPDATE of ``ingestion_runs`` by the
projection check; no false problem while appenders and a projector write; at most fifty
problems per check; names stored before the name rule read, project, verify and export."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import text

from forensics.chain import verify_chain
from forensics.verify import CHECKS, Problem, verify_all
from ledger import (
    Ledger,
    LedgerError,
    RunFinished,
    RunProgressed,
    RunStarted,
    stuck_runs,
    stuck_runs_as_of,
)
from ledger.rules import state_as_of
from projections import Projector, rebuild
from tests import support
from tests.forensics.support import AUDIT_CLEANUP, history, run
from tests.projection_support import append_raw, table_rows
from tests.support import drop_triggers, not_broken


def test_verify_is_clean_on_honest_history(ledger: Ledger, db_url: str) -> None:
    history(ledger)
    report = verify_all(ledger)
    assert report.ok, report.problems
    assert (report.events, report.runs) == (7, 2)
    result = run("verify", "--db", db_url)
    assert result.exit_code == 0  # type: ignore[attr-defined]


def test_a_problem_says_where_it_is_and_its_check_is_one_of_the_named_checks(
    ledger: Ledger, db_url: str
) -> None:
    """The checks are named once (``forensics.verify.Check``), and a problem says where it
    is itself (``Problem.where``): the CLI special-cased "triggers", whose ``column`` holds
    the trigger's name, already in its message."""
    history(ledger)
    drop_triggers(ledger.engine)
    with ledger.engine.begin() as conn:
        conn.execute(text("DELETE FROM ledger_events WHERE position = 2"))
    report = verify_all(ledger)
    assert {p.check for p in report.problems} >= {"chain", "streams", "triggers"}
    assert {p.check for p in report.problems} <= set(CHECKS)
    assert all(p.where() == [] for p in report.by_check("triggers"))
    assert Problem("registry", "m", 3, 1, "state").where() == [
        ("position", 3),
        ("run", 1),
        ("column", "state"),
    ]
    assert Problem("projection", "m", run_id=2).where() == [("run", 2)]
    shown = run("verify", "--db", db_url).stdout  # type: ignore[attr-defined]
    triggers = [line for line in shown.splitlines() if line.startswith("  [triggers]")]
    assert triggers
    assert not [line for line in triggers if "(column " in line]


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


def test_every_replay_of_the_write_side_holds_an_unreadable_event_to_one_rule(
    ledger: Ledger,
) -> None:
    """A newer writer's event (its type unknown here) in a run's stream, the registry kept as
    that writer's append keeps it: verify names the event and finds the registry as the events
    imply it, the run as of that position is the registry's row, and stuck-as-of at the head
    is stuck at the head. Each replays the events by ``rules.replay_event`` (verify counted
    only the version past such an event and reported the registry as wrong)."""
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id, records_fetched=3)])
    poison = append_raw(ledger, run_id, "RunPaused", '{"why":"newer writer"}')
    report = verify_all(ledger)
    assert [(p.check, p.position) for p in report.problems] == [("streams", poison)]
    assert "unknown event type 'RunPaused'" in report.problems[0].message
    live = ledger.run(run_id)
    assert live is not None
    assert live.version == 3
    assert state_as_of(ledger.read_run(run_id), poison) == live
    later = live.last_event_at + timedelta(days=1)
    assert stuck_runs_as_of(ledger, poison, later) == stuck_runs(ledger, now=later) != []


def test_a_run_whose_start_cannot_be_read_is_not_told_as_not_started(ledger: Ledger) -> None:
    """Its RunStarted written by a newer writer (a schema_version this code does not know):
    the run had started, so "not started yet as of that position" would be false; the replay
    raises what keeps it from being read (the CLI's exit 1, the API's problem)."""
    run_id = ledger.start_run(1, "SOURCE_1")
    started = ledger.read_run(run_id)[0]
    newer = dataclasses.replace(started, schema_version=99)
    with pytest.raises(LedgerError, match="schema_version 99"):
        state_as_of([newer], started.position)
    assert state_as_of([newer], started.position - 1) is None  # before it: not started yet


@pytest.mark.parametrize(
    ("column", "value"), [("occurred_at", "garbage"), ("version", "x"), ("recorded_at", "")]
)
def test_verify_names_a_row_no_append_writes_instead_of_failing(
    ledger: Ledger, db_url: str, backend: str, column: str, value: str
) -> None:
    """A value of the wrong type in a column (SQLite stores what it is given, once the
    triggers are gone) is a finding at its position, not a traceback; MariaDB's column types
    refuse such a value at the UPDATE."""
    if backend != "sqlite":
        pytest.skip("MariaDB's DATETIME and INT columns refuse a value of another type")
    history(ledger)
    drop_triggers(ledger.engine)
    with ledger.engine.begin() as conn:
        conn.execute(
            text(f"UPDATE ledger_events SET {column} = :v WHERE position = 3"), {"v": value}
        )
    report = verify_all(ledger)
    streams = report.by_check("streams")
    assert len(streams) == 1
    assert streams[0].message.startswith("the event stored at position 3 cannot be read (")
    assert "the registry not at all" in streams[0].message
    result = run("verify", "--db", db_url)
    assert result.exit_code == 1, result.output  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
    rebuilt = run("rebuild", "--db", db_url)  # a replay names it too, no traceback
    assert rebuilt.exit_code != 0  # type: ignore[attr-defined]
    assert "the event stored at position 3 cannot be read" in rebuilt.output  # type: ignore[attr-defined]


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
    status_line = "ingestion_runs id 1: status is 'failed', the events give 'success'"
    assert not_broken(status_line) in not_broken(text_out)
    # Times as ISO-8601, not Python's repr, for an auditor to read.
    completed = "completedAt is 2026-02-01T23:33:44.000000Z, the events give "
    assert not_broken(completed) in not_broken(text_out)
    assert "datetime.datetime(" not in text_out
    assert not [p for p in projection if p.run_id == second]


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


@pytest.mark.parametrize("position", [0, -7])
def test_verify_names_a_row_planted_below_position_1(
    ledger: Ledger, db_url: str, position: int
) -> None:
    """An INSERT needs no trigger dropped: a row below position 1 (a forged operator's
    RunTimedOut, chained like a real row) was read by no scan after a position, so the chain,
    the streams and the registry held and ``ledger verify`` said "no problem" while
    ``ledger events --run`` and ``ledger audit`` showed the row as part of the run."""
    history(ledger)
    forged = (
        '{"detected_by":"operator:mallory","last_event_at":null,"reason":"forged",'
        '"threshold_seconds":null}'
    )
    with ledger.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ledger_events (position, event_id, run_id, version, type, "
                "schema_version, payload, occurred_at, recorded_at, actor, prev_hash, hash) "
                "SELECT :position, 'aaaaaaaa-0000-4000-8000-000000000000', run_id, 99, "
                "'RunTimedOut', 1, :payload, occurred_at, recorded_at, 'operator:mallory', "
                "prev_hash, hash FROM ledger_events WHERE position = 1"
            ),
            {"position": position, "payload": forged},
        )
    shown = run("events", "--run", "1", "--format", "jsonl", "--db", db_url).stdout  # type: ignore[attr-defined]
    assert "operator:mallory" in shown  # what a reader of run 1's history is shown
    chain = verify_chain(ledger)
    assert (chain.ok, chain.first_bad_position) == (False, position)
    assert f"position {position} is below position 1" in (chain.problem or "")
    report = verify_all(ledger)
    assert [(p.check, p.position) for p in report.by_check("chain")] == [("chain", position)]
    assert report.by_check("chain")[0].where() == [("position", position)]  # 0 is a position
    result = run("verify", "--db", db_url)
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert f"position {position} is below position 1" in result.stdout  # type: ignore[attr-defined]
    # A range from the start is checked too; a range after it does not reach the row.
    assert not verify_chain(ledger, 1, 3).ok
    assert verify_chain(ledger, 2).ok
