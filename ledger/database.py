"""The engine factory for the two supported databases, each configured in a module of its own
(:mod:`ledger.sqlite_engine`, :mod:`ledger.mysql_engine`; driver errors are translated in
:mod:`ledger.driver_errors`): the URL read and dispatched, the pool kept to the process that
opened it, and the schema revision check.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Connection, Engine, column, event, inspect, select, table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, NoSuchModuleError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.expression import TableClause

from ledger.dialects import causal_reads, is_mysql_backend
from ledger.driver_errors import is_access_denied, translate_errors
from ledger.errors import AccessDeniedError, ConfigurationError, SchemaError
from ledger.mysql_engine import LOCK_WAIT_TIMEOUT, MYSQL_TIMEOUTS, mysql_engine
from ledger.schema import REVISIONS, SCHEMA_REVISION, SHARED_VERSION_TABLE, VERSION_TABLE
from ledger.sqlite_engine import sqlite_engine
from ledger.urls import (
    IN_MEMORY_HINT,
    is_in_memory_sqlite,
    mask_url,
    migrate_hint,
    unparseable_url_message,
)


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
            engine = sqlite_engine(url, parsed, create, **engine_options)
        elif is_mysql_backend(backend):
            engine = mysql_engine(url, parsed, **engine_options)
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


# Alembic's version table, read here as Alembic's MigrationContext reads it: importing Alembic
# (and the Mako, Pygments and dialects it loads) took a fifth of `import ledger`, paid by every
# command and every connector process for this one query.
def _version_table(name: str) -> TableClause:
    return table(name, column("version_num"))


def current_revision(connection: Connection) -> str | None:
    """The Alembic revision the database is at (None: nothing migrated yet). Read from
    :data:`ledger.schema.VERSION_TABLE`; a database last migrated by a release that kept it in
    the shared ``alembic_version`` (until ``ledger migrate`` moves it) is read there, where
    only run-ledger's own revisions count: another application's is not the ledger's.

    The shared table is read too when VERSION_TABLE is empty or this user may not read it:
    on MySQL/MariaDB the move's CREATE TABLE commits on its own, so a move cut short (or still
    under way in another session) leaves it empty beside the revision not yet moved; and a role
    granted SELECT on ``alembic_version`` only (the README before 2026-12-07) is refused even a
    look at VERSION_TABLE (1142, whether it exists or not) while its revision is still there."""
    try:
        read, heads = VERSION_TABLE, version_rows(connection, VERSION_TABLE)
        denied: DBAPIError | None = None
    except DBAPIError as exc:
        if not is_access_denied(exc):
            raise
        read, heads, denied = VERSION_TABLE, None, exc
    if not heads:
        shared = shared_revisions(connection)
        if shared:
            read, heads = SHARED_VERSION_TABLE, shared
        elif denied is not None:
            raise denied
    if not heads:
        return None
    if len(heads) > 1:
        raise SchemaError(
            f"the database's {read} table holds {len(heads)} revisions "
            f"({', '.join(sorted(heads))}); run-ledger's migrations have one head"
        )
    return heads[0]


def shared_revisions(connection: Connection) -> list[str]:
    """The revisions of run-ledger's in the shared ``alembic_version``: none when there is no
    such table, when it is not of Alembic's shape (another application's table of that name),
    or when this user may not read it."""
    try:
        rows = version_rows(connection, SHARED_VERSION_TABLE)
    except DBAPIError as exc:
        if not is_access_denied(exc):
            raise
        return []
    return [head for head in rows or () if head in REVISIONS]


def version_rows(connection: Connection, name: str) -> list[str] | None:
    """Every revision in the version table ``name``; None when there is no such table, or
    when it has no ``version_num`` column (not a version table of Alembic's)."""
    inspector = inspect(connection)
    if not inspector.has_table(name):
        return None
    version = _version_table(name)
    try:
        return [str(head) for head in connection.execute(select(version.c.version_num)).scalars()]
    except DBAPIError:
        # Looked at only once the read failed: the columns are one more query per check.
        columns = {column["name"].lower() for column in inspector.get_columns(name)}
        if "version_num" not in columns:
            return None
        raise


def check_schema(engine: Engine, url: str) -> None:
    """Raise :class:`SchemaError` unless the database is at the revision this code needs
    (:data:`ledger.schema.SCHEMA_REVISION`)."""
    try:
        with (
            translate_errors(url, "schema check"),
            engine.connect() as connection,
            causal_reads(connection),
        ):
            current = current_revision(connection)
    except AccessDeniedError as exc:
        if VERSION_TABLE not in str(exc):
            raise
        # A role granted what the README said before 2026-12-07 (SELECT on alembic_version).
        raise AccessDeniedError(
            f'{exc}; grant SELECT on {VERSION_TABLE} to this user (README: "Grants on '
            f"MySQL/MariaDB\"): run-ledger keeps its schema's revision there, not in "
            f"{SHARED_VERSION_TABLE}, since 2026-12-07"
        ) from exc
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
