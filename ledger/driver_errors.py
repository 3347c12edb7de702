"""What a driver error means, and the one place it becomes a :class:`ledger.StorageError`.

:func:`translate_errors` turns SQLAlchemy's and the drivers' errors into the ledger's tree, the
URL's password masked, with what the error number says: a database that is not there, the
environment (unreachable, access denied), a value the database refused. The predicates here
(:func:`database_unreachable`, :func:`database_busy`, :func:`is_transaction_conflict`,
:func:`is_broken_trigger_load`, :func:`is_refused_value`) are what callers that wait, retry or
isolate a row ask.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pymysql
import pymysql.converters
import pymysql.cursors
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from ledger.batch_checks import MIN_SERVER_PACKET_BYTES
from ledger.dialects import IMMUTABLE_MESSAGE, is_missing_table
from ledger.errors import (
    AccessDeniedError,
    ConstraintError,
    DatabaseNotFoundError,
    DatabaseUnreachableError,
    DiskError,
    SchemaError,
    ServerSettingError,
    StorageError,
)
from ledger.output_files import wrong_file_path
from ledger.text import visible
from ledger.urls import (
    IN_MEMORY_HINT,
    impossible_path,
    is_in_memory_sqlite,
    mask_secrets,
    mask_url,
    migrate_hint,
    path_state,
    sqlite_file_or_none,
)

log = logging.getLogger(__name__)


@contextmanager
def translate_errors(url: str, action: str) -> Iterator[None]:
    """Turn driver errors into :class:`StorageError`, with passwords masked, ``from`` the cause."""
    try:
        yield
    except SQLAlchemyError as exc:
        message = _describe(url, action, exc)
        if isinstance(exc, DBAPIError) and is_missing_table(str(exc.orig)):
            if is_in_memory_sqlite(url):  # migrating it in another process would not help
                raise SchemaError(
                    f"{message}; the schema is missing: {IN_MEMORY_HINT} (`ledger migrate` "
                    "creates it)"
                ) from exc
            raise SchemaError(f"{message}; the schema is missing: {migrate_hint(url)}") from exc
        if isinstance(exc, IntegrityError):
            raise ConstraintError(message) from exc
        kind = _storage_error(url, exc)
        raise kind(
            message
            + _sqlite_open_hint(url, exc, kind)
            + _unknown_database_hint(url, exc)
            + _server_setting_hint(url, exc)
        ) from exc
    except OSError as exc:  # e.g. a TLS file named in the URL that does not exist
        # A file this user may not open (the rebuild's lock beside a SQLite database, a TLS
        # key) is the environment's failure, as the database file itself is.
        kind = AccessDeniedError if isinstance(exc, PermissionError) else StorageError
        raise kind(mask_secrets(f"{action} failed on {mask_url(url)}: {exc}")) from exc


# MySQL client errors (2002 socket, 2003 TCP, 2005 unknown host, 2006 gone away, 2013 lost
# connection, ...), and the server refusing for now: too many connections, shutting down,
# the session killed, and a Galera node not ready for clients (1047 "WSREP has not yet
# prepared node for application use": while the cluster settles a new view, or a node is out
# of the primary component).
_SERVER_UNAVAILABLE = {1040, 1047, 1053, 1927}


def database_unreachable(error: BaseException) -> bool:
    """Whether a :class:`StorageError` means the MySQL server could not be reached or talked
    to (worth waiting for), rather than refused what was asked (credentials, a database that
    does not exist, SQL): the first kind may pass by itself, the second will not."""
    if isinstance(error, ServerSettingError):  # a lost connection after an oversized statement
        return False
    code = _mysql_error_code(_driver_error(error))
    return code is not None and (2000 <= code < 2100 or code in _SERVER_UNAVAILABLE)


# InnoDB's deadlock. On a Galera cluster 1213 is also how a certification conflict is
# reported: a transaction of another node committed first on a row this one wrote (every
# append writes ledger_head), at COMMIT or earlier (a brute-force abort). Either way the
# transaction was rolled back: nothing it wrote is committed. A lock wait timeout (1205) is not
# a conflict to retry: InnoDB rolls back only the statement (innodb_rollback_on_timeout=OFF),
# and it means a lock held for the whole innodb_lock_wait_timeout (50 s) by another session;
# waiting that long again would carry the caller past its own deadlines (the SDK's heartbeat
# join, the spool's lock, serve's grace period), so it is raised, as before.
CONFLICT_CODES = frozenset({1213})


def is_transaction_conflict(error: BaseException) -> bool:
    """Whether ``error`` is a deadlock or (on Galera) a certification conflict: the transaction
    lost to another one and was rolled back, and running it again may well succeed. Accepts a
    driver error, SQLAlchemy's wrapper, or an error raised from one."""
    cause = _driver_error(error)
    return (
        cause is not None
        and not cause.connection_invalidated
        and _mysql_error_code(cause) in CONFLICT_CODES
    )


