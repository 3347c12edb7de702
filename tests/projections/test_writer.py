"""The read-model writer sends rows to the driver as plain tuples, each value through the bind
processor of its column: the stored values must be exactly those SQLAlchemy Core's insert and
update store, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.dialects import sqlite

from ledger.dialects import quick_sqlite_time
from ledger.schema import LegacyTimestamp, UTCDateTime
from projections.dialects import shadow_indexes
from projections.schema import (
    RUN_STATUSES,
    SHADOW,
    ingestion_run_transitions,
    ingestion_runs,
    shadow_tables,
)
from projections.writer import ReadModelWriter
from tests import support

pytestmark = pytest.mark.slow

texts = st.text(st.characters(codec="utf-8"), max_size=30)
times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2037, 12, 31), timezones=st.just(UTC)
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
counters = st.integers(0, 2**31 - 1)


@st.composite
def run_rows(draw: st.DrawFn, run_id: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": run_id,
        "sourceId": draw(counters),
        "connectorName": draw(texts.filter(bool)),
        "startedAt": draw(times),
        "completedAt": draw(st.none() | times),
        "duration": draw(st.none() | counters),
        "status": draw(st.sampled_from(RUN_STATUSES)),
        "errorMessage": draw(st.none() | texts),
        "errorDetails": draw(st.none() | st.dictionaries(texts, json_values, max_size=3)),
        "createdAt": draw(times),
    }
    for name in ("recordsFetched", "recordsCreated", "recordsUpdated", "recordsSkipped"):
        row[name] = draw(counters)
    row["claimsCreated"] = draw(counters)
    row["coverageCellsUpdated"] = draw(counters)
    return row


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
    count = draw(st.integers(1, 5))
    rows = [draw(run_rows(run_id)) for run_id in range(1, count + 1)]
    changed = [draw(run_rows(row["id"])) for row in rows if draw(st.booleans())]
    transitions = [
        {
            "position": position,
            "run_id": draw(st.integers(1, count)),
            "from_status": draw(st.none() | st.sampled_from(RUN_STATUSES)),
            "to_status": draw(st.sampled_from(RUN_STATUSES)),
            "at": draw(times),
            "actor": draw(st.none() | texts.filter(bool)),
        }
        for position in range(1, draw(st.integers(0, 4)) + 1)
    ]
    return rows, transitions, changed


def stored(conn: Any, table: Table, key: str) -> list[tuple[Any, ...]]:
    """The rows as the driver returns them, no type processing."""
    return [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table.name} ORDER BY {key}")]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=tables())
def test_the_writer_stores_what_core_stores(
    data: tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]],
    backend: str,
    sqlite_template: Path,
    tmp_path: Path,
    db_url: str,
) -> None:
    rows, transitions, changed = data
    ledger = support.fresh_store(
        backend, sqlite_template, tmp_path, db_url if backend == "mysql" else None
    )
    try:
        shadow_runs, shadow_transitions = shadow_tables(SHADOW, shadow_indexes(ledger))
        writer = ReadModelWriter(shadow_runs, shadow_transitions)
        with ledger.engine.begin() as conn:
            for table in (shadow_runs, shadow_transitions):
                table.drop(conn, checkfirst=True)  # MariaDB keeps the last example's
                table.create(conn)
            conn.execute(insert(ingestion_runs), rows)
            insert_runs, update_runs, insert_transitions = writer._statements(conn.dialect)
            insert_runs.execute(conn, rows)
            if transitions:
                conn.execute(insert(ingestion_run_transitions), transitions)
                insert_transitions.execute(conn, transitions)
            if changed:
                conn.execute(
                    update(ingestion_runs)
                    .where(ingestion_runs.c.id == bindparam("b_id"))
                    .values({c.name: bindparam(c.name) for c in ingestion_runs.columns[1:]}),
                    [{**row, "b_id": row["id"]} for row in changed],
                )
                update_runs.execute(conn, [{**row, "b_id": row["id"]} for row in changed])
            assert stored(conn, shadow_runs, "id") == stored(conn, ingestion_runs, "id")
            assert stored(conn, shadow_transitions, "position") == stored(
                conn, ingestion_run_transitions, "position"
            )
    finally:
        ledger.close()


@settings(max_examples=500, deadline=None)
@given(
    moment=st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=5))]))
    | st.datetimes()  # naive: refused the long way
    | st.none(),
    legacy=st.booleans(),
)
def test_quick_sqlite_timestamps_are_the_text_sqlalchemy_stores(
    moment: datetime | None, legacy: bool
) -> None:
    column_type = LegacyTimestamp() if legacy else UTCDateTime()
    dialect = sqlite.dialect()
    processor = column_type.dialect_impl(dialect).bind_processor(dialect)
    quick = quick_sqlite_time(processor, whole_seconds=legacy)

    def outcome(process: Any) -> Any:
        try:
            return process(moment)
        except (ValueError, OverflowError) as exc:
            return type(exc)

    assert outcome(quick) == outcome(processor)
