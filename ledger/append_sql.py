"""The append path's SQL, built once per dialect and sent to the driver as it is: the one place
where the write path differs between SQLite and MySQL/MariaDB (locking the head, the packed
reads of :mod:`ledger.packed`, the multi-table UPDATE, several statements in one round trip).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine

from ledger import reads
from ledger.dialects import (
    driver_placeholder,
    driver_timestamp,
    is_sqlite,
    server_clock_as_read,
    stored_time_reader,
)
from ledger.hashing import EVENT_COLUMNS
from ledger.packed import Column, Kind, packed_columns, plain_columns, unpacker


@lru_cache(maxsize=64)
def values_groups(insert: str, rows: int) -> str:
    """``INSERT … VALUES (marks)`` with ``rows`` groups of marks."""
    into, group = insert.rsplit(" VALUES ", 1)
    return f"{into} VALUES {', '.join([group] * rows)}"


@dataclass(frozen=True, eq=False)
class AppendStatements:
    """The append path's SQL, built once per dialect and sent to the driver as it is."""

    lock_head: str
    lock_head_with_clock: str
    run_ids_above: str
    insert_events: str
    insert_run: str
    update_run: str
    update_head: str
    # MySQL/MariaDB's multi-table UPDATE: update_run and update_head in one statement, their
    # parameters in that order ("" on SQLite, which has no such UPDATE).
    update_head_and_run: str
    # Several statements go in one round trip (MySQL/MariaDB; see DriverCursor.execute_together).
    together: bool
    mark: str
    stored_time: Callable[[datetime], Any]
    read_time: Callable[[Any], datetime]
    # The reads' select lists (packed on MySQL/MariaDB: see ledger.packed) and what gives their
    # rows back as plain rows.
    columns: Callable[[Sequence[Column]], str]
    unpack_head: Callable[[Sequence[Any]], Sequence[Any]]
    unpack_head_with_clock: Callable[[Sequence[Any]], Sequence[Any]]
    unpack_state: Callable[[Sequence[Any]], Sequence[Any]]

    def read_state(self, events: int, runs: int, *, runs_of_events: bool = True) -> str:
        """Stored events among ``events`` ids (kind 1) and registry rows (kind 2) of ``runs``
        ids and, with ``runs_of_events``, of those events' runs; parameters in that order."""
        return _read_state_sql(self, events, runs, runs_of_events)


@lru_cache(maxsize=256)
def _read_state_sql(sql: AppendStatements, events: int, runs: int, runs_of_events: bool) -> str:
    # Both kinds of row share one column list, so one statement reads both: an event row
    # (EVENT_COLUMNS, then two NULLs) beside a run row with its columns at the same kinds.
    event_marks = ", ".join(sql.mark for _ in range(events))
    parts: list[str] = []
    if events:
        parts.append(
            f"SELECT {sql.columns(_EVENT_ROW)} FROM ledger_events WHERE event_id IN ({event_marks})"
        )
    if runs:
        run_marks = ", ".join(sql.mark for _ in range(runs))
        parts.append(
            f"SELECT {sql.columns(_run_row(''))} FROM ledger_runs WHERE run_id IN ({run_marks})"
        )
    if events and runs_of_events:
        parts.append(
            f"SELECT {sql.columns(_run_row('r.'))} FROM ledger_events e "
            f"JOIN ledger_runs r ON r.run_id = e.run_id WHERE e.event_id IN ({event_marks})"
        )
    return " UNION ALL ".join(parts)


# The rows of the state read (kind 1: a stored event; kind 2: a registry row) and of the head.
_EVENT_KINDS: dict[str, Kind] = {
    "position": "number",
    "event_id": "text",
    "run_id": "number",
    "version": "number",
    "type": "hex",
    "schema_version": "number",
    "payload": "text",
    "occurred_at": "time",
    "recorded_at": "time",
    "actor": "text",
    "prev_hash": "hex",
    "hash": "hex",
}
_EVENT_ROW: tuple[Column, ...] = (
    ("1", "number"),
    *((name, _EVENT_KINDS[name]) for name in EVENT_COLUMNS),
    ("NULL", "time"),
    ("NULL", "time"),
)


