"""Statements sent straight to the driver: the append's hot path.

An append sends a few short statements in one transaction. Through SQLAlchemy's ``Connection``
each statement costs about 45 µs of execution context, result metadata and event dispatch on
top of the driver's own work, and the connection's begin, commit and close as much again: on
SQLite that was more than the statements themselves. Here the prepared SQL of
:mod:`ledger.store` goes to a DBAPI cursor of a pooled connection, keeping what callers relied
on SQLAlchemy for:

* a driver error comes out as SQLAlchemy's :class:`~sqlalchemy.exc.DBAPIError` (an
  ``IntegrityError`` for a broken unique key), so :func:`ledger.driver_errors.translate_errors` and
  the append's retry see exactly what they saw before;
* a connection the driver lost is invalidated, so the pool never hands it out again;
* the connection comes from, and goes back to, the engine's pool, with its events (the
  session settings made at connect, the ping of idle connections, the reset on return).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError

Params = Sequence[Any]

# Set on a pooled connection's info when its write transaction committed: the pool's reset
# on return has nothing to roll back (ledger.mysql_engine._end_open_transaction).
COMMITTED_INFO = "ledger_committed"
# Set on a pooled connection's info at connect: the server is a node of a Galera cluster
# (``wsrep_on``), where statements are never sent several to a round trip (see
# DriverCursor.together_is_safe).
GALERA_INFO = "ledger_galera"


class DriverCursor:
    """One DBAPI cursor on a pooled connection in a transaction."""

    def __init__(
        self,
        connection: Any,
        dialect: Dialect,
        invalidate: Callable[[BaseException], None],
        owns_transaction: bool = False,
    ) -> None:
        self._connection = connection  # SQLAlchemy's pooled proxy of the DBAPI connection
        self._dialect = dialect
        self._invalidate = invalidate
        self._error: type[Exception] = dialect.loaded_dbapi.Error
        self._cursor: Any = connection.cursor()
        # Whether this cursor's user ends the transaction (driver_transaction) rather than a
        # SQLAlchemy Connection: only then may a round trip carry the COMMIT.
        self.owns_transaction = owns_transaction
        self.committed = False

    @classmethod
    def on(cls, conn: Connection) -> DriverCursor:
        """A cursor inside the transaction of a SQLAlchemy ``Connection``, which ends it."""
        return cls(conn.connection, conn.dialect, conn.invalidate)

    def execute(self, statement: str, params: Params = ()) -> DriverCursor:
        """Run one statement; its rows are read with :meth:`fetchone` / :meth:`fetchall`."""
        self._call(self._cursor.execute, statement, params, many=False)
        return self

    def executemany(self, statement: str, rows: Sequence[Params]) -> None:
        """Run one statement for each of ``rows`` (one call to the driver)."""
        self._call(self._cursor.executemany, statement, rows, many=True)

    def _call(
        self, method: Callable[[str, Any], Any], statement: str, params: Any, *, many: bool
    ) -> None:
        """``method(statement, params)``, its driver error wrapped as SQLAlchemy would."""
        # try/except written out, not a context manager: this runs for every statement of
        # every append, and a generator-based context manager costs more than a short
        # statement on SQLite.
        try:
            method(statement, params)
        except self._error as exc:
            raise self._wrapped(exc, statement, params, many=many) from exc
        except BaseException as exc:
            self._discard_if_interrupted(exc)
            raise

    def execute_together(self, statements: Sequence[tuple[str, Params]]) -> list[list[Any]]:
        """MySQL/MariaDB: several statements in one round trip; the rows of each, in order.

        The server runs them one after the other, as if sent one by one, and stops at the
        first error. Values are escaped by the driver exactly as :meth:`execute` escapes them
        (its ``mogrify``): the statements are the ledger's own, never text from input. Needs a
        connection opened with ``CLIENT.MULTI_STATEMENTS``
        (:func:`ledger.mysql_engine.mysql_engine` opens every MySQL connection so).
        """
        results: list[list[Any]] = []
        text = ""
        try:
            text = ";\n".join(self._cursor.mogrify(sql, params) for sql, params in statements)
            self._cursor.execute(text)
            results.append(list(self._cursor.fetchall()))
            while self._cursor.nextset():
                results.append(list(self._cursor.fetchall()))
        except self._error as exc:
            raise self._wrapped(exc, text, (), many=False) from exc
        except BaseException as exc:
            self._discard_if_interrupted(exc)
            raise
        return results

    @property
    def together_is_safe(self) -> bool:
        """Whether :meth:`execute_together` may be used on this connection: not on a node of a
        Galera cluster. There a transaction aborted by a conflicting write set from another
        node (a brute-force abort) while the client is between two round trips is rolled back
        at once, and the next packet's first statement reports the deadlock; but MariaDB 10.11
        with galera-4 26.4 then runs the packet's other statements in a new transaction:
        "INSERT events; UPDATE head; COMMIT" committed the head without its events. Seen in
        issue 18 with two writers on two nodes: position 55 written twice in effect, the
        second event chained to the hash of an event that was never stored (``ledger
        verify``: "prev_hash does not match", "version 56 where 55 was due"); and table objects
        opened meanwhile came back with trigger bodies that failed to parse (1064 "Unknown
        trigger has an error in its body"). One statement per round trip is reported, and
        rolled back, whole.
        """
        return not self._connection.info.get(GALERA_INFO, False)

    def fetchone(self) -> Any:
        # SQLite reads the rows as they are fetched: a page that cannot be read (a torn copy
        # of the file, "database disk image is malformed"; an I/O error) fails here, not in
        # execute, and must come out as SQLAlchemy's error too, never as the driver's.
        try:
            return self._cursor.fetchone()
        except self._error as exc:
            raise self._wrapped(exc, "FETCH", (), many=False) from exc

    def fetchall(self) -> list[Any]:
        try:
            return list(self._cursor.fetchall())
        except self._error as exc:
            raise self._wrapped(exc, "FETCH", (), many=False) from exc

    def commit(self) -> None:
        if self.committed:
            return
        try:
            self._connection.dbapi_connection.commit()
        except self._error as exc:
            raise self._wrapped(exc, "COMMIT", (), many=False) from exc
        self.committed = True

    def rollback(self) -> None:
        """Roll back after a failure; a connection that cannot even do that is discarded."""
        if self._connection.dbapi_connection is None:
            return  # invalidated: the server ends the transaction with the session
        try:
            self._connection.dbapi_connection.rollback()
        except self._error as exc:
            self._invalidate(exc)

    def close(self) -> None:
        with suppress(self._error):  # the connection is gone, and so is the cursor
            self._cursor.close()

    def _discard_if_interrupted(self, exc: BaseException) -> None:
        """KeyboardInterrupt, SystemExit or a cancelled task in the middle of a statement:
        where the connection's stream stands is unknown (a reply may be left unread, and the
        next command would read it as its own), so the connection is discarded, as SQLAlchemy
        discards its own; the server rolls back with the session."""
        if not isinstance(exc, Exception) and self._connection.is_valid:
            self._invalidate(exc)

    def _wrapped(self, exc: Exception, statement: str, params: Any, many: bool) -> BaseException:
        lost = self._dialect.is_disconnect(
            exc,  # type: ignore[arg-type]
            self._connection.dbapi_connection,
            self._cursor,
        )
        if lost:
            # What SQLAlchemy does for its own statements: the connection is discarded and
            # the transaction can only be rolled back.
            self._invalidate(exc)
        return DBAPIError.instance(
            statement,
            params,
            exc,
            self._error,
            connection_invalidated=lost,
            dialect=self._dialect,
            ismulti=many,
        )


@contextmanager
def driver_transaction(engine: Engine, begin: str | None) -> Iterator[DriverCursor]:
    """A write transaction on a pooled connection without a SQLAlchemy ``Connection``:
    ``begin`` (SQLite's ``BEGIN IMMEDIATE``; None where the driver begins implicitly), the
    block's statements, the COMMIT (unless a round trip of the block carried it). Rolled back
    if the block raises; a driver error raised as SQLAlchemy's, as for its own connections."""
    dialect = engine.dialect
    error: type[Exception] = dialect.loaded_dbapi.Error
    try:
        connection = engine.raw_connection()
    except error as exc:
        lost = dialect.is_disconnect(exc, None, None)  # type: ignore[arg-type]
        raise DBAPIError.instance(
            None, None, exc, error, connection_invalidated=lost, dialect=dialect
        ) from exc
    try:
        cursor = DriverCursor(connection, dialect, connection.invalidate, owns_transaction=True)
        try:
            if begin is not None:
                cursor.execute(begin)
            yield cursor
            cursor.commit()
        except Exception:
            cursor.rollback()
            raise
        except BaseException as exc:
            # Interrupted (KeyboardInterrupt, SystemExit, a cancelled task): discarded, not
            # rolled back (see DriverCursor._discard_if_interrupted). A COMMIT already sent
            # may still land: the interrupted caller cannot know either way.
            if connection.is_valid:
                connection.invalidate(exc)
            raise
        finally:
            cursor.close()
        connection.info[COMMITTED_INFO] = True
    finally:
        connection.close()
