"""The SQLite engine (the embedded default): WAL, a busy timeout, ``synchronous=FULL`` (an
acknowledged append survives a power cut), and transactions begun by us so that appends can take
the write lock up front with ``BEGIN IMMEDIATE``: concurrent writers queue instead of failing
with "database is locked" half-way through. The file it opens is watched: one moved, deleted or
replaced under a running process is never written (:class:`SqliteFile`), and a read command
never creates one (``create=False``).
"""

from __future__ import annotations

import json
import os
import threading
import warnings
import weakref
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import SAWarning
from sqlalchemy.pool import StaticPool

from ledger.dialects import SQLITE_BEGIN_OPTION
from ledger.driver import DriverCursor
from ledger.errors import (
    AccessDeniedError,
    ConfigurationError,
    DatabaseFileChangedError,
    DatabaseNotFoundError,
)
from ledger.text import visible
from ledger.urls import impossible_path, mask_url, migrate_hint, path_state, sqlite_file_of

SQLITE_BUSY_TIMEOUT_MS = 30_000
_SQLITE_BEGIN = {mode: f"BEGIN {mode}" for mode in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")}


def sqlite_engine(url: str, parsed: URL, create: bool, **engine_options: Any) -> Engine:
    """The engine of a ``sqlite:///`` URL (see :func:`ledger.database.create_ledger_engine`):
    the URL's mistakes refused first, the file watched from then on (:class:`SqliteFile`)."""
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
    _refuse_a_name_too_long(url, parsed)
    if not create:
        _refuse_missing_file(url, parsed)
    engine = _sqlite_engine(url, parsed.database, **engine_options)
    opened_path = sqlite_file_of(parsed)
    if opened_path is not None:
        _SQLITE_FILES[engine] = opened = SqliteFile(opened_path, url)
        opened.note_now()
        event.listen(engine, "do_connect", opened.before_connect)
        event.listen(engine, "connect", opened.note)
    return engine


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


# What SQLite adds to a ledger's file name for the files it keeps beside it in WAL mode
# (``-wal``, ``-shm``); a journal's ``-journal`` is longer, but a ledger never uses one.
_COMPANION_SUFFIX_BYTES = len("-wal")
_DEFAULT_NAME_MAX = 255


def _refuse_a_name_too_long(url: str, parsed: URL) -> None:
    """A file name the file system takes, but not with ``-wal`` after it: SQLite made the file
    and then failed to open its write-ahead log, so ``migrate`` left an empty file behind and
    said this user may not create it (exit 3), a mistake in the URL taken for the machine's.
    An ``immutable=1`` URI opens no such file."""
    path = sqlite_file_of(parsed)
    if path is None or parsed.query.get("immutable") == "1":
        return
    problem = name_too_long(path)
    if problem is not None:
        raise DatabaseNotFoundError(
            f"no SQLite database can be at {visible(str(path))} ({mask_url(url)}): {problem}. "
            "Check the path, or give a shorter name"
        )


def name_too_long(path: Path) -> str | None:
    """Why ``path``'s name is too long for a SQLite ledger (its ``-wal`` and ``-shm`` files
    included), or None when it is not."""
    limit = _name_max(path.parent)
    length = len(os.fsencode(path.name))
    if length + _COMPANION_SUFFIX_BYTES <= limit:
        return None
    return (
        f"its name is {length} bytes long, and SQLite keeps files named NAME-wal and NAME-shm "
        f"beside it, over this file system's {limit}"
    )


def _name_max(folder: Path) -> int:
    """The longest file name ``folder``'s file system takes (255 when it cannot say, as for a
    folder that does not exist: the refusal that follows names that)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return _DEFAULT_NAME_MAX


def _refuse_missing_file(url: str, parsed: URL) -> None:
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
    if state == "impossible":
        raise DatabaseNotFoundError(
            f"no SQLite database at {shown} ({mask_url(url)}): no file can be there "
            f"({impossible_path(path)}). Check the path"
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


def stored_json(text: str) -> Any:
    """A JSON column's value (the read model's ``errorDetails``) as SQLite stores it. SQLite
    checks no JSON (MariaDB's columns do, ``json_valid``): text a hand-run UPDATE wrote that is
    not JSON is read as that text, a value no projector writes, which the fold replaces and
    ``ledger verify`` names. Parsed, it raised JSONDecodeError out of every read of the row:
    a traceback from `ledger project`, `runs list`, `runs show`, `verify` and `report`."""
    try:
        return json.loads(text)
    except ValueError:
        return text


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
        json_deserializer=stored_json,
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
