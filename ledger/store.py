"""The append/read API of the event store (DESIGN.md I1–I6): :class:`Ledger`.

Every append is one transaction that first locks the ``ledger_head`` row (``SELECT … FOR UPDATE``
on MySQL, ``BEGIN IMMEDIATE`` on SQLite) and does its work under that lock
(:mod:`ledger.appender`), all or nothing, after the checks that need no lock
(:mod:`ledger.batch_checks`). Here: running it again where it lost to another transaction, met
a dead connection or a table whose triggers failed to load; and reading events back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, TypeVar

import pydantic
from sqlalchemy import Connection, Dialect, Engine, select, update
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.pool import QueuePool, StaticPool

from ledger import arguments, reads
from ledger.appender import Appender, AppendRequest, LostBeforeWriting
from ledger.batch_checks import (
    batch_error,
    checks_before_lock,
    validated_batch,
)
from ledger.clock import Clock, default_clock, utcnow
from ledger.conflicts import (
    CONFLICT_RETRY_BUDGET_S,
    MAX_CONFLICT_ATTEMPTS,
    conflict_pause,
    retrying_conflicts,
)
from ledger.database import check_schema, create_ledger_engine, with_timeouts
from ledger.dialects import (
    append_transaction,
    bounded_lock_wait,
    database_kind,
    is_sqlite,
    server_clock,
    snapshot_transaction,
    wait_bound_options,
    write_transaction,
)
from ledger.driver import DriverCursor
from ledger.driver_errors import (
    interrupted_or_conflicting,
    is_broken_trigger_load,
    is_duplicate_key,
    is_transaction_conflict,
    row_lock_wait_timed_out,
    translate_errors,
)
from ledger.errors import (
    SchemaError,
    StorageError,
    UnknownRunError,
    ValidationError,
)
from ledger.events import EventModel, RunStarted
from ledger.mapper import pydantic_problems
from ledger.recorded import AppendResult, LedgerHead, RecordedEvent
from ledger.rules import RunState
from ledger.schema import HEAD_ROW_ID, ledger_head
from ledger.sqlite_engine import file_changed_error, sqlite_file_changed
from ledger.text import visible
from ledger.urls import mask_secrets, mask_url

log = logging.getLogger(__name__)

T = TypeVar("T")

# A ledger_events table object whose triggers failed to load is reloaded (FLUSH LOCAL TABLES) at
# most this many times for one append, each FLUSH waiting at most FLUSH_LOCK_WAIT_S for the
# transactions that use the table (see Ledger._reload_table_triggers).
MAX_TRIGGER_RELOADS = 3
FLUSH_LOCK_WAIT_S = 5
# An append on MySQL/MariaDB that waited innodb_lock_wait_timeout (50 s by default) for a lock
# and got 1205 waits again, this many waits in all: the holder may be a session of a lost host,
# which the server ends only after the idle bound (30 s), with another session of that host
# queued behind it that then holds the lock for the bound again. Three waits cover four such
# sessions at the defaults, or one under an idle bound up to three lock waits long. Nothing of
# the attempt is committed (the failed statement was its first write or a read before it, and
# the transaction is rolled back), and a retry is idempotent anyway (I3).
# A ledger with a wait bound (the API's, ``wait_bound_s``) waits for a lock once: its caller
# promised an answer within the bound (README: a 503 within ``database_timeout``), and three
# waits of a second less than the bound took three times that.
MAX_LOCK_WAITS = 3
FLUSH_ATTEMPTS = 3  # a FLUSH that Galera interrupted is run again, up to this many times


# How many runs' events Ledger.read_runs_in_turn reads at once.
RUNS_A_READ = 200


class Ledger:
    """An event store on one database. Thread-safe; share one per process.

    Besides appending and reading events, it is how the rest of run-ledger reaches the
    database: :meth:`connect`, :meth:`transaction` and :meth:`snapshot` hand the read models
    (projections, forensics, the connectors' and the service's own tables) a connection with
    driver errors translated into :class:`ledger.StorageError`, and :attr:`dialect` /
    :attr:`is_sqlite` say which database it is for SQL the two spell differently. Reading the
    ledger's own tables inside such a connection goes through :mod:`ledger.reads`.
    """

    def __init__(
        self,
        engine: Engine,
        url: str | None = None,
        clock: Clock | None = None,
        *,
        wait_bound_s: int | None = None,
    ) -> None:
        """``clock``: where the ledger's time comes from. None (the default, unless
        :func:`ledger.clock.use_clock` set another) is the database server's clock: one clock
        for every writer, whatever their hosts' clocks say (SQLite runs on this machine's).

        ``wait_bound_s``: the bound the engine's waits were given (:meth:`from_url`); an
        append's lock waits and retries then stay within it too."""
        self.engine = engine
        self.wait_bound_s = wait_bound_s
        self.url = url or engine.url.render_as_string(hide_password=False)
        self.own_clock: Clock | None = clock if clock is not None else default_clock()
        # Appends run again after losing to another transaction (see MAX_CONFLICT_ATTEMPTS):
        # how many times, since this Ledger was made (metrics, benchmarks, tests).
        self.conflict_retries = 0
        self.trigger_reloads = 0  # see _reload_table_triggers
        self._retries_lock = threading.Lock()
        self._schema_seen_current_at: float | None = None  # time.monotonic() of the last pass

    @classmethod
    def from_url(
        cls,
        url: str,
        clock: Clock | None = None,
        *,
        create: bool = True,
        wait_bound_s: int | None = None,
        **engine_options: Any,
    ) -> Ledger:
        """The ledger at ``url``. ``create=False`` refuses a SQLite file that does not exist,
        or is empty (:class:`ledger.DatabaseNotFoundError`), rather than letting SQLite make it
        a new, empty database.

        ``wait_bound_s``: no wait on the database longer than that (MySQL's connect, read and
        write timeouts and the pool's wait, a second less for a row lock; SQLite's busy
        timeout), so a frozen server or a lock held elsewhere is an error in seconds, not a
        caller held for the driver's 75 s: what a server answering requests wants. The
        ledger is still named by ``url`` in messages, not by the URL with those timeouts.
        A ``url`` that is not text, or a ``wait_bound_s`` that is not a whole number of
        seconds from 1, is a :class:`ValidationError` naming it (0 and -1 were taken as a
        SQLite busy timeout of none, and None as the URL a bare TypeError)."""
        url = arguments.text(url, "url")
        wait_bound_s = arguments.optional_whole_number(wait_bound_s, "wait_bound_s", least=1)
        engine_url = url
        if wait_bound_s is not None:
            with suppress(ArgumentError, ValueError):  # create_ledger_engine says what is wrong
                engine_url = with_timeouts(url, wait_bound_s)  # a SQLite URL as it is
                for option, value in wait_bound_options(url, wait_bound_s).items():
                    engine_options.setdefault(option, value)
        engine = create_ledger_engine(engine_url, create=create, **engine_options)
        return cls(engine, url, clock, wait_bound_s=wait_bound_s)

    def __repr__(self) -> str:
        return f"Ledger({mask_url(self.url)!r})"

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ the database

    @property
    def dialect(self) -> Dialect:
        """The database's SQLAlchemy dialect; ``dialect.name`` is ``sqlite``, ``mysql`` or
        ``mariadb``."""
        return self.engine.dialect

    @property
    def database_kind(self) -> str:
        """``sqlite``, ``mysql`` or ``mariadb`` (:func:`ledger.dialects.database_kind`)."""
        return database_kind(self.engine)

    @property
    def connection_limit(self) -> int | None:
        """The most connections the engine's pool holds at once (SQLAlchemy's default: 5 kept
        and 10 more for a while), 1 for an in-memory SQLite database's one connection; None
        when the pool sets no limit."""
        pool = self.engine.pool
        if isinstance(pool, QueuePool):
            overflow = pool._max_overflow  # no public accessor; -1: no limit
            return None if overflow < 0 else pool.size() + overflow
        return 1 if isinstance(pool, StaticPool) else None

    @property
    def is_sqlite(self) -> bool:
        """SQLite (embedded), rather than MySQL/MariaDB (see :mod:`ledger.dialects`)."""
        return is_sqlite(self.engine)

    @contextmanager
    def connect(self, action: str = "read") -> Iterator[Connection]:
        """A connection, no transaction begun; a driver error in the block is raised as
        :class:`ledger.StorageError` saying ``{action} failed on {url}``."""
        with translate_errors(self.url, action), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def transaction(self, action: str) -> Iterator[Connection]:
        """A write transaction, committed when the block ends; it holds the database's write
        lock from its first statement on SQLite. Errors as for :meth:`connect`; a write that
        breaks a constraint (a unique key another writer took) is a
        :class:`ledger.errors.ConstraintError`."""
        with translate_errors(self.url, action), write_transaction(self.engine) as conn:
            yield conn

    @contextmanager
    def snapshot(self, action: str) -> Iterator[Connection]:
        """A read transaction that sees one moment of the database, so that a check comparing
        two tables never takes a write in flight for a difference. Errors as for
        :meth:`connect`."""
        with self.connect(action) as conn, snapshot_transaction(conn):
            yield conn

    def read_in_snapshot(self, action: str, read: Callable[[Connection], T]) -> T:
        """``read(conn)`` in a :meth:`snapshot`, run again while it loses to another
        transaction; ``read`` must only read, and keep nothing from a failed attempt.

        On a Galera cluster DDL runs in total order on every node, and each node aborts (1213)
        its local transactions that hold the metadata lock of a table the DDL changes, read-only
        snapshots included: a rebuild's ``RENAME TABLE`` through one node kills every read of
        ``ingestion_runs`` in flight on the others. A read has no side effect, so it is run
        again, bounded as the append's retry (:func:`ledger.conflicts.retrying_conflicts`). A
        conflict that outlasts the retries is raised as a :class:`StorageError` (the
        environment: the CLI exits 3), never taken for something the read found."""

        def attempt() -> T:
            with self.snapshot(action) as conn:
                return read(conn)

        return retrying_conflicts(attempt, action)

    @contextmanager
    def operation(self, action: str) -> Iterator[None]:
        """For work of several steps that are not all on one connection: a driver or I/O error
        in the block is raised as for :meth:`connect`."""
        with translate_errors(self.url, action):
            yield

    def check_schema(self, max_age_s: float = 0.0) -> None:
        """Raise :class:`ledger.SchemaError` (saying "run `ledger migrate`") unless the database
        is at the schema revision this code needs.

        ``max_age_s``: a check that passed less than that many seconds ago stands (a server
        asking before every write pays one query per ``max_age_s``, not one per request). A
        failed check is never kept: the first request after ``ledger migrate`` passes."""
        self.check_file()  # a stat: never taken as covered by an earlier pass
        started = time.monotonic()
        seen = self._schema_seen_current_at
        if seen is not None and started - seen < max_age_s:
            return
        self._schema_seen_current_at = None  # a failure below is not covered by an older pass
        check_schema(self.engine, self.url)
        # Stamped with when the query began, not ended: a slow query does not stretch the
        # window, and a pass that began before a failure cannot cover it for longer.
        self._schema_seen_current_at = started

    def check_file(self) -> None:
        """Raise :class:`ledger.DatabaseFileChangedError` when the ledger is a SQLite file that
        is no longer the file at its path (moved, deleted or replaced since this process
        opened it): one ``stat``, so cheap enough for every append and readiness probe."""
        changed = sqlite_file_changed(self.engine)
        if changed is not None:
            raise file_changed_error(*changed, self.url)

    # ------------------------------------------------------------------ append

    def append(
        self,
        events: Iterable[EventModel],
        expected_version: int | None = None,
        *,
        clock_read: datetime | None = None,
        connectors: Iterable[str] | None = None,
    ) -> AppendResult:
        """Append events for one run or many in one transaction, all or nothing.

        ``expected_version`` (only for a batch about one run) is the version the run must be at
        before this batch; 0 means the run must not exist yet. Re-appending a stored
        ``event_id`` appends nothing and returns the stored event.

        The clock skew guard is checked under the head lock, against the ledger's clock, and
        names the first event ahead of it. ``clock_read``, the ledger's clock read beforehand
        (:meth:`clock`), makes the checks before the lock name every event ahead of it, with
        the batch's other problems (``ledger append`` names every line so).

        ``connectors``, when given, are the only connectors whose runs the batch may write
        for (exact names): an event for a run of another one raises
        :class:`ConnectorNotAllowedError`, checked under the lock before any other rule.
        """
        if isinstance(events, EventModel | str | bytes | dict):
            raise TypeError(f"events: a batch (a list) of events, not a {type(events).__name__}")
        batch, problems = validated_batch(list(events))
        if not batch:
            return AppendResult(events=[], new_events=[])
        # An append acknowledged into a SQLite file moved or deleted under the process would
        # be lost with it (I9): refused, a StorageError (a connector spools it meanwhile).
        self.check_file()
        if isinstance(connectors, str):
            raise TypeError("connectors: a collection of connector names, not one name")
        allowed = None if connectors is None else frozenset(connectors)
        if allowed is not None and not all(isinstance(name, str) for name in allowed):
            raise TypeError("connectors: connector names (str)")
        payloads, problems = checks_before_lock(batch, problems, expected_version, clock_read)
        if problems:
            raise batch_error(batch, problems)
        request = AppendRequest(
            batch,
            payloads,
            expected_version,
            allowed,
        )
        with translate_errors(self.url, "append"):
            return self._append_retrying_conflicts(request)

    def _append_retrying_conflicts(self, request: AppendRequest) -> AppendResult:
        """The append, run again while it loses to another transaction (1213 deadlock or
        Galera certification conflict, at any statement or at COMMIT; or, up to
        :data:`MAX_LOCK_WAITS` waits in all, a lock wait timeout, 1205):
        the server rolled it back, so nothing of it is committed. Each attempt locks the head
        and reads the stored event ids again, exactly as the retry after a lost COMMIT reply
        does: were an attempt's COMMIT to have landed after all, the next one finds its events
        stored and appends nothing (I3). Bounded by :data:`MAX_CONFLICT_ATTEMPTS` and
        :data:`CONFLICT_RETRY_BUDGET_S`, with jittered backoff (:func:`conflict_pause`).

        With a wait bound (:attr:`wait_bound_s`, the API's ``database_timeout``): one lock
        wait, and no retry starts once the bound has passed, so that the caller's answer (a
        503 ``database-busy``) comes within it, not after three lock waits."""
        started = time.monotonic()
        attempt = 1
        reloads = 0
        lock_waits = 1
        bound = self.wait_bound_s
        most_lock_waits = MAX_LOCK_WAITS if bound is None else 1
        budget = CONFLICT_RETRY_BUDGET_S if bound is None else min(bound, CONFLICT_RETRY_BUDGET_S)
        while True:
            try:
                return self._append_with_backstop(request)
            except DBAPIError as exc:
                if is_broken_trigger_load(exc):
                    # A stale cached table object is gone after one flush; trigger bodies that
                    # fail again at once after a flush are broken in the stored definitions
                    # (or keep breaking): flushing on would stall every reader of the table
                    # for nothing.
                    if (
                        reloads >= MAX_TRIGGER_RELOADS
                        or attempt >= MAX_CONFLICT_ATTEMPTS
                        or time.monotonic() - started > budget
                    ):
                        raise
                    self._reload_table_triggers(exc)
                    reloads += 1
                    attempt += 1
                    time.sleep(conflict_pause(attempt))
                    continue
                if row_lock_wait_timed_out(exc) and lock_waits < most_lock_waits:
                    lock_waits += 1
                    log.warning(
                        "append waited innodb_lock_wait_timeout for a lock held by another "
                        "session (a session of a lost host, ended by the server after its idle "
                        "bound?); waiting again (%d of %d)",
                        lock_waits,
                        most_lock_waits,
                    )
                    continue
                if not is_transaction_conflict(exc):
                    raise
                if attempt >= MAX_CONFLICT_ATTEMPTS or time.monotonic() - started > budget:
                    log.warning(
                        "append still lost to other transactions after %d attempt(s) in "
                        "%.1fs; giving up: %s",
                        attempt,
                        time.monotonic() - started,
                        exc.orig,
                    )
                    raise
                with self._retries_lock:
                    self.conflict_retries += 1
                log.debug(
                    "append lost to another transaction (certification conflict, deadlock or "
                    "lock wait; attempt %d): %s; retrying",
                    attempt,
                    exc.orig,
                )
                time.sleep(conflict_pause(attempt))
                attempt += 1

    def _flush_events_table(self) -> None:
        # FLUSH TABLES waits for every open transaction that used the table (a verify, a
        # projector batch, a rebuild's replay), and every statement on the table queues behind
        # it meanwhile: bounded, or one append would stall the whole ledger for
        # lock_wait_timeout (a day by default).
        with self.engine.connect() as conn, bounded_lock_wait(conn, FLUSH_LOCK_WAIT_S):
            conn.exec_driver_sql("FLUSH LOCAL TABLES ledger_events")

    def _reload_table_triggers(self, error: DBAPIError) -> None:
        """MariaDB Galera (seen on 10.11 with galera-4 26.4): a ``ledger_events`` table object
        whose trigger definitions failed to load (the load interrupted when a certification
        conflict aborted the statement that opened it) goes back to the node's table cache,
        and every statement that later gets that object fails with 1064 "Unknown trigger has
        an error in its body", although the stored definitions are intact (every other node,
        and this one after the flush, loads them). ``FLUSH LOCAL TABLES ledger_events`` (not
        replicated; needs the RELOAD privilege) drops the broken object; without the
        privilege the error is raised, naming the statement a DBA can run."""
        with self._retries_lock:
            self.trigger_reloads += 1
        log.warning(
            "append: this server's cached ledger_events has triggers that failed to load "
            "(%s); reloading it with FLUSH LOCAL TABLES ledger_events and retrying",
            error.orig,
        )
        try:
            for attempt in range(1, FLUSH_ATTEMPTS + 1):
                try:
                    self._flush_events_table()
                    break
                except DBAPIError as flush_error:
                    # Galera aborts a local FLUSH that holds what a replicated write needs
                    # (1317 "Query execution was interrupted", seen in the cluster suite):
                    # transient, unlike a missing RELOAD privilege.
                    if attempt == FLUSH_ATTEMPTS or not interrupted_or_conflicting(flush_error):
                        raise
                    log.warning("FLUSH LOCAL TABLES ledger_events: %s; again", flush_error.orig)
        except DBAPIError as flush_error:
            log.error(
                "FLUSH LOCAL TABLES ledger_events failed (%s): a DBA must run it on this node",
                flush_error.orig,
            )
            raise StorageError(
                mask_secrets(
                    f"append failed on {mask_url(self.url)}: {error.orig}; this server's cached "
                    "ledger_events did not load its triggers, and reloading it with FLUSH "
                    f"LOCAL TABLES ledger_events failed ({flush_error.orig}): a DBA can run "
                    "that statement on this server (it needs the RELOAD privilege)"
                )
            ) from error

    def _append_with_backstop(self, request: AppendRequest) -> AppendResult:
        try:
            return self._append_on_a_live_connection(request)
        except IntegrityError as exc:
            # The unique constraints are the backstop of I3/I4: a writer that bypassed the
            # head lock got there first. Retry once; the dedupe step now sees its rows. Any
            # other refusal (a CHECK, an operator's trigger) would refuse the retry too.
            if not is_duplicate_key(exc):
                raise
            log.warning("append hit a unique constraint, retrying once: %s", visible(str(exc.orig)))
            return self._append_on_a_live_connection(request)

    def _append_on_a_live_connection(self, request: AppendRequest) -> AppendResult:
        """One append; again on a new connection if the pooled one turned out dead before
        anything was written (the pool pings only connections that sat idle)."""
        try:
            return self._append_once(request)
        except LostBeforeWriting as lost:
            log.warning(
                "append: the database connection was gone before anything was written "
                "(%s); retrying once on a new one",
                lost.error.orig,
            )
        try:
            return self._append_once(request)
        except LostBeforeWriting as lost:
            raise lost.error from lost.error.orig

    def _append_once(self, request: AppendRequest) -> AppendResult:
        with append_transaction(self.engine) as cursor:
            return Appender(cursor, self.engine, self.own_clock).append(request)

    def reserve_run_ids(
        self,
        highest: int,
        check: Callable[[Connection, LedgerHead, datetime], None] | None = None,
    ) -> None:
        """Make the allocator continue above ``highest`` (before importing runs by id).

        ``check``, when given, runs first, under the head lock, with this transaction's
        connection, the head and the ledger's time (its clock, or the last recorded_at where
        the clock is behind it: what an append measures ``occurred_at`` against). What it
        raises rolls the reservation back: an import it refuses leaves the allocator where it
        was, since a reservation, once committed, is for good."""
        with self.transaction("reserve run ids") as conn:
            cursor = DriverCursor.on(conn)
            try:
                position, last_hash, last_run_id, last_recorded_at, clock = Appender(
                    cursor, conn, self.own_clock
                ).lock_head()
            finally:
                cursor.close()
            if check is not None:
                now = max(clock, last_recorded_at) if last_recorded_at else clock
                check(conn, LedgerHead(position, last_hash, last_run_id, last_recorded_at), now)
            conn.execute(
                update(ledger_head)
                .where(ledger_head.c.id == HEAD_ROW_ID, ledger_head.c.last_run_id < highest)
                .values(last_run_id=highest)
            )

    def start_run(
        self,
        source_id: int,
        connector_name: str,
        *,
        metadata: dict[str, Any] | None = None,
        run_id: int | None = None,
        actor: str | None = None,
        occurred_at: datetime | None = None,
    ) -> int:
        """Append a RunStarted and return the run id (allocated unless ``run_id`` is given).

        Raises what :meth:`append` raises; a value the RunStarted model refuses (a source id
        as text, a naive ``occurred_at``) is a :class:`ValidationError` naming the field."""
        fields: dict[str, Any] = {
            "source_id": source_id,
            "connector_name": connector_name,
            "metadata": metadata,
            "run_id": run_id,
            "actor": actor,
        }
        if occurred_at is not None:
            fields["occurred_at"] = occurred_at
        try:
            started = RunStarted(**fields)
        except pydantic.ValidationError as exc:
            problems = pydantic_problems(exc)
            raise ValidationError("; ".join(map(str, problems)), details=problems) from exc
        result = self.append([started])
        return result.events[0].run_id

    # ------------------------------------------------------------------ read

    def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        batch_size: int = 1000,
        up_to: int | None = None,
    ) -> Iterator[RecordedEvent]:
        """Events with position > ``after`` (and at most ``up_to``: bounded by position, not
        by count, so a missing row cannot make a replay "as of N" read past N), in position
        order, read in pages of ``batch_size``.

        Raises :class:`ValidationError` at the call (not at the first event) for an argument
        that is not a whole number (``after``, ``up_to`` and ``limit`` from 0, ``batch_size``
        from 1); :class:`StorageError` as each page is read."""
        after = arguments.whole_number(after, "after")
        limit = arguments.optional_whole_number(limit, "limit")
        up_to = arguments.optional_whole_number(up_to, "up_to")
        batch_size = arguments.whole_number(batch_size, "batch_size", least=1)
        return self._pages(after, limit, batch_size, up_to)

    def _pages(
        self, after: int, limit: int | None, batch_size: int, up_to: int | None
    ) -> Iterator[RecordedEvent]:
        remaining = limit
        position = after
        while remaining is None or remaining > 0:
            page = batch_size if remaining is None else min(batch_size, remaining)
            rows = self.read_page(position, page, up_to)
            count = len(rows)
            if count:
                position = rows[-1].position
            # Each event handed over is let go by the page: one the caller drops is freed at
            # once (with the model its .event built), rather than kept for the garbage
            # collector to go over again and again until the page ends.
            rows.reverse()
            while rows:
                yield rows.pop()
            if count < page:
                return
            if remaining is not None:
                remaining -= count

    def read_page(self, after: int, limit: int, up_to: int | None = None) -> list[RecordedEvent]:
        """One page of events after ``after`` (and at most ``up_to``): the unit a tailing
        reader polls. Arguments as for :meth:`read_all`."""
        after = arguments.whole_number(after, "after")
        limit = arguments.whole_number(limit, "limit")
        up_to = arguments.optional_whole_number(up_to, "up_to")
        with self.connect() as conn:
            return reads.read_events_page(conn, after, limit, up_to)

    def position_at(self, when: datetime) -> int:
        """The last position recorded at or before ``when`` (0 if none).

        ``recorded_at`` never decreases along positions (the append takes it under the head
        lock), so a binary search over the primary key finds it in about log2(N) lookups.
        Raises :class:`ValidationError` unless ``when`` is a datetime with a zone.
        """
        when = arguments.moment(when, "when")
        low, high = 0, self.head().last_position
        with self.connect() as conn:
            while low < high:
                middle = (low + high + 1) // 2
                recorded_at = reads.recorded_at(conn, middle)
                if recorded_at is None:
                    raise SchemaError(f"position {middle} is missing: run `ledger verify`")
                if recorded_at <= when:
                    low = middle
                else:
                    high = middle - 1
        return low

    def recorded_at(self, position: int) -> datetime | None:
        """When the event at ``position`` was recorded: the moment a page or report pinned to
        that position stands at (None for position 0, or none stored there)."""
        position = arguments.whole_number(position, "position", least=None)
        if position < 1:
            return None
        with self.connect() as conn:
            return reads.recorded_at(conn, position)

    def read_run(
        self, run_id: int, after: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        """The events of one run, in version order: those after position ``after``, at most
        ``limit``. Empty for a run that never started. Raises :class:`ValidationError` for an
        argument that is not a whole number (``after`` and ``limit`` from 0)."""
        run_id = arguments.whole_number(run_id, "run_id", least=None)
        after = arguments.whole_number(after, "after")
        limit = arguments.optional_whole_number(limit, "limit")
        with self.connect() as conn:
            return reads.read_run(conn, run_id, after, limit)

    def read_runs(
        self, run_ids: Collection[int], up_to: int | None = None
    ) -> dict[int, list[RecordedEvent]]:
        """The events of each of ``run_ids`` that started, in version order; with ``up_to``,
        those at positions up to it (the runs as they stood then). Raises
        :class:`ValidationError` unless ``run_ids`` is a collection of whole numbers and
        ``up_to`` one from 0."""
        ids = arguments.run_ids(run_ids)
        up_to = arguments.optional_whole_number(up_to, "up_to")
        with self.connect() as conn:
            return reads.read_runs(conn, ids, up_to)

    def read_runs_in_turn(
        self, run_ids: Collection[int], up_to: int | None = None
    ) -> Iterator[dict[int, list[RecordedEvent]]]:
        """:meth:`read_runs` of ``run_ids`` (each once, by run id), :data:`RUNS_A_READ` runs a
        read, each read handed over before the next is made: a caller that folds each in
        turn holds some runs' events at a time, not thousands of runs' months of heartbeats."""
        every = sorted(set(arguments.run_ids(run_ids)))
        for first in range(0, len(every), RUNS_A_READ):
            yield self.read_runs(every[first : first + RUNS_A_READ], up_to=up_to)

    def run_ids_started_by(
        self,
        position: int,
        *,
        connector_name: str | None = None,
        source_id: int | None = None,
        before: int | None = None,
        limit: int,
    ) -> list[int]:
        """The ids of the runs that existed at ``position`` (started at or before it), newest
        first, at most ``limit``: of a connector (its exact name), a source, below ``before``,
        when given (:func:`ledger.reads.run_ids_started_by`). Raises :class:`ValidationError`
        for an argument of the wrong type (numbers whole, ``limit`` from 0)."""
        position = arguments.whole_number(position, "position")
        connector_name = arguments.optional_name(connector_name, "connector_name")
        source_id = arguments.optional_whole_number(source_id, "source_id", least=None)
        before = arguments.optional_whole_number(before, "before", least=None)
        limit = arguments.whole_number(limit, "limit")
        with self.connect() as conn:
            return reads.run_ids_started_by(
                conn,
                position,
                connector_name=connector_name,
                source_id=source_id,
                before=before,
                limit=limit,
            )

    def run_ids_open_at(self, position: int) -> list[int]:
        """The ids of the runs that can have been open at ``position``, by run id: every run
        open then and a few closed then (:func:`ledger.reads.run_ids_open_at`); their own
        events up to ``position`` tell which (:meth:`read_runs`). Raises
        :class:`ValidationError` unless ``position`` is a whole number from 0."""
        position = arguments.whole_number(position, "position")
        with self.connect() as conn:
            return reads.run_ids_open_at(conn, position)

    def run(self, run_id: int) -> RunState | None:
        """The write-side state of one run, or None if it never started. Raises
        :class:`ValidationError` unless ``run_id`` is a whole number."""
        run_id = arguments.whole_number(run_id, "run_id", least=None)
        with self.connect() as conn:
            return reads.run_states(conn, [run_id]).get(run_id)

    def runs(
        self,
        *,
        connector_name: str | None = None,
        source_id: int | None = None,
        state: str | None = None,
        limit: int | None = None,
    ) -> list[RunState]:
        """The write-side state of the runs of a connector (its exact name), a source, in a
        state (``open``: no terminal event yet, ``timed_out``, ``finished``), by run id; at
        most ``limit``. Raises :class:`ValidationError` for an argument of the wrong type or
        an unknown state."""
        connector_name = arguments.optional_name(connector_name, "connector_name")
        source_id = arguments.optional_whole_number(source_id, "source_id", least=None)
        state = arguments.run_state(state)
        limit = arguments.optional_whole_number(limit, "limit")
        with self.connect() as conn:
            return reads.find_runs(
                conn, connector_name=connector_name, source_id=source_id, state=state, limit=limit
            )

    def clock(self) -> datetime:
        """The ledger's clock now: what the sweeper and the stuck query measure silence
        against, as appends measure ``occurred_at`` against it (the database server's clock,
        unless the Ledger was given another)."""
        if self.own_clock is not None:
            return self.own_clock()
        column = server_clock(self.engine)
        if column is None:
            return utcnow()
        with self.connect("read the clock") as conn:
            database_now: datetime = conn.execute(select(column)).scalar_one()
        return database_now.replace(tzinfo=UTC)

    def head(self) -> LedgerHead:
        with self.connect() as conn:
            head = reads.read_head(conn)
        if head is None:
            raise SchemaError(f"{mask_url(self.url)} has no ledger head row: run `ledger migrate`")
        return head


def as_ledger(database: Ledger | Engine, url: str | None = None) -> Ledger:
    """``database`` as a :class:`Ledger`: functions that take the ledger also take an Engine
    (and its URL), which is what the tests and tools hold."""
    return database if isinstance(database, Ledger) else Ledger(database, url)


# --- reading events back: every event after a position, or one run's


def read_events(
    ledger: Ledger, run_id: int | None = None, after: int = 0, limit: int | None = None
) -> Iterator[RecordedEvent]:
    """What ``ledger events`` lists: the events after position ``after``, in position order, or
    with ``run_id`` that run's events after it, in version order; at most ``limit``.

    Raises :class:`UnknownRunError` for a ``run_id`` that names no run: every run has its
    RunStarted, so an empty answer would hide a typo.
    """
    if run_id is None:
        return ledger.read_all(after=after, limit=limit)
    events = ledger.read_run(run_id, after, limit)
    if not events and not ledger.read_run(run_id, limit=1):
        raise UnknownRunError(run_id)
    return iter(events)
