"""A ``ledger_events`` row as a plain tuple is read by column name (``ledger.hashing``): its
column order is stated once, ``EVENT_COLUMNS``, and the replay, the rebuild and verify take
each column by its name, never by where it stands."""

from __future__ import annotations

from dataclasses import fields

import pytest

from ledger.hashing import EVENT_COLUMNS, HASHED_COLUMNS, hashed_values, row_reader, rows_reader
from ledger.reads import as_event_fields
from ledger.recorded import RecordedEvent

# A row whose every value names its column.
ROW = tuple(f"<{name}>" for name in EVENT_COLUMNS)


def test_a_reader_takes_columns_by_name_in_the_order_asked() -> None:
    backwards = tuple(reversed(EVENT_COLUMNS))
    assert row_reader(*backwards)(ROW) == tuple(f"<{name}>" for name in backwards)
    assert row_reader("hash", "position")(ROW) == ("<hash>", "<position>")
    # Columns standing in a run are read as a slice of the row: the same values.
    run = ("event_id", "run_id", "version")
    assert row_reader(*run)(ROW) == ("<event_id>", "<run_id>", "<version>")
    assert hashed_values(ROW) == tuple(f"<{name}>" for name in HASHED_COLUMNS)


def test_a_reader_of_one_column_is_refused() -> None:
    """``itemgetter`` of one index answers the value, not a tuple to unpack."""
    with pytest.raises(ValueError, match="two or more"):
        row_reader("position")


def test_rows_in_their_own_order_are_read_as_they_are() -> None:
    """The replay's hot path pays nothing while the order asked is the rows' own; another
    order is read column by column, row by row."""
    rows = [ROW, ROW]
    assert rows_reader(*EVENT_COLUMNS)(rows) is rows
    chain_first = ("hash", "prev_hash", *HASHED_COLUMNS)
    assert list(rows_reader(*chain_first)(rows)) == [tuple(f"<{name}>" for name in chain_first)] * 2


def test_the_replay_reads_rows_as_the_events_fields() -> None:
    """``as_event_fields`` gives each row's values in the order of ``RecordedEvent``'s fields,
    which ``events_from_driver`` and ``fold_rows`` unpack."""
    names = [field.name for field in fields(RecordedEvent)]
    assert [tuple(row) for row in as_event_fields([ROW])] == [tuple(f"<{name}>" for name in names)]
