"""Engines for the two supported databases, and the one place driver errors are translated.

* SQLite (embedded default): WAL, a busy timeout, ``synchronous=FULL`` (an acknowledged append
  survives a power cut), and transactions begun by us so that appends can take the write lock
  up front with ``BEGIN IMMEDIATE``: concurrent writers queue instead of failing with
  "database is locked" half-way through.
* MySQL/MariaDB (production): PyMySQL, utf8mb4, every session in UTC, READ COMMITTED so a
  tailing reader always sees the latest committed positions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    LargeBinary,
    and_,
    cast,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    SQLAlchemyError,
)
from sqlalchemy.pool import StaticPool

from ledger.errors import ConfigurationError, SchemaError, StorageError
from ledger.urls import mask_secrets, mask_url

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option read by the "begin" hook: which BEGIN to emit on SQLite.
SQLITE_BEGIN_OPTION = "ledger_sqlite_begin"


def create_ledger_engine(url: str, **engine_options: Any) -> Engine:
    """An engine configured for the ledger; raises :class:`ConfigurationError` on a bad URL."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # The parser's message quotes pieces of the URL ("invalid literal for int(): 'Secr'"
        # when an unencoded "@" and ":" turn the password's tail into a port): neither repeat
        # it nor chain it, or a logged traceback would print it.
        raise ConfigurationError(f"invalid database URL {mask_url(url)}") from None
    if parsed.host and "@" in parsed.host:
        # "user:p@ss@host" parses as password "p", host "ss@host": the rest of the password
        # would end up in the host name and in the driver's error messages.
        raise ConfigurationError(
            f"invalid database URL {mask_url(url)}: a password containing '@' must be "
            "percent-encoded as %40"
        )
    backend = parsed.get_backend_name()
    try:
        if backend == "sqlite":
            if parsed.get_driver_name() != "pysqlite":  # the hooks below are sqlite3's
                raise ConfigurationError(
                    f"unsupported SQLite driver in {mask_url(url)!r}: use sqlite:///PATH"
                )
            engine = _sqlite_engine(url, parsed.database, **engine_options)
        elif backend in ("mysql", "mariadb"):
            if parsed.get_driver_name() not in ("pymysql",):
                raise ConfigurationError(
                    f"unsupported MySQL driver in {mask_url(url)!r}: use mysql+pymysql://"
                )
            engine_options.pop("sqlite_busy_timeout_ms", None)
            engine = _mysql_engine(url, **engine_options)
        else:
            raise ConfigurationError(
                f"unsupported database {backend!r} in {mask_url(url)!r}: "
                "use sqlite:///PATH or mysql+pymysql://USER:PASSWORD@HOST:PORT/DB"
            )
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ConfigurationError(f"cannot use database URL {mask_url(url)}: {exc}") from exc
    return engine


