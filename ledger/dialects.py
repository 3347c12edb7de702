"""Where SQLite and MySQL/MariaDB differ at run time, one function per difference.

Engines are built in :mod:`ledger.database` (driver errors translated in
:mod:`ledger.driver_errors`), and column types declare their per-database form in
:mod:`ledger.schema`; every other place that must do one thing on SQLite and another on
MySQL/MariaDB asks here, so the differences are read in one room.
Other packages reach these through :class:`ledger.Ledger` (``is_sqlite``, ``dialect``,
``transaction``, ``snapshot``) or, for SQL of their own, through the helpers below.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Connection,
    Dialect,
    Engine,
    LargeBinary,
    and_,
    cast,
    literal_column,
    make_url,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.sql.elements import ColumnClause

from ledger.clock import default_clock, isoformat_utc, utcnow
from ledger.driver import COMMITTED_INFO, GALERA_INFO, DriverCursor, driver_transaction
from ledger.fork_gate import FORK_GATE

# Execution option read by the SQLite engine's "begin" hook: which BEGIN to emit.
SQLITE_BEGIN_OPTION = "ledger_sqlite_begin"

# The idle bound of a MySQL session, kept with its pooled connection for the named-lock holders.
IDLE_TIMEOUT_INFO = "ledger_idle_timeout_s"
DEFAULT_IDLE_TRANSACTION_TIMEOUT_S = 30
# The MySQL/MariaDB server's clock, in UTC with microseconds.
_SERVER_NOW: ColumnClause[Any] = literal_column("UTC_TIMESTAMP(6)")
# The same clock as a row is read, not as its statement started: UTC_TIMESTAMP (as NOW) is
# fixed when a statement starts, so in the head lock's SELECT … FOR UPDATE it gave the time
# before the wait for the lock (up to innodb_lock_wait_timeout). SYSDATE is read when it is
# evaluated, after the lock is granted; every session of the ledger runs with time_zone
# '+00:00' (ledger.mysql_engine), so it is UTC. (A server started with --sysdate-is-now makes it
# NOW again: the time before the wait, as before.)
_SERVER_NOW_AS_READ: ColumnClause[Any] = literal_column("SYSDATE(6)")
_SQLITE_STORED_TIME = "%Y-%m-%d %H:%M:%S.%f"  # the text SQLAlchemy's DateTime stores on SQLite


class Bound(Protocol):
    """Anything that knows its database's dialect: an Engine, a Connection, a Ledger."""

    @property
    def dialect(self) -> Dialect: ...


def is_sqlite(bind: Bound) -> bool:
    return bind.dialect.name == "sqlite"


def database_kind(bind: Bound) -> str:
    """``sqlite``, ``mysql`` or ``mariadb``: all a client may be told of the database (its URL
    names the user, host and database, or the file). MariaDB is told from MySQL by the server
    it answered from, so the kind is exact once a connection was opened."""
    dialect = bind.dialect
    return "mariadb" if getattr(dialect, "is_mariadb", False) else dialect.name


def is_galera(conn: Connection) -> bool:
    """Whether ``conn`` talks to a node of a Galera cluster, as noted when the connection was
    opened (``ledger.mysql_engine``: ``wsrep_on``); no round trip."""
    return bool(conn.connection.info.get(GALERA_INFO, False))


@contextmanager
def causal_reads(conn: Connection) -> Iterator[None]:
    """Reads on ``conn`` see every transaction the database committed before them. On a
    Galera node that means waiting until the node has applied them (``wsrep_sync_wait`` 1 for
    SELECT and 8 for SHOW, DESCRIBE among them: Alembic asks whether a table exists so):
    the node a migration ran through does not wait for the others to apply its DDL, so a
    schema check through another node just after ``ledger migrate`` could read the old
    revision. One server, or SQLite, already reads so: nothing is sent."""
    if not is_galera(conn):
        yield
        return
    conn.exec_driver_sql("SET SESSION wsrep_sync_wait = 9")
    try:
        yield
    except BaseException:
        # A connection lost mid-read (a node gone) cannot be reset: the reset's own error
        # (SQLAlchemy's "invalid transaction") would hide the one that says what happened.
        if not conn.invalidated:
            with suppress(SQLAlchemyError):
                conn.exec_driver_sql("SET SESSION wsrep_sync_wait = DEFAULT")
        raise
    conn.exec_driver_sql("SET SESSION wsrep_sync_wait = DEFAULT")  # the server's setting


