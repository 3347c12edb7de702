"""Stream rules (I5), as a pure function of a run's write-side state and the next event.

    (no run) ──RunStarted──▶ open ──RunFinished──▶ finished        (nothing may follow)
                               │
                               └──RunTimedOut──▶ timed_out ──RunFinished (late)──▶ finished
                                                    └──RunProgressed (late) stays timed_out

The same function serves appends and, later, verification of stored history, so the rules live
in one place; :func:`replay_event` is that replay of stored history, one rule for every reader
of the write-side state of the past (as-of reads, stuck-as-of, verify).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger.clock import isoformat_utc
from ledger.errors import LedgerError, StreamError
from ledger.events import EventModel, RunFinished, RunProgressed, RunStarted, RunTimedOut
from ledger.recorded import RecordedEvent

OPEN = "open"
TIMED_OUT = "timed_out"
FINISHED = "finished"
RUN_STATES = (OPEN, TIMED_OUT, FINISHED)  # ledger_runs.state


@dataclass(frozen=True)
class RunState:
    """What the ledger knows of a run on the write side (one ``ledger_runs`` row)."""

    run_id: int
    source_id: int
    connector_name: str
    version: int
    state: str
    started_at: datetime
    last_event_at: datetime
    opened_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The state as JSON (times in UTC ISO-8601 with microseconds)."""
        return {
            "run_id": self.run_id,
            "source_id": self.source_id,
            "connector_name": self.connector_name,
            "version": self.version,
            "state": self.state,
            "started_at": isoformat_utc(self.started_at),
            "last_event_at": isoformat_utc(self.last_event_at),
            "opened_at": isoformat_utc(self.opened_at),
            "updated_at": isoformat_utc(self.updated_at),
        }


def apply_event(
    current: RunState | None, event: EventModel, run_id: int, recorded_at: datetime
) -> RunState:
    """The run's state after ``event``; raise :class:`StreamError` if the event breaks a rule."""
    if isinstance(event, RunStarted):
        if current is not None:
            raise StreamError(run_id, "single-start", "RunStarted may appear only once per run")
        return RunState(
            run_id=run_id,
            source_id=event.source_id,
            connector_name=event.connector_name,
            version=1,
            state=OPEN,
            started_at=event.occurred_at,
            last_event_at=event.occurred_at,
            opened_at=recorded_at,
            updated_at=recorded_at,
        )
    if current is None:
        raise StreamError(
            run_id,
            "starts-with-RunStarted",
            f"{event.type} for a run that has no "
            "RunStarted; a run's first event must be RunStarted",
        )
    if current.state == FINISHED:
        raise StreamError(
            run_id,
            "nothing-after-RunFinished",
            f"{event.type} after RunFinished; the run is closed",
        )
    new_state = current.state
    if isinstance(event, RunTimedOut):
        if current.state == TIMED_OUT:
            raise StreamError(run_id, "single-timeout", "RunTimedOut may appear only once per run")
        new_state = TIMED_OUT
    elif isinstance(event, RunFinished):
        new_state = FINISHED
    elif not isinstance(event, RunProgressed):  # pragma: no cover - the union is closed
        raise StreamError(run_id, "known-type", f"unsupported event {event.type}")
    # What dataclasses.replace gives, made as recorded_event makes a RecordedEvent: the
    # current state's fields (in their order) with the four an event moves, in one dict.
    after = object.__new__(RunState)
    object.__setattr__(
        after,
        "__dict__",
        {
            **current.__dict__,
            "version": current.version + 1,
            "state": new_state,
            "last_event_at": max(current.last_event_at, event.occurred_at),
            "updated_at": recorded_at,
        },
    )
    return after


def replay_event(
    current: RunState | None, recorded: RecordedEvent
) -> tuple[RunState | None, LedgerError | None]:
    """The run's write-side state after the stored event ``recorded`` (:func:`apply_event`),
    and the error that kept it from being applied (None when it was).

    One rule for an event that cannot be applied: a type this code does not know (a newer
    writer's), a payload that no longer validates, or a break of the stream rules no append
    lets through (a hand edit). It was recorded, so the run was alive then: its version,
    activity (``last_event_at``) and ``updated_at`` count; what it did to the run cannot be
    read, so the state stays (a run it would have started stays unstarted). An operator's skip
    changes nothing here: it is the projection's decision, and the append kept ``ledger_runs``
    by the event whatever the projector does with it."""
    try:
        return apply_event(current, recorded.event, recorded.run_id, recorded.recorded_at), None
    except LedgerError as exc:
        if current is None:
            return None, exc
        return (
            RunState(
                run_id=current.run_id,
                source_id=current.source_id,
                connector_name=current.connector_name,
                version=recorded.version,
                state=current.state,
                started_at=current.started_at,
                last_event_at=max(current.last_event_at, recorded.occurred_at),
                opened_at=current.opened_at,
                updated_at=recorded.recorded_at,
            ),
            exc,
        )


def state_as_of(history: Iterable[RecordedEvent], position: int) -> RunState | None:
    """A run's write-side state after its stored events (``history``, in order) up to
    ``position``, by :func:`replay_event`'s one rule; None when it had not started yet.

    A first event that cannot be read (a RunStarted a newer writer wrote, say) raises its
    error: the run had started then, but with nothing known of it, "not started yet" would be
    false."""
    state: RunState | None = None
    for recorded in history:
        if recorded.position <= position:
            state, problem = replay_event(state, recorded)
            if state is None and problem is not None:
                raise problem
    return state
