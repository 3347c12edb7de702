"""The projector: applies ledger events to the ``ingestion_runs`` read model, exactly once.

Each batch is one transaction that locks the projection's checkpoint row, reads the events
after it, folds them into the touched rows, writes rows, transitions and the new checkpoint, and
commits (I7): killed at any instant, the table and checkpoint move together or not at all. The
lock makes a second projector wait and then continue after the first, never double-count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime

from sqlalchemy import Connection, insert
from sqlalchemy.exc import DBAPIError

from ledger import Ledger, LedgerError, RecordedEvent, StorageError, ValidationError, arguments
from ledger.conflicts import retrying_conflicts
from ledger.driver_errors import is_refused_value
from ledger.errors import StoredRowError
from ledger.events import ACTOR_NAME_MAX, REASON_MAX, operator_name_problem
from ledger.outage import Outage
from ledger.reads import event_type_at, read_events_page, read_head
from ledger.text import clip, says_something, visible
from projections.checkpoints import (
    Checkpoint,
    Skip,
    advance,
    read_checkpoint,
    record_error,
    recover_interrupted_swap,
    skipped_positions,
)
from projections.dialects import projection_transaction
from projections.errors import (
    CheckpointMovedError,
    PoisonEventError,
    ProjectionBusyError,
    ProjectionTimeoutError,
)
from projections.fold import BatchOutcome
from projections.schema import (
    PROJECTION_NAME,
    ingestion_run_transitions,
    ingestion_runs,
    projection_skips,
)
from projections.writer import ReadModelWriter

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1000
# The longest pause between two attempts at an event the projection cannot apply: an
# operator's skip is picked up within it.
MAX_POISON_BACKOFF_S = 60.0
# Events read per statement inside a batch, and the payload size after which a batch stops
# early: 1,000 events of 1 MiB each (what append accepts) would take gigabytes in one batch,
# and a projector killed for its memory would retry the same batch for ever.
READ_PAGE = 200
MAX_BATCH_PAYLOAD_BYTES = 16 * 1024 * 1024
# How much of the database's message a recorded projection error keeps.
MAX_ERROR_DETAIL_CHARS = 500


MAX_FOLLOW_INTERVAL_S = 86_400.0
# Once stopped, how long a follower waits for the batch in flight: on a database that stopped
# answering its read waits the driver's timeout (75 s), past an orchestrator's stop timeout.
FOLLOW_STOP_WAIT_S = 10.0


class PoisonBackoff:
    """The pause before retrying an event the projection could not apply: ``first`` seconds,
    doubling at each failure up to ``maximum``, back to ``first`` after a success."""

    def __init__(self, first: float, maximum: float = MAX_POISON_BACKOFF_S) -> None:
        self.first = first
        self.maximum = max(first, maximum)
        self.pause = first
        self.retry_at = 0.0  # time.monotonic() before which a scheduled job skips its turn

    def failed(self) -> float:
        """Register a failure; return the pause to take before the next attempt."""
        pause = self.pause
        self.pause = min(self.pause * 2, self.maximum)
        self.retry_at = time.monotonic() + pause
        return pause

    def reset(self) -> None:
        self.pause = self.first
        self.retry_at = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self.retry_at


class Projector:
    """Keeps ``ingestion_runs`` and ``ingestion_run_transitions`` up to date with the ledger."""

    name = PROJECTION_NAME

    def __init__(self, ledger: Ledger, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        batch_size = arguments.whole_number(batch_size, "batch_size", least=None)
        if batch_size < 1:
            raise ValidationError(f"batch_size must be at least 1, got {batch_size}")
        self.ledger = ledger
        self.batch_size = batch_size
        self.writer = ReadModelWriter(ingestion_runs, ingestion_run_transitions)

    def run_once(self, stop: threading.Event | None = None) -> int:
        """Apply every pending event, batch by batch; return how many were processed.

        Raises :class:`PoisonEventError` at an event it cannot apply, after committing the
        events before it.
        """
        total = 0
        while stop is None or not stop.is_set():
            processed, more = self.apply_batch(stop)
            total += processed
            if not more:
                break
        return total

    def apply_batch(self, stop: threading.Event | None = None) -> tuple[int, bool]:
        """One transaction: returns (events processed, whether more may be pending).

        If the database refuses a row the batch would write (a value too long or out of range
        for its column), the batch is applied again one event at a time: the events before the
        refused one commit, and the refused one is recorded as the projection's error.
        """
        try:
            return self._apply_batch_retrying(one_by_one=False, stop=stop)
        except StorageError as exc:
            if not is_refused_value(exc):
                raise
            log.warning(
                "projection %s: the database refused a row of this batch (%s); applying it "
                "one event at a time to find the event",
                self.name,
                visible(str(exc)),
            )
            return self._apply_batch_retrying(one_by_one=True, stop=stop)

    def _apply_batch_retrying(
        self, one_by_one: bool, stop: threading.Event | None
    ) -> tuple[int, bool]:
        """The batch, read and applied again when another projector committed first (a
        certification conflict or a moved checkpoint: another node's projector on a Galera
        cluster); the retry continues after what that one applied."""
        return retrying_conflicts(
            lambda: self._apply_batch(one_by_one),
            f"projection {self.name}",
            also=(CheckpointMovedError,),
            stop=stop,
        )

    def _apply_batch(self, one_by_one: bool) -> tuple[int, bool]:
        with projection_transaction(self.ledger, self.name, "project") as conn:
            checkpoint = read_checkpoint(conn, self.name, lock=True)
            checkpoint = recover_interrupted_swap(conn, checkpoint)
            events, more = self._read_batch(conn, checkpoint.position)
            if not events:
                return 0, False
            # With "projected ..." (logged after the commit), this brackets a batch in -vv logs.
            log.debug(
                "applying %d event(s), positions %d..%d",
                len(events),
                events[0].position,
                events[-1].position,
            )
            skipped = skipped_positions(conn, self.name, events[0].position, events[-1].position)
            if one_by_one:
                outcome = self._apply_one_by_one(conn, events, skipped)
            else:
                outcome = self.writer.apply(conn, events, skipped)
            if outcome.last_position is not None:
                advance(conn, self.name, outcome.last_position, expected=checkpoint.position)
            if outcome.poison is not None:
                record_error(conn, self.name, outcome.poison)
            lag = self._lag_events(conn, outcome.last_position)
        if outcome.poison is not None:
            log.error("projection %s stopped: %s", self.name, visible(str(outcome.poison)))
            raise outcome.poison
        if outcome.processed and log.isEnabledFor(logging.INFO):
            self._log_batch(events, outcome, lag)
        return outcome.processed, more

    def _log_batch(
        self, events: list[RecordedEvent], outcome: BatchOutcome, lag_events: int
    ) -> None:
        """The batch just committed (``-v``): how many events, which positions, and how far
        behind the projection still is: events left, and the age of the last one applied."""
        last = next((e for e in events if e.position == outcome.last_position), events[-1])
        age = max(0.0, (self.ledger.clock() - last.recorded_at).total_seconds())
        log.info(
            "projected %d event(s), positions %d..%d; lag %d event(s), %.1fs",
            outcome.processed,
            events[0].position,
            last.position,
            lag_events,
            age,
        )

    @staticmethod
    def _lag_events(conn: Connection, applied: int | None) -> int:
        """Events stored after ``applied`` (read only when ``-v`` logs it)."""
        if applied is None or not log.isEnabledFor(logging.INFO):
            return 0
        head = read_head(conn)
        return max(0, head.last_position - applied) if head is not None else 0

    def _read_batch(self, conn: Connection, after: int) -> tuple[list[RecordedEvent], bool]:
        """Up to ``batch_size`` events after ``after``, read a page at a time and cut short past
        :data:`MAX_BATCH_PAYLOAD_BYTES`; and whether more may be pending."""
        events: list[RecordedEvent] = []
        size = 0
        while len(events) < self.batch_size:
            wanted = min(READ_PAGE, self.batch_size - len(events))
            page = read_events_page(conn, after, wanted)
            events.extend(page)
            if len(page) < wanted:
                return events, False
            after = page[-1].position
            size += sum(len(event.payload) for event in page)
            if size >= MAX_BATCH_PAYLOAD_BYTES:
                return events, True
        return events, True

    def _apply_one_by_one(
        self, conn: Connection, events: list[RecordedEvent], skipped: set[int]
    ) -> BatchOutcome:
        """Apply ``events`` each in its own savepoint; stop at the first the database refuses."""
        outcome = BatchOutcome()
        for event in events:
            try:
                with conn.begin_nested():
                    one = self.writer.apply(conn, [event], skipped)
            except DBAPIError as exc:
                if not is_refused_value(exc):
                    raise
                detail = clip(str(exc.orig), MAX_ERROR_DETAIL_CHARS)
                outcome.poison = PoisonEventError(
                    event.position, event.type, f"the database refused its row: {detail}"
                )
                return outcome
            outcome.transitions.extend(one.transitions)
            if one.poison is not None:
                outcome.poison = one.poison
                return outcome
            outcome.processed += one.processed
            outcome.last_position = one.last_position
        return outcome

    def follow(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Tail the ledger until ``stop`` is set, finishing the current batch before returning.

        A database outage is retried every ``interval`` and logged as it starts and as it
        ends. An event the projection cannot apply is recorded in the checkpoint (``ledger
        status``, the metrics and the report show it) and retried with a pause that doubles up
        to :data:`MAX_POISON_BACKOFF_S`: nothing after it is applied, and once an operator skips
        it (or an upcaster is deployed) the projector goes on by itself. A row it cannot read
        (edited by hand) is retried as an outage is, until ``ledger rebuild`` writes it again.
        """
        # One chained comparison: nan fails it (as a wait it returns at once: a busy loop on
        # the database), and inf as a wait is an OverflowError.
        if isinstance(interval, bool) or not (
            isinstance(interval, int | float) and 0 < interval <= MAX_FOLLOW_INTERVAL_S
        ):
            raise ValidationError(
                f"interval={interval!r}: a finite number of seconds > 0 and at most "
                f"{MAX_FOLLOW_INTERVAL_S:g} is required"
            )
        backoff = PoisonBackoff(interval)
        outage = Outage("projector", log)
        while not stop.is_set():
            try:
                processed = self.run_once(stop)
            # A row of the table edited by hand past reading (a time of 'yesterday') is waited
            # out as an outage is, logged once, as `serve`'s projector does: the follower stays
            # up and goes on by itself once `ledger rebuild` has written the table again.
            except (StorageError, ProjectionBusyError, CheckpointMovedError, StoredRowError) as exc:
                if stop.is_set():  # a retry given up for the shutdown: nothing to report
                    break
                outage.failed(exc)
                stop.wait(interval)
                continue
            except PoisonEventError as exc:
                pause = backoff.failed()
                log.error("projector stopped, retrying in %gs: %s", pause, visible(str(exc)))
                stop.wait(pause)
                continue
            outage.ended()
            backoff.reset()
            if not processed:
                stop.wait(interval)

    def follow_until_stopped(
        self,
        stop: threading.Event,
        wait_for_stop: Callable[[], object],
        interval: float = 1.0,
        stop_wait: float = FOLLOW_STOP_WAIT_S,
    ) -> bool:
        """:meth:`follow` in a thread of its own while ``wait_for_stop()`` blocks the calling
        thread (the CLI's wait for SIGTERM or SIGINT, which must also return once ``stop`` is
        set: :meth:`follow` sets it when it fails), then at most ``stop_wait`` seconds for the
        batch in flight. True if it finished; False if it is still waiting on the database, left
        to its daemon thread (a batch commits whole or not at all: the next projector applies
        it). An error of :meth:`follow` is raised here."""
        failed: list[BaseException] = []

        def work() -> None:
            try:
                self.follow(stop, interval)
            except BaseException as exc:  # raised in the caller's thread below
                failed.append(exc)
                stop.set()

        follower = threading.Thread(target=work, name="projector-follow", daemon=True)
        follower.start()
        wait_for_stop()
        stop.set()
        follower.join(stop_wait)
        if failed:
            raise failed[0]
        return not follower.is_alive()

    def checkpoint(self) -> Checkpoint:
        with self.ledger.connect() as conn:
            return read_checkpoint(conn, self.name)

    def wait_for(self, position: int, timeout: float = 10.0, poll: float = 0.05) -> None:
        """Return once ``position`` is applied (read-your-writes); raise on timeout, or at once
        if a poison event at or before it stops the projection."""
        position = arguments.whole_number(position, "position")
        timeout = arguments.seconds(timeout, "timeout")
        poll = arguments.seconds(poll, "poll", zero=False)
        deadline = time.monotonic() + timeout
        while True:
            checkpoint = self.checkpoint()
            if checkpoint.position >= position:
                return
            if checkpoint.error_position is not None and checkpoint.error_position <= position:
                raise PoisonEventError(
                    checkpoint.error_position,
                    checkpoint.error_type or "?",
                    checkpoint.error_message or "",
                )
            if time.monotonic() >= deadline:
                raise ProjectionTimeoutError(
                    f"projection {self.name} is at position {checkpoint.position}, not "
                    f"{position}, after {timeout:g}s: is a projector running?"
                )
            time.sleep(poll)

    def skip(self, position: int, reason: str, actor: str) -> Skip:
        """Record that ``position`` is not to be applied (an operator's decision, audited)."""
        position = arguments.whole_number(position, "position")
        reason = arguments.text(reason, "reason")
        actor = arguments.text(actor, "actor")
        if not says_something(reason):
            raise ValidationError(
                "a skip needs a reason (one that shows: not only spaces or invisible characters)"
            )
        if len(reason) > REASON_MAX:
            raise ValidationError(f"reason: at most {REASON_MAX} characters, got {len(reason)}")
        if not actor.strip():
            raise ValidationError("a skip needs an actor (who decided it)")
        problem = operator_name_problem(actor)
        if len(actor) > ACTOR_NAME_MAX:
            problem = f"at most {ACTOR_NAME_MAX} characters, got {len(actor)}"
        if problem is not None:
            raise ValidationError(f"actor {clip(visible(actor), 60)!r}: {problem}")
        with projection_transaction(self.ledger, self.name, "skip") as conn:
            # A swap a killed rebuild left half done is settled first: its tables may already
            # hold the position (applied), which the old checkpoint would call pending.
            checkpoint = recover_interrupted_swap(conn, read_checkpoint(conn, self.name, lock=True))
            if position <= checkpoint.position:
                raise ValidationError(
                    f"position {position} is already applied (checkpoint {checkpoint.position})"
                )
            event_type = event_type_at(conn, position)
            if event_type is None:
                raise ValidationError(f"there is no event at position {position}")
            already = skipped_positions(conn, self.name, position, position)
            if already:
                raise ValidationError(f"position {position} is already skipped")
            if checkpoint.error_position != position and _readable(conn, position):
                # Only an event the projector cannot apply: the one it stopped at, or one this
                # code cannot read (a newer writer's type, seen ahead in an as-of report). A
                # skip of any other would hide a good event (its run `running` for good).
                stopped = (
                    "the projection has not stopped on an event"
                    if checkpoint.error_position is None
                    else f"the projection stopped at position {checkpoint.error_position}"
                )
                raise ValidationError(
                    f"position {position} cannot be skipped: {stopped}, and its event is one "
                    "this run-ledger can read; only an event the projector cannot apply can "
                    "be skipped"
                )
            skip = Skip(position, event_type, reason, actor, self._ledger_time(conn))
            conn.execute(insert(projection_skips).values(name=self.name, **asdict(skip)))
        log.warning(
            "position %d (%s) will be skipped by %s: %s (by %s)",
            position,
            event_type,
            self.name,
            visible(reason),
            visible(actor),
        )
        return skip

    def _ledger_time(self, conn: Connection) -> datetime:
        """The time a skip is recorded at: the ledger's clock, as an append reads it, never
        behind the last ``recorded_at`` (a clock set back after an append). Behind it, a skip
        would read as made before the event it skips, which `ledger verify` calls forged."""
        now = self.ledger.clock()
        head = read_head(conn)
        last = None if head is None else head.last_recorded_at
        return now if last is None else max(now, last)


def _readable(conn: Connection, position: int) -> bool:
    """Whether the event at ``position`` is one this code can read (its type known, its
    payload valid): one the projector would apply unless the database refuses its row."""
    page = read_events_page(conn, position - 1, 1, up_to=position)
    try:
        return bool(page) and page[0].event is not None
    except LedgerError:
        return False
