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
from typing import Any

from sqlalchemy import insert, select

from ledger import Ledger, StorageError, ValidationError
from ledger.clock import utcnow
from ledger.database import translate_errors
from ledger.schema import ledger_events
from ledger.store import read_events_page
from ledger.text import visible
from projections.checkpoints import (
    Checkpoint,
    advance,
    read_checkpoint,
    record_error,
    skipped_positions,
)
from projections.errors import PoisonEventError, ProjectionTimeoutError
from projections.locking import ProjectionBusyError, projection_transaction
from projections.rebuilder import recover_interrupted_swap
from projections.schema import (
    PROJECTION_NAME,
    ingestion_run_transitions,
    ingestion_runs,
    projection_skips,
)
from projections.writer import ReadModelWriter

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1000


class Projector:
    """Keeps ``ingestion_runs`` and ``ingestion_run_transitions`` up to date with the ledger."""

    name = PROJECTION_NAME

    def __init__(self, ledger: Ledger, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
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
            processed, more = self.apply_batch()
            total += processed
            if not more:
                break
        return total

    def apply_batch(self) -> tuple[int, bool]:
        """One transaction: returns (events processed, whether more may be pending)."""
        with (
            translate_errors(self.ledger.url, "project"),
            projection_transaction(self.ledger.engine, self.name) as conn,
        ):
            checkpoint = read_checkpoint(conn, self.name, lock=True)
            checkpoint = recover_interrupted_swap(conn, checkpoint)
            events = read_events_page(conn, checkpoint.position, self.batch_size)
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
            outcome = self.writer.apply(conn, events, skipped)
            if outcome.last_position is not None:
                advance(conn, self.name, outcome.last_position)
            if outcome.poison is not None:
                record_error(conn, self.name, outcome.poison)
        if outcome.poison is not None:
            log.error("projection %s stopped: %s", self.name, visible(str(outcome.poison)))
            raise outcome.poison
        if outcome.processed:
            log.debug(
                "projected %d event(s) up to position %s", outcome.processed, outcome.last_position
            )
        return outcome.processed, len(events) == self.batch_size

    def follow(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Tail the ledger until ``stop`` is set, finishing the current batch before returning.

        A database outage is logged and retried every ``interval``; a poison event stops the
        projector (it raises) because nothing after it may be applied.
        """
        while not stop.is_set():
            try:
                processed = self.run_once(stop)
            except (StorageError, ProjectionBusyError) as exc:
                log.warning("projector cannot proceed, retrying in %gs: %s", interval, exc)
                processed = 0
            if not processed:
                stop.wait(interval)

    def checkpoint(self) -> Checkpoint:
        with translate_errors(self.ledger.url, "read"), self.ledger.engine.connect() as conn:
            return read_checkpoint(conn, self.name)

    def wait_for(self, position: int, timeout: float = 10.0, poll: float = 0.05) -> None:
        """Return once ``position`` is applied (read-your-writes); raise on timeout, or at once
        if a poison event at or before it stops the projection."""
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

    def skip(self, position: int, reason: str, actor: str) -> dict[str, Any]:
        """Record that ``position`` is not to be applied (an operator's decision, audited)."""
        if not reason.strip():
            raise ValidationError("a skip needs a reason")
        with (
            translate_errors(self.ledger.url, "skip"),
            projection_transaction(self.ledger.engine, self.name) as conn,
        ):
            checkpoint = read_checkpoint(conn, self.name, lock=True)
            if position <= checkpoint.position:
                raise ValidationError(
                    f"position {position} is already applied (checkpoint {checkpoint.position})"
                )
            event_type = conn.execute(
                select(ledger_events.c.type).where(ledger_events.c.position == position)
            ).scalar_one_or_none()
            if event_type is None:
                raise ValidationError(f"there is no event at position {position}")
            already = skipped_positions(conn, self.name, position, position)
            if already:
                raise ValidationError(f"position {position} is already skipped")
            skip = {
                "name": self.name,
                "position": position,
                "event_type": event_type,
                "reason": reason,
                "actor": actor,
                "skipped_at": utcnow(),
            }
            conn.execute(insert(projection_skips).values(**skip))
        log.warning(
            "position %d (%s) will be skipped by %s: %s (by %s)",
            position,
            event_type,
            self.name,
            visible(reason),
            visible(actor),
        )
        return skip
