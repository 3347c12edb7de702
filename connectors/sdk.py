"""The connector SDK: a run context that records a run in the ledger from start to finish.

    with RunContext(ledger, source_id=1, connector_name="SOURCE_1") as run:
        for page in pages():
            run.progress(fetched=len(page), created=store(page))
            if page.warnings:
                run.error("page had warnings", {"page": page.number})

* On enter, RunStarted is appended; if the ledger is unreachable the run does not start.
* ``progress`` sums deltas and appends at most one RunProgressed per ``progress_interval``;
  nothing is lost: what is pending goes out before the terminal event, in an append of its
  own, so that a refusal of the terminal event can never take the run's counts with it.
* A daemon thread appends a heartbeat every ``heartbeat_interval`` while the body runs, so a
  long but alive run (even one blocked in a call) is never timed out.
* ``request_stop(exc)`` asks one run to stop (``ledger serve``'s ``max_run_time``): its next
  ``progress`` or ``error`` raises ``exc`` (after counting what that call reports), and its
  heartbeats stop, so a run that does not react no longer looks alive to the sweeper.
* On exit: RunFinished ``success`` (no errors), ``partial`` (non-fatal errors), or ``failed``
  (an exception, with its traceback; ``interrupted`` for KeyboardInterrupt/SystemExit, with
  "stopped by SIGTERM" or "interrupted by Ctrl-C (SIGINT)" as its message), and
  the exception propagates. An interpreter exit closes any run still open.
* After RunStarted, an unreachable ledger never loses a fact: events go to the local spool and
  are delivered, in order and exactly once, on the next append that gets through (I9). Events
  the ledger refuses as dated ahead of its clock (it stepped back) wait there too, as the
  spool's own flush keeps them, until the clock catches up: they are not refused for good. A spool
  that cannot be used (corrupted, unreadable) does not stop a run whose own events are not in
  it: those go straight to the ledger.
* An append the ledger refuses for good (another writer closed the run: nothing may follow a
  RunFinished; any refusal that is not a ``StorageError``) is never sent again: its events are
  set aside in the spool's ``rejected`` table with the reason, the heartbeats stop, and the
  connector gets one :class:`RunClosedError` at its next report (or from ``finish()`` if it
  reports nothing more); ``finish()`` then sets aside what is left (its pending counts and
  the outcome it would have recorded) and neither raises again nor masks the connector's own
  exception. The result's status is ``closed``.
* The terminal event always fits the ledger's per-event payload limit
  (``ledger.batch_checks.MAX_PAYLOAD_BYTES``, counted in bytes of the ledger's canonical JSON,
  not in characters: Cyrillic takes 2 bytes a character, CJK 3, a control character 6 once
  escaped): the errors kept for it are budgeted in those bytes, the first ones kept and those
  over the limit dropped from the end; ``error_details.errors_dropped_for_size`` says how
  many, as does a partial run's message (every error is still counted in ``error_count``).
  Should the ledger refuse the terminal event on its own for what it holds all the same (a
  ``ValidationError``), it is set aside in the spool's ``rejected`` table and a short
  ``failed`` RunFinished (``reason: outcome-refused``) takes its place, as the TypeScript
  client does: the run never stays open for want of a storable outcome. ``finish()`` then
  raises one :class:`RunClosedError` saying so (unless the connector's own exception is on
  its way out); the result's status is ``failed``.
* Text the connector hands over (error messages and details, metadata, the message and
  traceback of the exception that failed the run) is made storable first
  (:func:`ledger.text.storable`: a surrogate code point, which UTF-8 cannot carry, is written
  as its escape ``\\udcfe``): one field name read from a ``\\ud800`` JSON escape, or a file
  name that is not UTF-8, made the ledger refuse the run's RunFinished, and its outcome was
  lost.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Literal

import pydantic

from connectors.outcome import (
    RunRecord,
    describe_failure,
    error_entry,
    exception_text,
    storable_metadata,
    terminal_event,
)
from connectors.refusal import RunClosedError, log_lost, refusal_reason
from connectors.spool import Spool, SpoolError
from ledger import (
    AheadOfClockError,
    ClockAheadError,
    DatabaseUnreachableError,
    EventIdReusedError,
    EventModel,
    Ledger,
    LedgerError,
    RecordedEvent,
    RunFinished,
    RunProgressed,
    RunStarted,
    StorageError,
    StoredEventError,
    UnknownRunError,
    ValidationError,
)
from ledger.batch_checks import MAX_PAYLOAD_BYTES
from ledger.events import (
    ACTOR_NAME_MAX,
    CONNECTOR_PREFIX,
    COUNTER_FIELDS,
    COUNTER_LIMIT,
    Counter,
    TerminalStatus,
    name_problem,
)
from ledger.mapper import pydantic_problems
from ledger.text import clip, safe_repr, visible

log = logging.getLogger(__name__)

# How much of the ledger's refusal the short RunFinished that replaces a refused one quotes.
REFUSAL_CHARS = 200
# How long finish() waits for a heartbeat in flight (bounded by the driver's timeouts).
HEARTBEAT_JOIN_TIMEOUT = 90.0
MAX_INTERVAL_SECONDS = 86_400.0  # progress and heartbeat intervals: a day at most

# progress() keyword -> RunProgressed field, derived from the counters' one list: a field's
# name without its "records_" prefix, else without its last word (records_fetched: fetched,
# claims_created: claims, coverage_cells_updated: coverage_cells).
PROGRESS_FIELDS: dict[str, str] = {
    (name.removeprefix("records_") if name.startswith("records_") else name.rsplit("_", 1)[0]): name
    for name in COUNTER_FIELDS
}
_COUNT = pydantic.TypeAdapter(Counter)  # what a RunProgressed field accepts


class RunNotStartedError(StorageError):
    """The ledger could not record RunStarted, so the run did not start."""


class RunLeftOpenError(StorageError):
    """A started run whose end neither the ledger nor the spool could record: it stays open,
    and the sweeper times it out once it is silent (``ledger sweep``). Raised from the
    storage error that left it so (its ``__cause__``)."""

    def __init__(self, run_id: int, connector_name: str, cause: StorageError) -> None:
        super().__init__(
            f"{cause}; run {run_id} of {connector_name} is left open (neither the ledger nor "
            "the spool could record its end): `ledger sweep` times it out once it has been "
            "silent for --older-than (60m by default)"
        )
        self.run_id = run_id
        self.connector_name = connector_name


# How a run the SDK recorded ended: its RunFinished's status, "closed" (another writer closed
# it under the connector) or "timed_out" (``ledger run``'s watchdog timed it out, blocked).
RunStatus = Literal[TerminalStatus, "closed", "timed_out"]


@dataclass
class RunResult:
    """What a finished run reported (also while it runs: the totals so far)."""

    run_id: int
    status: RunStatus | None = None
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTER_FIELDS, 0))
    error_count: int = 0
    spooled: bool = False  # some of its events went through the spool
    error_message: str | None = None  # its RunFinished's: why it is partial or failed
    # Who closed the run under the connector (status "closed"), when the ledger says.
    closed_by: str | None = None


def connector_actor(connector_name: str, host: str, pid: int) -> str:
    """``connector:NAME@HOST:PID``, within the ledger's actor limit whatever the host's name:
    a name too long for it (macOS allows 255 characters, Linux 64) is cut with ``…``, so the run
    still starts (the whole name stays in the run's ``metadata.host``)."""
    room = ACTOR_NAME_MAX - len(f"{CONNECTOR_PREFIX}{connector_name}@:{pid}")
    if len(host) > room:
        host = host[: max(room - 1, 0)] + "…"
    return f"{CONNECTOR_PREFIX}{connector_name}@{host}:{pid}"


class RunContext:
    """Records one connector run. Use it as a context manager (or call start/finish)."""

    _open: ClassVar[weakref.WeakSet[RunContext]] = weakref.WeakSet()

    def __init__(
        self,
        ledger: Ledger,
        source_id: int,
        connector_name: str,
        *,
        connector_version: str = "0",
        trigger: str = "manual",
        metadata: dict[str, Any] | None = None,
        spool: Spool | None = None,
        progress_interval: float = 5.0,
        heartbeat_interval: float = 60.0,
        max_error_details: int = 100,
    ) -> None:
        _check_seconds("progress_interval", progress_interval, allow_zero=True)
        _check_seconds("heartbeat_interval", heartbeat_interval, allow_zero=False)
        if (
            not isinstance(max_error_details, int)
            or isinstance(max_error_details, bool)
            or max_error_details < 0
        ):
            raise ValidationError(
                f"max_error_details={clip(safe_repr(max_error_details), 80)}: a whole number "
                ">= 0 is required"
            )
        # Refused here, as a LedgerError naming the field, not later as pydantic's error.
        problem = name_problem(connector_name) if isinstance(connector_name, str) else None
        if problem is not None:
            raise ValidationError(f"connector_name: {problem}")
        self.ledger = ledger
        self.source_id = source_id
        self.connector_name = connector_name
        self.spool = spool if spool is not None else Spool()
        self.progress_interval = progress_interval
        self.heartbeat_interval = heartbeat_interval
        self.max_error_details = max_error_details
        host, pid = socket.gethostname(), os.getpid()
        self._pid = pid  # the process that records the run: a forked child may not
        # A name that is not text is refused below (_started_event), naming the field; made
        # text here with safe_repr, which does not raise (str() of an int of more than 4,300
        # digits does: a ValueError escaped RunContext() in place of that refusal).
        shown = connector_name if isinstance(connector_name, str) else safe_repr(connector_name)
        self.actor = connector_actor(shown, host, pid)
        self.metadata = storable_metadata(
            {
                "host": host,
                "pid": pid,
                "connector_version": connector_version,
                "trigger": trigger,
                **(metadata or {}),
            }
        )
        # Checked now, as a LedgerError naming the field: a source_id beyond the column (or
        # metadata that is not JSON) was pydantic's own error at start(), a traceback from
        # `ledger run csv --source-id 3000000000`.
        self._started_event()
        self.result: RunResult | None = None
        self._pending = dict.fromkeys(COUNTER_FIELDS, 0)
        self._errors: list[dict[str, Any]] = []
        # Each kept error's bytes in RunFinished (its canonical JSON, what the ledger measures,
        # and the comma after it). Characters are no measure: 100 errors of 2,000 + 4,000
        # Cyrillic characters were 1.2 MB, and the ledger refused the run's outcome. Once the
        # next would bring their sum over the ledger's limit (it could never be in RunFinished),
        # no more are kept; finish() drops more from the end if the whole is still over it.
        self._error_bytes: list[int] = []
        self._errors_bytes_total = 0
        self._errors_full = False
        self._lock = threading.RLock()
        self._last_emit = 0.0
        self._stop = threading.Event()
        # What request_stop() asked this run to raise at its next report, or None.
        self._stop_request: Exception | None = None
        self._heartbeat: threading.Thread | None = None
        # The kind of failure the heartbeats last logged (its exception's class), None while
        # they succeed: a failing ledger and spool logged one traceback every heartbeat.
        self._beat_failure: type[BaseException] | None = None
        # The event_id of the run's RunStarted: stored with each event the run spools, so that
        # a flush delivers it into this run only (run ids repeat across ledgers).
        self._run_started_id: str | None = None
        self._finishing = False
        self._starting = False
        # Events built but not known to be stored (an append cut by KeyboardInterrupt may have
        # committed): sent again with the same event_id (I3), never rebuilt with a new one, or
        # an interrupted append's counts would be counted twice.
        self._unsent: list[EventModel] = []
        # The position of the run's last event this context stored: who closed the run under
        # it is read from the events after it.
        self._last_position = 0
        # Set once the ledger refused the run's events for good; raised to the connector once.
        self._closed: RunClosedError | None = None
        self._closed_told = False
        # The short `failed` RunFinished that took the place of a terminal event the ledger
        # refused on its own for what it holds, and that refusal, raised once by finish().
        self._replacement: RunFinished | None = None
        self._outcome_refused: RunClosedError | None = None

    @property
    def closed(self) -> RunClosedError | None:
        """Why the ledger refuses this run's events for good, or None."""
        return self._closed

    @property
    def run_started_id(self) -> str | None:
        """The ``event_id`` of the run's RunStarted (None before it started): what its spooled
        events are delivered into, and no other run of the same id."""
        return self._run_started_id

    @property
    def run_id(self) -> int:
        if self.result is None:
            raise ValidationError("the run has not started")
        return self.result.run_id

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> RunContext:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish(exc)

    def start(self) -> int:
        self._require_own_process()  # its actor and metadata name this process
        with self._lock:
            if self.result is not None or self._starting:
                # A second start() opened a second run and left the first open, unseen, until
                # the sweeper timed it out.
                what = f"run {self.result.run_id}" if self.result is not None else "a run"
                raise ValidationError(
                    f"this RunContext already started {what}: a RunContext records one run, "
                    "make a new one for the next"
                )
            self._starting = True
        try:
            return self._start()
        finally:
            self._starting = False

    def _started_event(self) -> RunStarted:
        try:
            return RunStarted(
                source_id=self.source_id,
                connector_name=self.connector_name,
                metadata=self.metadata,
                actor=self.actor,
            )
        except pydantic.ValidationError as exc:
            problems = pydantic_problems(exc)
            raise ValidationError("; ".join(map(str, problems)), details=problems) from None

    def _start(self) -> int:
        started = self._started_event()
        try:
            self._opened(self._append_started(started))
        except (KeyboardInterrupt, SystemExit) as stop:
            self._close_if_started(started, stop)
            raise
        self._heartbeat = threading.Thread(
            target=self._beat, daemon=True, name=f"heartbeat-run-{self.run_id}"
        )
        self._heartbeat.start()
        log.info("run %d of %s started", self.run_id, self.connector_name)
        return self.run_id

    def _append_started(self, started: RunStarted) -> RecordedEvent:
        for attempt in (1, 2):
            try:
                self._deliver_spool()
                return self.ledger.append([started]).events[0]
            except AheadOfClockError as exc:
                # This host dated RunStarted: its clock, not the caller, is wrong (exit 3).
                # Nothing is open yet, so nothing waits in the spool: the run does not start.
                raise RunNotStartedError(
                    f"run of {self.connector_name} (source {self.source_id}) not started: this "
                    f"host's clock is ahead of the ledger's; set it right (NTP) and run again "
                    f"({exc})"
                ) from ClockAheadError(str(exc))
            except StorageError as exc:
                # Sent once more, same event_id: if the first try committed and only its reply
                # was lost, this returns the stored run instead of leaving it open unseen.
                if attempt == 2:
                    why = (
                        "the ledger is unreachable"
                        if isinstance(exc, DatabaseUnreachableError)
                        else "the ledger could not record it"  # no schema, no grant, a bad URL
                    )
                    raise RunNotStartedError(
                        f"run of {self.connector_name} (source {self.source_id}) not started: "
                        f"{why} ({exc})"
                    ) from exc
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _opened(self, stored: RecordedEvent) -> None:
        """The run is open: this context records it from now on (the exit hook too)."""
        self.result = RunResult(run_id=stored.run_id)
        self._run_started_id = str(stored.event_id)
        self._last_position = stored.position
        self._last_emit = time.monotonic()
        RunContext._open.add(self)

    def _close_if_started(self, started: RunStarted, stop: BaseException) -> None:
        """A signal (SIGTERM's SystemExit, Ctrl-C) came while RunStarted was being appended:
        it may have committed (the signal came as the COMMIT's reply was awaited, or just
        after), and the run was then open with nobody to end it: `ledger run` exited 143
        without a word, and the run stayed `running` until the sweeper timed it out. The
        ledger is asked; a run it holds is ended ``failed`` ("interrupted") by ``stop``."""
        if self.result is None:
            try:
                stored = self._stored_start(started)
            except LedgerError as exc:
                log.error(
                    "interrupted as run of %s (source %s) was starting, and the ledger could "
                    "not say whether it started (%s): if it did, `ledger sweep` times it out",
                    self.connector_name,
                    self.source_id,
                    visible(str(exc)),
                )
                return
            if stored is None:
                return  # not started: nothing to end
            self._opened(stored)
        assert self.result is not None
        if self.result.status is None:
            self.finish(stop)

    def _stored_start(self, started: RunStarted) -> RecordedEvent | None:
        """``started`` as the ledger stores it, or None: among this connector's open runs of
        this source (a few), the one whose first event it is."""
        for run in self.ledger.runs(
            connector_name=self.connector_name, source_id=self.source_id, state="open"
        ):
            first = self.ledger.read_run(run.run_id, limit=1)
            if first and str(first[0].event_id) == str(started.event_id):
                return first[0]
        return None

    def finish(self, exc: BaseException | None = None) -> RunResult:
        """Append the terminal event (after any pending counts, in an append of their own) and
        stop the heartbeats.

        If the ledger and the spool both fail, nothing is lost: the pending counts stay, the
        error propagates, and a later ``finish`` (or the exit hook) tries again. A terminal
        event the ledger refuses on its own for what it holds is replaced by a short
        ``failed`` one; once that is stored, the refusal is raised (a :class:`RunClosedError`)
        unless ``exc`` is on its way out.
        """
        self._require_own_process()
        with self._lock:
            result = self.result
            if result is None or result.status is not None or self._finishing:
                raise ValidationError("finish() needs a started, unfinished run")
            self._finishing = True
        try:
            self._stop.set()
            heartbeat = self._heartbeat
            # Not one start() never started: a SIGTERM inside Thread.start() (its handler raises
            # there) left a thread that join() refuses ("cannot join thread before it is
            # started"), and the run stayed open. One started since sees _stop and ends.
            if (
                heartbeat is not None
                and heartbeat is not threading.current_thread()
                and heartbeat.is_alive()
            ):
                heartbeat.join(timeout=HEARTBEAT_JOIN_TIMEOUT)
            with self._lock:
                self._take_pending()  # first, so its occurred_at comes first
                finished = self._waiting_outcome()
                if finished is None:  # a finish() cut short already decided the outcome
                    # (after a refusal, set aside with the rest: its errors are only in it)
                    finished = self._terminal_event(exc)
                    self._unsent.append(finished)
                try:
                    if self._closed is not None:
                        self._set_aside(list(self._unsent))
                    else:
                        self._send_unsent()
                except RunClosedError:
                    pass  # told below, once
                if self._closed is not None:
                    return self._end_closed(result, exc)
                if self._replacement is not None:
                    finished = self._replacement
                result.status = finished.status
                result.error_message = finished.error_message
        finally:
            self._finishing = False
        RunContext._open.discard(self)
        log.info("run %d of %s finished: %s", result.run_id, self.connector_name, result.status)
        refused = self._outcome_refused
        if refused is not None and exc is None and not self._closed_told:
            self._closed_told = True
            raise refused.again()
        return result

    def _end_closed(self, result: RunResult, exc: BaseException | None) -> RunResult:
        """End a run the ledger refused: status ``closed``, no exit hook for it, and the
        refusal raised once to the connector (here if no report raised it yet and no
        exception of its own is on its way out, which this must not mask)."""
        closed = self._closed
        assert closed is not None
        result.status = "closed"
        result.error_message = str(closed)
        result.closed_by = closed.closed_by
        RunContext._open.discard(self)
        if exc is None and not self._closed_told:
            self._closed_told = True
            raise closed.again()
        return result

    # ------------------------------------------------------------------ reporting

    def progress(
        self,
        fetched: int = 0,
        created: int = 0,
        updated: int = 0,
        skipped: int = 0,
        claims: int = 0,
        coverage_cells: int = 0,
    ) -> None:
        """Add counter deltas; appended (summed) at most once per ``progress_interval``."""
        deltas = {
            "fetched": fetched,
            "created": created,
            "updated": updated,
            "skipped": skipped,
            "claims": claims,
            "coverage_cells": coverage_cells,
        }
        for name, value in deltas.items():
            try:
                _COUNT.validate_python(value)
            except pydantic.ValidationError:
                raise ValidationError(
                    f"progress {name}={clip(safe_repr(value), 80)}: a count must be an int "
                    f"from 0 to {COUNTER_LIMIT - 1}"
                ) from None
        with self._lock:
            self._require_open()
            if any(
                self._pending[PROGRESS_FIELDS[name]] + value >= COUNTER_LIMIT
                for name, value in deltas.items()
            ):
                # One RunProgressed holds a count below COUNTER_LIMIT: summed past it, the
                # pending counts could never be sent and the run never finished.
                self._take_pending()
            for name, value in deltas.items():
                field_name = PROGRESS_FIELDS[name]
                self._pending[field_name] += value
                assert self.result is not None
                self.result.totals[field_name] += value
            # After counting: the records this call reports are stored already, and the
            # terminal event (or a later one) carries their counts.
            self._raise_if_stopped()
            if time.monotonic() - self._last_emit >= self.progress_interval:
                self._report(lambda: self._emit_pending(heartbeat_if_empty=False))

    def error(self, message: str, details: dict[str, Any] | None = None) -> None:
        """Record a non-fatal error: counted exactly, the first ``max_error_details`` kept (as
        many of them as RunFinished can hold within the ledger's per-event limit)."""
        with self._lock:
            self._require_open()
            assert self.result is not None
            self.result.error_count += 1
            if len(self._errors) < self.max_error_details and not self._errors_full:
                entry, size = error_entry(message, details)
                if self._errors_bytes_total + size <= MAX_PAYLOAD_BYTES:
                    self._errors.append(entry)
                    self._error_bytes.append(size)
                    self._errors_bytes_total += size
                else:  # the first errors are kept, not any that happen to be small enough
                    self._errors_full = True
            self._raise_if_stopped()  # after keeping the error: it is a fact of the run

    # ------------------------------------------------------------------ internals

    def _require_own_process(self) -> None:
        if os.getpid() != self._pid:
            raise ValidationError(
                f"this RunContext records a run of process {self._pid}: a forked child may not "
                "report for it (make a RunContext of its own)"
            )

    def request_stop(self, stop: Exception) -> None:
        """Ask this run to stop: its next ``progress`` or ``error`` raises ``stop`` (so the
        connector's own code unwinds and ``finish`` records it ``failed``), and its heartbeats
        stop: a run asked to stop whose connector does not react (blocked in a read) must not
        look alive. Counts already reported still go out. Any thread may call it; lock-free,
        so a connector holding the lock (a slow append) cannot block the caller."""
        self._stop_request = stop
        self._stop.set()  # the heartbeat thread ends at its next wake-up

    def _require_open(self) -> None:
        self._require_own_process()
        if self._closed is not None and (self.result is None or self.result.status is None):
            self._closed_told = True
            raise self._closed.again()
        if self.result is None or self.result.status is not None:
            raise ValidationError("the run is not open")
        if self._waiting_outcome() is not None:
            # A finish() that could not send its outcome (the ledger and the spool both
            # failed) decided it: a report now would send that outcome ahead of the retry,
            # and an error would not be in it. The connector is told; nothing of it is kept.
            raise ValidationError(
                f"run {self.run_id}'s outcome is decided but not sent yet (finish() failed): "
                "call finish() again; nothing of this report was recorded"
            )

    def _raise_if_stopped(self) -> None:
        stop: BaseException | None = _stop_requested
        if stop is not None:  # a signal handler's raise that Python dropped: raised here
            raise stop
        if self._stop_request is not None:
            raise self._stop_request

    def _waiting_outcome(self) -> RunFinished | None:
        """The RunFinished a finish() decided and could not send yet, None if none waits."""
        return next((e for e in self._unsent if isinstance(e, RunFinished)), None)

    def _pending_event(self) -> RunProgressed | None:
        if not any(self._pending.values()):
            return None
        return RunProgressed(run_id=self.run_id, actor=self.actor, **self._pending)

    def _take_pending(self) -> None:
        """Move the pending counts into an event to send; it stays in ``_unsent`` until it is
        in the ledger or the spool."""
        event = self._pending_event()
        if event is not None:
            self._unsent.append(event)
            self._pending = dict.fromkeys(COUNTER_FIELDS, 0)

    def _send_unsent(self) -> None:
        """Send the events not known to be stored, the terminal event in an append of its own
        after the others: appended together, a terminal event the ledger refused (1.2 MB of
        error details) took the run's counts with it, and the run stayed ``running``."""
        counts = [e for e in self._unsent if not isinstance(e, RunFinished)]
        if counts and len(counts) < len(self._unsent):
            terminal: list[EventModel] = [e for e in self._unsent if isinstance(e, RunFinished)]
            try:
                self._send(counts)
            except RunClosedError:
                self._set_aside(terminal)  # refused with them: the run is closed
                raise
            self._unsent[:] = terminal
        if not self._unsent:
            return
        try:
            self._send(list(self._unsent))
        except _OutcomeRefused as refused:
            self._replace_outcome(refused.event, refused.refusal)
            self._send(list(self._unsent))
        self._unsent.clear()

    def _emit_pending(self, heartbeat_if_empty: bool) -> None:
        self._take_pending()
        if not self._unsent:
            if not heartbeat_if_empty:
                return
            self._unsent.append(RunProgressed(run_id=self.run_id, actor=self.actor))
        self._send_unsent()

    def _report(self, send: Callable[[], None]) -> None:
        """Send for the connector's report: a refusal met here is the one it is told of."""
        try:
            send()
        except RunClosedError:
            self._closed_told = True
            raise

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_interval):
            self._beat_once(heartbeat_if_empty=True)
        if self._stop_request is not None:
            # Asked to stop: no more heartbeats, but the counts reported so far go out now,
            # should the connector never reach finish() (blocked in a read).
            self._beat_once(heartbeat_if_empty=False)

    def _beat_once(self, heartbeat_if_empty: bool) -> None:
        try:
            with self._lock:
                if self._finishing or (self.result is not None and self.result.status):
                    return  # finish() sends what is pending
                if heartbeat_if_empty and self._stop.is_set():
                    return
                self._emit_pending(heartbeat_if_empty=heartbeat_if_empty)
                if self._beat_failure is not None:
                    self._beat_failure = None
                    log.info("heartbeats of run %s recorded again", self.run_id)
        except RunClosedError:
            return  # logged once (its _stop is set); the connector is told at its next report
        except Exception as exc:  # the thread must outlive any one failure
            self._log_beat_failure(exc)

    def _log_beat_failure(self, exc: Exception) -> None:
        """One line per kind of failure while heartbeats keep failing: the ledger and the spool
        both unusable logged an ERROR and a traceback every heartbeat. A storage failure is the
        environment's (its message says what), so no traceback; any other is a bug: one."""
        if type(exc) is self._beat_failure:
            return
        self._beat_failure = type(exc)
        run_id = self.result and self.result.run_id
        if isinstance(exc, StorageError):
            log.error(
                "heartbeat of run %s failed: %s (not logged again while it fails so)",
                run_id,
                visible(str(exc)),
            )
        else:
            log.exception("heartbeat of run %s failed (not logged again while it fails so)", run_id)

    def _send(self, events: list[EventModel]) -> None:
        """Append, or spool if the ledger is unreachable; older spooled events go first."""
        self._last_emit = time.monotonic()
        try:
            if self._deliver_spool():
                stored = self.ledger.append(events)
                self._last_position = max(e.position for e in stored.events)
                return
        except StorageError as exc:
            # Unreachable, busy (a lock held past the wait), a query killed: each may pass.
            log.warning(
                "spooling %d event(s) of run %s, which the ledger could not take now: %s",
                len(events),
                self.run_id,
                exc,
            )
        except AheadOfClockError as exc:
            # Not refused for good: the ledger's clock stepped back (or this host's ran ahead),
            # and it will reach them. Set aside as refused, they closed the run for good and
            # left it open for the sweeper; the spool keeps them, in order, as its flush does.
            log.warning(
                "spooling %d event(s) of run %s until the ledger's clock reaches them: %s",
                len(events),
                self.run_id,
                visible(str(exc)),
            )
        except LedgerError as exc:
            if self._replaceable(events, exc):
                raise _OutcomeRefused(events[0], exc) from exc
            # Refused for good (a stream rule, a bad event): sending it again can never
            # succeed. It was retried by every report, heartbeat, finish() and the exit hook,
            # a traceback each, and the connector's own exception was replaced by it.
            raise self._refused(events, exc) from exc
        self.spool.put(events, self._run_started_id)
        assert self.result is not None
        self.result.spooled = True

    def _replaceable(self, events: list[EventModel], refusal: LedgerError) -> bool:
        """True for finish()'s own terminal event refused on its own for what it holds (the
        TypeScript client's rule): a short ``failed`` one may pass where it did not. A stream
        rule (the run closed by another writer) refuses any outcome: no replacement then."""
        return (
            self._finishing
            and self._replacement is None
            and len(events) == 1
            and isinstance(events[0], RunFinished)
            and isinstance(refusal, ValidationError)
            and not isinstance(refusal, EventIdReusedError | UnknownRunError | StoredEventError)
        )

    def _replace_outcome(self, refused: RunFinished, refusal: LedgerError) -> None:
        """Set the refused terminal event aside (the spool's ``rejected`` table, or the log)
        and put a short ``failed`` RunFinished in its place: it holds no text of the
        connector's, only why, so the run does not stay open for want of a storable outcome."""
        why = f"the ledger refused its {refused.status} outcome ({visible(str(refusal))})"
        log.error(
            "run %d of %s: %s; a short failed RunFinished takes its place",
            self.run_id,
            self.connector_name,
            why,
        )
        kept, unkept = 0, [refused]
        try:
            kept, unkept = self.spool.set_aside([refused], why), []
        except SpoolError as exc:
            log_lost(self.run_id, [refused], exc)
        self._outcome_refused = RunClosedError(
            self.run_id,
            self.connector_name,
            f"{why}; a short failed RunFinished records that in its place",
            closed_by=None,
            spool_path=str(self.spool.path),
            set_aside=kept,
            events=unkept,
        )
        count = self.result.error_count if self.result is not None else 0
        self._replacement = RunFinished(
            run_id=self.run_id,
            status="failed",
            actor=self.actor,
            error_message=f"the ledger refused this run's {refused.status} outcome: "
            + clip(visible(str(refusal)), REFUSAL_CHARS),
            error_details={
                "reason": "outcome-refused",
                "refused_status": refused.status,
                "refused_event_id": str(refused.event_id),
                **({"error_count": count} if count else {}),
            },
        )
        self._unsent[:] = [self._replacement]

    def _refused(self, events: list[EventModel], refusal: LedgerError) -> RunClosedError:
        """The ledger refuses the run's events for good: set them aside, stop the heartbeats,
        and return the :class:`RunClosedError` to raise (every later report raises it too)."""
        self._stop.set()
        why, closed_by = refusal_reason(self.ledger, self.run_id, refusal, self._last_position)
        self._closed = RunClosedError(
            self.run_id,
            self.connector_name,
            why,
            closed_by=closed_by,
            spool_path=str(self.spool.path),
        )
        log.error(
            "run %d of %s refused by the ledger for good: %s",
            self.run_id,
            self.connector_name,
            visible(why),
        )
        self._set_aside(events)
        return self._closed.again()

    def _set_aside(self, events: list[EventModel]) -> None:
        """Keep refused events in the spool's ``rejected`` table (or, failing that, in the
        error and the log); they are no longer this context's to send."""
        self._unsent.clear()
        if not events:
            return
        closed = self._closed
        assert closed is not None
        try:
            self._closed = closed.again(kept=self.spool.set_aside(events, closed.why))
        except SpoolError as exc:
            log_lost(self.run_id, events, exc)
            self._closed = closed.again(unkept=events)

    def _deliver_spool(self) -> bool:
        """Deliver what waits in the spool; True when nothing is left before our events."""
        try:
            if not self.spool.has_pending():
                return True
            return self.spool.flush(self.ledger).remaining == 0
        except SpoolError as exc:
            if self.result is not None and self.result.spooled:
                raise  # this run's own events wait there: its later ones must not pass them
            # Only other runs' events can wait there, and a run's order is its own: the spool
            # is the fallback for an unreachable ledger, not a gate in front of a reachable one.
            log.error("spool unusable, sending run events straight to the ledger: %s", exc)
            return True

    def _terminal_event(self, exc: BaseException | None) -> RunFinished:
        """The run's RunFinished as it stands (:func:`connectors.outcome.terminal_event`)."""
        assert self.result is not None
        run = RunRecord(
            self.run_id,
            self.actor,
            self._errors,
            self._error_bytes,
            self.result.error_count,
            self.max_error_details,
        )
        return terminal_event(run, exc)


