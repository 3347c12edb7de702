"""Engines for the two supported databases (driver errors are translated in
:mod:`ledger.driver_errors`).

* SQLite (embedded default): WAL, a busy timeout, ``synchronous=FULL`` (an acknowledged append
  survives a power cut), and transactions begun by us so that appends can take the write lock
  up front with ``BEGIN IMMEDIATE``: concurrent writers queue instead of failing with
  "database is locked" half-way through.
* MySQL/MariaDB (production): PyMySQL, utf8mb4, every session in UTC, READ COMMITTED so a
  tailing reader always sees the latest committed positions.
"""

from __future__ import annotations

import configparser
import logging
import os
import threading
import time
import warnings
import weakref
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pymysql
from alembic.runtime.migration import MigrationContext
from pymysql.constants import CLIENT
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DisconnectionError,
    InvalidatePoolError,
    NoSuchModuleError,
    SAWarning,
)
from sqlalchemy.pool import PoolResetState, StaticPool

from ledger.batch_checks import MIN_SERVER_PACKET_BYTES
from ledger.dialects import (
    DEFAULT_IDLE_TRANSACTION_TIMEOUT_S,
    IDLE_TIMEOUT_INFO,
    SERVER_SETTINGS_QUERY,
    SQLITE_BEGIN_OPTION,
    causal_reads,
    is_mysql_backend,
    logs_statements,
)
from ledger.driver import COMMITTED_INFO, GALERA_INFO, DriverCursor
from ledger.driver_errors import BINLOG_FORMAT_REMEDY, note_packet_limit, translate_errors
from ledger.errors import (
    AccessDeniedError,
    ConfigurationError,
    DatabaseFileChangedError,
    DatabaseNotFoundError,
    SchemaError,
    UnusableUrlError,
)
from ledger.schema import SCHEMA_REVISION
from ledger.text import clip, visible
from ledger.urls import (
    IN_MEMORY_HINT,
    is_in_memory_sqlite,
    mask_secrets,
    mask_url,
    migrate_hint,
    path_state,
    sqlite_file_of,
    tcp_port_problem,
    unparseable_url_message,
)

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
_SQLITE_BEGIN = {mode: f"BEGIN {mode}" for mode in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")}


def create_ledger_engine(url: str, *, create: bool = True, **engine_options: Any) -> Engine:
    """An engine configured for the ledger; raises :class:`ConfigurationError` on a bad URL.

    ``create=False``: a SQLite file that does not exist is refused
    (:class:`DatabaseNotFoundError`, naming its absolute path) instead of being created empty
    by the first connection, as SQLite would; a typo in a read command's URL must not leave a
    file behind. MySQL never creates a database on connect.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # The parser's message quotes pieces of the URL ("invalid literal for int(): 'Secr'"
        # when an unencoded "@" and ":" turn the password's tail into a port): neither repeat
        # it nor chain it, or a logged traceback would print it.
        raise ConfigurationError(unparseable_url_message(url)) from None
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
            if parsed.host:  # sqlite://ledger.db: one slash short, a file name read as a host
                path = "/".join(part for part in (parsed.host, parsed.database) if part)
                meant = f"sqlite:///{path}" + (f" or sqlite:////{path}" if "/" in path else "")
                raise ConfigurationError(
                    f"invalid database URL {mask_url(url)}: a SQLite URL has no host: write "
                    f"{meant} (three slashes before a relative path, four before an absolute one)"
                )
            _refuse_ignored_sqlite_options(url, parsed)
            if not create:
                _refuse_missingsqlite_file_of(url, parsed)
            engine = _sqlite_engine(url, parsed.database, **engine_options)
            opened_path = sqlite_file_of(parsed)
            if opened_path is not None:
                _SQLITE_FILES[engine] = opened = SqliteFile(opened_path, url)
                opened.note_now()
                event.listen(engine, "do_connect", opened.before_connect)
                event.listen(engine, "connect", opened.note)
        elif is_mysql_backend(backend):
            if parsed.get_driver_name() not in ("pymysql",):
                raise ConfigurationError(
                    f"unsupported MySQL driver in {mask_url(url)!r}: use mysql+pymysql://"
                )
            if not (parsed.database or "").strip():
                # The server would answer every statement with "(1046, 'No database selected')".
                example = mask_url(parsed.set(database="ledger").render_as_string(False))
                raise ConfigurationError(
                    f"invalid database URL {mask_url(url)}: it names no database; end it with "
                    f"/DATABASE, e.g. {example}"
                )
            port_problem = None if parsed.port is None else tcp_port_problem(parsed.port)
            if port_problem:
                # The driver would try it anyway: "Connection refused", exit 3, blaming the
                # network for a typo in the URL.
                raise ConfigurationError(f"invalid database URL {mask_url(url)}: {port_problem}")
            engine_options.pop("sqlite_busy_timeout_ms", None)
            engine = _mysql_engine(url, **engine_options)
        else:
            raise ConfigurationError(
                f"unsupported database {backend!r} in {mask_url(url)!r}: "
                "use sqlite:///PATH or mysql+pymysql://USER:PASSWORD@HOST:PORT/DB"
            )
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ConfigurationError(f"cannot use database URL {mask_url(url)}: {exc}") from exc
    if not isinstance(engine.pool, StaticPool):  # an in-memory database is the process's own
        # First, before any other checkout hook: the idle ping is a round trip on the socket.
        event.listen(engine, "connect", _note_process, insert=True)
        event.listen(engine, "checkout", _refuse_another_process, insert=True)
    return engine


# The process that opened a pooled connection (``record.info``).
_OPENED_BY = "ledger_opened_by_pid"


def _note_process(_dbapi_connection: Any, record: Any) -> None:
    record.info[_OPENED_BY] = os.getpid()


def _refuse_another_process(_dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """A forked child (``multiprocessing``'s fork, ``os.fork``) inherits the parent's pool:
    its checkouts handed it the parent's connections, one socket and one server session for
    two processes. Their statements and replies interleaved: a child read another's
    RunStarted reply and recorded its run's events into that run, others failed with
    ValueErrors from the garbled protocol (SQLAlchemy's recipe for pools across ``fork``).
    Such a connection is dropped, not closed (closing would end the parent's session), and
    the pool opens one of the child's own in its place."""
    opened_by = record.info.get(_OPENED_BY)
    if opened_by is not None and opened_by != os.getpid():
        record.dbapi_connection = proxy.dbapi_connection = None
        raise DisconnectionError(f"a connection of process {opened_by}, inherited by fork")


class SqliteFile:
    """The file a SQLite engine opens, known by the (``st_dev``, ``st_ino``) of its path when
    the engine is made (or, when nothing is there yet, at the first connection, which creates
    it): a file moved, deleted or replaced under a running process is told by one ``stat`` of
    the path (a microsecond), while its connections go on writing the old file, which nothing
    else reads and which an unlink makes vanish when they close.

    Once the file is known, no connection opens another: a new one (the first of a server
    started on the file, or one more in the pool) is refused with
    :class:`DatabaseFileChangedError` when the file changed, and opens it ``mode=rw``, so that
    SQLite never makes an empty file in its place (a server started on a ledger whose file was
    moved away made one, told the operator to migrate it, and appended to it)."""

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.url = url
        self.opened: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def note_now(self) -> None:
        """As the engine is made: the file at the path, if there is one, is the one."""
        with suppress(OSError):  # not there: the first connection creates it (create=True)
            found = os.stat(self.path)
            self.opened = (found.st_dev, found.st_ino)

    def note(self, _dbapi_connection: Any, _record: Any) -> None:
        """The engine's ``connect`` listener: the first connection's file is the one, when
        there was none as the engine was made."""
        if self.opened is not None:
            return
        with suppress(OSError), self._lock:  # not there: the connection fails on its own
            if self.opened is None:
                found = os.stat(self.path)
                self.opened = (found.st_dev, found.st_ino)

    def before_connect(
        self, _dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]
    ) -> None:
        """The engine's ``do_connect`` listener: once the file is known, a new connection
        opens that file or none (see the class)."""
        if self.opened is None:
            return
        problem = self.problem()
        if problem is not None:
            raise file_changed_error(self.path, problem, self.url)
        if not cparams.get("uri"):  # a file: URI's mode is the caller's: not overridden
            # Not created if it vanishes between the stat and the open: "unable to open".
            cargs[0] = f"file:{quote(str(self.path))}?mode=rw"
            cparams["uri"] = True

    def problem(self) -> str | None:
        """What became of the file opened, or None while it is still the file at the path (or
        none was there yet to open)."""
        if self.opened is None:
            return None
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            return "is no longer there (moved or deleted)"
        except OSError as exc:
            return f"cannot be looked at ({exc.strerror or type(exc).__name__})"
        if (found.st_dev, found.st_ino) != self.opened:
            return "is another file now (replaced, or moved and another put in its place)"
        return None


def file_changed_error(path: Path, problem: str, url: str) -> DatabaseFileChangedError:
    """The error for a ledger's SQLite file that ``problem`` (:meth:`SqliteFile.problem`)."""
    return DatabaseFileChangedError(
        f"the SQLite database {path} ({mask_url(url)}) {problem} since this process opened "
        "it: its connections would write a file no other process reads, so nothing is "
        "written; restart the process to open the file now at that path (or put the file "
        "back)"
    )


# The file each SQLite engine opened (an engine is not given attributes of ours).
_SQLITE_FILES: weakref.WeakKeyDictionary[Engine, SqliteFile] = weakref.WeakKeyDictionary()


def sqlite_file_changed(engine: Engine) -> tuple[Path, str] | None:
    """For an engine on a SQLite file that is no longer the file at its path: the path and
    what became of the file (:meth:`SqliteFile.problem`); else None (MySQL, memory too)."""
    opened = _SQLITE_FILES.get(engine)
    problem = None if opened is None else opened.problem()
    return None if opened is None or problem is None else (opened.path, problem)


def _refuse_ignored_sqlite_options(url: str, parsed: URL) -> None:
    """SQLAlchemy ignores a SQLite URL's query options it does not know (``?mode=ro``) unless
    the URL is a URI, with a Python warning on stderr: the user asked for something (read-only)
    that would silently not happen. Refused instead, with the URI form that does it."""
    _refuse_a_dropped_query(url, parsed)
    if not parsed.query:
        # Nothing to ignore; and catch_warnings swaps process-wide state, which another
        # thread's warnings would cross meanwhile: only done when there are options.
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SAWarning)
        parsed.get_dialect()().create_connect_args(parsed)
    if any(issubclass(warning.category, SAWarning) for warning in caught):
        names = ", ".join(sorted(parsed.query))
        raise ConfigurationError(
            f"invalid database URL {mask_url(url)}: SQLite takes options ({names}) only in a "
            "URI, e.g. sqlite:///file:ledger.db?mode=ro&uri=true"
        )


def _refuse_a_dropped_query(url: str, parsed: URL) -> None:
    """A '?' in a SQLite URL with no NAME=VALUE after it (``sqlite:///runs?v2.db``): the
    parser drops what follows as an empty query, and SQLite would open (``migrate``, ``append``
    and ``serve``: create) ``runs``, another file than the one named, without a word. So is a
    part with no '=' among options (``sqlite:///runs?v2.db&timeout=5``): it alone is dropped."""
    if "?" not in url:
        return
    parts = url.split("?", 1)[1].split("&")
    bare = [part for part in parts if part and "=" not in part]
    if not bare and parsed.query:
        return
    opened = sqlite_file_of(parsed)
    what = (
        f"{visible(bare[0])} among them is no NAME=VALUE"
        if parsed.query
        else "what follows it here is none (NAME=VALUE)"
    )
    raise ConfigurationError(
        f"invalid database URL {mask_url(url)}: a '?' starts a URL's options, and {what}, so "
        f"it would be dropped and {opened} opened instead; write a '?' in a file name as %3F"
    )


def _refuse_missingsqlite_file_of(url: str, parsed: URL) -> None:
    path = sqlite_file_of(parsed)
    state = None if path is None else path_state(path)
    if path is None:
        return
    # The path as given, made visible: a newline in a file name would start a line of the
    # message ("Error: ...") of its own.
    shown, folder_shown = visible(str(path)), visible(str(path.parent))
    if state == "file":
        if _holds_nothing(path):
            # SQLite opens an empty file as a new database: a read made it a 4096-byte WAL
            # database (and then said the schema is missing), as a missing file is not.
            raise DatabaseNotFoundError(
                f"no SQLite database at {shown} ({mask_url(url)}): the file is empty (0 bytes), "
                f"and this command does not make it a ledger. Check the path, or "
                f"{migrate_hint(url)} to make it a new ledger"
            )
        return
    if state == "denied":
        raise AccessDeniedError(
            f"cannot open the SQLite database at {shown} ({mask_url(url)}): this user may not "
            "reach it (permission denied)"
        )
    if state == "folder":
        raise DatabaseNotFoundError(
            f"no SQLite database at {shown} ({mask_url(url)}): it is a folder. Check the path"
        )
    folder = path.parent
    folder_state = path_state(folder)
    if folder_state in ("missing", "file"):
        # `ledger migrate` creates the file, not its folder: advising it would only lead to
        # its own refusal.
        why = (
            f"the folder {folder_shown} does not exist"
            if folder_state == "missing"
            else f"{folder_shown} is a file, not a folder"
        )
        raise DatabaseNotFoundError(
            f"no SQLite database at {shown} ({mask_url(url)}): {why}. Check the path"
        )
    # The command that creates it names this database: a bare `ledger migrate` made ./ledger.db
    # instead when the URL came from --db or a config file (`ledger api --config`).
    raise DatabaseNotFoundError(
        f"no SQLite database at {shown} ({mask_url(url)}): the file does not exist, and this "
        f"command creates none. Check the path, or {migrate_hint(url)} to create a new ledger"
    )


def _holds_nothing(path: Path) -> bool:
    """``path`` is 0 bytes long and no write-ahead log beside it holds a page either."""
    wal = path.with_name(f"{path.name}-wal")
    try:
        return path.stat().st_size == 0 and (not wal.exists() or wal.stat().st_size == 0)
    except OSError:  # gone or hidden since path_state looked: SQLite's open says what it is
        return False


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
        options.pop("pool_timeout", None)  # a StaticPool has no checkout wait to bound
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
        # Straight to the driver: it runs before every append (see ledger.driver).
        cursor = DriverCursor.on(conn)
        try:
            cursor.execute(_SQLITE_BEGIN[mode])
        finally:
            cursor.close()

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
# The longest timeout a URL may set: a year, MariaDB's own maximum for its idle timeouts (and
# far below what a socket timeout can hold).
MAX_TIMEOUT_S = 31_536_000

# How long the server lets a session sit idle inside a transaction before it rolls the
# transaction back and closes the session. A writer that vanished mid-append with its socket
# still open (a lost machine, a NAT that keeps the flow) otherwise holds the ledger_head lock,
# and stops every other append, for the server's wait_timeout: 8 hours by default. Below
# InnoDB's 50 s lock wait, so the appends queued behind such a writer get the lock instead of
# failing. A legit transaction is never idle that long: its statements run back to back.
IDLE_TRANSACTION_TIMEOUT = "idle_transaction_timeout"  # the URL query parameter
# How long a statement waits for a row lock (InnoDB's innodb_lock_wait_timeout, 50 s by
# default) before the server answers 1205: the URL query parameter, ours like the one above.
LOCK_WAIT_TIMEOUT = "lock_wait_timeout"
# MariaDB 10.3+: one timeout for transactions that wrote, one for those that did not. Both are
# needed: the head lock (SELECT … FOR UPDATE) leaves a transaction "read-only" until it inserts.
MARIADB_IDLE_VARIABLES = ("idle_write_transaction_timeout", "idle_readonly_transaction_timeout")
ER_UNKNOWN_SYSTEM_VARIABLE = 1193


def _timeout_seconds(url: str, name: str, value: object) -> int:
    # isascii: "²".isdigit() is true, and int() refuses it.
    if not (isinstance(value, str) and value.isascii() and value.isdigit()):
        value_shown = value if isinstance(value, str) else "given more than once"
        raise ConfigurationError(
            f"invalid database URL {mask_url(url)}: {name} must be a whole number of "
            f"seconds above 0, got {value_shown!r}"
        )
    seconds = int(value)
    if not 0 < seconds <= MAX_TIMEOUT_S:
        raise ConfigurationError(
            f"invalid database URL {mask_url(url)}: {name} must be a whole number of "
            f"seconds above 0 and at most {MAX_TIMEOUT_S} (a year), got {value!r}"
        )
    return seconds


def _mysql_engine(url: str, **options: Any) -> Engine:
    connect_args: dict[str, Any] = {
        "charset": "utf8mb4",
        "init_command": "SET time_zone = '+00:00'",
    }
    # SQLAlchemy lets connect_args override the URL's query, so a timeout the URL sets
    # (``?read_timeout=5``) is left to the URL rather than replaced by the default.
    parsed = make_url(url)
    query = parsed.query
    for name in MYSQL_TIMEOUTS.keys() & query.keys():
        _timeout_seconds(url, name, query[name])
    connect_args.update({k: v for k, v in MYSQL_TIMEOUTS.items() if k not in query})
    idle = DEFAULT_IDLE_TRANSACTION_TIMEOUT_S
    if IDLE_TRANSACTION_TIMEOUT in query:
        idle = _timeout_seconds(url, IDLE_TRANSACTION_TIMEOUT, query[IDLE_TRANSACTION_TIMEOUT])
        # Ours, not PyMySQL's: it would refuse an unknown keyword.
        parsed = parsed.difference_update_query([IDLE_TRANSACTION_TIMEOUT])
    if LOCK_WAIT_TIMEOUT in query:
        lock_wait = _timeout_seconds(url, LOCK_WAIT_TIMEOUT, query[LOCK_WAIT_TIMEOUT])
        # Set while connecting, with the time zone: no round trip of its own.
        connect_args["init_command"] += f", innodb_lock_wait_timeout = {lock_wait}"
        parsed = parsed.difference_update_query([LOCK_WAIT_TIMEOUT])
    # Instead of SQLAlchemy's pre-ping of every checkout (a round trip before every append),
    # _PingWhenIdle pings a connection only when it has sat in the pool for a while.
    options.setdefault("pool_pre_ping", False)
    options.setdefault("pool_recycle", 3600)
    # The pool's own reset sends a ROLLBACK whenever a connection comes back, a round trip
    # after every committed append; _end_open_transaction skips it after a known COMMIT.
    options.setdefault("pool_reset_on_return", None)
    engine = create_engine(
        parsed,
        connect_args=connect_args,
        isolation_level="READ COMMITTED",
        **options,
    )
    event.listen(engine, "do_connect", _allow_multi_statements)
    event.listen(engine, "do_connect", _OptionsRefused(url))
    event.listen(engine, "connect", _IdleBound(idle))
    event.listen(engine, "connect", _ServerSettings(url))
    event.listen(engine, "reset", _end_open_transaction)
    if not options["pool_pre_ping"]:
        pinger = _PingWhenIdle()
        event.listen(engine, "checkin", pinger.checkin)
        event.listen(engine, "checkout", pinger.checkout)
    return engine


# SET SESSION binlog_format needs BINLOG ADMIN (MariaDB 10.5.2+) or SUPER: without it, 1227.
ER_SPECIFIC_ACCESS_DENIED = 1227


class _ServerSettings:
    """The "connect" hook that reads, in one round trip, what the ledger must know of the
    server (:data:`ledger.dialects.SERVER_SETTINGS_QUERY`):

    * whether it is a node of a Galera cluster (:data:`ledger.driver.GALERA_INFO`): the append
      sends it one statement per round trip (``DriverCursor.together_is_safe``);
    * whether it logs statements (``binlog_format=STATEMENT`` with the binary log on): InnoDB
      refuses that for READ COMMITTED transactions (1665), so the session logs rows instead,
      when its user may set that (BINLOG ADMIN or SUPER); otherwise its writes fail, naming
      the setting, and ``ledger migrate`` refuses before any DDL;
    * its ``max_allowed_packet``, which a refused statement's 1153 does not say, noted for that
      message and warned about (once per server and database) when below what the ledger needs.

    Run as the connection opens, before any statement that could begin a transaction (the
    binlog format of a session cannot change inside one).
    """

    # What was logged already, and for which database: once per process, not per engine.
    told: set[tuple[str, str]] = set()

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(SERVER_SETTINGS_QUERY)
            settings = {str(name).lower(): str(value) for name, value in cursor.fetchall()}
            record.info[GALERA_INFO] = settings.get("wsrep_on", "").upper() == "ON"
            self._check_packet(settings.get("max_allowed_packet", ""))
            if logs_statements(settings):
                try:
                    cursor.execute("SET SESSION binlog_format = 'ROW'")
                except pymysql.err.MySQLError as exc:
                    if not exc.args or exc.args[0] != ER_SPECIFIC_ACCESS_DENIED:
                        raise
                    # Reads still work; a write fails naming the setting.
                    self._once("binlog", logging.INFO, "%s", BINLOG_FORMAT_REMEDY)
        finally:
            cursor.close()

    def _check_packet(self, value: str) -> None:
        if not value.isdigit():
            return
        note_packet_limit(self.url, int(value))
        if int(value) < MIN_SERVER_PACKET_BYTES:
            self._once(
                "packet",
                logging.WARNING,
                "the server's max_allowed_packet is %s bytes, below the %s run-ledger needs "
                '(max_allowed_packet=%dM; README: "MariaDB server settings"): a large event '
                "it accepts may be refused by the server",
                f"{int(value):,}",
                f"{MIN_SERVER_PACKET_BYTES:,}",
                MIN_SERVER_PACKET_BYTES // (1024 * 1024),
            )

    def _once(self, what: str, level: int, message: str, *args: object) -> None:
        # By server and database, not by URL: one process's engines differ in their timeouts.
        parsed = make_url(self.url)
        key = (what, f"{parsed.host}:{parsed.port}/{parsed.database}")
        if key not in self.told:
            self.told.add(key)
            log.log(level, message, *args)


def _allow_multi_statements(
    _dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]
) -> None:
    """Let the append send several statements in one round trip
    (:meth:`ledger.driver.DriverCursor.execute_together`). The flag widens what one
    ``execute`` can do, so the rule that makes it safe is kept everywhere: no SQL text is ever
    built from a value, values go to the driver as parameters."""
    cparams["client_flag"] = cparams.get("client_flag", 0) | CLIENT.MULTI_STATEMENTS


# Server errors that, while connecting, can only answer a setting the URL asked for: 1064 (an
# init_command that does not parse), 1115 (unknown character set), 1193 (unknown variable),
# 1231 (a value a variable cannot take: ?sql_mode=x).
_REFUSED_SETTINGS = frozenset({1064, 1115, 1193, 1231})


class _OptionsRefused:
    """The driver's connect, with what it raises for an option of the URL's query it cannot use
    (``?port=abc``, ``?ssl=1``, an unreadable ``read_default_file``: a ValueError, an
    AttributeError, a configparser error, rather than one of its own errors) refused as the
    URL's mistake instead of escaping as a traceback. Not chained, and an option file's error
    not quoted: it quotes the file's line, password and all."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(
        self, dialect: Any, _record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]
    ) -> Any:
        connection = None
        try:
            if cparams.get("defer_connect"):
                raise ValueError("defer_connect leaves the connection unopened")
            connection = dialect.loaded_dbapi.connect(*cargs, **cparams)
            connection.cursor().close()  # ?cursorclass=x fails only here
            return connection
        except pymysql.err.Error as exc:
            if not exc.args or exc.args[0] not in _REFUSED_SETTINGS:
                if connection is not None:  # opened, then failed: not left to the collector
                    with suppress(pymysql.err.Error):
                        connection.close()
                raise  # the database's answer, the network: translate_errors says
            # Only the URL's sql_mode, init_command or charset are sent while connecting.
            detail = f"the server refused a setting: {clip(mask_secrets(str(exc)), 200)}"
        except OSError as exc:
            # The driver wraps the network's errors (2003); a bare one comes from reading a
            # file the URL names before connecting: ?ssl_ca=, ?ssl_cert=, ?ssl_key=.
            detail = f"a TLS file it names: {clip(mask_secrets(str(exc)), 200)}"
        except configparser.Error:
            detail = "read_default_file names a file that is not an option file it can read"
        except Exception as exc:  # whatever the driver raises for an option it cannot use
            detail = clip(mask_secrets(f"{type(exc).__name__}: {exc}"), 200)
        if connection is not None:
            connection.close()
        raise UnusableUrlError(
            f"cannot connect with {mask_url(self.url)}: the driver refused the URL's options "
            f"({detail})"
        ) from None


def _end_open_transaction(dbapi_connection: Any, record: Any, state: PoolResetState) -> None:
    """The pool's reset, without its round trip after a write transaction that committed:
    :func:`ledger.dialects.write_transaction` marks the connection when its COMMIT succeeded,
    and nothing runs between that and the return to the pool. Anything else is rolled back,
    as the pool would."""
    committed = record.info.pop(COMMITTED_INFO, False)
    if state.terminate_only or state.transaction_was_reset or committed:
        return
    dbapi_connection.rollback()


# A pooled connection used less than this long ago is handed out without a ping first.
PING_AFTER_IDLE_S = 1.0
_LAST_USED = "ledger_last_used"


# Not time.monotonic: freezegun stops that one, and a frozen test would never ping. The boot
# clock keeps counting while the machine sleeps (a laptop or VM suspended for hours right after
# a checkin must still ping), where Linux has one.
_IDLE_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def _monotonic() -> float:
    return time.clock_gettime(_IDLE_CLOCK)


class _PingWhenIdle:
    """The pool's pessimistic disconnect check, for connections that sat idle.

    A connection that was used a moment ago is almost certainly alive, and pinging it costs a
    round trip per append (one in four). One idle for :data:`PING_AFTER_IDLE_S` or more is
    pinged as SQLAlchemy's pre-ping would: if the ping fails, every pooled connection older
    than now is discarded and a fresh one is handed out. A connection that died in the short
    window is found by the first statement: it is invalidated, and :meth:`Ledger.append`
    retries once on a fresh one when nothing was written yet.
    """

    def checkin(self, dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None:
            record.info[_LAST_USED] = _monotonic()

    def checkout(self, dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        last_used = record.info.get(_LAST_USED)
        if last_used is None or _monotonic() - last_used < PING_AFTER_IDLE_S:
            return  # fresh from connect, or used a moment ago
        try:
            dbapi_connection.ping(reconnect=False)
        except pymysql.err.Error as exc:
            raise InvalidatePoolError(f"the pooled connection is gone ({exc})") from exc


class _IdleBound:
    """The "connect" hook that bounds how long an abandoned session can hold locks.

    MariaDB (10.3+) rolls back a transaction idle for longer than its idle-transaction
    timeouts and closes the session; a stricter value the server already has is kept. MySQL
    has no such variable (error 1193): there the session's ``wait_timeout`` takes the bound
    instead, which closes any session idle that long, in a transaction or not; the pool
    pings a connection that sat idle before handing it out and replaces a closed one.
    """

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self.fallback = False  # set once the server turned out not to know the variables

    def __call__(self, dbapi_connection: Any, record: Any) -> None:
        record.info[IDLE_TIMEOUT_INFO] = self.seconds
        cursor = dbapi_connection.cursor()
        try:
            if not self.fallback:
                try:
                    cursor.execute(self._mariadb_statement())
                    return
                except pymysql.err.MySQLError as exc:
                    if not exc.args or exc.args[0] != ER_UNKNOWN_SYSTEM_VARIABLE:
                        raise
                    self.fallback = True
                    log.info(
                        "the server has no idle transaction timeout (%s); bounding idle "
                        "sessions with wait_timeout = %d s instead",
                        exc.args[1] if len(exc.args) > 1 else exc,
                        self.seconds,
                    )
            cursor.execute(
                f"SET SESSION wait_timeout = LEAST({self.seconds}, @@SESSION.wait_timeout)"
            )
        finally:
            cursor.close()

    def _mariadb_statement(self) -> str:
        # The session starts with the server's values: keep any that is stricter. A write or
        # read-only value of 0 falls back to the server's idle_transaction_timeout.
        def tighter(variable: str) -> str:
            server = (
                f"COALESCE(NULLIF(@@SESSION.{variable}, 0), "
                f"NULLIF(@@SESSION.idle_transaction_timeout, 0), {self.seconds})"
            )
            return f"{variable} = LEAST({self.seconds}, {server})"

        return "SET SESSION " + ", ".join(tighter(v) for v in MARIADB_IDLE_VARIABLES)


def current_revision(connection: Connection) -> str | None:
    """The Alembic revision the database is at (None: nothing migrated yet)."""
    return MigrationContext.configure(connection).get_current_revision()


def check_schema(engine: Engine, url: str) -> None:
    """Raise :class:`SchemaError` unless the database is at the revision this code needs
    (:data:`ledger.schema.SCHEMA_REVISION`)."""
    with (
        translate_errors(url, "schema check"),
        engine.connect() as connection,
        causal_reads(connection),
    ):
        current = current_revision(connection)
    if current != SCHEMA_REVISION:
        # Revisions are numbered (0004_schedule_claims): a higher number is a newer run-ledger's,
        # which this one cannot migrate down to.
        newer = current is not None and current[:4].isdigit() and current[:4] > SCHEMA_REVISION[:4]
        remedy = "upgrade run-ledger to read it" if newer else migrate_hint(url)
        if current is None and is_in_memory_sqlite(url):  # another process would not help
            remedy = f"{IN_MEMORY_HINT} (`ledger migrate` creates it)"
        raise SchemaError(
            f"database schema is at {current or 'nothing (empty database)'}, "
            f"this run-ledger needs {SCHEMA_REVISION}: {remedy}"
        )


def with_timeouts(url: str, seconds: int) -> str:
    """``url`` with every MySQL driver timeout (:data:`MYSQL_TIMEOUTS`) set to ``seconds``,
    and the lock wait (:data:`LOCK_WAIT_TIMEOUT`) a second shorter unless the URL sets a
    shorter one: a lock held elsewhere is then the server's answer (1205, "busy") before the
    driver gives up on the connection ("unreachable"). A SQLite URL as it is."""
    parsed = make_url(url)
    if not is_mysql_backend(parsed.get_backend_name()):
        return url
    timeouts = dict.fromkeys(MYSQL_TIMEOUTS, str(seconds))
    lock_wait = max(1, seconds - 1)
    given = parsed.query.get(LOCK_WAIT_TIMEOUT)
    if isinstance(given, str) and given.isascii() and given.isdigit():
        lock_wait = min(lock_wait, int(given)) or lock_wait
    timeouts[LOCK_WAIT_TIMEOUT] = str(lock_wait)
    return parsed.update_query_dict(timeouts).render_as_string(hide_password=False)