def _run_row(prefix: str) -> tuple[Column, ...]:
    """A registry row in the state read's columns (``prefix``: its table's alias)."""
    return (
        ("2", "number"),
        (f"{prefix}run_id", "number"),
        (f"{prefix}connector_name", "text"),
        (f"{prefix}source_id", "number"),
        (f"{prefix}version", "number"),
        (f"{prefix}state", "hex"),
        ("NULL", "number"),
        ("NULL", "text"),
        (f"{prefix}started_at", "time"),
        (f"{prefix}last_event_at", "time"),
        ("NULL", "text"),
        ("NULL", "hex"),
        ("NULL", "hex"),
        (f"{prefix}opened_at", "time"),
        (f"{prefix}updated_at", "time"),
    )


_HEAD_ROW: tuple[Column, ...] = (
    ("last_position", "number"),
    ("last_hash", "hex"),
    ("last_run_id", "number"),
    ("last_recorded_at", "time"),
)
_STATEMENTS: dict[tuple[str, str], AppendStatements] = {}


def _as_it_is(row: Sequence[Any]) -> Sequence[Any]:
    return row


def append_statements(conn: Engine | Connection) -> AppendStatements:
    key = (conn.dialect.name, conn.dialect.paramstyle)
    found = _STATEMENTS.get(key)
    if found is None:
        found = _STATEMENTS[key] = _build_statements(conn)
    return found


def _build_statements(conn: Engine | Connection) -> AppendStatements:
    mark = driver_placeholder(conn)
    sqlite = is_sqlite(conn)
    columns = plain_columns if sqlite else packed_columns
    clock = server_clock_as_read(conn)  # the time the head lock was granted
    head_with_clock = _HEAD_ROW if clock is None else (*_HEAD_ROW, (str(clock), "time"))
    where_head = f"FROM ledger_head WHERE id = {mark}"
    lock = "" if sqlite else " FOR UPDATE"  # SQLite: BEGIN IMMEDIATE holds the lock
    run_columns = reads.RUN_COLUMNS
    quote = conn.dialect.identifier_preparer.quote

    def assignments(table: str, *names: str) -> str:
        return ", ".join(f"{table}{name} = {mark}" for name in names)

    def set_run(table: str) -> str:
        return assignments(table, "version", "state", "last_event_at", "updated_at")

    def set_head(table: str) -> str:
        return assignments(table, "last_position", "last_hash", "last_run_id", "last_recorded_at")

    return AppendStatements(
        lock_head=f"SELECT {columns(_HEAD_ROW)} {where_head}{lock}",
        lock_head_with_clock=(
            f"SELECT {columns(head_with_clock)} {where_head}{lock}" if clock is not None else ""
        ),
        run_ids_above=f"SELECT run_id FROM ledger_runs WHERE run_id > {mark}",
        insert_events=(
            f"INSERT INTO ledger_events ({', '.join(quote(c) for c in EVENT_COLUMNS)}) "
            f"VALUES ({', '.join(mark for _ in EVENT_COLUMNS)})"
        ),
        insert_run=(
            f"INSERT INTO ledger_runs ({', '.join(run_columns)}) "
            f"VALUES ({', '.join(mark for _ in run_columns)})"
        ),
        update_run=f"UPDATE ledger_runs SET {set_run('')} WHERE run_id = {mark}",
        update_head=f"UPDATE ledger_head SET {set_head('')} WHERE id = {mark}",
        update_head_and_run=(
            ""
            if is_sqlite(conn)
            else f"UPDATE ledger_runs r, ledger_head h SET {set_run('r.')}, {set_head('h.')} "
            f"WHERE r.run_id = {mark} AND h.id = {mark}"
        ),
        together=not is_sqlite(conn),
        mark=mark,
        stored_time=driver_timestamp(conn),
        # Timestamps come as text from the packed reads (on SQLite they are stored as text).
        read_time=stored_time_reader,
        columns=columns,
        unpack_head=_as_it_is if sqlite else unpacker([kind for _, kind in _HEAD_ROW]),
        unpack_head_with_clock=(
            _as_it_is if sqlite else unpacker([kind for _, kind in head_with_clock])
        ),
        unpack_state=_as_it_is if sqlite else unpacker([kind for _, kind in _EVENT_ROW]),
    )
