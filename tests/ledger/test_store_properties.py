"""Property: any sequence of valid and invalid appends leaves the store consistent.

Consistent means: a rejected batch wrote nothing (head and row count unchanged), an accepted one
wrote exactly what it reported, every run's versions are 1..n starting with RunStarted, the
write-side registry agrees with the events, positions are 1..N and the chain verifies.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from forensics.chain import verify_chain
from ledger import (
    EventModel,
    Ledger,
    LedgerError,
    RecordedEvent,
    RunFinished,
    RunProgressed,
    RunStarted,
    RunTimedOut,
)
from ledger.clock import utcnow
from ledger.schema import ledger_events, ledger_runs
from tests import support

pytestmark = pytest.mark.slow

# One step of a history: (kind, run slot, counter, expected_version offset or None).
KINDS = [
    "start",
    "start",
    "progress",
    "progress",
    "progress",
    "finish",
    "timeout",
    "unknown_run",
    "repeat",
    "future",
]
step = st.tuples(
    st.sampled_from(KINDS),
    st.integers(0, 3),
    st.integers(0, 1000),
    st.one_of(st.none(), st.integers(-1, 1)),
)
batches = st.lists(st.lists(step, min_size=1, max_size=4), min_size=1, max_size=8)


def build_batch(
    steps: list[tuple[str, int, int, int | None]], run_ids: list[int], appended: list[EventModel]
) -> tuple[list[EventModel], int | None]:
    events: list[EventModel] = []
    expected: int | None = None
    for kind, slot, count, offset in steps:
        run_id = run_ids[slot % len(run_ids)] if run_ids else 1
        if kind == "start":
            events.append(RunStarted(source_id=slot, connector_name=f"c{slot}"))
        elif kind == "progress":
            events.append(RunProgressed(run_id=run_id, records_fetched=count))
        elif kind == "finish":
            events.append(RunFinished(run_id=run_id, status="success"))
        elif kind == "timeout":
            events.append(RunTimedOut(run_id=run_id, reason="stale", detected_by="sweeper"))
        elif kind == "unknown_run":
            events.append(RunProgressed(run_id=10_000 + slot))
        elif kind == "repeat" and appended:
            events.append(appended[count % len(appended)])
        elif kind == "future":  # beyond the clock skew guard: the whole batch is refused
            events.append(RunProgressed(run_id=run_id, occurred_at=utcnow() + timedelta(hours=1)))
        if offset is not None:
            expected = offset  # resolved against the run's version below
    if expected is not None and len({e.run_id for e in events}) == 1 and events[0].run_id:
        return events, expected
    return events, None


def check_consistent(ledger: Ledger) -> None:
    events = list(ledger.read_all())
    assert [e.position for e in events] == list(range(1, len(events) + 1))
    by_run: dict[int, list[int]] = {}
    for event in events:
        by_run.setdefault(event.run_id, []).append(event.version)
        if event.version == 1:
            assert event.type == "RunStarted"
    for run_id, versions in by_run.items():
        assert versions == list(range(1, len(versions) + 1)), run_id
        state = ledger.run(run_id)
        assert state is not None
        assert state.version == len(versions)
    with ledger.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ledger_runs)).scalar_one() == len(
            by_run
        )
    assert verify_chain(ledger).ok
    assert ledger.head().last_position == len(events)


class Model:
    """An independent, naive model of the store: which batches must be accepted, and what
    they must append. Written from DESIGN.md §4-5, not from ledger/rules.py."""

    def __init__(self) -> None:
        self.runs: dict[int, tuple[int, str]] = {}  # run id -> (version, state)
        self.stored: set[str] = set()
        self.last_allocated = 0  # ids are allocated upwards, skipping taken ones

    def predict(self, batch: list[EventModel], expected_version: int | None) -> int | None:
        """How many events the batch appends, or None if it must be refused."""
        runs = dict(self.runs)
        seen = set(self.stored)
        checked: set[int] = set()
        last_allocated = self.last_allocated
        new = 0
        for event in batch:
            event_id = str(event.event_id)
            if event_id in seen:
                continue
            if event.occurred_at > utcnow() + timedelta(minutes=5):
                return None
            if isinstance(event, RunStarted):
                if event.run_id is None:
                    last_allocated += 1
                    while last_allocated in runs:
                        last_allocated += 1
                    key = last_allocated
                else:
                    key = event.run_id
                if key in runs:
                    return None
                version, state = 0, "new"
            else:
                assert event.run_id is not None
                key = event.run_id
                if key not in runs:
                    return None
                version, state = runs[key]
                if state == "finished":
                    return None
                if isinstance(event, RunTimedOut) and state == "timed_out":
                    return None
            if expected_version is not None and key not in checked and version != expected_version:
                return None
            checked.add(key)
            if isinstance(event, RunStarted):
                state = "open"
            elif isinstance(event, RunFinished):
                state = "finished"
            elif isinstance(event, RunTimedOut):
                state = "timed_out"
            runs[key] = (version + 1, state)
            seen.add(event_id)
            new += 1
        return new

    def accept(self, batch: list[EventModel], new_events: list[RecordedEvent]) -> None:
        for event in new_events:
            state = {
                "RunStarted": "open",
                "RunFinished": "finished",
                "RunTimedOut": "timed_out",
            }.get(event.type)
            _, previous = self.runs.get(event.run_id, (0, "open"))
            self.runs[event.run_id] = (event.version, state or previous)
        self.stored.update(str(event.event_id) for event in batch)
        for recorded in new_events:  # the generator never gives explicit run ids
            if recorded.type == "RunStarted":
                self.last_allocated = max(self.last_allocated, recorded.run_id)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=batches)
def test_any_sequence_of_appends_leaves_the_store_consistent(
    history: list[list[tuple[str, int, int, int | None]]],
    backend: str,
    sqlite_template: Path,
    tmp_path: Path,
    db_url: str,
) -> None:
    mysql_url = db_url if backend == "mysql" else None
    ledger = support.fresh_store(backend, sqlite_template, tmp_path, mysql_url)
    model = Model()
    try:
        run_ids: list[int] = []
        appended: list[EventModel] = []
        for steps in history:
            batch, offset = build_batch(steps, run_ids, appended)
            if not batch:
                continue
            expected_version = None
            if offset is not None and batch[0].run_id is not None:
                state = ledger.run(batch[0].run_id)
                expected_version = max(0, (state.version if state else 0) + offset)
            predicted = model.predict(batch, expected_version)
            head = ledger.head()
            with ledger.engine.connect() as conn:
                before = conn.execute(select(func.count()).select_from(ledger_events)).scalar_one()
            try:
                result = ledger.append(batch, expected_version=expected_version)
            except LedgerError:
                assert predicted is None, "a valid batch was refused"
                assert ledger.head() == head
                with ledger.engine.connect() as conn:
                    after = conn.execute(
                        select(func.count()).select_from(ledger_events)
                    ).scalar_one()
                assert after == before
                continue
            assert predicted is not None, "an invalid batch was accepted"
            assert result.appended == predicted
            assert result.appended + result.duplicates == len(batch)
            assert [e.event_id for e in result.events] == [str(e.event_id) for e in batch]
            assert ledger.head().last_position == head.last_position + result.appended
            stored = ledger.read_all(after=head.last_position)
            assert [e.event_id for e in stored] == [e.event_id for e in result.new_events]
            model.accept(batch, result.new_events)
            for event in result.new_events:
                if event.type == "RunStarted":
                    run_ids.append(event.run_id)
            appended.extend(batch)
        check_consistent(ledger)
    finally:
        ledger.close()
