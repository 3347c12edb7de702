"""Zero-downtime rebuild of the ``ingestion_runs`` projection.

History is replayed into shadow tables while the live ones keep serving readers and the
projector keeps following. Then, with the projection locked, the shadow catches up to the head
and is swapped in:

* SQLite: one transaction drops the live tables, renames the shadows and sets the checkpoint
  (SQLite DDL is transactional), so the swap is atomic.
* MySQL/MariaDB: one ``RENAME TABLE`` swaps both tables atomically, but it commits implicitly,
  so it cannot share a transaction with the checkpoint. The position the shadows hold is first
  written to ``projection_checkpoints.rebuild_position``; if the process dies after the rename
  and before the checkpoint moves, the next projector sees the marker, sees the shadow tables
  gone (renamed), and moves the checkpoint itself (:func:`recover_interrupted_swap`). The named
  projection lock keeps every projector out for the whole swap.

Killed at any other moment, the live tables are untouched and the next rebuild drops the
leftover shadows and starts afresh.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, func, inspect, select, update

from ledger import Ledger
from ledger.database import is_sqlite, translate_errors, write_transaction
from ledger.store import read_events_page
from projections.checkpoints import Checkpoint, advance, read_checkpoint, skipped_positions
from projections.locking import exclusive_rebuild, projection_session, projection_transaction
from projections.schema import (
    INGESTION_RUNS,
    PROJECTION_NAME,
    TRANSITIONS,
    ingestion_run_transitions,
    ingestion_runs,
    projection_checkpoints,
    shadow_tables,
)
from projections.writer import ReadModelWriter

log = logging.getLogger(__name__)

SHADOW = "__rebuild"
OLD = "__old"

Progress = Callable[[int, int], None]  # (events replayed so far, events to replay)


@dataclass(frozen=True)
class RebuildResult:
    events: int
    runs: int
    position: int
    seconds: float


def recover_interrupted_swap(conn: Connection, checkpoint: Checkpoint) -> Checkpoint:
    """Finish or abandon a MySQL swap that a killed rebuild left half done (caller holds the
    projection lock)."""
    if checkpoint.rebuild_position is None:
        return checkpoint
    values: dict[str, object] = {"rebuild_position": None}
    if inspect(conn).has_table(INGESTION_RUNS + SHADOW):
        log.warning("a rebuild stopped before its swap; the live tables were not touched")
    else:
        log.warning(
            "a rebuild swapped its tables but stopped before moving the checkpoint; "
            "moving it to %d",
            checkpoint.rebuild_position,
        )
        values["position"] = checkpoint.rebuild_position
    conn.execute(
        update(projection_checkpoints)
        .where(projection_checkpoints.c.name == checkpoint.name)
        .values(**values)
    )
    return read_checkpoint(conn, checkpoint.name, lock=True)


def rebuild(
    ledger: Ledger, batch_size: int = 1000, progress: Progress | None = None
) -> RebuildResult:
    """Replay the whole ledger into fresh tables and swap them in atomically."""
    started = time.monotonic()
    engine = ledger.engine
    with translate_errors(ledger.url, "rebuild"), exclusive_rebuild(engine, PROJECTION_NAME):
        # Settle a swap an earlier rebuild left half done *before* touching leftovers: its
        # marker is read against the shadow tables' existence.
        with projection_transaction(engine, PROJECTION_NAME) as conn:
            recover_interrupted_swap(conn, read_checkpoint(conn, PROJECTION_NAME, lock=True))
        _drop_leftovers(engine)
        shadow_runs, shadow_transitions = shadow_tables(SHADOW, with_indexes=not is_sqlite(engine))
        for table in (shadow_runs, shadow_transitions):
            table.create(engine)
        writer = ReadModelWriter(shadow_runs, shadow_transitions)
        target = ledger.head().last_position
        position = 0
        while position < target:  # bulk of the replay: one short transaction per batch
            with write_transaction(engine) as conn:
                position = _replay(conn, writer, position, batch_size, up_to=target)
            if progress:
                progress(position, target)
        if is_sqlite(engine):
            position = _swap_sqlite(engine, writer, position, batch_size, progress)
        else:
            position = _swap_mysql(engine, writer, position, batch_size, progress)
        with engine.connect() as conn:
            runs = int(conn.execute(select(func.count()).select_from(ingestion_runs)).scalar_one())
    seconds = time.monotonic() - started
    log.info("rebuilt %s: %d events, %d runs in %.1fs", PROJECTION_NAME, position, runs, seconds)
    return RebuildResult(events=position, runs=runs, position=position, seconds=seconds)


def _replay(
    conn: Connection, writer: ReadModelWriter, after: int, batch_size: int, up_to: int | None = None
) -> int:
    """Apply one batch after ``after`` to the shadow tables; return the new position."""
    events = read_events_page(conn, after, batch_size, up_to=up_to)
    if not events:
        return after
    skipped = skipped_positions(conn, PROJECTION_NAME, events[0].position, events[-1].position)
    outcome = writer.apply(conn, events, skipped)
    if outcome.poison is not None:
        raise outcome.poison
    return events[-1].position


def _catch_up(
    conn: Connection,
    writer: ReadModelWriter,
    position: int,
    batch_size: int,
    progress: Progress | None,
) -> int:
    while True:
        after = _replay(conn, writer, position, batch_size)
        if after == position:
            return position
        position = after
        if progress:
            progress(position, position)


def _swap_sqlite(
    engine: Engine,
    writer: ReadModelWriter,
    position: int,
    batch_size: int,
    progress: Progress | None,
) -> int:
    with write_transaction(engine) as conn:  # appenders and projectors wait until it commits
        read_checkpoint(conn, PROJECTION_NAME, lock=True)
        position = _catch_up(conn, writer, position, batch_size, progress)
        for live, shadow in (
            (ingestion_runs, writer.runs),
            (ingestion_run_transitions, writer.transitions),
        ):
            conn.exec_driver_sql(f'DROP TABLE "{live.name}"')
            conn.exec_driver_sql(f'ALTER TABLE "{shadow.name}" RENAME TO "{live.name}"')
            for index in live.indexes:  # index names are per database on SQLite: made last
                index.create(conn)
        advance(conn, PROJECTION_NAME, position)
    return position


def _swap_mysql(
    engine: Engine,
    writer: ReadModelWriter,
    position: int,
    batch_size: int,
    progress: Progress | None,
) -> int:
    with projection_session(engine, PROJECTION_NAME) as conn:
        with conn.begin():
            position = _catch_up(conn, writer, position, batch_size, progress)
            conn.execute(
                update(projection_checkpoints)
                .where(projection_checkpoints.c.name == PROJECTION_NAME)
                .values(rebuild_position=position)
            )
        conn.exec_driver_sql(
            "RENAME TABLE "
            + ", ".join(
                f"`{name}` TO `{name}{OLD}`, `{name}{SHADOW}` TO `{name}`"
                for name in (INGESTION_RUNS, TRANSITIONS)
            )
        )
        conn.commit()  # RENAME committed implicitly; end SQLAlchemy's autobegun transaction
        with conn.begin():
            conn.execute(
                update(projection_checkpoints)
                .where(projection_checkpoints.c.name == PROJECTION_NAME)
                .values(rebuild_position=None)
            )
            advance(conn, PROJECTION_NAME, position)
    _drop_leftovers(engine, only_old=True)
    return position


def _drop_leftovers(engine: Engine, only_old: bool = False) -> None:
    suffixes = (OLD,) if only_old else (OLD, SHADOW)
    with engine.begin() as conn:
        existing = set(inspect(conn).get_table_names())
        for name in (INGESTION_RUNS, TRANSITIONS):
            for suffix in suffixes:
                if name + suffix in existing:
                    conn.exec_driver_sql(f"DROP TABLE {_quote(conn, name + suffix)}")


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)
