"""Zero-downtime rebuild of the ``ingestion_runs`` projection.

History is replayed into shadow tables while the live ones keep serving readers and the
projector keeps following. Then, with the projection locked, the shadow catches up to the head
and is swapped in (:func:`projections.dialects.swap_in`):

* SQLite: one transaction drops the live tables, renames the shadows and sets the checkpoint
  (SQLite DDL is transactional), so the swap is atomic.
* MySQL/MariaDB: one ``RENAME TABLE`` swaps both tables atomically, but it commits implicitly,
  so it cannot share a transaction with the checkpoint. The position the shadows hold is first
  written to ``projection_checkpoints.rebuild_position``; if the process dies after the rename
  and before the checkpoint moves, the next projector sees the marker, sees the shadow tables
  gone (renamed), and moves the checkpoint itself
  (:func:`projections.checkpoints.recover_interrupted_swap`). The named projection lock keeps
  every projector out for the whole swap.

Killed at any other moment, the live tables are untouched and the next rebuild drops the
leftover shadows and starts afresh.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy import Connection, func, inspect, select

from ledger import Ledger
from ledger.conflicts import retrying_conflicts
from ledger.dialects import stored_time_reader
from ledger.hashing import POSITION
from ledger.reads import events_from_driver, read_rows_page
from projections.checkpoints import read_checkpoint, recover_interrupted_swap, skipped_positions
from projections.dialects import (
    carry_indexes,
    exclusive_rebuild,
    projection_transaction,
    shadow_indexes,
    swap_in,
)
from projections.errors import ReadModelExtrasError, SkipsChangedError, SwapBlockedError
from projections.extras import Extra, find_extras, judge
from projections.schema import (
    INGESTION_RUNS,
    OLD,
    PROJECTION_NAME,
    SHADOW,
    TRANSITIONS,
    ingestion_runs,
    shadow_tables,
)
from projections.writer import ReadModelWriter

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (events replayed so far, events to replay)
# Events replayed into the shadow tables per transaction: a commit (an fsync) per batch would
# cost more than the batch, and on SQLite appenders wait for each transaction to end, so it
# stays short (a fraction of a second).
EVENTS_PER_TRANSACTION = 20_000


@dataclass(frozen=True)
class RebuildResult:
    events: int
    runs: int
    position: int
    seconds: float
    # What an operator had added to the live tables: the indexes made again on the rebuilt
    # ones (same names), and what they no longer have (only with drop_extras).
    carried: tuple[Extra, ...] = field(default=())
    dropped: tuple[Extra, ...] = field(default=())


def rebuild(
    ledger: Ledger,
    batch_size: int = 1000,
    progress: Progress | None = None,
    drop_extras: bool = False,
) -> RebuildResult:
    """Replay the whole ledger into fresh tables and swap them in atomically.

    An operator's indexes on the live tables are made again on the rebuilt ones, with their
    names; what cannot be carried (a trigger, a CHECK constraint, a foreign key, an index on a
    column the schema lacks) refuses the rebuild before it starts
    (:class:`ReadModelExtrasError`), unless ``drop_extras``: then it is logged and left out
    (:mod:`projections.extras`)."""
    started = time.monotonic()
    with exclusive_rebuild(ledger, PROJECTION_NAME) as claim:
        # Settle a swap an earlier rebuild left half done *before* touching leftovers: its
        # marker is read against the shadow tables' existence.
        def settle_swap() -> None:
            with projection_transaction(ledger, PROJECTION_NAME, "rebuild") as conn:
                recover_interrupted_swap(conn, read_checkpoint(conn, PROJECTION_NAME, lock=True))

        # On a Galera cluster a projector on another node may move the checkpoint row while
        # this transaction holds it: the commit loses the certification, and it runs again.
        retrying_conflicts(settle_swap, "rebuild")
        _drop_leftovers(ledger)
        shadow_runs, shadow_transitions = shadow_tables(SHADOW, shadow_indexes(ledger))
        try:
            with ledger.connect("rebuild") as conn, conn.begin():
                for table in (shadow_runs, shadow_transitions):
                    table.create(conn)
                # Before the replay: what the live tables have that the shadows lack.
                extras = find_extras(conn, (shadow_runs, shadow_transitions))
                judge(extras, drop_extras)
                carry_indexes(
                    conn,
                    extras,
                    {INGESTION_RUNS: shadow_runs.name, TRANSITIONS: shadow_transitions.name},
                )
        except ReadModelExtrasError:
            _drop_leftovers(ledger)  # MySQL's shadow tables (SQLite's rolled back with it)
            raise
        writer = ReadModelWriter(shadow_runs, shadow_transitions)
        target = ledger.head().last_position
        position = 0
        # Every skip the replay honoured: an operator's skip recorded after the replay passed
        # its position is checked for before the swap (_check_skips_unchanged).
        honoured: set[int] = set()

        def replay_to(start: int, up_to: int) -> int:
            with ledger.transaction("rebuild") as conn:
                # Renewed first, by compare-and-set in this transaction: nothing it writes
                # commits once another rebuild took the claim over (its shadow tables have
                # these names too), and a takeover waits for (or, across Galera nodes, loses
                # the certification to) a transaction under way.
                claim.check(conn)
                at = start
                while at < up_to:
                    after = _replay(conn, writer, at, batch_size, honoured, up_to=up_to)
                    if after == at:
                        # No row up to up_to: positions deleted around the append path. The
                        # replay goes on past them (as the projector does) rather than wait
                        # for rows that will never come; `ledger verify` names them.
                        log.warning(
                            "no event stored at positions %d..%d: replayed past them; "
                            "run `ledger verify`",
                            at + 1,
                            up_to,
                        )
                        after = up_to
                    at = after
                    if progress:
                        progress(at, target)
                return at

        while position < target:  # bulk of the replay: short transactions of many batches
            # A conflict (the heartbeat's renewal through another Galera node) rolls the whole
            # transaction back: it runs again from where it began.
            position = retrying_conflicts(
                partial(replay_to, position, min(target, position + EVENTS_PER_TRANSACTION)),
                "rebuild",
            )

        def catch_up(conn: Connection, after: int) -> int:
            _check_skips_unchanged(conn, honoured, after)  # under the projection lock
            caught_up = _catch_up(conn, writer, after, batch_size, honoured, progress)
            claim.check(conn)  # renewed in the swap's transaction: the last moment before it
            return caught_up

        try:
            position = swap_in(ledger, writer, position, catch_up, extras)
        except (SwapBlockedError, SkipsChangedError):
            _drop_leftovers(ledger)  # the shadow tables: the next rebuild replays afresh anyway
            raise
        _drop_leftovers(ledger, only_old=True)  # the live tables a MySQL swap renamed away
        with ledger.connect("rebuild") as conn:
            runs = int(conn.execute(select(func.count()).select_from(ingestion_runs)).scalar_one())
    seconds = time.monotonic() - started
    log.info("rebuilt %s: %d events, %d runs in %.1fs", PROJECTION_NAME, position, runs, seconds)
    return RebuildResult(
        events=position,
        runs=runs,
        position=position,
        seconds=seconds,
        carried=extras.carried,
        dropped=extras.uncarried,
    )


def _replay(
    conn: Connection,
    writer: ReadModelWriter,
    after: int,
    batch_size: int,
    honoured: set[int],
    up_to: int | None = None,
) -> int:
    """Apply one batch after ``after`` to the shadow tables; return the new position."""
    # Driver rows, folded without events for the common ones (fold_rows).
    page = read_rows_page(conn, after, batch_size, up_to=up_to)
    if not page:
        return after
    first, last = page[0][POSITION], page[-1][POSITION]
    if type(first) is not int or type(last) is not int:  # no append writes such a position
        events_from_driver(page, stored_time_reader)  # raises what reading them as events does
        first, last = int(first), int(last)
    skipped = skipped_positions(conn, PROJECTION_NAME, first, last)
    honoured.update(skipped)
    outcome = writer.apply_rows(conn, page, skipped)
    if outcome.poison is not None:
        raise outcome.poison
    return last


def _catch_up(
    conn: Connection,
    writer: ReadModelWriter,
    position: int,
    batch_size: int,
    honoured: set[int],
    progress: Progress | None,
) -> int:
    while True:
        after = _replay(conn, writer, position, batch_size, honoured)
        if after == position:
            return position
        position = after
        if progress:
            progress(position, position)


def _check_skips_unchanged(conn: Connection, honoured: set[int], replayed: int) -> None:
    """Raise :class:`SkipsChangedError` if the skips up to ``replayed`` are not those the
    replay honoured. The bulk of the replay runs without the projection lock: an operator may
    skip a position (one the database refused in the live table) after the replay applied it
    to the shadow tables, which a swap would then put live against the skip."""
    now = skipped_positions(conn, PROJECTION_NAME, 1, replayed)
    seen = {position for position in honoured if position <= replayed}
    changed = sorted(now ^ seen)
    if changed:
        raise SkipsChangedError(
            f"rebuild: the skips changed while it replayed (position(s) "
            f"{', '.join(map(str, changed[:10]))}); it stopped before its swap, the live "
            "tables are untouched: run `ledger rebuild` again"
        )


def _drop_leftovers(ledger: Ledger, only_old: bool = False) -> None:
    suffixes = (OLD,) if only_old else (OLD, SHADOW)
    with ledger.connect("rebuild") as conn, conn.begin():
        existing = set(inspect(conn).get_table_names())
        # The transitions first: an operator's foreign key from them to the runs (dropped by
        # --drop-extras) followed both tables to their leftover names.
        for name in (TRANSITIONS, INGESTION_RUNS):
            for suffix in suffixes:
                if name + suffix in existing:
                    conn.exec_driver_sql(f"DROP TABLE {_quote(conn, name + suffix)}")


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)