ER_LOCK_WAIT_TIMEOUT = 1205
_SQLITE_LOCKED = ("database is locked", "database table is locked")


def lock_wait_exceeded(error: BaseException) -> bool:
    """Whether ``error`` is a lock held elsewhere for longer than this session waits for it
    (MySQL's 1205 after ``lock_wait_timeout``; SQLite's "database is locked" after its busy
    timeout): the database is up and busy, and only the statement failed."""
    cause = _driver_error(error)
    if cause is None:
        return False
    if _mysql_error_code(cause) == ER_LOCK_WAIT_TIMEOUT:
        return True
    return isinstance(cause, OperationalError) and any(
        text in str(cause.orig) for text in _SQLITE_LOCKED
    )


def pool_exhausted(error: BaseException) -> bool:
    """Whether ``error`` is (or was raised from) SQLAlchemy's pool timeout: every connection
    of the engine's pool stayed in use for as long as a caller waits for one. The database
    answered; this process was busy."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, PoolTimeoutError):
            return True
        cause = cause.__cause__
    return False


def database_busy(error: BaseException) -> bool:
    """Whether ``error`` says the database is up and busy: a lock held elsewhere past this
    session's wait (:func:`lock_wait_exceeded`), or no pooled connection free within the
    pool's wait (:func:`pool_exhausted`). Retrying later may well succeed; not an outage."""
    return lock_wait_exceeded(error) or pool_exhausted(error)


def row_lock_wait_timed_out(error: BaseException) -> bool:
    """Whether ``error`` is MySQL's 1205 alone: a statement waited ``innodb_lock_wait_timeout``
    for a row lock held by another session, which may be a session the server has yet to end
    (the idle bound). Not SQLite's busy timeout: there the holder is a live process."""
    cause = _driver_error(error)
    return cause is not None and _mysql_error_code(cause) == ER_LOCK_WAIT_TIMEOUT


def driver_gave_up_waiting(error: BaseException) -> bool:
    """Whether the driver gave up waiting on the server (PyMySQL's 2013 "Lost connection …
    (timed out)" after its ``read_timeout``, or 2006 after its ``write_timeout``): the server
    took longer than this caller waits (a metadata lock it queues behind, a frozen host), not
    a connection found dead, which a new one replaces at once. Waiting on a new connection
    would take the whole timeout again."""
    cause = _driver_error(error)
    original = None if cause is None else cause.orig
    return original is not None and isinstance(original.__context__, TimeoutError)


ER_TABLE_DEFINITION_CHANGING = 1684


def table_being_altered(error: BaseException) -> bool:
    """Whether ``error`` is MariaDB's 1684: a catalogue read (``DESCRIBE``) skipped a table
    whose definition a concurrent DDL statement is changing (on a Galera cluster, a rebuild's
    swap through another node): the table is there, mid-change."""
    cause = _driver_error(error)
    return cause is not None and _mysql_error_code(cause) == ER_TABLE_DEFINITION_CHANGING


