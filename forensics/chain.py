"""Verification of the hash chain (I6): recompute every hash and name the first bad position."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ledger.clock import isoformat_utc
from ledger.dialects import stored_time_text
from ledger.hashing import HASH, POSITION, PREV_HASH, RECORDED_AT, stored_row_hash, stored_row_link
from ledger.reads import (
    first_stored_position,
    last_stored_position,
    lowest_position_between,
    stored_refs,
    stored_rows,
)
from ledger.recorded import LedgerHead, StoredRef
from ledger.schema import GENESIS_HASH
from ledger.store import Ledger
from ledger.text import clip, visible


@dataclass(frozen=True)
class ChainReport:
    """Outcome of :func:`verify_chain`. ``first_bad_position`` is None when the chain holds.

    ``head`` is the ledger head the chain was checked against (what ``ledger anchor`` would
    write once the check passes)."""

    checked: int
    first_bad_position: int | None = None
    problem: str | None = None
    head: LedgerHead | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad_position is None


def verify_chain(
    ledger: Ledger,
    from_position: int = 1,
    to_position: int | None = None,
    batch_size: int = 5000,
) -> ChainReport:
    """Recompute the chain over ``[from_position, to_position]`` (to the head by default; a
    range that ends before the head is also checked against the next row's ``prev_hash``).

    Catches an edited row (its hash no longer matches), a deleted or inserted row (a gap in
    positions, or a ``prev_hash`` that is not the previous row's hash; a row past the head or,
    for a range from the start, below position 1) and a head that does not match the last
    row.
    """
    head = ledger.head()
    return replace(_verify_chain(ledger, head, from_position, to_position, batch_size), head=head)


def _verify_chain(
    ledger: Ledger,
    head: LedgerHead,
    from_position: int,
    to_position: int | None,
    batch_size: int,
) -> ChainReport:
    end = head.last_position if to_position is None else min(to_position, head.last_position)
    if from_position <= 1:
        below = _row_below_start(ledger)
        if below is not None:
            return ChainReport(
                0,
                below,
                f"position {below} is below position 1, where the chain begins: a row no "
                "append wrote (every read after a position, the chain's included, passes it "
                "by, yet a run's timeline shows it)",
            )
    if from_position > head.last_position:
        # Nothing the head vouches for lies in the range; only a row written past it could.
        stray = _row_past_head(ledger)
        if stray is None or stray[0] < from_position:
            return ChainReport(0)
        if to_position is not None and stray[0] > to_position:
            return ChainReport(0)
        return _beyond_head(0, *stray)
    prev_hash = GENESIS_HASH if from_position <= 1 else _hash_at(ledger, from_position - 1)
    if prev_hash is None:
        return ChainReport(0, from_position - 1, f"position {from_position - 1} is missing")
    expected_position = max(from_position, 1)
    checked = 0
    last_recorded_at: Any = None
    last_recorded = ""  # its canonical text (every stored time's text sorts after "")
    for row in _stored_rows(ledger, expected_position - 1, batch_size):
        position = row[POSITION]
        if position != expected_position and expected_position <= end:
            # Checked before "beyond the head": a row moved past the head leaves its own
            # position missing, and that is the first position that does not match.
            return ChainReport(
                checked,
                expected_position,
                f"position {expected_position} is missing (next is {position})",
            )
        if position > end:
            if to_position is not None and position == end + 1 and row[PREV_HASH] != prev_hash:
                # A range that stops before the head is vouched for by the next row: without
                # this, its last row could be rewritten with a recomputed hash unseen.
                return ChainReport(
                    checked,
                    end,
                    f"the hash at position {end} is not the prev_hash of position {end + 1} "
                    "(the row was altered)",
                )
            break  # what the head vouched for when read is checked; the rest is looked at below
        if row[PREV_HASH] != prev_hash:
            if position > 1 and _own_hash_holds(row):
                # This row is as it was written, chained to the hash its predecessor had
                # then: the predecessor was rewritten with its hash recomputed (it passed its
                # own check above). Naming this row sent the auditor to another event, often
                # another run.
                return ChainReport(
                    max(checked - 1, 0),
                    position - 1,
                    f"the hash at position {position - 1} is not the prev_hash of position "
                    f"{position}, whose own hash holds: the row at {position - 1} was altered "
                    f"and its hash recomputed (or {position} rewritten to chain elsewhere)",
                )
            return ChainReport(
                checked,
                position,
                "prev_hash does not match the hash of the previous position",
            )
        try:
            (rehashed, recorded), why = stored_row_link(prev_hash, row), ""
        except (ValueError, TypeError) as exc:  # a number column holding something else
            rehashed, why = None, f": {clip(visible(str(exc)), 120)}"
        if rehashed != row[HASH]:
            return ChainReport(
                checked,
                position,
                f"hash does not match the row's content (the row was altered){why}",
            )
        if recorded < last_recorded:
            # Every append takes recorded_at under the head lock, never below the last one
            # (the as-of reads' binary search relies on it): an event dated before the one it
            # follows was written by hand, a forged fact made to look older than it is.
            return ChainReport(
                checked,
                position,
                f"recorded_at {recorded} is before the recorded_at of position {position - 1} "
                f"({last_recorded}): no append records an event before "
                "the one it follows (a row written by hand?)",
            )
        prev_hash = row[HASH]
        last_recorded_at, last_recorded = row[RECORDED_AT], recorded
        expected_position += 1
        checked += 1
    if expected_position <= end:
        return ChainReport(
            checked,
            expected_position,
            f"position {expected_position} is missing (head is at {end})",
        )
    if to_position is None:
        stray = _row_past_head(ledger)
        if stray is not None:
            return _beyond_head(checked, *stray)
    if to_position is None and end > 0:
        if prev_hash != head.last_hash:
            return ChainReport(
                checked, end, "ledger_head last_hash does not match the hash of the last event"
            )
        if not _same_time(last_recorded_at, head.last_recorded_at):
            # Every append sets it to its events' recorded_at; the next append starts from it,
            # so a head edited into the future would stamp every later event with that time.
            return ChainReport(
                checked,
                end,
                "ledger_head last_recorded_at does not match the recorded_at of the last event",
            )
    return ChainReport(checked)


def _own_hash_holds(row: tuple[Any, ...]) -> bool:
    """Whether a stored row's hash is that of its content chained to its own ``prev_hash``."""
    try:
        return bool(stored_row_hash(row[PREV_HASH], row) == row[HASH])
    except (ValueError, TypeError):  # a number column holding text: no append wrote it
        return False


def _row_below_start(ledger: Ledger) -> int | None:
    """The lowest stored position when it is below 1, where appends start numbering: such a
    row (an INSERT, which no trigger refuses) is never read by a scan after a position, so
    without this look the chain would hold while ``ledger events --run`` and ``ledger audit``
    show the row as the run's."""
    with ledger.connect("verify") as conn:
        lowest = first_stored_position(conn)
    return lowest if lowest is not None and lowest < 1 else None


def _row_past_head(ledger: Ledger) -> tuple[int, int] | None:
    """The first row beyond the head, if a row was written around the append path.

    A regular append moves the head in the transaction that writes its rows, so once such a
    row has been read, a head read afterwards covers it. A row written around the append path
    never moves the head, and the head can never pass it (an append at its position fails).
    So: take the lowest row past the head, read the head again; if the head now covers it, it
    was an append landing meanwhile, and the search goes on from there. It ends at the highest
    position read first, however busy the ledger.
    """
    with ledger.connect("verify") as conn:
        highest = last_stored_position(conn)
    head = ledger.head().last_position
    while highest is not None and highest > head:
        with ledger.connect("verify") as conn:
            lowest = lowest_position_between(conn, head, highest)
        assert lowest is not None  # highest itself is in the range
        now = ledger.head().last_position
        if now < lowest:
            return lowest, now
        head = now
    return None


def _beyond_head(checked: int, position: int, head: int) -> ChainReport:
    # Such a row blocks every append that reaches its position.
    return ChainReport(checked, position, f"position {position} is beyond the ledger head ({head})")


def _same_time(stored: Any, head_value: datetime | None) -> bool:
    return head_value is not None and stored_time_text(stored) == isoformat_utc(head_value)


def _stored_rows(ledger: Ledger, after: int, batch_size: int) -> Iterator[tuple[Any, ...]]:
    """Rows as stored, page by page on one connection: verification rehashes the stored text
    and needs no models or type conversion (the fast path of ``ledger verify``). Pages, not
    one streamed query: a chain found broken early stops reading without draining the rest."""
    with ledger.connect("verify") as conn:
        while True:
            rows = stored_rows(conn, after, batch_size)
            yield from rows
            if len(rows) < batch_size:
                return
            after = rows[-1][POSITION]


def _hash_at(ledger: Ledger, position: int) -> str | None:
    with ledger.connect() as conn:
        ref = stored_refs(conn, [position]).get(position)
    return None if ref is None else ref.hash


def events_at(ledger: Ledger, positions: Iterable[int]) -> dict[int, StoredRef]:
    """The stored events at ``positions`` (those that exist), by position."""
    with ledger.connect("verify") as conn:
        return stored_refs(conn, positions)
