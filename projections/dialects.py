"""Where the read model's work differs between SQLite and MySQL/MariaDB, one function per
difference: how a projection is held exclusively (by its projector, by a rebuild), how a
rebuild swaps its shadow tables in, and how the writer's values go to the driver.

* SQLite: ``BEGIN IMMEDIATE``; the database has one writer at a time anyway. A rebuild holds an
  advisory lock on a file beside the database (the embedded database lives on one host) and
  swaps in one transaction: SQLite DDL is transactional.
* MySQL/MariaDB: a named lock (``GET_LOCK``) held by the session around the transaction, plus
  the checkpoint row locked ``FOR UPDATE`` inside it. The named lock outlives a commit, which a
  rebuild needs: its ``RENAME TABLE`` commits implicitly, and no projector may run between that
  swap and the checkpoint update that follows it (see :mod:`projections.rebuilder`). If the
  process dies, the server frees the lock with the session.

The functions that take the ledger also take an Engine, which is what the tests hold.
"""

from __future__ import annotations

import fcntl
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Dialect, Engine, text
from sqlalchemy.exc import DBAPIError

from ledger import Ledger
from ledger.conflicts import retrying_conflicts
from ledger.dialects import (
    bounded_lock_wait,
    idle_bounded_session,
    is_galera,
    is_sqlite,
    lock_name,
    named_lock,
    quick_sqlite_time,
)
from ledger.driver_errors import lock_wait_exceeded
from ledger.schema import LegacyTimestamp, UTCDateTime
from ledger.store import as_ledger
from ledger.text import visible
from ledger.urls import sqlite_file_or_none
from projections.checkpoints import advance, finish_swap, mark_swap, read_checkpoint
from projections.errors import ProjectionBusyError, SwapBlockedError
from projections.rebuild_claims import RebuildClaim
from projections.schema import (
    INGESTION_RUNS,
    OLD,
    PROJECTION_NAME,
    SHADOW,
    TRANSITIONS,
    ingestion_run_transitions,
    ingestion_runs,
)

if TYPE_CHECKING:  # the writer asks this module how its values go to the driver
    from projections.extras import Extras
    from projections.writer import ReadModelWriter

log = logging.getLogger(__name__)

DEFAULT_LOCK_TIMEOUT_S = 60

CatchUp = Callable[[Connection, int], int]  # (conn, position) -> the position caught up to


def database_node(conn: Connection) -> str:
    """The database server ``conn`` is on, as claims record it: ``host:port`` of a MySQL node
    (Galera nodes share a database but not a lock), this host for a SQLite file.

    A Galera node adds its group-communication UUID: nodes in containers often share a
    hostname and a port (every one ``db:3306``), and a claim taken through another node must
    never be read as one this node's lock covers. The UUID is new at each start of the node,
    whose named locks did not survive the restart either."""
    if is_sqlite(conn):
        return f"sqlite@{socket.gethostname()}"
    where = str(conn.exec_driver_sql("SELECT CONCAT(@@hostname, ':', @@port)").scalar())
    if not is_galera(conn):
        return where
    member = conn.exec_driver_sql(
        "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
        "WHERE VARIABLE_NAME = 'WSREP_GCOMM_UUID'"
    ).scalar()
    return f"{where}/{member}" if member else where