ER_QUERY_INTERRUPTED = 1317


def interrupted_or_conflicting(error: BaseException) -> bool:
    """Whether a statement was interrupted (1317) or lost a conflict (1213). On Galera a
    replicated write whose lock a local statement holds aborts that statement (a brute-force
    abort), a FLUSH included: run again, it may well pass."""
    cause = _driver_error(error)
    code = None if cause is None else _mysql_error_code(cause)
    return code == ER_QUERY_INTERRUPTED or code in CONFLICT_CODES


ER_PARSE_ERROR = 1064
_BROKEN_TRIGGER = "has an error in its body"


def is_broken_trigger_load(error: BaseException) -> bool:
    """Whether a statement failed because the server's cached table object holds trigger
    definitions that did not load (1064 "… has an error in its body"): the stored
    definitions may well be intact (see :meth:`ledger.Ledger._reload_table_triggers`)."""
    cause = _driver_error(error)
    return (
        cause is not None
        and _mysql_error_code(cause) == ER_PARSE_ERROR
        and _BROKEN_TRIGGER in str(cause.orig)
    )


# What a MySQL/MariaDB error number says about the database itself.
_ACCESS_DENIED = frozenset(
    {
        1045,  # credentials refused
        1698,  # access denied for the user (MariaDB: an auth plugin such as unix_socket)
        1142,  # command denied on a table (a grant is missing)
        1143,  # column command denied
        1227,  # an operation needs a privilege the user lacks
    }
)
# 1044 is "access denied to database": MySQL answers it, rather than 1049, for a database that
# does not exist when the user may not see it, so it is read as a wrong name like 1049.
_NO_SUCH_DATABASE = frozenset({1044, 1046, 1049})  # denied, none selected, unknown
_SQLITE_CANNOT_OPEN = "unable to open database file"
_SQLITE_READ_ONLY = "attempt to write a readonly database"
_SQLITE_NOT_A_DATABASE = "file is not a database"
# SQLITE_FULL (a full disk, a quota) and SQLITE_IOERR (EFBIG past a file-size limit, EIO).
_SQLITE_DISK_FAILED = ("database or disk is full", "disk I/O error")


def is_access_denied(error: BaseException) -> bool:
    """Whether ``error`` is MySQL/MariaDB refusing this user something (a grant missing)."""
    return _mysql_error_code(_driver_error(error)) in _ACCESS_DENIED


def _storage_error(url: str, error: SQLAlchemyError) -> type[StorageError]:
    """Which :class:`StorageError` a driver error is: a database that is not there, one that
    cannot be reached, one that refused access, or any other failure."""
    cause = _driver_error(error)
    code = _mysql_error_code(cause)
    if code is not None:
        if packet_refused(url, error):
            return ServerSettingError
        if database_unreachable(error):
            return DatabaseUnreachableError
        if code in _ACCESS_DENIED:
            return AccessDeniedError
        if code in _NO_SUCH_DATABASE:
            return DatabaseNotFoundError
        if code in _SERVER_SETTINGS:
            return ServerSettingError
        return StorageError
    detail = str(cause.orig) if cause is not None else ""
    if _SQLITE_NOT_A_DATABASE in detail:  # a wrong path: some other file
        return DatabaseNotFoundError
    if isinstance(cause, OperationalError):
        if _SQLITE_READ_ONLY in detail:
            return AccessDeniedError
        if _SQLITE_CANNOT_OPEN in detail:
            return _sqlite_open_failure(url)
        if any(failure in detail for failure in _SQLITE_DISK_FAILED):
            return DiskError
    return StorageError


def _sqlite_open_failure(url: str) -> type[StorageError]:
    """SQLite says only "unable to open database file": a folder that does not exist is a
    wrong path; otherwise the file or its folder is not this user's to open."""
    path = sqlite_file_or_none(url)
    if path is None:
        return StorageError
    if wrong_file_path(path):
        return DatabaseNotFoundError
    return AccessDeniedError


