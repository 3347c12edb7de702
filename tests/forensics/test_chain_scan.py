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
