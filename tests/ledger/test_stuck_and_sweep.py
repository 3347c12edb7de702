"""Stuck detection and the sweeper (DESIGN.md I10), on SQLite and on MariaDB."""

from __future__ import annotations

import json
import logging
import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from sqlalchemy import event, text, update

from forensics.verify import verify_all
from ledger import (
    AppendResult,
    ConfigurationError,
    Ledger,
    RunFinished,
    RunProgressed,
    RunTimedOut,
    StorageError,
    StreamError,
    Thresholds,
    ValidationError,
    fail_run,
    parse_event,
    stuck_runs,
    stuck_runs_as_of,
    sweep,
)
from ledger import store as store_module
from ledger import sweeper as sweeper_module
from ledger.durations import format_silence
from ledger.rules import replay_event
from ledger.schema import ledger_runs
from projections import Projector
from service import load_config
from service.cli import cli
from tests.projection_support import append_raw, table_rows
from tests.service.conftest import api_client, auth
from tests.support import names_as_before_the_rule, runs_read_without_replay

DAY1 = datetime(2026, 1, 28, 1, 12, 44, tzinfo=UTC)
DAY5 = datetime(2026, 2, 1, 23, 33, 44, tzinfo=UTC)
HOUR = timedelta(hours=1)


def start_at(ledger: Ledger, when: datetime, connector: str = "SOURCE_1", source: int = 1) -> int:
    with freeze_time(when):
        return ledger.start_run(source, connector, occurred_at=when)


def progress_at(ledger: Ledger, run_id: int, when: datetime, **counts: int) -> None:
    with freeze_time(when):
        ledger.append([RunProgressed(run_id=run_id, occurred_at=when, **counts)])


def timeouts(ledger: Ledger, run_id: int) -> list[RunTimedOut]:
    return [e.event for e in ledger.read_run(run_id) if e.type == "RunTimedOut"]  # type: ignore[misc]


def test_the_seed_scenario_open_on_day_one_swept_on_day_five(ledger: Ledger) -> None:
    stuck = [start_at(ledger, DAY1 + timedelta(seconds=i), f"SOURCE_{i % 2 + 1}") for i in range(4)]
    progress_at(ledger, stuck[0], DAY1 + timedelta(minutes=3), records_fetched=7)
    fresh = start_at(ledger, DAY5 - timedelta(minutes=10))
    long_but_alive = start_at(ledger, DAY1, "SOURCE_9")
    beat = DAY1
    while beat < DAY5 - timedelta(minutes=5):  # heartbeats every 50 minutes, the last recent
        beat = min(beat + timedelta(minutes=50), DAY5 - timedelta(minutes=5))
        progress_at(ledger, long_but_alive, beat)
    with freeze_time(DAY5):
        result = sweep(ledger)
    assert sorted(run.run_id for run in result.timed_out) == sorted(stuck)
    for run_id in stuck:
        (event,) = timeouts(ledger, run_id)
        assert (event.reason, event.threshold_seconds, event.detected_by) == (
            "stale",
            3600,
            "sweeper",
        )
        assert event.occurred_at == DAY5
    assert timeouts(ledger, stuck[0])[0].last_event_at == DAY1 + timedelta(minutes=3)
    assert ledger.run(fresh).state == "open"  # type: ignore[union-attr]
    assert ledger.run(long_but_alive).state == "open"  # type: ignore[union-attr]
    Projector(ledger).run_once()
    rows = table_rows(ledger)
    for run_id in stuck:
        row = rows[run_id]
        assert row["status"] == "failed"
        assert row["completedAt"] == DAY5
        assert row["duration"] == int((DAY5 - row["startedAt"]).total_seconds())
        assert row["errorDetails"]["reason"] == "stale"
    assert rows[stuck[0]]["recordsFetched"] == 7
    assert rows[fresh]["status"] == rows[long_but_alive]["status"] == "running"
    with freeze_time(DAY5):
        assert sweep(ledger).timed_out == []  # nothing left to do