def bind_processor(column_type: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """The bind processor SQLAlchemy applies to a value of ``column_type`` on ``dialect``, for
    the writer's statements sent to the driver as they are (:mod:`projections.writer`): on
    SQLite a timestamp's is the same, quicker for the usual value
    (:func:`ledger.dialects.quick_sqlite_time`)."""
    processor: Callable[[Any], Any] | None = column_type.dialect_impl(dialect).bind_processor(
        dialect
    )
    if processor is not None and dialect.name == "sqlite" and isinstance(column_type, UTCDateTime):
        return quick_sqlite_time(processor, whole_seconds=isinstance(column_type, LegacyTimestamp))
    return processor


# ---------------------------------------------------------------------- the projector's lock


@contextmanager
def projection_session(
    database: Ledger | Engine,
    projection: str,
    timeout: int = DEFAULT_LOCK_TIMEOUT_S,
    action: str = "project",
) -> Iterator[Connection]:
    """A connection holding the projection's named lock (MySQL); no transaction is open."""
    ledger = as_ledger(database)
    with ledger.connect(action) as conn:
        if ledger.is_sqlite:
            yield conn
            return
        busy = ProjectionBusyError(
            f"projection {projection} is locked by another process (waited {timeout}s)"
        )
        # Bounded before the lock is taken: a holder that vanishes at any point after this,
        # in a transaction or between two, frees the lock within the idle bound.
        with idle_bounded_session(conn), named_lock(conn, projection, timeout, lambda: busy):
            yield conn


@contextmanager
def projection_transaction(
    ledger: Ledger, projection: str, action: str, timeout: int = DEFAULT_LOCK_TIMEOUT_S
) -> Iterator[Connection]:
    """One write transaction with exclusive access to the projection; a driver error in it is
    raised as :class:`ledger.StorageError` saying ``{action} failed``."""
    if ledger.is_sqlite:
        with ledger.transaction(action) as conn:
            yield conn
        return
    with projection_session(ledger, projection, timeout, action) as conn, conn.begin():
        yield conn


# ---------------------------------------------------------------------- the rebuild's


@contextmanager
def exclusive_rebuild(database: Ledger | Engine, projection: str) -> Iterator[RebuildClaim]:
    """Held for a whole rebuild: a second rebuild of the same projection is refused at once
    (it would drop the first one's shadow tables under it). Yields the claim, which the rebuild
    checks on its way and before its swap (:meth:`projections.rebuild_claims.RebuildClaim.check`).

    Locally, MySQL: a named lock on its own session; SQLite: an advisory lock on a file beside
    the database (the embedded database lives on one host). Across the nodes of a cluster,
    where neither reaches: a claim row (:mod:`projections.rebuild_claims`).

    Unlike the projector's lock, this session is not bounded by the idle timeout: it sits
    idle for the whole rebuild while the work runs on other sessions, and losing it half-way
    would let a second rebuild drop this one's shadow tables. A rebuild that vanished with its
    socket open therefore blocks only the next rebuild (not appends, not the projector) until
    the server's wait_timeout, or until a DBA ends the connection the refusal names.
    """
    ledger = as_ledger(database)
    if ledger.is_sqlite:
        # The file itself, however the URL names it (a relative path, a file: URI): one lock.
        path = sqlite_file_or_none(ledger.url)
        if path is None:  # in memory: one process, no file to lock
            with _claimed(ledger, projection) as claim:
                yield claim
            return
        with ledger.operation("rebuild"), open(f"{path}.rebuild.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise ProjectionBusyError(
                    f"another rebuild of {projection} is running on this database"
                ) from exc
            try:
                with _claimed(ledger, projection) as claim:
                    yield claim
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    with ledger.connect("rebuild") as conn:
        name = lock_name(conn, f"{projection}.rebuild")
        node = database_node(conn)  # the node this lock holds on
        # Where the server has no idle-transaction timeout, every session is bounded by
        # wait_timeout instead (ledger.mysql_engine): this one, idle by design, is exempt until
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
        except BaseException:
            _end_lock_session(conn, None)
            raise
        try:
            with _claimed(ledger, projection, node) as claim:
                yield claim
        finally:
            _end_lock_session(conn, name)


def _end_lock_session(conn: Connection, lock: str | None) -> None:
    """Release ``lock`` and give the session its own wait_timeout back. A session that is gone
    (cut by a proxy, a KILL) released its lock with it: the rebuild's own outcome (its tables
    swapped in, or its error) stands rather than this cleanup's connection error."""
    try:
        conn.rollback()
        if lock is not None:
            conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": lock})
        conn.exec_driver_sql("SET SESSION wait_timeout = @ledger_wait_timeout")
        conn.commit()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        log.warning(
            "the rebuild lock's session was gone at the end (%s): the server released the "
            "lock with it",
            exc.orig,
        )


@contextmanager
def _claimed(ledger: Ledger, projection: str, node: str | None = None) -> Iterator[RebuildClaim]:
    if node is None:
        with ledger.connect("rebuild") as conn:
            node = database_node(conn)
    claim = RebuildClaim(ledger, projection, node)
    claim.take()
    try:
        yield claim
    finally:
        claim.release()


def shadow_indexes(ledger: Ledger) -> bool:
    """Whether a rebuild's shadow tables get their indexes when created. Not on SQLite, whose
    index names are per database: the swap makes them once the shadows have the live names."""
    return not ledger.is_sqlite


# An index line of MySQL's SHOW CREATE TABLE: `  [UNIQUE |FULLTEXT |SPATIAL ]KEY `name` (…)`.
_MYSQL_INDEX_LINE = re.compile(r"^\s*((?:[A-Z]+ )?KEY) `((?:[^`]|``)+)` (.*?),?$")


def index_definitions(conn: Connection, table: str) -> list[tuple[str, str]]:
    """(name, definition) of every index of ``table`` but its primary key and SQLite's own:
    how a rebuild makes an operator's index again (:mod:`projections.extras`). SQLite: its
    ``CREATE INDEX`` as stored (expressions and ``WHERE`` included), replayed as it is once
    the shadow has the live name, index names being per database. MySQL/MariaDB: its line of
    ``SHOW CREATE TABLE`` (prefix lengths, ``DESC``, ``FULLTEXT``, a comment), for ``ALTER
    TABLE shadow ADD …`` before the swap, index names being per table."""
    if is_sqlite(conn):
        rows = conn.execute(
            text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :t "
                "AND sql IS NOT NULL ORDER BY name"
            ),
            {"t": table},
        ).all()
        return [(str(name), str(sql)) for name, sql in rows]
    quote = conn.dialect.identifier_preparer.quote
    create = str(conn.exec_driver_sql(f"SHOW CREATE TABLE {quote(table)}").one()[1])
    found = []
    for line in create.splitlines():
        match = _MYSQL_INDEX_LINE.match(line)
        if match:
            name = match[2].replace("``", "`")
            found.append((name, f"{match[1]} {quote(name)} {match[3]}"))
    return found