# What a MySQL/MariaDB session's binary logging is (MySQL has no wsrep_on: SHOW, not SELECT).
SERVER_SETTINGS_QUERY = (
    "SHOW VARIABLES WHERE Variable_name IN "
    "('wsrep_on', 'log_bin', 'sql_log_bin', 'binlog_format', 'max_allowed_packet')"
)


def logs_statements(settings: dict[str, str]) -> bool:
    """Whether a MySQL/MariaDB session with these settings (:data:`SERVER_SETTINGS_QUERY`'s
    rows, names in lower case) writes the binary log by statement: InnoDB then refuses every
    write of a READ COMMITTED transaction, the ledger's (1665)."""

    def on(name: str) -> bool:
        return settings.get(name, "").upper() in ("ON", "1")

    return (
        on("log_bin")
        and on("sql_log_bin")
        and settings.get("binlog_format", "").upper() == "STATEMENT"
    )


def session_logs_statements(conn: Connection) -> bool:
    """:func:`logs_statements` of ``conn``'s session as it is now (False on SQLite)."""
    if is_sqlite(conn):
        return False
    rows = conn.exec_driver_sql(SERVER_SETTINGS_QUERY).all()
    return logs_statements({str(name).lower(): str(value) for name, value in rows})


def is_mysql_backend(backend: str) -> bool:
    """``backend`` (a URL's backend name) is MySQL or MariaDB."""
    return backend in ("mysql", "mariadb")


def wait_bound_options(url: str, seconds: int) -> dict[str, int]:
    """The engine options that bound a wait on the database ``url`` names to ``seconds``:
    the pool's checkout (SQLAlchemy's 30 s otherwise: every connection in use is "busy" in
    seconds), MySQL's driver timeouts being set in the URL
    (:func:`ledger.database.with_timeouts`), and SQLite's busy timeout. Raises what
    ``make_url`` raises for a URL that does not parse."""
    if is_mysql_backend(make_url(url).get_backend_name()):
        return {"pool_timeout": seconds}
    return {"sqlite_busy_timeout_ms": seconds * 1000, "pool_timeout": seconds}


def exact_text(column: ColumnElement[str], bind: Bound) -> ColumnElement[Any]:
    """``column`` as compared (or grouped) byte for byte. MySQL's collations take "Stations"
    for "stations" (utf8mb4's default) and "stations " for "stations" (PAD SPACE, which even
    utf8mb4_bin has); a binary string compares neither. SQLite compares bytes already."""
    return column if is_sqlite(bind) else cast(column, LargeBinary)


def same_text(column: ColumnElement[str], value: str, bind: Bound) -> ColumnElement[bool]:
    """``column = value``, exactly, on every backend: names that differ by case or by a trailing
    space are different names."""
    if is_sqlite(bind):
        return column == value
    # The collation's comparison keeps the column's index in use; the binary one makes it exact.
    return and_(column == value, exact_text(column, bind) == value.encode("utf-8"))


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the write lock from its first statement on SQLite.

    On MySQL the caller locks ``ledger_head`` with ``SELECT … FOR UPDATE`` instead. On SQLite
    a fork waits for it to end (:mod:`ledger.fork_gate`).
    """
    if not is_sqlite(engine):
        with engine.connect() as conn:
            with conn.begin():
                yield conn
            # Committed, and nothing runs before the connection goes back to the pool: its
            # reset has nothing to roll back (see ledger.mysql_engine._end_open_transaction).
            conn.connection.info[COMMITTED_INFO] = True
        return
    entry = FORK_GATE.enter()
    try:
        with engine.connect() as conn:
            conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            with conn.begin():
                yield conn
            conn.connection.info[COMMITTED_INFO] = True
    finally:
        FORK_GATE.leave(entry)


@contextmanager
def append_transaction(engine: Engine) -> Iterator[DriverCursor]:
    """:func:`write_transaction` for the append's hot path: the same lock, on a pooled
    connection's DBAPI cursor without a SQLAlchemy ``Connection`` (see :mod:`ledger.driver`)."""
    if not is_sqlite(engine):
        with driver_transaction(engine, None) as cursor:
            yield cursor
        return
    entry = FORK_GATE.enter()  # see write_transaction
    try:
        with driver_transaction(engine, "BEGIN IMMEDIATE") as cursor:
            yield cursor
    finally:
        FORK_GATE.leave(entry)


