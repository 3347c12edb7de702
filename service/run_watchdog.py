"""``ledger run --max-run-time``: the watchdog of one run, in the process that runs it.

``ledger serve`` runs a bounded connector in a thread of its own and watches it from its job
(:meth:`service.connector_jobs.ConnectorJobs._record_bounded`). ``ledger run`` runs its
connector in the main thread, where SIGTERM's handler can stop it, so the watching is done
from a daemon thread started as the run opens. Past the bound the run is asked to stop, as
serve does (:class:`service.run_bound.RunBound`). A connector still going ``grace`` later is
blocked in a call that may never return (a FIFO that never sends, a hung mount): the watchdog
times its run out (:func:`service.run_bound.time_out_run`) and hands the command's end to
``on_timed_out``.
Nothing can wake the main thread from such a call, so only ending the process ends the command.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from connectors import RunContext, RunOutcome, RunResult
from ledger import Ledger, LedgerError
from service.run_bound import POLL_SECONDS, RunBound, time_out_run


@dataclass(frozen=True)
class TimeOut:
    """What the watchdog did to a run whose connector did not stop: the position of its
    RunTimedOut and the run's ``outcome`` as it was timed out; None with ``error`` when that
    could not be appended; None without it when the run was closed first (the sweeper, an
    operator's ``runs fail``, or its own RunFinished an instant before)."""

    position: int | None
    error: LedgerError | None = None
    outcome: RunOutcome | None = None


def timed_out_outcome(context: RunContext, bound: RunBound) -> RunOutcome:
    """The outcome of a run timed out past ``bound`` (status ``timed_out``): what it reported
    until it blocked, and the bound's reason."""
    reported = context.result
    assert reported is not None  # watched once started: it has a result
    result = RunResult(
        run_id=context.run_id,
        status="timed_out",
        totals=dict(reported.totals),
        error_count=reported.error_count,
        spooled=reported.spooled,
        error_message=bound.reason(),
    )
    return RunOutcome(context.connector_name, context.source_id, result, None)


class RunWatchdog:
    """Watches one run against ``bound``: :meth:`started` is the run's ``on_started`` hook,
    :meth:`finished` is called once the run's own end is in (or whatever ended the command)."""

    def __init__(
        self,
        ledger: Ledger,
        bound: RunBound,
        actor: str,
        on_timed_out: Callable[[RunContext, TimeOut], None],
    ) -> None:
        self.ledger = ledger
        self.bound = bound
        self.actor = actor
        self.on_timed_out = on_timed_out
        self._done = threading.Event()
        # Taken by the watchdog as it decides to end the run, and by finished(): one of the
        # two ends the command, never both (the run's own outcome printed, then the timeout).
        self._lock = threading.Lock()
        self._ending = False
        self._thread: threading.Thread | None = None

    def started(self, context: RunContext) -> None:
        """The run is open: its time counts from now, watched from a daemon thread."""
        self.bound.opened()
        self._thread = threading.Thread(
            target=self._watch, args=[context], name=f"watchdog-run-{context.run_id}", daemon=True
        )
        self._thread.start()

    def finished(self) -> bool:
        """Stop watching. True when the watchdog had begun timing the run out first: then it
        waits for the watchdog, whose ``on_timed_out`` ends the process."""
        with self._lock:
            self._done.set()
            ending = self._ending
        if self._thread is not None:
            self._thread.join()
        return ending

    def _watch(self, context: RunContext) -> None:
        while not self._done.wait(POLL_SECONDS):
            if not self.bound.check(context):
                continue
            with self._lock:
                if self._done.is_set():  # the run ended on its own as the grace ran out
                    return
                self._ending = True
            self.on_timed_out(context, self._time_out(context))
            return

    def _time_out(self, context: RunContext) -> TimeOut:
        try:
            position = time_out_run(self.ledger, context.run_id, self.bound, self.actor)
        except LedgerError as exc:  # its heartbeats have stopped: the sweeper times it out
            return TimeOut(None, exc)
        if position is None:
            return TimeOut(None)
        return TimeOut(position, outcome=timed_out_outcome(context, self.bound))
