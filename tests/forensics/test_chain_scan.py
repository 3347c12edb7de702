"""Verify's scan (issue 14, target 5): rows read as stored, page after page on one connection,
timestamps as the text the database keeps, hashed without a model in between. These prove the
shortcut hashes exactly what the append path hashed, at the edges of the accepted times, and
that a break in a later page is still named at its position."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from forensics.chain import verify_chain
from ledger import Ledger, RunFinished, RunProgressed, RunStarted
from ledger.clock import isoformat_utc
from ledger.dialects import stored_time_text
from ledger.hashing import HASH, OCCURRED_AT, POSITION, RECORDED_AT, stored_row_hash
from ledger.reads import stored_rows
from ledger.schema import GENESIS_HASH
from tests.support import drop_triggers, restore_triggers

# Whole seconds (MySQL's CAST prints ".000000", SQLite's text may omit the fraction), the
# first accepted second, a last microsecond of a year.
EDGE_TIMES = (
    datetime(2026, 11, 28, 19, 37, 0, tzinfo=UTC),
    datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
    datetime(2025, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
)


def append_edge_runs(ledger: Ledger) -> None:
    for index, occurred_at in enumerate(EDGE_TIMES):
        ref = f"edge-{index}"
        ledger.append(
            [
                RunStarted(
                    run_ref=ref, source_id=1, connector_name="edges", occurred_at=occurred_at
                ),
                RunProgressed(
                    run_ref=ref, records_fetched=1, records_created=1, occurred_at=occurred_at
                ),
                RunFinished(run_ref=ref, status="success", occurred_at=occurred_at),
            ]
        )


def test_stored_rows_hash_to_the_hash_the_append_wrote(ledger: Ledger) -> None:
    append_edge_runs(ledger)
    events = {event.position: event for event in ledger.read_all()}
    with ledger.connect() as conn:
        rows = stored_rows(conn, 0, 1_000)
    assert [row[POSITION] for row in rows] == sorted(events)
    prev_hash = GENESIS_HASH
    for row in rows:
        event = events[row[POSITION]]
        assert stored_time_text(row[OCCURRED_AT]) == isoformat_utc(event.occurred_at)
        assert stored_time_text(row[RECORDED_AT]) == isoformat_utc(event.recorded_at)
        assert stored_row_hash(prev_hash, row) == row[HASH] == event.hash
        prev_hash = row[HASH]


def test_a_chain_over_many_pages_holds_and_a_break_in_a_later_page_is_named(
    ledger: Ledger,
) -> None:
    append_edge_runs(ledger)
    last = ledger.head().last_position
    assert verify_chain(ledger, batch_size=2).ok
    assert verify_chain(ledger, batch_size=2).checked == last

    drop_triggers(ledger.engine)  # as a hostile DBA would
    try:
        with ledger.engine.begin() as conn:
            conn.execute(
                text("UPDATE ledger_events SET actor = 'mallory' WHERE position = :p"),
                {"p": last - 1},
            )
    finally:
        restore_triggers(ledger.engine)
    report = verify_chain(ledger, batch_size=2)
    assert (report.first_bad_position, report.checked) == (last - 1, last - 2)
    assert "altered" in str(report.problem)


def test_a_range_before_the_head_is_vouched_for_by_the_next_row(ledger: Ledger) -> None:
    """A DBA rewrites the last row of a range and recomputes its hash (the hash has no key):
    the range alone still chains, but the next row's prev_hash names the old hash. A check
    that stops there (as of a past position) must not pass it."""
    run_id = ledger.start_run(1, "S_1")
    for _ in range(3):
        ledger.append([RunProgressed(run_id=run_id, records_fetched=1)])
    forged = 3
    drop_triggers(ledger.engine)
    try:
        with ledger.connect() as conn:
            rows = stored_rows(conn, forged - 1, 1)
        row = list(rows[0])
        row[6] = row[6].replace('"records_fetched":1', '"records_fetched":9')
        new_hash = stored_row_hash(row[10], row)
        with ledger.engine.begin() as conn:
            conn.execute(
                text("UPDATE ledger_events SET payload = :p, hash = :h WHERE position = :n"),
                {"p": row[6], "h": new_hash, "n": forged},
            )
    finally:
        restore_triggers(ledger.engine)
    assert verify_chain(ledger, 1, forged - 1).ok
    up_to_forged = verify_chain(ledger, 1, forged)
    assert not up_to_forged.ok
    assert up_to_forged.first_bad_position == forged
    assert "not the prev_hash of position 4" in (up_to_forged.problem or "")
    # The whole chain names the rewritten row too (it named the next one, forged + 1).
    whole = verify_chain(ledger)
    assert whole.first_bad_position == forged
    assert "the row at 3 was altered and its hash recomputed" in (whole.problem or "")