SNAPSHOT_ISOLATION = "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ"


@contextmanager
def snapshot_transaction(conn: Connection) -> Iterator[Connection]:
    """A read transaction that sees one moment of the database. On MySQL, REPEATABLE READ
    (InnoDB keeps the snapshot of the first read for the whole transaction); on SQLite, a read
    transaction in WAL mode is a snapshot already."""
    if not is_sqlite(conn):
        driver_error = conn.dialect.loaded_dbapi.Error
        try:
            conn.execution_options(isolation_level="REPEATABLE READ")
        except driver_error as exc:
            # SQLAlchemy sends this SET outside its statement path, so a connection lost here
            # came up as the driver's bare error, which no caller's translate_errors knew (a
            # frozen database made the API's list of runs a 500 instead of its 503). Wrapped
            # as any statement's error, and the broken connection kept out of the pool.
            conn.invalidate(exc)
            raise DBAPIError.instance(
                SNAPSHOT_ISOLATION, None, exc, driver_error, connection_invalidated=True
            ) from exc
    with conn.begin():
        yield conn


@contextmanager
def idle_bounded_session(conn: Connection) -> Iterator[None]:
    """Bound how long this session may stay idle *outside* a transaction, while it holds a
    named lock (``GET_LOCK`` outlives transactions, so the idle-transaction timeout does not
    cover it): a holder that vanished with its socket open would otherwise keep the lock for
    the server's wait_timeout. Restored afterwards, so the pooled session is not closed for
    being idle later. A no-op on SQLite."""
    if is_sqlite(conn):
        yield
        return
    seconds = int(conn.info.get(IDLE_TIMEOUT_INFO, DEFAULT_IDLE_TRANSACTION_TIMEOUT_S))
    conn.exec_driver_sql(
        "SET @ledger_wait_timeout = @@SESSION.wait_timeout, "
        f"SESSION wait_timeout = LEAST({seconds}, @@SESSION.wait_timeout)"
    )
    restore = "SET SESSION wait_timeout = @ledger_wait_timeout"
    try:
        yield
    except BaseException:
        # The session may be gone with the error; a live one left bounded is only closed
        # when idle, and the pool pings idle connections before handing them out.
        with suppress(SQLAlchemyError):
            conn.exec_driver_sql(restore)
        raise
    conn.exec_driver_sql(restore)


@contextmanager
def bounded_lock_wait(conn: Connection, seconds: int) -> Iterator[None]:
    """Bound how long this session's statements wait for a metadata or row lock (MySQL's
    ``lock_wait_timeout``, a day by default) to ``seconds``, then restore it. For the
    statements every other session queues behind while they wait: ``FLUSH TABLES`` and
    ``RENAME TABLE`` wait for the metadata lock of every open transaction that used the table,
    and each new statement on it waits behind them. A wait past the bound fails with 1205
    (:func:`ledger.driver_errors.lock_wait_exceeded`). MySQL/MariaDB only."""
    conn.exec_driver_sql(
        "SET @ledger_lock_wait = @@SESSION.lock_wait_timeout, "
        f"SESSION lock_wait_timeout = {int(seconds)}"
    )
    try:
        yield
    finally:
        with suppress(SQLAlchemyError):
            conn.exec_driver_sql("SET SESSION lock_wait_timeout = @ledger_lock_wait")


