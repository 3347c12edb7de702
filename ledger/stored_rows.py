"""Rows of the ledger's tables whose stored values cannot be read, named.

SQLAlchemy parses a ``DATETIME`` as it fetches the row: a time no write of this ledger stores (a
SQLite text edited by hand, a MySQL zero date the driver hands back as text) raises a bare
ValueError or TypeError in the middle of a read, naming neither the table nor the row. The
reads of ``ledger_runs``, ``ledger_head`` and ``ingestion_runs`` run inside
:func:`named_rows`: on such an error it reads the table's key and times as stored text (only
then: the reads themselves stay as they are) and raises :class:`StoredRowError` naming the first
row that cannot be read, or a whole-number column of a row that holds text (SQLite stores
any value in any column; a reader that checks, as :func:`projections.fold.normalise` does,
raises TypeError inside it). An error it cannot tie to a row is raised as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Integer, String, Table, cast, select

from ledger.dialects import stored_time_reader
from ledger.errors import StoredRowError
from ledger.schema import UTCDateTime
from ledger.text import clip, visible

_BATCH = 1000


@contextmanager
def named_rows(conn: Connection, table: Table) -> Iterator[None]:
    """Run a read of ``table`` on ``conn``: a stored time it cannot parse, or a whole-number
    column holding something else, is the :class:`StoredRowError` naming the table, the row's
    key and the column."""
    try:
        yield
    except (ValueError, TypeError, OverflowError) as exc:
        found = _unreadable_row(conn, table)
        if found is None:
            raise
        key, column, value, kind = found
        raise StoredRowError(
            f"the {table.name} row of {_key_name(table)} {visible(str(key))} cannot be read: "
            f"{column} is {clip(visible(repr(value)), 60)}, not {kind} any write of this ledger "
            "stores (edited by hand?)",
            table.name,
            key,
        ) from exc


def _key_name(table: Table) -> str:
    return "id" if table.name == "ledger_head" else "run"


def _unreadable_row(conn: Connection, table: Table) -> tuple[object, str, object, str] | None:
    """The first row (by key) of ``table`` with a time that does not read or a whole-number
    column that holds something else (SQLite stores any value in any column), its column,
    value and what it should be; None if every row reads."""
    (key,) = table.primary_key.columns
    times = [c for c in table.columns if isinstance(c.type, UTCDateTime)]
    numbers = [c for c in table.columns if isinstance(c.type, Integer) and c is not key]
    columns = [key, *(cast(c, String).label(c.name) for c in times), *numbers]
    after: object = None
    while True:
        query = select(*columns).order_by(key).limit(_BATCH)
        if after is not None:
            query = query.where(key > after)
        rows = conn.execute(query).all()
        for row in rows:
            stored_times = row[1 : 1 + len(times)]
            for column, value in zip(times, stored_times, strict=True):
                if value is None:
                    continue  # a time not given (completedAt of an open run); NOT NULL holds it
                try:
                    stored_time_reader(value)
                except (TypeError, ValueError, OverflowError):
                    return row[0], column.name, value, "a time"
            for column, value in zip(numbers, row[1 + len(times) :], strict=True):
                if value is not None and type(value) is not int:
                    return row[0], column.name, value, "a whole number"
        if len(rows) < _BATCH:
            return None
        after = rows[-1][0]


__all__ = ["named_rows"]
