"""Statements sent straight to the driver's cursor: the append's hot path.

An append sends four to six short statements. Through SQLAlchemy's ``exec_driver_sql`` each one
costs about 45 µs of execution context, result metadata and event dispatch on top of the
driver's own work: on SQLite that is more than the statements themselves, and it took an
append to under a third of what a raw insert + commit does. :class:`DriverCursor` hands the
prepared SQL of :mod:`ledger.store` to the DBAPI cursor of the transaction's connection and
keeps the two things callers relied on ``exec_driver_sql`` for:

* a driver error comes out as SQLAlchemy's :class:`~sqlalchemy.exc.DBAPIError` (an
  ``IntegrityError`` for a broken unique key), so :func:`ledger.database.translate_errors` and
  the append's retry see exactly what they saw before;
* a connection the driver lost is invalidated, so the pool never hands it out again.

The transaction itself (BEGIN, COMMIT, ROLLBACK) stays with SQLAlchemy's ``Connection``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

Params = Sequence[Any]


class DriverCursor:
    """One DBAPI cursor on the connection of an open SQLAlchemy transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._dialect = conn.dialect
        self._error: type[Exception] = conn.dialect.loaded_dbapi.Error
        self._cursor: Any = conn.connection.cursor()

    def execute(self, statement: str, params: Params = ()) -> DriverCursor:
        """Run one statement; its rows are read with :meth:`fetchone` / :meth:`fetchall`."""
        try:
            self._cursor.execute(statement, params)
        except self._error as exc:
            raise self._wrapped(exc, statement, params, many=False) from exc
        return self

    def executemany(self, statement: str, rows: Sequence[Params]) -> None:
        """Run one statement for each of ``rows`` (one call to the driver)."""
        try:
            self._cursor.executemany(statement, rows)
        except self._error as exc:
            raise self._wrapped(exc, statement, rows, many=True) from exc

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())

    def close(self) -> None:
        self._cursor.close()

    def _wrapped(self, exc: Exception, statement: str, params: Any, many: bool) -> BaseException:
        dbapi_connection = self._conn.connection.dbapi_connection
        lost = self._dialect.is_disconnect(exc, dbapi_connection, self._cursor)  # type: ignore[arg-type]
        if lost:
            # What SQLAlchemy does for its own statements: the connection is discarded and
            # the transaction can only be rolled back.
            self._conn.invalidate(exc)
        return DBAPIError.instance(
            statement,
            params,
            exc,
            self._error,
            connection_invalidated=lost,
            dialect=self._dialect,
            ismulti=many,
        )
