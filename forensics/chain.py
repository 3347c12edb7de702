"""Verification of the hash chain (I6): recompute every hash and name the first bad position."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import func, select, text

from ledger.clock import isoformat_utc
from ledger.database import translate_errors
from ledger.hashing import content_from_values
from ledger.recorded import LedgerHead
from ledger.schema import GENESIS_HASH, ledger_events
from ledger.store import Ledger


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
    """Recompute the chain over ``[from_position, to_position]`` (to the head by default).

    Catches an edited row (its hash no longer matches), a deleted or inserted row (a gap in
    positions, or a ``prev_hash`` that is not the previous row's hash) and a head that does not
    match the last row.
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
    for event in _raw_rows(ledger, expected_position - 1, batch_size):
        if event.position != expected_position and expected_position <= end:
            # Checked before "beyond the head": a row moved past the head leaves its own
            # position missing, and that is the first position that does not match.
            return ChainReport(
                checked,
                expected_position,
                f"position {expected_position} is missing (next is {event.position})",
            )
        if event.position > end:
            break  # what the head vouched for when read is checked; the rest is looked at below
        if event.prev_hash != prev_hash:
            return ChainReport(
                checked,
                event.position,
                "prev_hash does not match the hash of the previous position",
            )
        if _hash(prev_hash, event) != event.hash:
            return ChainReport(
                checked,
                event.position,
                "hash does not match the row's content (the row was altered)",
            )
        prev_hash = event.hash
        last_recorded_at = event.recorded_at
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


def _row_past_head(ledger: Ledger) -> tuple[int, int] | None:
    """The first row beyond the head, if a row was written around the append path.

    A regular append moves the head in the transaction that writes its rows, so once such a
    row has been read, a head read afterwards covers it. A row written around the append path
    never moves the head, and the head can never pass it (an append at its position fails).
    So: take the lowest row past the head, read the head again; if the head now covers it, it
    was an append landing meanwhile, and the search goes on from there. It ends at the highest
    position read first, however busy the ledger.
    """
    with translate_errors(ledger.url, "verify"), ledger.engine.connect() as conn:
        highest = conn.execute(select(func.max(ledger_events.c.position))).scalar_one_or_none()
    head = ledger.head().last_position
    while highest is not None and highest > head:
        past = (ledger_events.c.position > head) & (ledger_events.c.position <= highest)
        with translate_errors(ledger.url, "verify"), ledger.engine.connect() as conn:
            first = conn.execute(select(func.min(ledger_events.c.position)).where(past))
            lowest = int(first.scalar_one())
        now = ledger.head().last_position
        if now < lowest:
            return lowest, now
        head = now
    return None


def _beyond_head(checked: int, position: int, head: int) -> ChainReport:
    # Such a row blocks every append that reaches its position.
    return ChainReport(checked, position, f"position {position} is beyond the ledger head ({head})")


def _same_time(stored: Any, head_value: datetime | None) -> bool:
    return head_value is not None and _canonical_time(stored) == isoformat_utc(head_value)


_COLUMNS = (
    "position, event_id, run_id, version, type, schema_version, payload, occurred_at, "
    "recorded_at, actor, prev_hash, hash"
)


class _Row(NamedTuple):
    position: int
    event_id: str
    run_id: int
    version: int
    type: str
    schema_version: int
    payload: str
    occurred_at: Any
    recorded_at: Any
    actor: str | None
    prev_hash: str
    hash: str


def _raw_rows(ledger: Ledger, after: int, batch_size: int) -> Iterator[_Row]:
    """Rows as the driver returns them: verification rehashes the stored text and needs no
    models or type conversion (the fast path of ``ledger verify``)."""
    query = text(
        f"SELECT {_COLUMNS} FROM ledger_events WHERE position > :after "
        "ORDER BY position LIMIT :limit"
    )
    while True:
        with translate_errors(ledger.url, "verify"), ledger.engine.connect() as conn:
            rows = [
                _Row(*row) for row in conn.execute(query, {"after": after, "limit": batch_size})
            ]
        yield from rows
        if len(rows) < batch_size:
            return
        after = rows[-1].position


def _canonical_time(value: Any) -> str:
    """A stored timestamp as the hash saw it: SQLite text or a MySQL naive UTC datetime."""
    if isinstance(value, datetime):
        return isoformat_utc(value.replace(tzinfo=UTC))
    text_value = str(value).replace(" ", "T")
    return (text_value if "." in text_value else text_value + ".000000") + "Z"


def _hash(prev_hash: str, row: _Row) -> str:
    content = content_from_values(
        row.position,
        row.event_id,
        row.run_id,
        row.version,
        row.type,
        row.schema_version,
        row.payload,
        _canonical_time(row.occurred_at),
        _canonical_time(row.recorded_at),
        row.actor,
    )
    return hashlib.sha256((prev_hash + content).encode("utf-8")).hexdigest()


def _hash_at(ledger: Ledger, position: int) -> str | None:
    query = select(ledger_events.c.hash).where(ledger_events.c.position == position)
    with translate_errors(ledger.url, "read"), ledger.engine.connect() as conn:
        value = conn.execute(query).scalar_one_or_none()
    return None if value is None else str(value)


@dataclass(frozen=True)
class StoredRef:
    """What identifies a stored event, read raw (no model, so an unknown type reads too)."""

    position: int
    run_id: int
    type: str
    hash: str
    recorded_at: datetime


def events_at(ledger: Ledger, positions: Iterable[int], chunk: int = 500) -> dict[int, StoredRef]:
    """The stored events at ``positions`` (those that exist), by position."""
    wanted = sorted({p for p in positions if p > 0})
    found: dict[int, StoredRef] = {}
    columns = (
        ledger_events.c.position,
        ledger_events.c.run_id,
        ledger_events.c.type,
        ledger_events.c.hash,
        ledger_events.c.recorded_at,
    )
    with translate_errors(ledger.url, "verify"), ledger.engine.connect() as conn:
        for start in range(0, len(wanted), chunk):
            part = wanted[start : start + chunk]
            rows = conn.execute(select(*columns).where(ledger_events.c.position.in_(part)))
            for row in rows:
                found[int(row.position)] = StoredRef(
                    int(row.position),
                    int(row.run_id),
                    str(row.type),
                    str(row.hash),
                    row.recorded_at,
                )
    return found