def server_clock(bind: Bound) -> ColumnClause[Any] | None:
    """The database server's clock as a column to select, or None: SQLite runs on this
    machine's clock."""
    return None if is_sqlite(bind) else _SERVER_NOW


def server_clock_as_read(bind: Bound) -> ColumnClause[Any] | None:
    """:func:`server_clock`, read as the row is read rather than as the statement starts: for
    the head lock's ``SELECT … FOR UPDATE``, whose clock must be the time the lock was
    granted (DESIGN.md I10: "read with the head lock")."""
    return None if is_sqlite(bind) else _SERVER_NOW_AS_READ


def clock_on(conn: Connection) -> datetime:
    """The ledger's clock, read through ``conn``: the one Ledgers of this process were told to
    use (tests: freezegun's), else the database server's (MySQL: every host of a cluster reads
    one clock), else this machine's (SQLite)."""
    told = default_clock()
    if told is not None:
        return told()
    column = server_clock(conn)
    if column is None:
        return utcnow()
    now: datetime = conn.execute(select(column)).scalar_one()
    return now.replace(tzinfo=UTC)


def driver_timestamp(bind: Bound) -> Callable[[datetime], Any]:
    """How a timestamp goes to the driver when SQLAlchemy's type processing is bypassed (the
    append's executemany): the text SQLAlchemy's DateTime stores on SQLite, a naive UTC
    datetime on MySQL."""
    if is_sqlite(bind):
        return sqlite_stored_time
    return lambda value: value.astimezone(UTC).replace(tzinfo=None)


def sqlite_stored_time(value: datetime) -> str:
    """The text SQLAlchemy's DateTime stores on SQLite (``strftime`` of
    :data:`_SQLITE_STORED_TIME`) for an aware datetime, in UTC. Formatted by hand for the
    usual value, several times as quick: the append converts three timestamps each time."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    if value.year < 1000:  # strftime does not pad the year: keep its text exactly
        return value.replace(tzinfo=None).strftime(_SQLITE_STORED_TIME)
    # isoformat pads the year to four digits (as strftime's does from 1000 on), and ends with
    # the zone, "+00:00", which goes.
    return value.isoformat(" ", "microseconds")[:-6]


def quick_sqlite_time(
    processor: Callable[[Any], Any], whole_seconds: bool = False
) -> Callable[[Any], Any]:
    """``processor``, SQLAlchemy's bind processor of a :class:`ledger.schema.UTCDateTime`
    column on SQLite, with the usual value (aware, in UTC) formatted directly: the same text,
    at a third of the cost (a rebuild writes three timestamps a run). ``whole_seconds`` for a
    :class:`ledger.schema.LegacyTimestamp`, which drops the microseconds first."""

    def process(value: Any) -> Any:
        if type(value) is not datetime or value.tzinfo is not UTC or value.year < 1000:
            return processor(value)  # None, a refusal, or text made the long way
        if whole_seconds and value.microsecond:
            value = value.replace(microsecond=0)
        return value.isoformat(" ", "microseconds")[:-6]  # as sqlite_stored_time makes it

    return process


def stored_time_reader(value: Any) -> datetime:
    """A timestamp selected as its stored text (:func:`time_as_text`) as an aware UTC datetime:
    SQLite's text and MySQL's ``CAST(DATETIME(6) AS CHAR)`` have the same form."""
    try:
        # The stored text has no zone: giving it one in the text is several times quicker than
        # datetime.replace, and gives the same value.
        return datetime.fromisoformat(value + "+00:00")
    except (TypeError, ValueError):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)


def driver_placeholder(bind: Bound) -> str:
    """The parameter mark of a statement sent to the driver as it is: sqlite3's ``?``,
    PyMySQL's ``%s``."""
    return "?" if bind.dialect.paramstyle == "qmark" else "%s"