def _sqlite_engine(
    url: str,
    database: str | None,
    sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
    **options: Any,
) -> Engine:
    in_memory = not database or database == ":memory:"
    if in_memory:
        # One shared connection, or every checkout would see its own empty database.
        options.setdefault("poolclass", _ExclusiveStaticPool)
    engine = create_engine(
        url,
        connect_args={"timeout": sqlite_busy_timeout_ms / 1000, "check_same_thread": False},
        **options,
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below (the pysqlite recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(sqlite_busy_timeout_ms)}")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


class _ExclusiveStaticPool(StaticPool):
    """StaticPool's one connection, held by one checkout at a time.

    An in-memory database lives in one connection, so every thread must share it; without
    this, two threads would interleave statements of two transactions on it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = threading.RLock()

    def _do_get(self) -> Any:
        self._guard.acquire()
        try:
            return super()._do_get()
        except BaseException:
            self._guard.release()
            raise

    def _do_return_conn(self, record: Any) -> None:
        try:
            super()._do_return_conn(record)
        finally:
            self._guard.release()


MYSQL_TIMEOUTS = {
    "connect_timeout": 10,
    # A network that silently stops answering must fail the call (so the SDK can spool)
    # instead of hanging it; longer than InnoDB's default 50 s lock wait.
    "read_timeout": 75,
    "write_timeout": 75,
}


def _mysql_engine(url: str, **options: Any) -> Engine:
    connect_args: dict[str, Any] = {
        "charset": "utf8mb4",
        "init_command": "SET time_zone = '+00:00'",
    }
    # SQLAlchemy lets connect_args override the URL's query, so a timeout the URL sets
    # (``?read_timeout=5``) is left to the URL rather than replaced by the default.
    query = make_url(url).query
    for name in MYSQL_TIMEOUTS.keys() & query.keys():
        value = query[name]
        if not (isinstance(value, str) and value.isdigit() and int(value) > 0):
            raise ConfigurationError(
                f"invalid database URL {mask_url(url)}: {name} must be a whole number of "
                f"seconds above 0, got {value!r}"
            )
    connect_args.update({k: v for k, v in MYSQL_TIMEOUTS.items() if k not in query})
    options.setdefault("pool_pre_ping", True)
    options.setdefault("pool_recycle", 3600)
    return create_engine(
        url,
        connect_args=connect_args,
        isolation_level="READ COMMITTED",
        **options,
    )


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def exact_text(column: ColumnElement[str], bind: Engine | Connection) -> ColumnElement[Any]:
    """``column`` as compared (or grouped) byte for byte. MySQL's collations take "Stations"
    for "stations" (utf8mb4's default) and "stations " for "stations" (PAD SPACE, which even
    utf8mb4_bin has); a binary string compares neither. SQLite compares bytes already."""
    return column if is_sqlite(bind) else cast(column, LargeBinary)


def same_text(
    column: ColumnElement[str], value: str, bind: Engine | Connection
) -> ColumnElement[bool]:
    """``column = value``, exactly, on every backend: names that differ by case or by a trailing
    space are different names."""
    if is_sqlite(bind):
        return column == value
    # The collation's comparison keeps the column's index in use; the binary one makes it exact.
    return and_(column == value, exact_text(column, bind) == value.encode("utf-8"))


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the write lock from its first statement on SQLite.

    On MySQL the caller locks ``ledger_head`` with ``SELECT … FOR UPDATE`` instead.
    """
    with engine.connect() as conn:
        if is_sqlite(engine):
            conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        with conn.begin():
            yield conn


@contextmanager
def translate_errors(url: str, action: str) -> Iterator[None]:
    """Turn driver errors into :class:`StorageError`, with passwords masked, ``from`` the cause."""
    try:
        yield
    except SQLAlchemyError as exc:
        message = _describe(url, action, exc)
        if isinstance(exc, DBAPIError) and _is_missing_table(exc):
            raise SchemaError(f"{message}; the schema is missing: run `ledger migrate`") from exc
        raise StorageError(message) from exc
    except OSError as exc:  # e.g. a TLS file named in the URL that does not exist
        raise StorageError(mask_secrets(f"{action} failed on {mask_url(url)}: {exc}")) from exc
    except TypeError as exc:
        # A URL query parameter the driver does not know surfaces as a TypeError at connect.
        if "keyword argument" not in str(exc):
            raise
        raise ConfigurationError(
            f"{action} failed on {mask_url(url)}: the driver refused an option ({exc})"
        ) from exc


def _is_missing_table(exc: DBAPIError) -> bool:
    text = str(exc.orig)
    # SQLite: "no such table: x"; MySQL/MariaDB: error 1146 "Table 'db.x' doesn't exist".
    return "no such table" in text or text.startswith("(1146,")


def _describe(url: str, action: str, exc: SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None)
    detail = str(original) if original is not None else str(exc).split("\n")[0]
    message = mask_secrets(f"{action} failed on {mask_url(url)}: {detail}")
    try:
        parsed = make_url(url)
        password = parsed.password or parsed.query.get("password") or parsed.query.get("passwd")
    except (ArgumentError, ValueError):
        password = None
    # Drivers do not normally echo passwords, but if one does, hide it; very short passwords
    # are left alone, replacing them would garble the message without hiding anything.
    if password and len(str(password)) >= 4:
        message = message.replace(str(password), "***")
    return message


# MySQL/MariaDB errors that refuse a value (too long, out of range, invalid for its column or
# a CHECK): the same statement fails the same way on every retry.
_REFUSED_VALUE_CODES = frozenset(
    {
        1048,  # column cannot be null
        1264,  # out of range
        1265,  # data truncated
        1292,  # incorrect datetime (or other) value
        1366,  # incorrect string value
        1406,  # data too long
        1690,  # value out of range
        3140,  # invalid JSON text (MySQL)
        4025,  # CHECK constraint failed (MariaDB: json_valid)
    }
)


def is_refused_value(error: BaseException) -> bool:
    """Whether the database refused a value written (a fact of the data, so retrying cannot
    help), as opposed to failing as an environment (connection lost, lock wait, outage).

    Accepts a driver error, SQLAlchemy's wrapper of it, or a :class:`StorageError` raised from
    one.
    """
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, DBAPIError):
        cause = cause.__cause__
    if cause is None:
        return False
    if isinstance(cause, DataError | IntegrityError):
        return True
    args: tuple[Any, ...] = tuple(getattr(cause.orig, "args", ()))
    return bool(args) and args[0] in _REFUSED_VALUE_CODES