def _sqlite_open_hint(url: str, error: SQLAlchemyError, kind: type[StorageError]) -> str:
    """What SQLite's "unable to open database file" does not say: which file, and why; and
    for "attempt to write a readonly database", how to read a copy this user may not write."""
    path = sqlite_file_or_none(url)
    detail = str(getattr(error, "orig", ""))
    if path is not None and _SQLITE_READ_ONLY in detail:
        # A ledger is in WAL mode: even a read writes the -shm index beside the file, so a
        # copy in a folder (or a file) this user may not write cannot be read as it is.
        return (
            f" ({path} or its folder is read-only to this user, and SQLite writes beside the "
            "file even to read it; to read a copy that nothing writes any more, open it "
            f"immutable: sqlite:///file:{path}?immutable=1&uri=true)"
        )
    if path is not None and kind is DiskError:
        return (
            f" (the disk holding {path} is full, or a file-size limit or quota was reached, or "
            "it failed: the transaction was rolled back; free space and run it again)"
        )
    if path is None or _SQLITE_CANNOT_OPEN not in detail:
        return ""
    impossible = impossible_path(path)
    if impossible is not None:
        return f" ({path}: no file can be there: {impossible})"
    if path_state(path) == "folder":
        return f" ({path} is a folder, not a database file)"
    if kind is DatabaseNotFoundError and path_state(path.parent) == "file":
        return f" ({path}: {path.parent} is a file, not a folder)"
    if kind is DatabaseNotFoundError:
        return f" ({path}: the folder {path.parent} does not exist)"
    return f" ({path}: this user may not open or create it)"


def _unknown_database_hint(url: str, error: SQLAlchemyError) -> str:
    """What MySQL's "Unknown database" (1049) does not say: run-ledger makes tables, not the
    database, so a new one is created by hand first (or the name in the URL is wrong)."""
    if _mysql_error_code(_driver_error(error)) != 1049:
        return ""
    name = make_url(url).database or ""
    quoted = "`" + name.replace("`", "``") + "`"
    return f"; check its name, or create it first: CREATE DATABASE {quoted} CHARACTER SET utf8mb4"


# The server's settings that refuse the ledger's writes whatever they hold (a retry, or other
# input, fails the same way): statement-based binary logging, which InnoDB cannot do for the
# READ COMMITTED transactions every session runs (1665), and a statement larger than the
# server's max_allowed_packet (1153; the server then closes the connection).
ER_BINLOG_STATEMENT_MODE = 1665
ER_NET_PACKET_TOO_LARGE = 1153
_SERVER_SETTINGS = frozenset({ER_BINLOG_STATEMENT_MODE, ER_NET_PACKET_TOO_LARGE})
BINLOG_FORMAT_REMEDY = (
    "the server logs statements (binlog_format=STATEMENT), which InnoDB refuses for the READ "
    "COMMITTED transactions of run-ledger: set binlog_format=ROW (or MIXED) on the server, or "
    "grant this user BINLOG ADMIN (SUPER before MariaDB 10.5.2) so that run-ledger sets ROW "
    'for its own sessions (README: "MariaDB server settings")'
)
# The max_allowed_packet of each server (host, port) as this process's last connection to it
# read it (ledger.mysql_engine notes it at connect): the server's 1153 does not say it, and it
# closes the connection that could ask.
_PACKET_LIMITS: dict[tuple[str | None, int | None], int] = {}


def note_packet_limit(url: str, value: int) -> None:
    """Remember the server's ``max_allowed_packet`` for a later 1153 to name."""
    parsed = make_url(url)
    _PACKET_LIMITS[(parsed.host, parsed.port)] = value