def time_as_text(bind: Bound) -> Callable[[str], str]:
    """How a query selects a timestamp column as the text it stores: SQLite stores text
    already; MySQL's ``CAST(... AS CHAR)`` of a ``DATETIME(6)`` is the same text, and spares
    the driver building a datetime that verify would only turn back into text."""
    return _column_itself if is_sqlite(bind) else _column_as_char


def _column_itself(column: str) -> str:
    return column


def _column_as_char(column: str) -> str:
    return f"CAST({column} AS CHAR)"


def stored_time_text(value: Any) -> str:
    """A stored timestamp (SQLite's text, MySQL's ``DATETIME(6)`` as text or as the driver's
    naive UTC datetime) in the canonical text the hash chain was computed over."""
    if isinstance(value, datetime):
        return isoformat_utc(value.replace(tzinfo=UTC))
    text_value = str(value).replace(" ", "T")
    return (text_value if "." in text_value else text_value + ".000000") + "Z"


def is_missing_table(driver_message: str) -> bool:
    """SQLite: "no such table: x"; MySQL/MariaDB: error 1146 "Table 'db.x' doesn't exist"."""
    return "no such table" in driver_message or driver_message.startswith("(1146,")


def catalogued_triggers(
    conn: Connection, *, table: str | None = None, name: str | None = None
) -> Sequence[Sequence[Any]]:
    """The triggers of ``conn``'s database as its catalogue shows them to this user: those on
    ``table`` (a name in lower case; SQLite's catalogue is read in any case), the one called
    ``name``, or all. SQLite: rows of ``(name, table, sql)`` from ``sqlite_master``, ``sql``
    the whole ``CREATE TRIGGER``; MySQL/MariaDB: ``(name, table, timing, event, body,
    orientation)`` from ``information_schema.TRIGGERS`` (the body NULL where this user may
    not read it). What ``ledger migrate`` looks for before it creates a trigger and what
    ``ledger verify`` checks (I1)."""
    if is_sqlite(conn):
        sql = "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'"
        on_table, called = "lower(tbl_name) = :table", "name = :name"
    else:
        sql = (
            "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, "
            "ACTION_STATEMENT, ACTION_ORIENTATION FROM information_schema.TRIGGERS "
            "WHERE TRIGGER_SCHEMA = DATABASE()"
        )
        on_table, called = "EVENT_OBJECT_TABLE = :table", "TRIGGER_NAME = :name"
    params: dict[str, str] = {}
    if table is not None:
        sql, params["table"] = f"{sql} AND {on_table}", table
    if name is not None:
        sql, params["name"] = f"{sql} AND {called}", name
    return conn.execute(text(sql), params).all()


# ---------------------------------------------------------------------- the triggers (I1)

EVENTS_TABLE = "ledger_events"  # the table the triggers keep append-only, named in messages
IMMUTABLE_MESSAGE = "ledger_events is append-only: {verb} is not allowed (run-ledger I1)"


@dataclass(frozen=True)
class TriggerDefinition:
    name: str
    timing: str  # BEFORE
    event: str  # UPDATE, DELETE, INSERT
    # What the catalogue holds: on SQLite the whole CREATE TRIGGER statement, on MariaDB/MySQL
    # the body (ACTION_STATEMENT).
    definition: str


