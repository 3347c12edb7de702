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

from ledger import (
    EventModel,
    Ledger,
    LedgerError,
    RunFinished,
    RunProgressed,
    RunStarted,
    RunTimedOut,
    verify_chain,
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
            head = ledger.head()
            with ledger.engine.connect() as conn:
                before = conn.execute(select(func.count()).select_from(ledger_events)).scalar_one()
            try:
                result = ledger.append(batch, expected_version=expected_version)
            except LedgerError:
                assert ledger.head() == head
                with ledger.engine.connect() as conn:
                    after = conn.execute(
                        select(func.count()).select_from(ledger_events)
                    ).scalar_one()
                assert after == before
                continue
            assert ledger.head().last_position == head.last_position + result.appended
            for event in result.new_events:
                if event.type == "RunStarted":
                    run_ids.append(event.run_id)
            appended.extend(batch)
        check_consistent(ledger)
    finally:
        ledger.close()