def packet_limit_remedy(current: int | None) -> str:
    """What a server whose max_allowed_packet is ``current`` (None: not known) is told."""
    now = "" if current is None else f" (it is {current:,} bytes)"
    return (
        f"the server's max_allowed_packet{now} is too small for this statement: run-ledger "
        f"needs at least {MIN_SERVER_PACKET_BYTES:,} bytes "
        f"(max_allowed_packet={MIN_SERVER_PACKET_BYTES // (1024 * 1024)}M; MariaDB's default "
        "is 16M) to store and project any event it accepts; nothing of this statement was "
        'written (README: "MariaDB server settings")'
    )


def _packet_limit(url: str) -> int | None:
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    return _PACKET_LIMITS.get((parsed.host, parsed.port))


# The server refuses a statement over its max_allowed_packet (1153) and closes the connection:
# the driver, still writing the statement, most often finds the connection reset (2006) or lost
# (2013) before it can read the 1153.
_CONNECTION_LOST = frozenset({2006, 2013})
_DRIVER_SPLIT_BYTES = pymysql.cursors.Cursor.max_stmt_length  # executemany's INSERT, at most


def packet_refused(url: str, error: BaseException) -> bool:
    """Whether ``error`` is the server refusing a statement larger than its max_allowed_packet:
    its 1153, or a connection lost while sending a statement larger than the limit the server
    said at connect (:func:`note_packet_limit`). The rollback that follows fails too, on the
    closed connection, and its error hides the statement's: both are looked at."""
    cause = _driver_error(error)
    if _mysql_error_code(cause) == ER_NET_PACKET_TOO_LARGE:
        return True
    limit = _packet_limit(url)
    seen = 0
    while cause is not None and limit is not None and seen < 3:
        if _mysql_error_code(cause) not in _CONNECTION_LOST:
            return False
        if _statement_bytes(cause) > limit:
            return True
        context = cause.__context__
        cause = context if isinstance(context, DBAPIError) else None
        seen += 1
    return False


def _statement_bytes(error: DBAPIError) -> int:
    """About how many bytes the failed statement took on the wire: its text and each value as
    the driver escapes it (an INSERT of many rows split as the driver's executemany splits it)."""

    def literal_bytes(value: object) -> int:
        try:
            text = pymysql.converters.escape_item(value, "utf8mb4")
        except Exception:  # a value the driver would have refused itself: roughly its text
            text = str(value)
        return len(str(text).encode("utf-8", "surrogatepass"))

    def row_bytes(row: object) -> int:
        values = list(row.values()) if isinstance(row, dict) else row
        if not isinstance(values, list | tuple):
            return 0
        return sum(literal_bytes(value) for value in values)

    statement = len(str(error.statement or "").encode("utf-8", "surrogatepass"))
    if not error.ismulti:
        return statement + row_bytes(error.params)
    rows = [row_bytes(row) for row in error.params or ()]
    return statement + max([*rows, min(sum(rows), _DRIVER_SPLIT_BYTES)], default=0)


def _server_setting_hint(url: str, error: SQLAlchemyError) -> str:
    """What the server's 1665 and 1153 do not say: which setting, and what to do."""
    if _mysql_error_code(_driver_error(error)) == ER_BINLOG_STATEMENT_MODE:
        return f"; {BINLOG_FORMAT_REMEDY}"
    if packet_refused(url, error):
        return f"; {packet_limit_remedy(_packet_limit(url))}"
    return ""


