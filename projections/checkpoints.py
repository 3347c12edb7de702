"""The ``projection_checkpoints`` row of a projection: read, lock, advance, record errors, the
mark of a rebuild's swap (and its recovery), and the skips an operator recorded."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, inspect, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from ledger.clock import format_utc_seconds, isoformat_utc, utcnow
from ledger.dialects import clock_on, is_galera
from ledger.driver_errors import table_being_altered
from ledger.text import clip
from projections.errors import CheckpointMovedError, PoisonEventError, ProjectionBusyError
from projections.schema import INGESTION_RUNS, SHADOW, projection_checkpoints, projection_skips

log = logging.getLogger(__name__)

MAX_ERROR_MESSAGE_CHARS = 4_000


@dataclass(frozen=True)
class Checkpoint:
    name: str
    position: int
    updated_at: datetime
    error_position: int | None
    error_type: str | None
    error_message: str | None
    error_at: datetime | None
    rebuild_position: int | None

    def error_to_dict(self) -> dict[str, Any] | None:
        """The error that stopped the projection as JSON (None while it applies events)."""
        if self.error_position is None:
            return None
        return {
            "position": self.error_position,
            "type": self.error_type,
            "message": self.error_message,
            "at": None if self.error_at is None else isoformat_utc(self.error_at),
        }


@dataclass(frozen=True)
class Skip:
    """A ``projection_skips`` row of a projection (the projection's name is the caller's)."""

    position: int
    event_type: str
    reason: str
    actor: str
    skipped_at: datetime

    @classmethod
    def of_row(cls, row: RowMapping) -> Skip:
        return cls(**{key: row[key] for key in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "event_type": self.event_type,
            "reason": self.reason,
            "actor": self.actor,
            "skipped_at": isoformat_utc(self.skipped_at),
        }


def read_checkpoint(conn: Connection, name: str, lock: bool = False) -> Checkpoint:
    """The checkpoint row (created at position 0 if missing); ``lock`` takes it FOR UPDATE, so
    a second projector waits here until the first one commits."""
    query = select(projection_checkpoints).where(projection_checkpoints.c.name == name)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).mappings().one_or_none()
    if row is None:
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(projection_checkpoints).values(
                        name=name, position=0, updated_at=utcnow()
                    )
                )
        except IntegrityError:
            pass  # another projector created it first
        row = conn.execute(query).mappings().one()
    return Checkpoint(**{key: row[key] for key in Checkpoint.__dataclass_fields__})


def advance(conn: Connection, name: str, position: int, expected: int | None = None) -> None:
    """Move the checkpoint to ``position`` and clear any error recorded before it.

    With ``expected`` (the position this transaction read), a compare-and-set: raises
    :class:`CheckpointMovedError` if the checkpoint is elsewhere. On one server the row lock
    already guarantees it; on a Galera cluster, where the projector's named lock is per node,
    this write of the checkpoint row is what the cluster certifies: of two projectors on two
    nodes that read the same checkpoint, the second to commit gets a certification conflict
    (1213) and applies nothing."""
    query = update(projection_checkpoints).where(projection_checkpoints.c.name == name)
    if expected is not None:
        query = query.where(projection_checkpoints.c.position == expected)
    result = conn.execute(query.values(**_moved_to(position)))
    if expected is not None and result.rowcount != 1:
        raise CheckpointMovedError(
            f"projection {name}: the checkpoint moved from {expected} while this batch was "
            "applied (another projector); reading the batch again"
        )


def finish_swap(conn: Connection, name: str, position: int) -> bool:
    """After a MySQL rebuild's RENAME: move the checkpoint to the position the swapped-in
    tables hold and clear the swap's mark, unless a projector already did (on a Galera cluster
    the rebuild's named lock does not keep projectors on other nodes out, and one of them may
    have recovered the swap, :func:`recover_interrupted_swap`, and gone on past it: moving the
    checkpoint back would apply those events twice). True if this call moved it."""
    result = conn.execute(
        update(projection_checkpoints)
        .where(
            projection_checkpoints.c.name == name,
            projection_checkpoints.c.rebuild_position == position,
        )
        .values(rebuild_position=None, **_moved_to(position))
    )
    return result.rowcount == 1


def _moved_to(position: int) -> dict[str, object]:
    """The checkpoint's columns once it moves to ``position``: any error before it cleared."""
    return {
        "position": position,
        "updated_at": utcnow(),
        "error_position": None,
        "error_type": None,
        "error_message": None,
        "error_at": None,
    }


def record_error(conn: Connection, name: str, poison: PoisonEventError) -> None:
    conn.execute(
        update(projection_checkpoints)
        .where(projection_checkpoints.c.name == name)
        .values(
            error_position=poison.position,
            error_type=poison.event_type,
            # TEXT on MySQL: a reason quoting a huge stored value must not fail the record.
            error_message=clip(poison.reason, MAX_ERROR_MESSAGE_CHARS),
            error_at=utcnow(),
        )
    )


