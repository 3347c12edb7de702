"""The MySQL/MariaDB engine (production): PyMySQL, utf8mb4, every session in UTC, READ
COMMITTED so a tailing reader always sees the latest committed positions; the driver's
timeouts, the idle-transaction bound that frees the head lock of a writer that vanished, the
server settings read as a connection opens, and the pool hooks that spare the append a round
trip (no reset after a known COMMIT, a ping only after idling).
"""

from __future__ import annotations

import configparser
import logging
import ssl
import time
from contextlib import suppress
from typing import Any

import pymysql
import pymysql.connections
from pymysql.constants import CLIENT
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.pool import PoolResetState

from ledger.batch_checks import MIN_SERVER_PACKET_BYTES
from ledger.dialects import (
    DEFAULT_IDLE_TRANSACTION_TIMEOUT_S,
    IDLE_TIMEOUT_INFO,
    SERVER_SETTINGS_QUERY,
    logs_statements,
)
from ledger.driver import COMMITTED_INFO, GALERA_INFO
from ledger.driver_errors import BINLOG_FORMAT_REMEDY, note_packet_limit
from ledger.errors import ConfigurationError, UnusableUrlError
from ledger.text import clip
from ledger.urls import mask_secrets, mask_url, tcp_port_problem

log = logging.getLogger("ledger.database")  # the engines' log: operators filter on the one name


def mysql_engine(url: str, parsed: URL, **engine_options: Any) -> Engine:
    """The engine of a ``mysql+pymysql://`` URL (see
    :func:`ledger.database.create_ledger_engine`): the URL's mistakes refused first."""
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
    return _mysql_engine(url, **engine_options)


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
# default) or a metadata lock (lock_wait_timeout, a day by default) before the server answers
# 1205: the URL query parameter, ours like the one above.
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
        # Set while connecting, with the time zone: no round trip of its own. Both waits: a
        # row lock's (InnoDB's) and a metadata lock's (LOCK TABLES, FLUSH TABLES WITH READ
        # LOCK, DDL queued on a table), which is otherwise the server's lock_wait_timeout, a
        # day by default, cut only by the driver's read timeout as a lost connection.
        connect_args["init_command"] += (
            f", innodb_lock_wait_timeout = {lock_wait}, lock_wait_timeout = {lock_wait}"
        )
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


class _Connection(pymysql.connections.Connection):
    """PyMySQL's connection, with the TLS context of its PREFERRED mode (a URL that names no
    TLS option: TLS if the server offers it, no certificate checked) made once a process
    instead of once a connection. PyMySQL 2.2 builds that context for every connection, and
    building it loads the system's CA certificates: 24 ms of CPU a connection, for a context
    that verifies nothing and is the same every time (an ``SSLContext`` is made to be shared
    by many sockets and threads). A URL naming a TLS option (``?ssl_ca=``, ...) gets the
    driver's own context as before."""

    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        create = super()._create_ssl_ctx  # type: ignore[misc]  # private: not in the stubs
        if sslp != {}:  # the URL names a TLS option: the driver's context, made for it
            return create(sslp)  # type: ignore[no-any-return]
        global _preferred_tls
        if _preferred_tls is None:
            # Two threads may both make one here: each is the driver's same context, and the
            # one kept is as good as the other (no lock a fork could leave held).
            _preferred_tls = create({})
        return _preferred_tls


_preferred_tls: ssl.SSLContext | None = None


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
            connection = _Connection(*cargs, **cparams)
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
