"""Exclusive access to a projection, across processes and hosts.

* SQLite: ``BEGIN IMMEDIATE``; the database has one writer at a time anyway.
* MySQL/MariaDB: a named lock (``GET_LOCK``) held by the session around the transaction, plus
  the checkpoint row locked ``FOR UPDATE`` inside it. The named lock outlives a commit, which a
  rebuild needs: its ``RENAME TABLE`` commits implicitly, and no projector may run between that
  swap and the checkpoint update that follows it. If the process dies, the server frees the
  lock with the session.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text

from ledger.database import idle_bounded_session, is_sqlite, write_transaction
from projections.errors import ProjectionError

DEFAULT_LOCK_TIMEOUT_S = 60


class ProjectionBusyError(ProjectionError):
    """Another process held the projection lock for longer than the timeout (a rebuild?)."""


LOCK_NAME_MAX = 64  # MySQL refuses longer GET_LOCK names
_READABLE = re.compile(r"[^A-Za-z0-9_$.-]")


def lock_name_for(database: str, projection: str) -> str:
    """The server-wide GET_LOCK name of ``projection`` in ``database``: unique and at most 64
    characters for any names.

    GET_LOCK names are shared by every database on the server, so the name must tell ledgers
    apart; database names run to 64 characters, so they cannot be spelt out in full. A digest
    of the (database, projection) pair makes the name unique, whatever is cut; the rest only
    helps a DBA reading ``IS_USED_LOCK`` or the processlist, and is truncated as needed.
    """
    digest = hashlib.sha256(f"{database}\0{projection}".encode()).hexdigest()[:20]
    readable = _READABLE.sub("_", f"{projection}.{database}")
    return f"run_ledger.{digest}.{readable}"[:LOCK_NAME_MAX]


def lock_name(conn: Connection, projection: str) -> str:
    database = conn.exec_driver_sql("SELECT DATABASE()").scalar() or ""
    return lock_name_for(str(database), projection)


@contextmanager
def projection_session(
    engine: Engine, projection: str, timeout: int = DEFAULT_LOCK_TIMEOUT_S
) -> Iterator[Connection]:
    """A connection holding the projection's named lock (MySQL); no transaction is open."""
    with engine.connect() as conn:
        if is_sqlite(engine):
            yield conn
            return
        name = lock_name(conn, projection)
        # Bounded before the lock is taken: a holder that vanishes at any point after this,
        # in a transaction or between two, frees the lock within the idle bound.
        with idle_bounded_session(conn):
            got = conn.execute(
                text("SELECT GET_LOCK(:name, :timeout)"), {"name": name, "timeout": timeout}
            ).scalar()
            conn.commit()
            if got != 1:
                raise ProjectionBusyError(
                    f"projection {projection} is locked by another process (waited {timeout}s)"
                )
            try:
                yield conn
            finally:
                conn.rollback()
                conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": name})
                conn.commit()


@contextmanager
def projection_transaction(
    engine: Engine, projection: str, timeout: int = DEFAULT_LOCK_TIMEOUT_S
) -> Iterator[Connection]:
    """One write transaction with exclusive access to the projection."""
    if is_sqlite(engine):
        with write_transaction(engine) as conn:
            yield conn
        return
    with projection_session(engine, projection, timeout) as conn, conn.begin():
        yield conn


@contextmanager
def exclusive_rebuild(engine: Engine, projection: str) -> Iterator[None]:
    """Held for a whole rebuild: a second rebuild of the same projection is refused at once
    (it would drop the first one's shadow tables under it).

    MySQL: a named lock on its own session. SQLite: an advisory lock on a file beside the
    database (the embedded database lives on one host).

    Unlike the projector's lock, this session is not bounded by the idle timeout: it sits
    idle for the whole rebuild while the work runs on other sessions, and losing it half-way
    would let a second rebuild drop this one's shadow tables. A rebuild that vanished with its
    socket open therefore blocks only the next rebuild (not appends, not the projector) until
    the server's wait_timeout, or until a DBA ends the connection the refusal names.
    """
    if is_sqlite(engine):
        path = engine.url.database
        if not path or path == ":memory:":
            yield
            return
        with open(f"{path}.rebuild.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise ProjectionBusyError(
                    f"another rebuild of {projection} is running on this database"
                ) from exc
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    with engine.connect() as conn:
        name = lock_name(conn, f"{projection}.rebuild")
        # Where the server has no idle-transaction timeout, every session is bounded by
        # wait_timeout instead (ledger.database): this one, idle by design, is exempt until
        # it goes back to the pool.
        conn.exec_driver_sql(
            "SET @ledger_wait_timeout = @@SESSION.wait_timeout, "
            "SESSION wait_timeout = @@GLOBAL.wait_timeout"
        )
        try:
            got = conn.execute(text("SELECT GET_LOCK(:name, 0)"), {"name": name}).scalar()
            if got != 1:
                holder = conn.execute(text("SELECT IS_USED_LOCK(:name)"), {"name": name}).scalar()
                raise ProjectionBusyError(
                    f"another rebuild of {projection} is running on this database (server "
                    f"connection {holder}; if its process is gone, a DBA can end it with "
                    f"KILL {holder})"
                )
            conn.commit()
            try:
                yield
            finally:
                conn.rollback()
                conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": name})
        finally:
            conn.rollback()
            conn.exec_driver_sql("SET SESSION wait_timeout = @ledger_wait_timeout")
            conn.commit()