def expected_triggers(dialect: str) -> tuple[TriggerDefinition, ...]:
    """The triggers ``ledger migrate`` creates on ``ledger_events`` for ``dialect``: what
    ``ledger verify`` compares the catalogue with, and what migrate puts back when one is
    missing (a dump restored without its triggers)."""
    triggers = []
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            name = f"ledger_events_no_{verb.lower()}"
            statement = (
                f"CREATE TRIGGER {name} BEFORE {verb} ON ledger_events "
                f"BEGIN SELECT RAISE(ABORT, '{IMMUTABLE_MESSAGE.format(verb=verb)}'); END"
            )
            triggers.append(TriggerDefinition(name, "BEFORE", verb, statement))
        # INSERT OR REPLACE deletes the conflicting row without firing DELETE triggers.
        replace = (
            "CREATE TRIGGER ledger_events_no_replace BEFORE INSERT ON ledger_events "
            "WHEN EXISTS (SELECT 1 FROM ledger_events WHERE position = NEW.position) "
            "OR EXISTS (SELECT 1 FROM ledger_events WHERE event_id = NEW.event_id) "
            "OR EXISTS (SELECT 1 FROM ledger_events "
            "WHERE run_id = NEW.run_id AND version = NEW.version) "
            f"BEGIN SELECT RAISE(ABORT, '{IMMUTABLE_MESSAGE.format(verb='REPLACE')}'); END"
        )
        triggers.append(TriggerDefinition("ledger_events_no_replace", "BEFORE", "INSERT", replace))
    elif is_mysql_backend(dialect):
        for verb in ("UPDATE", "DELETE"):
            message = IMMUTABLE_MESSAGE.format(verb=verb)
            body = f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{message}'"
            triggers.append(
                TriggerDefinition(f"ledger_events_no_{verb.lower()}", "BEFORE", verb, body)
            )
    return tuple(triggers)


def create_trigger_statement(trigger: TriggerDefinition, dialect: str) -> str:
    """The ``CREATE TRIGGER`` statement of an expected trigger (SQLite's catalogue holds it
    whole; MySQL's holds the body)."""
    if dialect == "sqlite":
        return trigger.definition
    return (
        f"CREATE TRIGGER {trigger.name} {trigger.timing} {trigger.event} ON ledger_events "
        f"FOR EACH ROW {trigger.definition}"
    )


def missing_triggers(conn: Connection) -> list[TriggerDefinition]:
    """The expected triggers of ``ledger_events`` that the catalogue does not list by name
    (seen as this user sees the catalogue: on MySQL/MariaDB only a user with a write privilege
    on the table sees the names)."""
    present = {str(row[0]) for row in catalogued_triggers(conn, table=EVENTS_TABLE)}
    return [t for t in expected_triggers(database_kind(conn)) if t.name not in present]


LOCK_NAME_MAX = 64  # MySQL refuses longer GET_LOCK names
_READABLE = re.compile(r"[^A-Za-z0-9_$.-]")


def lock_name_for(database: str, purpose: str) -> str:
    """The server-wide GET_LOCK name of ``purpose`` (a projection, its rebuild, the migration)
    in ``database``: unique and at most 64 characters for any names.

    GET_LOCK names are shared by every database on the server, so the name must tell ledgers
    apart; database names run to 64 characters, so they cannot be spelt out in full. A digest
    of the (database, purpose) pair makes the name unique, whatever is cut; the rest only
    helps a DBA reading ``IS_USED_LOCK`` or the processlist, and is truncated as needed.
    """
    digest = hashlib.sha256(f"{database}\0{purpose}".encode()).hexdigest()[:20]
    readable = _READABLE.sub("_", f"{purpose}.{database}")
    return f"run_ledger.{digest}.{readable}"[:LOCK_NAME_MAX]


def lock_name(conn: Connection, purpose: str) -> str:
    """:func:`lock_name_for` the database ``conn`` is using (MySQL)."""
    database = conn.exec_driver_sql("SELECT DATABASE()").scalar() or ""
    return lock_name_for(str(database), purpose)


@contextmanager
def named_lock(
    conn: Connection, purpose: str, wait_s: int, busy: Callable[[], Exception]
) -> Iterator[None]:
    """Hold the GET_LOCK of ``purpose`` (:func:`lock_name`) on ``conn``'s session for the block
    (MySQL), no transaction left open around it; ``busy()`` is raised when the lock cannot be
    had within ``wait_s`` seconds."""
    name = lock_name(conn, purpose)
    got = conn.execute(
        text("SELECT GET_LOCK(:name, :wait)"), {"name": name, "wait": wait_s}
    ).scalar()
    conn.commit()
    if got != 1:
        raise busy()
    try:
        yield
    finally:
        conn.rollback()
        conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": name})
        conn.commit()
