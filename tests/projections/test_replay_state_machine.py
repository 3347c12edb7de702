"""I7, I8 and the first-terminal-wins rule as a hypothesis state machine, on SQLite and MariaDB.

Interleaved at random: runs started, progress, finishes (some dated before a timeout that was
appended first, as a spooled finish is), the clock moved on (freezegun), the real sweeper (and
the same sweep again at the same instant), an operator failing a run, and projector batches of
random sizes. After every batch the table equals an in-memory replay up to the checkpoint and
as of the time of that position (events share a ``recorded_at`` under a frozen clock); a run's
status, once terminal, never changes; at the end a rebuild of random batch size gives the
same rows and transitions, and ``verify`` passes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from forensics import verify_all
from ledger import Ledger, RunFinished, RunProgressed, fail_run, sweep
from projections import Projector, rebuild, resolve_position, runs_as_of
from projections.as_of import replay_as_of
from tests import support
from tests.projection_support import table_rows, transition_rows

pytestmark = pytest.mark.slow
T0 = datetime(2026, 1, 1, tzinfo=UTC)
counters = st.fixed_dictionaries(
    {"records_fetched": st.integers(0, 40), "records_created": st.integers(0, 40)}
)


def _machine(store: Any) -> type[RuleBasedStateMachine]:
    class Ledgering(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.clock = freeze_time(T0)
            self.frozen = self.clock.start()
            self.ledger: Ledger = store()
            # run id -> open | timed_out | finished (the write side's states)
            self.state: dict[int, str] = {}
            self.first_terminal: dict[int, str] = {}  # the status the projection first showed
            self.timed_out_at: dict[int, datetime] = {}
            self.snapshots: dict[int, dict[int, Any]] = {}  # checkpoint -> the table then

        def teardown(self) -> None:
            try:
                if self.state:
                    self._project_all()
            finally:
                self.ledger.close()
                self.clock.stop()

        def _runs(self, *states: str) -> list[int]:
            return sorted(run for run, state in self.state.items() if state in states)

        @initialize(sources=st.lists(st.integers(1, 3), min_size=1, max_size=3))
        def first_runs(self, sources: list[int]) -> None:
            for source in sources:
                self.start(source)

        @rule(source=st.integers(1, 3))
        def start(self, source: int) -> None:
            run_id = self.ledger.start_run(source, f"c{source}")
            self.state[run_id] = "open"

        @precondition(lambda self: bool(self._runs("open", "timed_out")))
        @rule(data=st.data(), deltas=counters)
        def progress(self, data: st.DataObject, deltas: dict[str, int]) -> None:
            run_id = data.draw(st.sampled_from(self._runs("open", "timed_out")))
            self.ledger.append([RunProgressed(run_id=run_id, **deltas)])

        @precondition(lambda self: bool(self._runs("open", "timed_out")))
        @rule(
            data=st.data(),
            status=st.sampled_from(["success", "partial", "failed"]),
            backdated=st.booleans(),
        )
        def finish(self, data: st.DataObject, status: str, backdated: bool) -> None:
            run_id = data.draw(st.sampled_from(self._runs("open", "timed_out")))
            occurred_at = None
            if backdated and run_id in self.timed_out_at:
                # Finished before the timeout was declared, delivered after it (a spool).
                occurred_at = self.timed_out_at[run_id] - timedelta(seconds=1)
            finished = RunFinished(run_id=run_id, status=status, records_fetched=1)
            if occurred_at is not None:
                finished = finished.model_copy(update={"occurred_at": occurred_at})
            event(f"finish backdated={occurred_at is not None}")
            self.ledger.append([finished])
            self.state[run_id] = "finished"

        @rule(minutes=st.sampled_from([1, 30, 61, 150]))
        def wait(self, minutes: int) -> None:
            self.frozen.tick(timedelta(minutes=minutes))

        @rule()
        def sweep_twice(self) -> None:
            first = sweep(self.ledger)
            event(f"swept {min(len(first.timed_out), 2)}")
            for run in first.timed_out:
                assert self.state[run.run_id] == "open"
                self.state[run.run_id] = "timed_out"
                self.timed_out_at[run.run_id] = self.ledger.clock()
            again = sweep(self.ledger)  # the same instant, the same view: nothing new
            assert again.timed_out == []

        @precondition(lambda self: bool(self._runs("open")))
        @rule(data=st.data())
        def operator_fails(self, data: st.DataObject) -> None:
            run_id = data.draw(st.sampled_from(self._runs("open")))
            fail_run(self.ledger, run_id, "hung", "al")
            self.state[run_id] = "timed_out"
            self.timed_out_at[run_id] = self.ledger.clock()

        @rule(batch_size=st.integers(1, 7))
        def project(self, batch_size: int) -> None:
            Projector(self.ledger, batch_size=batch_size).apply_batch()
            self._check_projection()

        def _check_projection(self) -> None:
            position = Projector(self.ledger).checkpoint().position
            rows = table_rows(self.ledger)
            rows_replayed, transitions = replay_as_of(self.ledger, position, batch_size=3)
            assert rows == rows_replayed
            assert transition_rows(self.ledger) == [t.as_row() for t in transitions]
            self.snapshots[position] = rows
            for run_id, row in rows.items():
                if row["status"] != "running":
                    first = self.first_terminal.setdefault(run_id, row["status"])
                    assert row["status"] == first, f"run {run_id} flipped {first}->{row}"

        def _project_all(self) -> None:
            while Projector(self.ledger, batch_size=5).apply_batch()[0]:
                pass
            self._check_projection()
            live, transitions = table_rows(self.ledger), transition_rows(self.ledger)
            for run_id, state in self.state.items():
                if state in ("timed_out",) or run_id in self.timed_out_at:
                    assert live[run_id]["status"] == "failed"  # the first terminal wins
                elif state == "open":
                    assert live[run_id]["status"] == "running"
            rebuild(self.ledger, batch_size=3)
            assert table_rows(self.ledger) == live
            assert transition_rows(self.ledger) == transitions
            # As of each position a batch stopped at, and as of its time when no later event
            # shares it (a frozen clock records many at one instant), with the whole history
            # now stored: the table the projector had then.
            for position, rows in self.snapshots.items():
                assert runs_as_of(self.ledger, position, batch_size=2) == rows
                when = self.ledger.recorded_at(position)
                if when is not None and self.ledger.position_at(when) == position:
                    moment = resolve_position(self.ledger, when, None)
                    assert runs_as_of(self.ledger, moment) == rows
            report = verify_all(self.ledger)
            assert report.ok, report.problems

    return Ledgering


def test_any_interleaving_projects_as_a_fresh_replay_and_rebuild(
    backend: str, sqlite_template: Path, tmp_path: Path, db_url: str
) -> None:
    def store() -> Ledger:
        return support.fresh_store(
            backend, sqlite_template, tmp_path, db_url if backend == "mysql" else None
        )

    run_state_machine_as_test(
        _machine(store),
        settings=settings(
            max_examples=30,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