def replays_index_sql(conn: Connection) -> bool:
    """Whether an index the inspector cannot describe (an expression) is carried anyway: on
    SQLite, whose own ``CREATE INDEX`` is replayed."""
    return is_sqlite(conn)


def carry_indexes(conn: Connection, extras: Extras, shadow_of: dict[str, str]) -> None:
    """MySQL/MariaDB: add the operator's indexes to the shadow tables (``shadow_of``: live
    name to shadow name) now, names being per table. SQLite: nothing now, the swap makes them."""
    if is_sqlite(conn):
        return
    quote = conn.dialect.identifier_preparer.quote
    for extra in extras.carried:
        conn.exec_driver_sql(f"ALTER TABLE {quote(shadow_of[extra.table])} ADD {extra.definition}")


def table_triggers(conn: Connection, table: str) -> list[str]:
    """The names of the triggers on ``table``."""
    if is_sqlite(conn):
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"
    else:
        query = (
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
            "WHERE EVENT_OBJECT_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE = :t"
        )
    return sorted(str(name) for (name,) in conn.execute(text(query), {"t": table}))


def swap_in(
    ledger: Ledger,
    writer: ReadModelWriter,
    position: int,
    catch_up: CatchUp,
    extras: Extras | None = None,
) -> int:
    """Replace the live tables with the shadow ones ``writer`` filled up to ``position``, after
    ``catch_up`` brought them to the head with the projection locked; returns the position the
    swapped-in tables and the checkpoint are at. On SQLite the operator's indexes ``extras``
    carries are made in the swap (MySQL's shadow tables already have them)."""
    if ledger.is_sqlite:
        return _swap_sqlite(ledger, writer, position, catch_up, extras)
    return _swap_mysql(ledger, position, catch_up)


def _swap_sqlite(
    ledger: Ledger,
    writer: ReadModelWriter,
    position: int,
    catch_up: CatchUp,
    extras: Extras | None,
) -> int:
    """One transaction drops the live tables, renames the shadows, makes the indexes (the
    schema's and the operator's ``extras`` carries) and sets the checkpoint: atomic, as SQLite
    DDL is transactional."""
    with ledger.transaction("rebuild") as conn:  # appenders and projectors wait until it commits
        read_checkpoint(conn, PROJECTION_NAME, lock=True)
        position = catch_up(conn, position)
        # An operator's view (or another table's trigger) naming the live table: with the table
        # dropped, SQLite's RENAME checks the whole schema and failed ("error in view …: no
        # such table: main.ingestion_runs"). In legacy mode it renames without rewriting or
        # checking what names the table, so the view names the rebuilt table, as on MariaDB.
        conn.exec_driver_sql("PRAGMA legacy_alter_table = ON")
        try:
            for live, shadow in (
                (ingestion_runs, writer.runs),
                (ingestion_run_transitions, writer.transitions),
            ):
                conn.exec_driver_sql(f'DROP TABLE "{live.name}"')
                conn.exec_driver_sql(f'ALTER TABLE "{shadow.name}" RENAME TO "{live.name}"')
                for index in live.indexes:  # index names are per database on SQLite: made last
                    index.create(conn)
        finally:
            conn.exec_driver_sql("PRAGMA legacy_alter_table = OFF")
        for extra in extras.carried if extras else ():  # the operator's: its CREATE INDEX,
            conn.exec_driver_sql(str(extra.definition))  # which names the live table
        advance(conn, PROJECTION_NAME, position)
    return position


# How long the swap's RENAME TABLE waits for the metadata locks of the live tables, and how
# often it tries: while it waits, every new reader of ingestion_runs queues behind it (legacy
# readers, `ledger status`, the API), so each wait is short; an open transaction that read the
# table (a reader that left autocommit off) usually ends within seconds.
SWAP_LOCK_WAIT_S = 5
SWAP_ATTEMPTS = 3
SWAP_PAUSE_S = 2.0


