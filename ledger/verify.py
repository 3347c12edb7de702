"""Verification of the hash chain (I6): recompute every hash and name the first bad position."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from ledger.database import translate_errors
from ledger.hashing import chain_hash
from ledger.schema import GENESIS_HASH, ledger_events
from ledger.store import Ledger


@dataclass(frozen=True)
class ChainReport:
    """Outcome of :func:`verify_chain`. ``first_bad_position`` is None when the chain holds."""

    checked: int
    first_bad_position: int | None = None
    problem: str | None = None

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
    end = head.last_position if to_position is None else min(to_position, head.last_position)
    if from_position > head.last_position:
        # Nothing the head vouches for lies in the range; only a row written past it could.
        stray = next(iter(ledger.read_all(after=from_position - 1, limit=1)), None)
        if stray is None or (to_position is not None and stray.position > to_position):
            return ChainReport(0)
        return ChainReport(
            0,
            stray.position,
            f"position {stray.position} is beyond the ledger head ({head.last_position})",
        )
    prev_hash = GENESIS_HASH if from_position <= 1 else _hash_at(ledger, from_position - 1)
    if prev_hash is None:
        return ChainReport(0, from_position - 1, f"position {from_position - 1} is missing")
    expected_position = max(from_position, 1)
    checked = 0
    for event in ledger.read_all(after=expected_position - 1, batch_size=batch_size):
        if event.position > end:
            if to_position is not None:
                break
            # A row past the head was written around the append path (and blocks every append).
            return ChainReport(
                checked,
                event.position,
                f"position {event.position} is beyond the ledger head ({end})",
            )
        if event.position != expected_position:
            return ChainReport(
                checked,
                expected_position,
                f"position {expected_position} is missing (next is {event.position})",
            )
        if event.prev_hash != prev_hash:
            return ChainReport(
                checked,
                event.position,
                "prev_hash does not match the hash of the previous position",
            )
        if chain_hash(prev_hash, event.as_row()) != event.hash:
            return ChainReport(
                checked,
                event.position,
                "hash does not match the row's content (the row was altered)",
            )
        prev_hash = event.hash
        expected_position += 1
        checked += 1
    if expected_position <= end:
        return ChainReport(
            checked,
            expected_position,
            f"position {expected_position} is missing (head is at {end})",
        )
    if to_position is None and end > 0 and prev_hash != head.last_hash:
        return ChainReport(checked, end, "ledger_head hash does not match the last event")
    return ChainReport(checked)


def _hash_at(ledger: Ledger, position: int) -> str | None:
    query = select(ledger_events.c.hash).where(ledger_events.c.position == position)
    with translate_errors(ledger.url, "read"), ledger.engine.connect() as conn:
        value = conn.execute(query).scalar_one_or_none()
    return None if value is None else str(value)