class _OutcomeRefused(Exception):
    """finish()'s terminal event refused on its own for what it holds (see
    :meth:`RunContext._replaceable`): a short one takes its place."""

    def __init__(self, event: EventModel, refusal: LedgerError) -> None:
        super().__init__(str(refusal))
        assert isinstance(event, RunFinished)
        self.event = event
        self.refusal = refusal


# What a signal handler stopping the process raises (:func:`stop_runs`), or None.
_stop_requested: BaseException | None = None


def stop_runs(stop: BaseException | None) -> None:
    """Make every open run's next ``progress`` or ``error`` raise ``stop`` (None: no more).

    A signal handler that stops the process (``ledger run`` on SIGTERM) raises ``stop`` and
    calls this too: Python drops an exception raised in a handler that happened to run inside
    a weakref or garbage-collector callback (seen: SQLAlchemy's event registry, "Exception
    ignored in: _collection_gced"), and the run then went on to its end, recorded
    ``success``, or for ever on a source that never ends. The run ends ``failed``
    ("interrupted") at its next report instead."""
    global _stop_requested
    _stop_requested = stop


def _check_seconds(name: str, value: object, *, allow_zero: bool) -> None:
    """A finite number of seconds up to a day: ``nan`` passes every comparison and, as a wait,
    returns at once (heartbeats as fast as the ledger takes them); ``inf`` as a wait is an
    OverflowError that kills the heartbeat thread, and the run is then timed out while alive."""
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    # Written as one chained comparison: every comparison with nan is false.
    if (
        number is None
        or not 0 <= number <= MAX_INTERVAL_SECONDS
        or (number == 0 and not allow_zero)
    ):
        low = ">= 0" if allow_zero else "> 0"
        raise ValidationError(
            f"{name}={clip(safe_repr(value), 80)}: a finite number of seconds {low} and at most "
            f"{MAX_INTERVAL_SECONDS:g} is required"
        )