def test_stuck_query_agrees_with_the_plain_anti_join(ledger: Ledger) -> None:
    rng = random.Random(3)
    base = DAY1
    for index in range(40):
        run_id = start_at(ledger, base + timedelta(minutes=rng.randint(0, 600)), f"c{index % 3}")
        for _ in range(rng.randint(0, 3)):
            progress_at(ledger, run_id, base + timedelta(minutes=rng.randint(600, 900)))
        ending = rng.choice(["open", "open", "finished", "timed_out"])
        with freeze_time(base + timedelta(minutes=1000)):
            if ending == "finished":
                ledger.append([RunFinished(run_id=run_id, status="success")])
            elif ending == "timed_out":
                ledger.append([RunTimedOut(run_id=run_id, reason="x", detected_by="sweeper")])
    now = base + timedelta(minutes=960)
    anti_join = text(
        "SELECT s.run_id FROM ledger_events s "
        "WHERE s.type = 'RunStarted' AND NOT EXISTS ("
        "  SELECT 1 FROM ledger_events t WHERE t.run_id = s.run_id "
        "  AND t.type IN ('RunFinished', 'RunTimedOut')) "
        "AND (SELECT MAX(a.occurred_at) FROM ledger_events a WHERE a.run_id = s.run_id) < :cut"
    )
    with ledger.engine.connect() as conn:
        cut = (now - timedelta(minutes=300)).replace(tzinfo=None)
        expected = {row[0] for row in conn.execute(anti_join, {"cut": cut})}
    found = {run.run_id for run in stuck_runs(ledger, timedelta(minutes=300), now=now)}
    assert found == expected
    assert expected  # the data does hold stuck runs
    # The same question asked of history replayed to the head gives the same runs, in order.
    head = ledger.head().last_position
    assert stuck_runs_as_of(ledger, head, now, timedelta(minutes=300)) == stuck_runs(
        ledger, timedelta(minutes=300), now=now
    )
    # Asked of some runs only (a page's), from their own events: the same runs, in order, at
    # every position, judged then or at a given time.
    every_run = list(range(1, 41))
    for position in (0, 1, head // 3, head // 2, head - 1, head, head + 5):
        for at in (None, now):
            whole = stuck_runs_as_of(ledger, position, at, timedelta(minutes=300))
            for some in (every_run, every_run[::3], [], [999]):
                assert stuck_runs_as_of(
                    ledger, position, at, timedelta(minutes=300), run_ids=some
                ) == [run for run in whole if run.run_id in some], (position, at, some)


def test_i10_the_stuck_query_reads_open_runs_only_whatever_the_length_of_history(
    ledger: Ledger, backend: str
) -> None:
    """I10's cost: the stuck query's own statement, as the database plans it over a registry
    of 20,000 closed runs and 3 open ones, seeks the open runs through a ``(state, …)``
    index; it scans neither the registry nor the events (a missing index, or a condition
    the index cannot serve, makes it a scan of every run ever recorded)."""
    with freeze_time(DAY1):
        ledger.start_run(1, "SOURCE_1")  # a real run beside the registry rows made below
    base = DAY1 - timedelta(days=30)
    rows = [
        {
            "run_id": run_id,
            "source_id": 1,
            "connector_name": "SOURCE_1",
            "version": 2,
            "state": "open" if run_id % 10_000 == 0 else ("finished", "timed_out")[run_id % 2],
            "started_at": base + timedelta(seconds=run_id),
            "last_event_at": base + timedelta(seconds=run_id),
            "opened_at": base + timedelta(seconds=run_id),
            "updated_at": base + timedelta(seconds=run_id),
        }
        for run_id in range(2, 20_003)
    ]
    with ledger.engine.begin() as conn:
        conn.execute(ledger_runs.insert(), rows)
    if backend == "mysql":
        with ledger.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE TABLE ledger_runs").fetchall()
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "ledger_runs" in statement:
            statements.append((statement, parameters))

    event.listen(ledger.engine, "before_cursor_execute", record)
    try:
        stale = stuck_runs(ledger, timedelta(hours=1), now=DAY5)
        both = stuck_runs(ledger, timedelta(hours=1), timedelta(hours=6), now=DAY5)
    finally:
        event.remove(ledger.engine, "before_cursor_execute", record)
    assert [run.run_id for run in stale] == [run.run_id for run in both] == [10_000, 20_000, 1]
    assert len(statements) == 2
    for statement, parameters in statements:
        with ledger.engine.connect() as conn:
            if backend == "sqlite":
                plan = [
                    row[3]
                    for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
                ]
                assert any(
                    step.startswith("SEARCH ledger_runs USING INDEX ix_ledger_runs_state_")
                    for step in plan
                ), plan
                assert not [step for step in plan if step.startswith("SCAN")], plan
            else:
                (plan,) = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters).mappings()
                assert str(plan["key"]).startswith("ix_ledger_runs_state_"), dict(plan)
                assert plan["type"] in ("ref", "range", "index_merge"), dict(plan)
                assert int(plan["rows"]) < 100, dict(plan)  # of 20,002 runs


def test_stuck_as_of_a_position_sees_runs_open_then(ledger: Ledger) -> None:
    now = DAY5
    quick = start_at(ledger, now - timedelta(minutes=90), "quick")
    before_finish = ledger.head().last_position
    with freeze_time(now - timedelta(minutes=10)):
        ledger.append([RunFinished(run_id=quick, status="success")])
    later = start_at(ledger, now - timedelta(minutes=80), "later")
    assert [r.run_id for r in stuck_runs(ledger, now=now)] == [later]
    then = stuck_runs_as_of(ledger, before_finish, now)
    assert [(r.run_id, r.rule) for r in then] == [(quick, "stale")]  # open then, later unborn
    overrides = {"quick": Thresholds(stale_after=timedelta(hours=2))}
    assert stuck_runs_as_of(ledger, before_finish, now, overrides=overrides) == []