def _swap_mysql(ledger: Ledger, position: int, catch_up: CatchUp) -> int:
    """One ``RENAME TABLE`` swaps both tables atomically, but it commits implicitly, so it
    cannot share a transaction with the checkpoint: the position the shadows hold is marked
    first (:func:`projections.checkpoints.mark_swap`), so that a process dying between the
    rename and the checkpoint update leaves the next projector what it needs to finish the
    swap (:func:`projections.checkpoints.recover_interrupted_swap`). The live tables leave as
    ``…__old``, for the caller to drop. A rename that cannot get the live tables' metadata
    locks within :data:`SWAP_LOCK_WAIT_S` (another session's open transaction read them) is
    unmarked and tried again; after :data:`SWAP_ATTEMPTS` it raises
    :class:`SwapBlockedError`, the live tables untouched."""
    with projection_session(ledger, PROJECTION_NAME, action="rebuild") as conn:

        def catch_up_and_mark() -> int:
            with conn.begin():
                caught_up = catch_up(conn, position)
                mark_swap(conn, PROJECTION_NAME, caught_up)
            return caught_up

        def unmark() -> None:
            with conn.begin():
                mark_swap(conn, PROJECTION_NAME, None)

        for attempt in range(1, SWAP_ATTEMPTS + 1):
            # On a Galera cluster a projector on another node may commit a batch meanwhile (the
            # named lock is per node): the mark's write of the checkpoint row then loses the
            # certification, and the catch-up runs again.
            position = retrying_conflicts(catch_up_and_mark, "rebuild swap")
            if _renamed_in(conn):
                break
            retrying_conflicts(unmark, "rebuild swap")  # nothing was renamed: no swap to finish
            if attempt == SWAP_ATTEMPTS:
                raise SwapBlockedError(
                    f"rebuild: the swap waited {SWAP_ATTEMPTS} times {SWAP_LOCK_WAIT_S}s for "
                    f"the metadata locks of {INGESTION_RUNS} and {TRANSITIONS}, held by an "
                    "open transaction that read or wrote them"
                    f"{_open_transactions(conn)}; the live tables are untouched; end that "
                    "transaction (a reader with autocommit off: commit or roll back) and run "
                    "`ledger rebuild` again"
                )
            log.warning(
                "rebuild: the swap waited %ds for the live tables' metadata locks (an open "
                "transaction elsewhere read them; attempt %d of %d); catching up and trying "
                "again",
                SWAP_LOCK_WAIT_S,
                attempt,
                SWAP_ATTEMPTS,
            )
            time.sleep(SWAP_PAUSE_S)

        def finish() -> None:
            with conn.begin():
                if not finish_swap(conn, PROJECTION_NAME, position):
                    log.info("a projector finished the swap to %d first", position)

        retrying_conflicts(finish, "rebuild swap")
    return position


def _renamed_in(conn: Connection) -> bool:
    """Swap the shadow tables in with one ``RENAME TABLE``; False (nothing renamed) when the
    live tables' metadata locks were not granted within :data:`SWAP_LOCK_WAIT_S`."""
    try:
        with bounded_lock_wait(conn, SWAP_LOCK_WAIT_S):
            conn.exec_driver_sql(
                "RENAME TABLE "
                + ", ".join(
                    f"`{name}` TO `{name}{OLD}`, `{name}{SHADOW}` TO `{name}`"
                    for name in (INGESTION_RUNS, TRANSITIONS)
                )
            )
    except DBAPIError as exc:
        conn.rollback()
        if lock_wait_exceeded(exc):
            return False
        raise
    conn.commit()  # RENAME committed implicitly; end SQLAlchemy's autobegun transaction
    return True


def _open_transactions(conn: Connection) -> str:
    """The other sessions on this database with an open transaction, oldest first, as ``;
    sessions with an open transaction: ID USER@HOST (open Ns), …`` for the operator to find
    the reader that holds the swap up; empty when the server does not say (no PROCESS grant:
    then only the ledger's own user's sessions are listed, or none)."""
    try:
        rows = conn.exec_driver_sql(
            "SELECT p.ID, p.USER, p.HOST, TIMESTAMPDIFF(SECOND, t.trx_started, NOW()) "
            "FROM information_schema.INNODB_TRX t "
            "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
            "WHERE p.ID <> CONNECTION_ID() AND p.DB = DATABASE() ORDER BY t.trx_started LIMIT 5"
        ).all()
        conn.rollback()
    except DBAPIError:
        conn.rollback()
        return ""
    if not rows:
        return ""
    sessions = ", ".join(
        f"{int(row[0])} {visible(str(row[1]))}@{visible(str(row[2]))} (open {int(row[3] or 0)}s)"
        for row in rows
    )
    return f"; sessions with an open transaction: {sessions}"