def _forget_runs_in_child() -> None:
    """A forked child inherits the parent's open runs but not their heartbeat threads: its
    exit hook closed the parent's run ("interpreter exit") while the parent went on, and the
    parent's own RunFinished was then refused."""
    RunContext._open.clear()


os.register_at_fork(after_in_child=_forget_runs_in_child)


@atexit.register
def _close_runs_left_open() -> None:
    """No run the SDK opened is left open by an interpreter exit (a start() without finish())."""
    for context in list(RunContext._open):
        try:
            context.finish(SystemExit("interpreter exit with the run still open"))
        except Exception as exc:  # an exit hook must not raise; the run stays open for the sweeper
            run = f"run {context.result and context.result.run_id} of {context.connector_name}"
            if isinstance(exc, StorageError):  # the environment's: its message says what
                log.error(
                    "could not close %s at exit: %s; it stays open until `ledger sweep` times "
                    "it out",
                    run,
                    visible(str(exc)),
                )
            else:
                log.exception("could not close %s at exit", run)


@dataclass(frozen=True)
class RunOutcome:
    """One recorded run of a connector and what ended it (None: it ran to its end)."""

    connector: str
    source_id: int
    result: RunResult
    failure: BaseException | None

    @property
    def stopped(self) -> bool:
        """Whether a signal (SIGTERM, Ctrl-C: a SystemExit or KeyboardInterrupt) stopped it,
        whatever status the run is recorded with."""
        return isinstance(self.failure, KeyboardInterrupt | SystemExit)

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON: its id, connector, status, totals, errors, and the failure."""
        summary: dict[str, Any] = {
            "run_id": self.result.run_id,
            "connector": self.connector,
            "source_id": self.source_id,
            "status": self.result.status,
            **self.result.totals,
            "error_count": self.result.error_count,
            "spooled": self.result.spooled,
        }
        if self.failure is not None:
            summary["error"] = describe_failure(self.failure)
            if self.stopped and self.result.status != "failed":
                # Stopped while finish() recorded an outcome it had decided: that outcome is the
                # run's, and the error says so rather than contradict the status.
                summary["error"] += (
                    f" while the run's end was being recorded: the run is recorded "
                    f"{self.result.status}"
                )
        elif self.result.error_message is not None:
            summary["error"] = self.result.error_message
        return summary


__all__ = [
    "PROGRESS_FIELDS",
    "RunContext",
    "RunLeftOpenError",
    "RunNotStartedError",
    "RunOutcome",
    "RunResult",
    "describe_failure",
    "exception_text",
]
