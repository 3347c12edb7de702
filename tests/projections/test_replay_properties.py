"""I8 as a property: random valid histories (late events included), projected incrementally
while appended in random batch sizes, in one pass, by rebuild, and replayed in memory, give
identical rows and transitions."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import EventModel, RunFinished, RunProgressed, RunStarted, RunTimedOut
from projections import Projector, rebuild
from tests import support
from tests.projection_support import replayed_rows, table_rows, transition_rows

pytestmark = pytest.mark.slow
T0 = datetime(2026, 1, 1, tzinfo=UTC)

counters = st.fixed_dictionaries(
    {
        "records_fetched": st.integers(0, 50),
        "records_created": st.integers(0, 50),
        "claims_created": st.integers(0, 3),
    }
)
# One run: progress steps, then how it ends, then late steps (used only after a timeout).
run_script = st.tuples(
    st.lists(counters, max_size=4),
    st.sampled_from(["open", "success", "partial", "failed", "timeout", "operator"]),
    st.lists(counters, max_size=3),
    st.booleans(),  # a late RunFinished after a timeout
)
histories = st.tuples(
    st.lists(run_script, min_size=1, max_size=6),
    st.randoms(use_true_random=False),
    st.lists(st.integers(1, 9), min_size=1, max_size=6),  # projector batch sizes
)


def build(scripts: list[tuple], rng) -> list[EventModel]:  # type: ignore[type-arg, no-untyped-def]
    per_run: list[list[EventModel]] = []
    for index, (steps, ending, late, late_finish) in enumerate(scripts):
        run_id = index + 1
        minute = itertools.count(index)

        def when(minute: itertools.count[int] = minute) -> datetime:
            return T0 + timedelta(minutes=next(minute) * 7)

        events: list[EventModel] = [
            RunStarted(
                run_id=run_id, source_id=index, connector_name=f"c{index % 2}", occurred_at=when()
            )
        ]
        events += [RunProgressed(run_id=run_id, occurred_at=when(), **c) for c in steps]
        if ending in ("success", "partial", "failed"):
            events.append(RunFinished(run_id=run_id, occurred_at=when(), status=ending))
        elif ending in ("timeout", "operator"):
            events.append(
                RunTimedOut(
                    run_id=run_id,
                    occurred_at=when() + timedelta(hours=2),
                    reason="stale",
                    threshold_seconds=3600 if ending == "timeout" else None,
                    detected_by="sweeper" if ending == "timeout" else "operator:al",
                )
            )
            events += [RunProgressed(run_id=run_id, occurred_at=when(), **c) for c in late]
            if late_finish:
                events.append(RunFinished(run_id=run_id, occurred_at=when(), status="success"))
        per_run.append(events)
    # Interleave the runs, keeping each run's own order.
    merged: list[EventModel] = []
    queues = [list(events) for events in per_run]
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        merged.append(queue.pop(0))
    return merged


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories)
def test_i8_every_way_of_projecting_gives_the_same_tables(
    history,
    backend: str,
    sqlite_template: Path,
    tmp_path: Path,
    db_url: str,  # type: ignore[no-untyped-def]
) -> None:
    scripts, rng, batch_sizes = history
    events = build(scripts, rng)
    ledger = support.fresh_store(
        backend, sqlite_template, tmp_path, db_url if backend == "mysql" else None
    )
    try:
        # Appended in random chunks, with the projector applying random batch sizes between
        # them: projection incrementally while the history is being appended.
        sizes = itertools.cycle(batch_sizes)
        position = 0
        while position < len(events):
            chunk = rng.randint(1, 6)
            ledger.append(events[position : position + chunk])
            position += chunk
            Projector(ledger, batch_size=next(sizes)).apply_batch()
        while Projector(ledger, batch_size=next(sizes)).apply_batch()[0]:
            pass
        assert Projector(ledger).checkpoint().position == len(events)
        incremental, transitions = table_rows(ledger), transition_rows(ledger)
        assert incremental == replayed_rows(ledger)
        rebuild(ledger, batch_size=rng.randint(1, 7))
        assert table_rows(ledger) == incremental
        assert transition_rows(ledger) == transitions
        rebuild(ledger, batch_size=10_000)  # one pass
        assert table_rows(ledger) == incremental
        assert transition_rows(ledger) == transitions
        statuses = {row["status"] for row in incremental.values()}
        assert statuses <= {"running", "success", "partial", "failed"}
    finally:
        ledger.close()
