"""The append's reads on MySQL/MariaDB come as one packed text column and the free-text columns
(ledger.packed): unpacked, every row must be exactly the row the plain select gives, whatever
the values (commas, the NULL marker, empty strings, any Unicode, the edges of the numbers)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection

from forensics.chain import verify_chain
from ledger import Ledger, RunProgressed, RunStarted
from ledger.packed import Column, packed_columns, plain_columns, unpacker

COLUMNS: tuple[Column, ...] = (
    ("n", "number"),
    ("t", "time"),
    ("h", "hex"),
    ("x", "text"),
    ("NULL", "number"),
    ("NULL", "text"),
    ("y", "text"),
)
texts = (
    st.none()
    | st.text(st.characters(codec="utf-8"), max_size=12)
    | st.sampled_from(["", "-", ",", ",,-,", "a,b", "NULL", "\\", "'"])
)
rows = st.lists(
    st.tuples(
        st.none() | st.integers(-(2**63), 2**63 - 1),
        st.none() | st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 31)),
        texts,
        texts,
        texts,
    ),
    min_size=1,
    max_size=5,
)


@pytest.fixture
def scratch(ledger: Ledger) -> Iterator[Connection]:
    if ledger.is_sqlite:
        pytest.skip("packed reads are MySQL/MariaDB's (SQLite's driver parses no descriptions)")
    with ledger.engine.connect() as conn:
        conn.exec_driver_sql(
            "CREATE TEMPORARY TABLE packed_scratch (id INT PRIMARY KEY, n BIGINT NULL, "
            "t DATETIME(6) NULL, h VARCHAR(100) NULL, x TEXT NULL, y VARCHAR(200) NULL) "
            "CHARACTER SET utf8mb4"
        )
        yield conn


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=rows)
def test_a_packed_row_unpacks_to_the_plain_row(
    scratch: Connection, values: list[tuple[object, ...]]
) -> None:
    scratch.exec_driver_sql("DELETE FROM packed_scratch")
    for index, (number, moment, short, text, other) in enumerate(values):
        scratch.exec_driver_sql(
            "INSERT INTO packed_scratch VALUES (%s, %s, %s, %s, %s, %s)",
            (index, number, moment, short, text, other),
        )
    plain_select = [(c if c != "t" else "CAST(t AS CHAR)", k) for c, k in COLUMNS]
    plain = scratch.exec_driver_sql(
        f"SELECT {plain_columns(plain_select)} FROM packed_scratch ORDER BY id"
    ).fetchall()
    packed = scratch.exec_driver_sql(
        f"SELECT {packed_columns(COLUMNS)} FROM packed_scratch ORDER BY id"
    ).fetchall()
    unpack = unpacker([kind for _, kind in COLUMNS])
    assert [unpack(row) for row in packed] == [tuple(row) for row in plain]
    assert len(packed[0]) == 1 + sum(kind == "text" for _, kind in COLUMNS)


def test_a_repeated_append_returns_the_stored_event_exactly(ledger: Ledger) -> None:
    """A duplicate event id returns the stored row as the packed state read gives it back."""
    if ledger.is_sqlite:
        pytest.skip("packed reads are MySQL/MariaDB's")
    started = RunStarted(
        source_id=7,
        connector_name="name, with a comma - and \u00e9",
        actor="operator:o'neil,-",
        metadata={"note": "a,b,-", "emoji": "\U0001f600"},
    )
    first = ledger.append([started]).events[0]
    again = ledger.append([started])
    assert again.appended == 0
    assert again.events[0] == first
    progressed = ledger.append([RunProgressed(run_id=first.run_id, records_fetched=1)])
    assert progressed.events[0].version == 2
    assert progressed.events[0].prev_hash == first.hash
    assert verify_chain(ledger).ok