def mark_swap(conn: Connection, name: str, position: int | None) -> None:
    """Record (or clear, with None) the position a rebuild's shadow tables hold, before a swap
    that cannot share a transaction with the checkpoint (MySQL's RENAME TABLE commits). The
    mark's time is the checkpoint's ``updated_at`` (see :func:`_swap_may_be_running`)."""
    values: dict[str, object] = {"rebuild_position": position}
    if position is not None:
        values["updated_at"] = clock_on(conn)  # the server's: nodes' hosts may disagree
    conn.execute(
        update(projection_checkpoints).where(projection_checkpoints.c.name == name).values(**values)
    )


# How long after its mark a swap may still be under way on another node of a Galera cluster:
# the mark, the RENAME and the checkpoint's move take milliseconds; a mark older than this with
# the shadow tables still there is a rebuild that died before its swap.
SWAP_GRACE = timedelta(minutes=2)


def _swap_may_be_running(conn: Connection, checkpoint: Checkpoint) -> bool:
    """Whether the swap marked in ``checkpoint`` may belong to a rebuild still running. On one
    server, never: the caller holds the projection's named lock, which a rebuild holds for its
    whole swap. On a Galera cluster named locks are per node, so a mark younger than
    :data:`SWAP_GRACE` whose RENAME has not arrived yet (the shadow tables are still there)
    is taken for a swap under way on another node: clearing it would let this projector
    advance the old tables while the rebuild swaps its own in."""
    if not is_galera(conn):
        return False
    marked = checkpoint.updated_at.replace(tzinfo=None)
    return clock_on(conn).replace(tzinfo=None) - marked < SWAP_GRACE


def swapped_in(conn: Connection, rebuild_position: int | None) -> bool:
    """Whether a swap marked at ``rebuild_position`` renamed its tables in: the mark is set and
    the shadow tables are gone (a rebuild killed between its RENAME and the checkpoint's move).
    The live tables then hold ``rebuild_position``, whatever the checkpoint still says."""
    if rebuild_position is None:
        return False
    try:
        return not inspect(conn).has_table(INGESTION_RUNS + SHADOW)
    except DBAPIError as exc:
        if not table_being_altered(exc):
            raise
        return False  # the shadow tables are there, a swap's RENAME under way on them


def settled(conn: Connection, checkpoint: Checkpoint) -> Checkpoint:
    """``checkpoint`` as :func:`recover_interrupted_swap` will leave it, read without writing:
    what a reader (``ledger status``, ``verify``, ``report``) compares the live tables with, so
    that a swap a projector has not finished yet is not taken for a projection out of step."""
    if not swapped_in(conn, checkpoint.rebuild_position):
        return checkpoint
    assert checkpoint.rebuild_position is not None  # swapped_in says so
    position = checkpoint.rebuild_position
    if checkpoint.error_position is not None and checkpoint.error_position <= position:
        # The swapped-in tables hold the event the projection had stopped at: no error now.
        checkpoint = replace(
            checkpoint, error_position=None, error_type=None, error_message=None, error_at=None
        )
    return replace(checkpoint, position=position, rebuild_position=None)


def recover_interrupted_swap(conn: Connection, checkpoint: Checkpoint) -> Checkpoint:
    """Finish or abandon a MySQL swap that a killed rebuild left half done (the caller holds
    the projection lock): run before every batch, so no projector applies events on top of it.

    The mark (:func:`mark_swap`) says where the shadow tables were; if they are gone, they were
    renamed in, and only the checkpoint has to follow.
    """
    if checkpoint.rebuild_position is None:
        return checkpoint
    if not swapped_in(conn, checkpoint.rebuild_position):
        if _swap_may_be_running(conn, checkpoint):
            raise ProjectionBusyError(
                f"projection {checkpoint.name}: a rebuild on another node of this cluster is "
                f"swapping its tables in (marked at {format_utc_seconds(checkpoint.updated_at)} "
                "UTC); waiting for it"
            )
        log.warning("a rebuild stopped before its swap; the live tables were not touched")
        mark_swap(conn, checkpoint.name, None)
    else:
        log.warning(
            "a rebuild swapped its tables but stopped before moving the checkpoint; "
            "moving it to %d",
            checkpoint.rebuild_position,
        )
        # As finish_swap moves it: an error recorded at or before the swapped-in position
        # (the live table had refused a row the rebuild's tables hold) is cleared with it.
        conn.execute(
            update(projection_checkpoints)
            .where(projection_checkpoints.c.name == checkpoint.name)
            .values(rebuild_position=None, **_moved_to(checkpoint.rebuild_position))
        )
    return read_checkpoint(conn, checkpoint.name, lock=True)


def skipped_positions(conn: Connection, name: str, first: int, last: int) -> set[int]:
    query = select(projection_skips.c.position).where(
        projection_skips.c.name == name,
        projection_skips.c.position >= first,
        projection_skips.c.position <= last,
    )
    return set(conn.execute(query).scalars())


def list_skips(conn: Connection, name: str) -> list[Skip]:
    query = (
        select(projection_skips)
        .where(projection_skips.c.name == name)
        .order_by(projection_skips.c.position)
    )
    return [Skip.of_row(row) for row in conn.execute(query).mappings()]
