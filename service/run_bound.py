"""``max_run_time``: a bound on the total time of one connector run under ``ledger serve``
(``ledger run`` has no such bound yet).

A run that heartbeats but never finishes (pages that keep coming, a read blocked on a FIFO or a
hung mount) is never silent, so the sweeper's stale rule never closes it, and serve's ticks of
its connector are skipped while it is open. Past its bound:

1. the run is asked to stop (:meth:`connectors.RunContext.request_stop`): its next report raises
   :class:`MaxRunTimeExceeded` inside the connector, whose own code unwinds, and the SDK records
   RunFinished ``failed`` "MaxRunTimeExceeded: exceeded max_run_time 2h"; its heartbeats stop;
2. a connector that has not finished ``grace`` later (blocked in a call, it never reports) gets
   a RunTimedOut from the caller (:func:`time_out_run`), with the bound as its threshold. The
   stream rules accept a late RunProgressed and a late RunFinished after RunTimedOut (I5), so
   what the connector reports if it ever wakes up is recorded, not lost (I9).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from time import monotonic

from connectors import RunContext
from ledger import ConcurrencyError, Ledger, LedgerError, RunTimedOut, StreamError
from ledger.durations import format_duration
from ledger.rules import OPEN

log = logging.getLogger(__name__)

# How often the watcher of a bounded run looks at the clock: the bound is kept to this.
POLL_SECONDS = 0.5
# Appending RunTimedOut races the run's own late counts (one version conflict each): tries.
TIME_OUT_TRIES = 3


class MaxRunTimeExceeded(LedgerError):
    """Raised inside a connector at its next report once its run has passed ``max_run_time``."""

    def __init__(self, limit: timedelta) -> None:
        super().__init__(f"exceeded max_run_time {format_duration(limit)}")
        self.limit = limit


class RunBound:
    """One run's bound: asked to stop ``limit`` after it opened, given up ``grace`` later.

    Elapsed time is measured on a monotonic clock, in seconds: on the wall clock a forward
    step (NTP, 3 h) asked a healthy run to stop at once and then timed it out. ``clock`` is
    injectable so a test moves time, not waits; by default this module's ``monotonic``,
    looked up at each call: freezegun's moves with the wall clock, but reads the real clock
    in a thread just started (its ignore list holds ``threading``), so a test of a watchdog
    thread replaces the module's ``monotonic``."""

    def __init__(
        self, limit: timedelta, grace: timedelta, clock: Callable[[], float] | None = None
    ) -> None:
        self.limit = limit
        self.grace = grace
        self._clock = clock
        self.opened_at: float | None = None
        self.asked_at: float | None = None

    def clock(self) -> float:
        return (self._clock or monotonic)()

    def opened(self) -> None:
        """The run is open (RunStarted stored): its time counts from now."""
        self.opened_at = self.clock()

    def check(self, context: RunContext) -> bool:
        """Ask the run to stop once past its bound; True once ``grace`` has passed since
        then too (the caller ends the run itself)."""
        if self.opened_at is None:
            return False
        now = self.clock()
        if self.asked_at is None:
            if now - self.opened_at < self.limit.total_seconds():
                return False
            self.asked_at = now
            context.request_stop(MaxRunTimeExceeded(self.limit))
            log.info(
                "run %d of %s passed max_run_time %s: asked to stop",
                context.run_id,
                context.connector_name,
                format_duration(self.limit),
            )
            return False
        return now - self.asked_at >= self.grace.total_seconds()

    def reason(self) -> str:
        return (
            f"exceeded max_run_time {format_duration(self.limit)}; the connector did not stop "
            f"within {format_duration(self.grace)} of being asked (blocked in a call?)"
        )


def time_out_run(ledger: Ledger, run_id: int, bound: RunBound, actor: str) -> int | None:
    """Append RunTimedOut for a run past its bound whose connector did not stop: the position,
    or None when the run closed first (it finished after all, or the sweeper timed it out).

    Appended with ``expected_version`` (I4), re-read on a conflict: the run's last counts,
    sent as its heartbeats stop, may land in between."""
    for attempt in range(1, TIME_OUT_TRIES + 1):
        state = ledger.run(run_id)
        if state is None or state.state != OPEN:
            return None
        event = RunTimedOut(
            run_id=run_id,
            reason=bound.reason(),
            threshold_seconds=int(bound.limit.total_seconds()),
            last_event_at=state.last_event_at,
            detected_by=actor,
            actor=actor,
        )
        try:
            stored = ledger.append([event], expected_version=state.version)
        except StreamError:  # closed between the read and the append
            return None
        except ConcurrencyError:
            if attempt == TIME_OUT_TRIES:
                raise
            continue
        return stored.events[0].position
    return None  # pragma: no cover - the loop returns or raises
