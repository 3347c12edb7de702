"""The stream rules' state (ledger.rules.apply_event): the state after an event on a run that
exists is made in one dict (the append makes one for every event); these properties prove it
is the state the RunState constructor makes, field for field and in the same order."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.events import COUNTER_LIMIT, MAX_RUN_ID, RunFinished, RunProgressed, RunTimedOut
from ledger.rules import OPEN, TIMED_OUT, RunState, apply_event

times = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
states = st.builds(
    RunState,
    run_id=st.integers(1, MAX_RUN_ID),
    source_id=st.integers(0, COUNTER_LIMIT - 1),
    connector_name=st.text(min_size=1, max_size=5),
    version=st.integers(1, 10**6),
    state=st.sampled_from([OPEN, TIMED_OUT]),
    started_at=times,
    last_event_at=times,
    opened_at=times,
    updated_at=times,
)
events = st.one_of(
    st.builds(RunProgressed, run_id=st.just(1), occurred_at=times),
    st.builds(RunFinished, run_id=st.just(1), status=st.just("success"), occurred_at=times),
    st.builds(
        RunTimedOut,
        run_id=st.just(1),
        reason=st.just("stale"),
        occurred_at=times,
        detected_by=st.just("sweeper"),
    ),
)


@settings(max_examples=300, deadline=None)
@given(current=states, event=events, recorded_at=times)
def test_the_state_after_an_event_is_what_the_constructor_makes(
    current: RunState, event: RunProgressed | RunFinished | RunTimedOut, recorded_at: datetime
) -> None:
    if isinstance(event, RunTimedOut) and current.state == TIMED_OUT:
        return  # refused (single-timeout): no state to compare
    before = dict(vars(current))
    after = apply_event(current, event, current.run_id, recorded_at)
    expected = dataclasses.replace(
        current,
        version=current.version + 1,
        state={RunFinished: "finished", RunTimedOut: TIMED_OUT}.get(type(event), current.state),
        last_event_at=max(current.last_event_at, event.occurred_at),
        updated_at=recorded_at,
    )
    assert type(after) is RunState
    assert after == expected
    assert list(vars(after).items()) == list(vars(expected).items())  # the same order
    assert repr(after) == repr(expected)
    assert vars(current) == before  # the state before the event: untouched