def _driver_error(error: BaseException) -> DBAPIError | None:
    """SQLAlchemy's wrapper of the driver error behind ``error`` (itself, or a cause of it)."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, DBAPIError):
        cause = cause.__cause__
    return cause


def _mysql_error_code(error: DBAPIError | None) -> int | None:
    """The MySQL/MariaDB error number of a driver error (None for SQLite's)."""
    original = getattr(error, "orig", None)
    if not isinstance(original, pymysql.err.MySQLError) or not original.args:
        return None
    code = original.args[0]
    return code if isinstance(code, int) else None


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
    # The driver's message may quote what the database was given or an operator's trigger
    # (SQLite's RAISE text as written): its line breaks and ESC sequences are shown as escapes
    # (after the password is hidden, which they could split), so the message stays the one
    # line the CLI prints after "Error:".
    return visible(message)


# MySQL/MariaDB server errors that say the environment failed, not the statement's data: the
# same statement may well succeed when retried. (Client errors, 2000-2999, are all of this kind.)
_ENVIRONMENT_CODES = frozenset(
    {
        1021,  # disk full
        1030,  # error from the storage engine
        1036,  # table is read only
        1037,  # out of memory
        1040,  # too many connections
        1041,  # out of memory
        1044,  # access denied to the database
        1045,  # access denied for the user
        1046,  # no database selected
        1049,  # unknown database
        1053,  # server shutdown in progress
        1114,  # table is full
        1142,  # command denied (a grant is missing)
        1143,  # column command denied
        1146,  # table does not exist (schema not migrated)
        1153,  # a statement over the server's max_allowed_packet
        1180,  # error during commit
        1181,  # error during rollback
        1205,  # lock wait timeout
        1213,  # deadlock
        1226,  # user resource limit
        1290,  # server running in read-only mode
        1317,  # query interrupted
        1665,  # binlog_format=STATEMENT, which InnoDB refuses at READ COMMITTED
        1836,  # running in read-only mode
        1927,  # connection killed
        1969,  # max_statement_time exceeded
        3024,  # max_execution_time exceeded
        4031,  # idle transaction timeout: the session was ended
    }
)


ER_DUP_ENTRY = 1062
# sqlite3's extended result codes of a UNIQUE index and a PRIMARY KEY refusing a row.
_SQLITE_DUPLICATE_CODES = {2067, 1555}
_SQLITE_COLLIDING_EVENT = IMMUTABLE_MESSAGE.format(verb="REPLACE")


def is_duplicate_key(error: BaseException) -> bool:
    """Whether ``error`` is a unique index or primary key refusing a row (MySQL/MariaDB 1062,
    SQLite's ``SQLITE_CONSTRAINT_UNIQUE``/``_PRIMARYKEY``, or on SQLite the ledger's own
    ``ledger_events_no_replace`` trigger, which refuses an event row that collides with a
    stored one before the unique indexes see it): another writer stored the row first. Not
    a CHECK, a NOT NULL or an operator's trigger, which SQLite reports as an IntegrityError
    too, and which refuse the same row on every retry."""
    cause = _driver_error(error)
    if not isinstance(cause, IntegrityError):
        return False
    code = _mysql_error_code(cause)
    if code is not None:
        return code == ER_DUP_ENTRY
    return (
        getattr(cause.orig, "sqlite_errorcode", None) in _SQLITE_DUPLICATE_CODES
        or str(cause.orig) == _SQLITE_COLLIDING_EVENT
    )


def is_refused_value(error: BaseException) -> bool:
    """Whether the database refused what a statement wrote (a value too long or out of range,
    a CHECK, an operator's trigger that SIGNALs): the same statement fails the same way on
    every retry. Environment failures (connection lost, lock wait, outage, a missing grant or
    table) are not refusals: retrying later may succeed.

    Accepts a driver error, SQLAlchemy's wrapper of it, or a :class:`StorageError` raised from
    one.
    """
    cause = _driver_error(error)
    if cause is None or cause.connection_invalidated:
        return False
    if isinstance(cause, DataError | IntegrityError):
        return True
    code = _mysql_error_code(cause)
    # SQLite reports refusals as IntegrityError/DataError (above); its other errors are locks
    # and I/O. MySQL client errors (2000-2999) are about the connection, not the data.
    if code is None or code in _ENVIRONMENT_CODES or code in _SERVER_UNAVAILABLE:
        return False
    return not 2000 <= code < 3000