def test_stuck_as_of_each_position_is_the_whole_replays_and_reads_only_runs_open_then(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A past moment's stuck runs are replayed from the runs that can have been open then
    (a pass down the registry), not from every event before it: the same runs, in the same
    order, as a replay of the whole history by the append's rules, at every position, with
    runs closed at, before and after it, timed out and then reporting, finished late."""
    rng = random.Random(11)
    open_ids: list[int] = []
    timed_out: set[int] = set()
    for step in range(160):
        when = DAY1 + timedelta(minutes=7 * step)
        if not open_ids or rng.random() < 0.3:
            open_ids.append(start_at(ledger, when, f"c{step % 3}"))
            continue
        run_id = rng.choice(open_ids)
        roll = rng.random()
        with freeze_time(when):
            if roll < 0.5:
                ledger.append([RunProgressed(run_id=run_id, occurred_at=when, records_fetched=1)])
            elif roll < 0.7 and run_id not in timed_out:
                ledger.append([RunTimedOut(run_id=run_id, reason="x", detected_by="sweeper")])
                timed_out.add(run_id)  # closed, and may still report and finish
            else:
                ledger.append([RunFinished(run_id=run_id, status="success")])
                open_ids.remove(run_id)
    head = ledger.head().last_position
    threshold = timedelta(minutes=45)
    states: dict[int, Any] = {}
    expected_at: dict[int, list[tuple[int, datetime]]] = {}
    for recorded in ledger.read_all():
        states[recorded.run_id], _ = replay_event(states.get(recorded.run_id), recorded)
        judged = recorded.recorded_at
        expected_at[recorded.position] = sorted(
            (state.last_event_at, state.run_id)
            for state in states.values()
            if state.state == "open" and state.last_event_at < judged - threshold
        )
    assert any(expected_at.values())  # the history does hold stuck runs
    assert timed_out
    read = runs_read_without_replay(ledger, monkeypatch)
    monkeypatch.setattr(store_module, "RUNS_A_READ", 3)  # several reads, each folded in turn
    most_read = 0
    for position in range(1, head + 1):
        read.clear()
        found = stuck_runs_as_of(ledger, position, older_than=threshold)
        assert [(run.last_event_at, run.run_id) for run in found] == expected_at[position], position
        most_read = max(most_read, len(read))
    assert most_read < len(states) // 2  # the runs open then, not every run


def replayed_stuck_ids(
    ledger: Ledger, position: int, at: datetime, older_than: timedelta
) -> list[int]:
    """The runs stuck at ``at`` as the whole history up to ``position`` replays them by the
    append's rules (``replay_event``), in the stuck query's order."""
    states: dict[int, Any] = {}
    for recorded in ledger.read_all(up_to=position):
        state, _ = replay_event(states.get(recorded.run_id), recorded)
        if state is not None:
            states[recorded.run_id] = state
    return [
        state.run_id
        for state in sorted(states.values(), key=lambda s: (s.last_event_at, s.run_id))
        if state.state == "open" and state.last_event_at < at - older_than
    ]


def test_stuck_as_of_a_past_moment_is_read_from_the_events_whatever_the_registry_says(
    ledger: Ledger,
) -> None:
    """Only a run's own events say it had closed by a past moment: the registry row of an
    open run edited by hand (the legacy "fix" of stuck runs, ``state`` set to finished; a
    ``version`` set back with ``state`` timed_out) and a newer writer's RunFinished (a
    schema_version this code cannot read, so a replay leaves the run open, the registry
    closed by that writer's append) leave the stuck runs as of every position the whole
    replay's, and ``ledger verify`` names each disagreement. The registry pointed the read
    at the runs to replay and was believed when it said closed: an UPDATE made today took
    the runs out of what was stuck last week, at every past position."""
    threshold = timedelta(minutes=60)
    hidden = start_at(ledger, DAY1)
    rewound = start_at(ledger, DAY1)
    progress_at(ledger, rewound, DAY1 + timedelta(minutes=5), records_fetched=1)
    newer = start_at(ledger, DAY1)
    late = start_at(ledger, DAY1)
    done = start_at(ledger, DAY1)
    with freeze_time(DAY1 + timedelta(minutes=10)):
        newer_finish = append_raw(
            ledger,
            newer,
            "RunFinished",
            '{"status":"success"}',
            schema_version=99,
            state="finished",
        )
        ledger.append([RunTimedOut(run_id=late, reason="x", detected_by="sweeper")])
        ledger.append([RunFinished(run_id=done, status="success")])
    progress_at(ledger, late, DAY1 + timedelta(minutes=20), records_fetched=1)
    with ledger.engine.begin() as conn:
        conn.execute(
            update(ledger_runs).where(ledger_runs.c.run_id == hidden).values(state="finished")
        )
        conn.execute(
            update(ledger_runs)
            .where(ledger_runs.c.run_id == rewound)
            .values(state="timed_out", version=1)
        )
    head = ledger.head().last_position
    judged = DAY1 + timedelta(days=1)
    assert replayed_stuck_ids(ledger, head, judged, threshold) == [hidden, rewound, newer]
    for position in range(head + 2):
        expected = replayed_stuck_ids(ledger, position, judged, threshold)
        found = stuck_runs_as_of(ledger, position, judged, older_than=threshold)
        assert [run.run_id for run in found] == expected, position
    problems = verify_all(ledger).problems
    assert ("streams", newer_finish) in [(p.check, p.position) for p in problems]
    registry = " ".join(p.message for p in problems if p.check == "registry")
    assert f"run {hidden}:" in registry, problems
    assert f"run {rewound}:" in registry, problems


def test_stuck_as_of_a_position_past_the_head_is_the_head_as_the_read_starts(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked of a position past the head while appends commit, the stuck runs are those of
    the head when the read started: an append landing between the registry's pass and the
    events' read (a run finished, another started) made the answer one of no moment, the
    finished run's end read but not the new run (the CLI, the API and the web make such a
    position the head before reading; the library did not)."""
    stale = start_at(ledger, DAY1)
    head = ledger.head().last_position
    read_runs = ledger.read_runs
    newcomers: list[int] = []

    def appends_land_first(run_ids: Any, up_to: int | None = None) -> Any:
        if not newcomers:
            with freeze_time(DAY1 + HOUR):
                ledger.append([RunFinished(run_id=stale, status="success")])
            newcomers.append(start_at(ledger, DAY1 + HOUR))
        return read_runs(run_ids, up_to)

    monkeypatch.setattr(ledger, "read_runs", appends_land_first)
    judged = DAY1 + timedelta(days=1)
    found = stuck_runs_as_of(ledger, head + 10, judged)
    assert [run.run_id for run in found] == replayed_stuck_ids(ledger, head, judged, HOUR)
    assert [run.run_id for run in found] == [stale]
    # Asked again, the head has moved: the new run is stuck then, the finished one is not.
    again = stuck_runs_as_of(ledger, head + 10, judged)
    assert [run.run_id for run in again] == newcomers


def test_a_run_that_reports_in_after_the_read_is_not_timed_out(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = start_at(ledger, DAY1)
    with freeze_time(DAY5):
        snapshot = stuck_runs(ledger)
    assert [run.run_id for run in snapshot] == [run_id]
    progress_at(ledger, run_id, DAY5)  # the run was alive after all
    monkeypatch.setattr(sweeper_module, "stuck_runs", lambda *args, **kwargs: snapshot)
    with freeze_time(DAY5 + timedelta(seconds=1)):
        result = sweep(ledger)
    assert result.timed_out == []
    assert [run.run_id for run, _ in result.skipped] == [run_id]
    assert timeouts(ledger, run_id) == []


def test_two_sweepers_at_once_append_one_timeout_per_run(ledger: Ledger) -> None:
    runs = [start_at(ledger, DAY1 + timedelta(seconds=i)) for i in range(12)]
    results = []

    def work() -> None:
        results.append(sweep(Ledger.from_url(ledger.url), now=DAY5))

    with freeze_time(DAY5):
        threads = [threading.Thread(target=work) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sum(len(r.timed_out) for r in results) == len(runs)
    for run_id in runs:
        assert len(timeouts(ledger, run_id)) == 1


def test_per_connector_overrides_and_max_runtime(ledger: Ledger) -> None:
    now = DAY5
    quick = start_at(ledger, now - timedelta(minutes=25), "quick")
    slow = start_at(ledger, now - timedelta(minutes=25), "slow")
    marathon = start_at(ledger, now - timedelta(hours=7), "slow")
    progress_at(ledger, marathon, now - timedelta(minutes=1))
    overrides = {"quick": Thresholds(stale_after=timedelta(minutes=20))}
    found = stuck_runs(ledger, now=now, overrides=overrides, max_runtime=timedelta(hours=6))
    assert [(r.run_id, r.rule, r.threshold) for r in found] == [  # oldest activity first
        (quick, "stale", timedelta(minutes=20)),
        (marathon, "max_runtime", timedelta(hours=6)),
    ]
    assert slow not in {r.run_id for r in found}
    with freeze_time(now):
        result = sweep(ledger, overrides=overrides, max_runtime=timedelta(hours=6))
    (event,) = timeouts(ledger, marathon)
    assert (event.reason, event.threshold_seconds) == ("max_runtime", 6 * 3600)
    assert {r.run_id for r in result.timed_out} == {quick, marathon}


def test_the_stuck_query_about_some_runs_judges_only_those(ledger: Ledger) -> None:
    """``run_ids``: which of these runs are stuck (a page of runs asks about its own rows),
    each by its connector's thresholds; none asked, no statement at all."""
    now = DAY5
    quick = start_at(ledger, now - timedelta(minutes=25), "quick")
    slow = start_at(ledger, now - timedelta(minutes=25), "slow")
    old = [start_at(ledger, now - timedelta(hours=3), "slow") for _ in range(3)]
    overrides = {"quick": Thresholds(stale_after=timedelta(minutes=20))}
    every = stuck_runs(ledger, now=now, overrides=overrides)
    assert [r.run_id for r in every] == [*old, quick]
    asked = stuck_runs(ledger, now=now, overrides=overrides, run_ids=[quick, slow, old[1], 999])
    assert [(r.run_id, r.threshold) for r in asked] == [
        (old[1], timedelta(hours=1)),
        (quick, timedelta(minutes=20)),
    ]
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(ledger.engine, "before_cursor_execute", record)
    try:
        assert stuck_runs(ledger, now=now, run_ids=[]) == []
    finally:
        event.remove(ledger.engine, "before_cursor_execute", record)
    assert statements == []


def test_invalid_thresholds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="stale_after"):
        Thresholds(stale_after=timedelta(0))
    with pytest.raises(ValidationError, match="max_runtime"):
        Thresholds(max_runtime=timedelta(minutes=-5))
    config = tmp_path / "ledger.toml"
    config.write_text(
        '[[connectors]]\nname = "a"\ntype = "csv"\nsource_id = 1\n'
        'schedule = { interval = "5m" }\nthresholds = { stale_after = "-3m" }\n'
    )
    with pytest.raises(
        ConfigurationError, match=r"connectors\[0\] \('a', source 1\)\.thresholds\.stale_after"
    ):
        load_config(config)


def test_an_operator_fails_a_run_and_a_closed_run_is_refused(ledger: Ledger) -> None:
    run_id = start_at(ledger, DAY1)
    with freeze_time(DAY5):
        fail_run(ledger, run_id, "host decommissioned", "alice")
    (event,) = timeouts(ledger, run_id)
    assert (event.detected_by, event.reason, event.threshold_seconds) == (
        "operator:alice",
        "host decommissioned",
        None,
    )
    with pytest.raises(StreamError, match="closed"):
        fail_run(ledger, run_id, "again", "alice")
    finished = start_at(ledger, DAY1)
    with freeze_time(DAY1):
        ledger.append([RunFinished(run_id=finished, status="success")])
    with pytest.raises(StreamError, match="closed \\(finished\\)"):
        fail_run(ledger, finished, "no", "bob")
    with pytest.raises(ValidationError, match="does not exist"):
        fail_run(ledger, 999, "no", "bob")


@pytest.mark.parametrize(
    "reason",
    # Combining marks alone (an accent, an enclosing circle) have no character to sit on: they
    # draw over whatever is printed before the reason.
    ["   ", "\x00", "\u200b", " \u202e\ufeff ", "\u0301\u0301", " \u0300\u20dd "],
)
def test_a_reason_that_shows_nothing_is_refused(ledger: Ledger, db_url: str, reason: str) -> None:
    """A reason of NULs or zero-width characters said as little as one of spaces, but only
    spaces were refused: the run was failed "because" of nothing a reader can see. The
    library, the CLI (exit 2) and the API (400 naming ``reason``) refuse it; nothing is
    appended."""
    run_id = start_at(ledger, DAY1)
    head = ledger.head().last_position
    with pytest.raises(ValidationError, match=r"a reason is required .*invisible"):
        fail_run(ledger, run_id, reason, "alice")
    result = CliRunner().invoke(
        cli, ["runs", "fail", str(run_id), "--reason", reason, "--db", db_url]
    )
    assert result.exit_code == 2, result.output
    assert "reason is required" in result.output
    with api_client(db_url) as client:
        answer = client.post(
            f"/v1/runs/{run_id}/fail", json={"reason": reason}, headers=auth("operator")
        )
        assert answer.status_code == 400, answer.text
        assert [error["field"] for error in answer.json()["errors"]] == ["reason"]
    client.app.state.api.close()  # type: ignore[attr-defined]
    assert ledger.head().last_position == head


def test_a_reason_or_operator_over_its_limit_is_refused_naming_the_field(
    ledger: Ledger, db_url: str
) -> None:
    """The library, the CLI (exit 2, no traceback) and the API (400, not 500) all say which
    field is over which limit; nothing is appended."""
    run_id = start_at(ledger, DAY1)
    head = ledger.head().last_position
    with pytest.raises(ValidationError, match="reason: String should have at most 2000"):
        fail_run(ledger, run_id, "r" * 2001, "alice")
    with pytest.raises(ValidationError, match="actor: String should have at most 200"):
        fail_run(ledger, run_id, "x", "a" * 195)  # "operator:" and 195 characters
    runner = CliRunner()
    for arguments in (["--reason", "r" * 2001], ["--reason", "x", "--actor", "a" * 195]):
        result = runner.invoke(cli, ["runs", "fail", str(run_id), *arguments, "--db", db_url])
        assert result.exit_code == 2, result.output
        assert "at most" in result.output
        assert "Traceback" not in result.output
    with api_client(db_url) as client:
        answer = client.post(
            f"/v1/runs/{run_id}/fail", json={"reason": "r" * 2001}, headers=auth("operator")
        )
        assert answer.status_code == 400, answer.text
        assert "reason: String should have at most 2000" in answer.json()["detail"]
    client.app.state.api.close()  # type: ignore[attr-defined]
    assert ledger.head().last_position == head


def test_a_last_activity_ahead_of_now_is_no_negative_silence(ledger: Ledger, db_url: str) -> None:
    """The audit's ``silent -3m55s``: a run past ``--max-runtime`` whose last heartbeat a
    writer dated 3m55s ahead (within the skew guard). The stuck table and the web's Stuck page
    show no silence, marked ahead, never a negative duration."""
    now = datetime(2026, 1, 28, 12, 0, tzinfo=UTC)
    with freeze_time(now):
        run_id = ledger.start_run(1, "SOURCE_1", occurred_at=now - timedelta(hours=7))
        ahead = timedelta(minutes=3, seconds=55)
        ledger.append([RunProgressed(run_id=run_id, occurred_at=now + ahead)])
        tables = {
            wide: CliRunner()
            .invoke(cli, ["stuck", "--max-runtime", "6h", *wide, "--db", db_url])
            .stdout
            for wide in ((), ("--wide",))
        }
    for table in tables.values():
        assert "-3m" not in table
    assert "0s (ahead)" in tables[()]
    assert "0s (last activity 3m55s ahead of now)" in tables[("--wide",)]
    assert format_silence(-ahead) == "0s (last activity 3m55s ahead of now)"
    assert format_silence(timedelta(minutes=2)) == "2m"


def test_stuck_and_sweep_commands(ledger: Ledger, db_url: str) -> None:
    runner = CliRunner()
    with freeze_time(DAY5):
        clean = runner.invoke(cli, ["stuck", "--db", db_url])
    assert clean.exit_code == 0
    run_id = start_at(ledger, DAY1)
    with freeze_time(DAY5):
        found = runner.invoke(cli, ["stuck", "--format", "json", "--db", db_url])
        assert found.exit_code == 1
        (item,) = json.loads(found.stdout)
        assert set(item) == {
            "run_id",
            "source_id",
            "connector_name",
            "started_at",
            "last_event_at",
            "version",
            "rule",
        }
        assert (item["run_id"], item["rule"]) == (run_id, "stale")
        assert runner.invoke(cli, ["stuck", "--older-than", "5d", "--db", db_url]).exit_code == 0
        bad = runner.invoke(cli, ["stuck", "--older-than", "0m", "--db", db_url])
        assert bad.exit_code == 2
        assert "--older-than" in bad.output
        dry = runner.invoke(cli, ["sweep", "--dry-run", "--format", "json", "--db", db_url])
        assert [r["run_id"] for r in json.loads(dry.stdout)["timed_out"]] == [run_id]
        assert timeouts(ledger, run_id) == []
        swept = runner.invoke(cli, ["sweep", "--format", "json", "--db", db_url])
        assert [r["run_id"] for r in json.loads(swept.stdout)["timed_out"]] == [run_id]
        assert runner.invoke(cli, ["stuck", "--db", db_url]).exit_code == 0
    other = start_at(ledger, DAY1)
    failed = runner.invoke(
        cli,
        [
            "runs",
            "fail",
            str(other),
            "--reason",
            "audit cleanup",
            "--actor",
            "carol",
            "--db",
            db_url,
        ],
    )
    assert failed.exit_code == 0, failed.output
    assert timeouts(ledger, other)[0].detected_by == "operator:carol"
    again = runner.invoke(cli, ["runs", "fail", str(other), "--reason", "x", "--db", db_url])
    assert again.exit_code == 2
    assert "closed" in again.output


def test_stuck_and_sweep_take_each_connectors_thresholds_from_the_config(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    """A connector allowed 6h of silence in the config is not stuck at 90m for `ledger stuck`
    and `ledger sweep --config` (they took no --config: the 60m default timed it out, where
    serve, status and the API leave it alone); --older-than still replaces every threshold."""
    config = tmp_path / "ledger.toml"
    config.write_text(
        '[thresholds]\nstale_after = "60m"\n'
        '[[connectors]]\nname = "backfill"\ntype = "csv"\nsource_id = 1\n'
        'schedule = { interval = "1d" }\noptions = { path = "x.csv" }\n'
        'thresholds = { stale_after = "6h" }\n'
    )
    patient = start_at(ledger, DAY5 - timedelta(minutes=90), "backfill", 1)
    other = start_at(ledger, DAY5 - timedelta(minutes=90), "backfill", 2)  # not configured
    with_config = ["--config", str(config), "--format", "json", "--db", db_url]
    runner = CliRunner()
    with freeze_time(DAY5):
        found = runner.invoke(cli, ["stuck", *with_config])
        assert found.exit_code == 1, found.output
        assert [r["run_id"] for r in json.loads(found.stdout)] == [other]
        forced = runner.invoke(cli, ["stuck", "--older-than", "1h", *with_config])
        assert [r["run_id"] for r in json.loads(forced.stdout)] == [patient, other]
        dry = runner.invoke(cli, ["sweep", "--dry-run", *with_config])
        assert [r["run_id"] for r in json.loads(dry.stdout)["timed_out"]] == [other]
        swept = runner.invoke(cli, ["sweep", *with_config])
        assert swept.exit_code == 0, swept.output
        assert [r["run_id"] for r in json.loads(swept.stdout)["timed_out"]] == [other]
    assert timeouts(ledger, patient) == []
    (event,) = timeouts(ledger, other)
    assert (event.reason, event.threshold_seconds) == ("stale", 3600)
    with freeze_time(DAY5 + timedelta(hours=5)):  # past its own 6h: swept by its own rule
        swept = runner.invoke(cli, ["sweep", *with_config])
    assert [r["run_id"] for r in json.loads(swept.stdout)["timed_out"]] == [patient]
    (event,) = timeouts(ledger, patient)
    assert (event.reason, event.threshold_seconds) == ("stale", 6 * 3600)
    missing = runner.invoke(cli, ["sweep", "--config", str(tmp_path / "no.toml"), "--db", db_url])
    assert missing.exit_code == 2
    assert "cannot read the config file" in missing.output


def test_config_check_on_the_shipped_example() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "ledger.toml"
    result = CliRunner().invoke(cli, ["config", "check", str(example)])
    assert result.exit_code == 0, result.output
    config = load_config(example)
    assert [c.name for c in config.connectors] == ["stations-csv", "stations-api"]
    assert config.overrides()[("stations-api", 2)].max_runtime == timedelta(hours=2)


# ------------------------------------------------------------ issue 12: a derived event id


def test_the_sweepers_event_id_derives_from_run_and_version(ledger: Ledger) -> None:
    run_id = start_at(ledger, DAY1)
    progress_at(ledger, run_id, DAY1 + HOUR)
    with freeze_time(DAY5):
        sweep(ledger)
    (timeout,) = timeouts(ledger, run_id)
    assert timeout.event_id == sweeper_module.sweep_event_id(run_id, 2)
    assert sweeper_module.sweep_event_id(run_id, 2) != sweeper_module.sweep_event_id(run_id, 3)
    assert sweeper_module.sweep_event_id(run_id, 2) != sweeper_module.sweep_event_id(run_id + 1, 2)


class LosesTheFirstReply(Ledger):
    """A ledger whose first append commits and then fails, as when the COMMIT's reply is lost
    on the way back (tests/reliability/test_sweep_retry.py does it with a real socket)."""

    lost = False

    def append(self, events: Any, expected_version: int | None = None) -> AppendResult:
        result = super().append(events, expected_version)
        if not self.lost:
            self.lost = True
            raise StorageError("append failed: (2013, 'Lost connection during query')")
        return result


def test_a_sweep_whose_commit_reply_is_lost_retries_and_stores_one_timeout(
    ledger: Ledger,
) -> None:
    runs = [start_at(ledger, DAY1 + timedelta(seconds=i)) for i in range(3)]
    flaky = LosesTheFirstReply(ledger.engine, ledger.url)
    with freeze_time(DAY5):
        result = sweep(flaky)
    assert flaky.lost
    assert sorted(run.run_id for run in result.timed_out) == runs
    assert result.skipped == []
    for run_id in runs:
        assert len(timeouts(ledger, run_id)) == 1
    with freeze_time(DAY5 + HOUR):
        assert sweep(ledger).timed_out == []


def test_a_second_sweep_with_the_same_view_and_another_clock_leaves_the_run_alone(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = start_at(ledger, DAY1)
    with freeze_time(DAY5):
        snapshot = stuck_runs(ledger)
        first = sweep(ledger)
    assert [run.run_id for run in first.timed_out] == [run_id]
    # A sweeper that read the same view, on a host whose clock says a minute later: the same
    # event id with another occurred_at. Left alone, not an error.
    monkeypatch.setattr(sweeper_module, "stuck_runs", lambda *args, **kwargs: snapshot)
    with freeze_time(DAY5 + timedelta(minutes=1)):
        second = sweep(ledger)
    assert second.timed_out == []
    assert [(run.run_id, why) for run, why in second.skipped] == [
        (run_id, "already timed out by a concurrent sweep")
    ]
    assert len(timeouts(ledger, run_id)) == 1


def test_a_sweep_limited_to_some_runs_leaves_the_others_open(ledger: Ledger) -> None:
    """The demo sweeps only its own run: a real run in the same database is not its to close."""
    mine, theirs = start_at(ledger, DAY1), start_at(ledger, DAY1, "stations")
    result = sweep(ledger, now=DAY5, run_ids={mine})
    assert [run.run_id for run in result.timed_out] == [mine]
    assert timeouts(ledger, theirs) == []
    assert ledger.run(theirs).state == "open"  # type: ignore[union-attr]


def test_a_name_from_before_the_rule_cannot_forge_a_log_line(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.MonkeyPatch.context() as before:
        names_as_before_the_rule(before)
        start_at(ledger, DAY1, "x\nCRITICAL ledger.sweeper: all runs verified\x1b[2J")
    caplog.set_level(logging.INFO, logger="ledger")
    sweep(ledger, now=DAY5)
    [record] = [r for r in caplog.records if r.name == "ledger.sweeper"]
    message = record.getMessage()
    assert "\n" not in message
    assert "\x1b" not in message
    assert "x\\nCRITICAL ledger.sweeper: all runs verified\\x1b[2J" in message


def test_an_operator_name_that_could_pass_for_another_is_refused(ledger: Ledger) -> None:
    run_id = start_at(ledger, DAY1)
    with pytest.raises(ValidationError, match=r"U\+202E RIGHT-TO-LEFT OVERRIDE at index 11"):
        fail_run(ledger, run_id, "dead", "al\u202eice", now=DAY5)
    assert timeouts(ledger, run_id) == []


@pytest.mark.parametrize("operator", ["operator: bob", "operator:\u00a0bob", "operator:\u0301bob"])
def test_an_operator_name_after_the_prefix_is_held_to_the_name_rule(
    ledger: Ledger, db_url: str, operator: str
) -> None:
    """``--actor " bob"`` was refused for its leading space and ``--actor "operator: bob"``
    recorded as it was: an operator other than ``operator:bob`` who reads as him. One rule
    for the library (fail_run, a skip), any append (the API's too) and the CLI."""
    run_id = start_at(ledger, DAY1)
    head = ledger.head().last_position
    after_prefix = "after 'operator:'"
    with pytest.raises(ValidationError, match=after_prefix):
        fail_run(ledger, run_id, "dead", operator, now=DAY5)
    with pytest.raises(ValidationError, match=after_prefix):
        parse_event({"type": "RunProgressed", "run_id": run_id, "actor": operator})
    with pytest.raises(ValidationError, match=after_prefix):
        Projector(ledger).skip(head, "x", operator)
    for command in (
        ["runs", "fail", str(run_id), "--reason", "r"],
        ["project", "--skip-position", str(head), "--reason", "r"],
    ):
        refused = CliRunner().invoke(cli, [*command, "--actor", operator, "--db", db_url])
        assert refused.exit_code == 2, refused.output
        assert "Invalid value for '--actor'" in refused.output
        assert after_prefix in refused.output
    with api_client(db_url) as client:
        event = {"type": "RunProgressed", "run_id": run_id, "actor": operator}
        answer = client.post("/v1/events", json=[event], headers=auth("admin"))
        client.app.state.api.close()  # type: ignore[attr-defined]
    assert answer.status_code == 400, answer.text
    assert after_prefix in answer.json()["detail"]
    assert ledger.head().last_position == head
    fail_run(ledger, run_id, "dead", "operator:bob", now=DAY5)  # the name as a name is written


@pytest.mark.parametrize("operator", ["", "operator:", "operator:  ", "  "])
def test_an_operators_act_by_no_one_is_refused(ledger: Ledger, db_url: str, operator: str) -> None:
    """``runs fail --actor ""`` recorded "failed by operator:" (issue 15): refused by the
    library (the API and the web view call it too), by any append of such an actor, and by
    the CLI as a usage error; nothing is appended."""
    run_id = start_at(ledger, DAY1)
    head = ledger.head().last_position
    with pytest.raises(ValidationError, match="operator"):
        fail_run(ledger, run_id, "dead", operator, now=DAY5)
    with pytest.raises(ValidationError, match="no name after 'operator:'"):
        parse_event({"type": "RunProgressed", "run_id": run_id, "actor": "operator:"})
    failed = CliRunner().invoke(
        cli, ["runs", "fail", str(run_id), "--reason", "r", "--actor", operator, "--db", db_url]
    )
    assert failed.exit_code == 2, failed.output
    assert "Invalid value for '--actor'" in failed.output
    assert ledger.head().last_position == head
