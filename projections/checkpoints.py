"""The ``projection_checkpoints`` row of a projection: read, lock, advance, record errors, and
the skips an operator recorded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from ledger.clock import utcnow
from ledger.text import clip
from projections.errors import PoisonEventError
from projections.schema import projection_checkpoints, projection_skips

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


@dataclass(frozen=True)
class Skip:
    position: int
    event_type: str
    reason: str
    actor: str
    skipped_at: datetime


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


def advance(conn: Connection, name: str, position: int) -> None:
    """Move the checkpoint to ``position`` and clear any error recorded before it."""
    conn.execute(
        update(projection_checkpoints)
        .where(projection_checkpoints.c.name == name)
        .values(
            position=position,
            updated_at=utcnow(),
            error_position=None,
            error_type=None,
            error_message=None,
            error_at=None,
        )
    )


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
    return [
        Skip(**{key: row[key] for key in Skip.__dataclass_fields__})
        for row in conn.execute(query).mappings()
    ]
