"""The append/read API of the event store (DESIGN.md I1–I6).

Every append is one transaction that first locks the ``ledger_head`` row (``SELECT … FOR UPDATE``
on MySQL, ``BEGIN IMMEDIATE`` on SQLite). Under that lock it drops events already stored (I3),
checks ``expected_version`` (I4) and the stream rules (I5), numbers the new events from the head
(I2), chains their hashes (I6), and writes events, run registry and head together: all or
nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from ledger import reads
from ledger.append_sql import append_statements, values_groups
from ledger.clock import Clock, default_clock, isoformat_utc, utcnow
from ledger.database import (
    CONFLICT_RETRY_BUDGET_S,
    MAX_CONFLICT_ATTEMPTS,
    check_schema,
    conflict_pause,
    create_ledger_engine,
    is_broken_trigger_load,
    is_transaction_conflict,
    translate_errors,
)
from ledger.dialects import (
    append_transaction,
    is_sqlite,
    server_clock,
    snapshot_transaction,
    write_transaction,
)
from ledger.driver import DriverCursor
from ledger.errors import (
    ConcurrencyError,
    EventIdReusedError,
    InputProblem,
    LedgerError,
    SchemaError,
    StorageError,
    StreamError,
    UnknownRunError,
    ValidationError,
)
from ledger.events import MAX_RUN_ID, EventModel, RunStarted
from ledger.hashing import content_from_values, link
from ledger.limits import payload_problems
from ledger.mapper import CURRENT_SCHEMA_VERSIONS, canonical_json, payload_json, payload_of
from ledger.recorded import AppendResult, LedgerHead, RecordedEvent
from ledger.rules import RunState, apply_event
from ledger.schema import HEAD_ROW_ID, ledger_head
from ledger.text import clip
from ledger.urls import mask_secrets, mask_url

log = logging.getLogger(__name__)

# A ledger_events table object whose triggers failed to load is reloaded (FLUSH LOCAL TABLES) at
# most this many times for one append, each FLUSH waiting at most FLUSH_LOCK_WAIT_S for the
# transactions that use the table (see Ledger._reload_table_triggers).
MAX_TRIGGER_RELOADS = 3
FLUSH_LOCK_WAIT_S = 5

# An occurred_at further ahead of the ledger's clock than this is refused (I10 clock skew guard):
# a run "alive in the future" could never be detected as stuck.
MAX_CLOCK_SKEW = timedelta(minutes=5)
# One event's payload at most: far above any real run report, far below MySQL's packet limit, so
# both databases accept or refuse the same events.
MAX_PAYLOAD_BYTES = 1024 * 1024
# How much of a driver's message a refused payload's problem quotes.
_MAX_DETAIL_CHARS = 120


class Ledger:
    """An event store on one database. Thread-safe; share one per process.

    Besides appending and reading events, it is how the rest of run-ledger reaches the
    database: :meth:`connect`, :meth:`transaction` and :meth:`snapshot` hand the read models
    (projections, forensics, the connectors' and the service's own tables) a connection with
    driver errors translated into :class:`ledger.StorageError`, and :attr:`dialect` /
    :attr:`is_sqlite` say which database it is for SQL the two spell differently. Reading the
    ledger's own tables inside such a connection goes through :mod:`ledger.reads`.
    """

    def __init__(self, engine: Engine, url: str | None = None, clock: Clock | None = None) -> None:
        """``clock``: where the ledger's time comes from. None (the default, unless
        :func:`ledger.clock.use_clock` set another) is the database server's clock: one clock
        for every writer, whatever their hosts' clocks say (SQLite runs on this machine's)."""
        self.engine = engine
        self.url = url or engine.url.render_as_string(hide_password=False)
        self.own_clock: Clock | None = clock if clock is not None else default_clock()
        # Appends run again after losing to another transaction (see MAX_CONFLICT_ATTEMPTS):
        # how many times, since this Ledger was made (metrics, benchmarks, tests).
        self.conflict_retries = 0
        self.trigger_reloads = 0  # see _reload_table_triggers
        self._retries_lock = threading.Lock()

    @classmethod
    def from_url(
        cls, url: str, clock: Clock | None = None, *, create: bool = True, **engine_options: Any
    ) -> Ledger:
        """The ledger at ``url``. ``create=False`` refuses a SQLite file that does not exist
        (:class:`ledger.DatabaseNotFoundError`) rather than letting SQLite create it empty."""
        return cls(create_ledger_engine(url, create=create, **engine_options), url, clock)

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

    @contextmanager
    def operation(self, action: str) -> Iterator[None]:
        """For work of several steps that are not all on one connection: a driver or I/O error
        in the block is raised as for :meth:`connect`."""
        with translate_errors(self.url, action):
            yield

    def check_schema(self) -> None:
        """Raise :class:`ledger.SchemaError` (saying "run `ledger migrate`") unless the database
        is at the schema revision this code needs."""
        check_schema(self.engine, self.url)

    # ------------------------------------------------------------------ append

    def append(
        self,
        events: Iterable[EventModel],
        expected_version: int | None = None,
        *,
        clock_read: datetime | None = None,
    ) -> AppendResult:
        """Append events for one run or many in one transaction, all or nothing.

        ``expected_version`` (only for a batch about one run) is the version the run must be at
        before this batch; 0 means the run must not exist yet. Re-appending a stored
        ``event_id`` appends nothing and returns the stored event.

        The clock skew guard is checked under the head lock, against the ledger's clock, and
        names the first event ahead of it. ``clock_read``, the ledger's clock read beforehand
        (:meth:`clock`), makes the checks before the lock name every event ahead of it, with
        the batch's other problems (``ledger append`` names every line so).
        """
        batch = list(events)
        if not batch:
            return AppendResult(events=[], new_events=[])
        payloads, problems = _prepare(batch, expected_version, now=clock_read)
        if problems:
            raise _batch_error(batch, problems)
        with translate_errors(self.url, "append"):
            return self._append_retrying_conflicts(batch, payloads, expected_version)

    def _append_retrying_conflicts(
        self, batch: list[EventModel], payloads: list[str], expected_version: int | None
    ) -> AppendResult:
        """The append, run again while it loses to another transaction (1213 deadlock or
        Galera certification conflict, at any statement or at COMMIT):
        the server rolled it back, so nothing of it is committed. Each attempt locks the head
        and reads the stored event ids again, exactly as the retry after a lost COMMIT reply
        does: were an attempt's COMMIT to have landed after all, the next one finds its events
        stored and appends nothing (I3). Bounded by :data:`MAX_CONFLICT_ATTEMPTS` and
        :data:`CONFLICT_RETRY_BUDGET_S`, with jittered backoff (:func:`conflict_pause`)."""
        started = time.monotonic()
        attempt = 1
        reloads = 0
        while True:
            try:
                return self._append_with_backstop(batch, payloads, expected_version)
            except DBAPIError as exc:
                if is_broken_trigger_load(exc):
                    # A stale cached table object is gone after one flush; trigger bodies that
                    # fail again at once after a flush are broken in the stored definitions
                    # (or keep breaking): flushing on would stall every reader of the table
                    # for nothing.
                    if (
                        reloads >= MAX_TRIGGER_RELOADS
                        or attempt >= MAX_CONFLICT_ATTEMPTS
                        or time.monotonic() - started > CONFLICT_RETRY_BUDGET_S
                    ):
                        raise
                    self._reload_table_triggers(exc)
                    reloads += 1
                    attempt += 1
                    time.sleep(conflict_pause(attempt))
                    continue
                if not is_transaction_conflict(exc):
                    raise
                if (
                    attempt >= MAX_CONFLICT_ATTEMPTS
                    or time.monotonic() - started > CONFLICT_RETRY_BUDGET_S
                ):
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
            with self.engine.connect() as conn:
                # FLUSH TABLES waits for every open transaction that used the table (a verify,
                # a projector batch, a rebuild's replay), and every statement on the table
                # queues behind it meanwhile: bounded, or one append would stall the whole
                # ledger for lock_wait_timeout (a day by default).
                conn.exec_driver_sql(
                    f"SET @ledger_lock_wait = @@SESSION.lock_wait_timeout, "
                    f"SESSION lock_wait_timeout = {FLUSH_LOCK_WAIT_S}"
                )
                try:
                    conn.exec_driver_sql("FLUSH LOCAL TABLES ledger_events")
                finally:
                    with suppress(DBAPIError):
                        conn.exec_driver_sql("SET SESSION lock_wait_timeout = @ledger_lock_wait")
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

    def _append_with_backstop(
        self, batch: list[EventModel], payloads: list[str], expected_version: int | None
    ) -> AppendResult:
        try:
            return self._append_on_a_live_connection(batch, payloads, expected_version)
        except IntegrityError as exc:
            # The unique constraints are the backstop of I3/I4: a writer that bypassed the
            # head lock got there first. Retry once; the dedupe step now sees its rows.
            log.warning("append hit a unique constraint, retrying once: %s", exc.orig)
            return self._append_on_a_live_connection(batch, payloads, expected_version)

    def _append_on_a_live_connection(
        self, batch: list[EventModel], payloads: list[str], expected_version: int | None
    ) -> AppendResult:
        """One append; again on a new connection if the pooled one turned out dead before
        anything was written (the pool pings only connections that sat idle)."""
        try:
            return self._append_once(batch, payloads, expected_version)
        except _LostBeforeWriting as lost:
            log.warning(
                "append: the database connection was gone before anything was written "
                "(%s); retrying once on a new one",
                lost.error.orig,
            )
        try:
            return self._append_once(batch, payloads, expected_version)
        except _LostBeforeWriting as lost:
            raise lost.error from lost.error.orig

    def _append_once(
        self, batch: list[EventModel], payloads: list[str], expected_version: int | None
    ) -> AppendResult:
        with append_transaction(self.engine) as cursor:
            return _Appender(cursor, self.engine, self.own_clock).append(
                batch, payloads, expected_version
            )

    def reserve_run_ids(self, highest: int) -> None:
        """Make the allocator continue above ``highest`` (after importing runs by id)."""
        with self.transaction("reserve run ids") as conn:
            cursor = DriverCursor.on(conn)
            try:
                _Appender(cursor, conn, self.own_clock).lock_head()
            finally:
                cursor.close()
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
        """Append a RunStarted and return the run id (allocated unless ``run_id`` is given)."""
        fields: dict[str, Any] = {
            "source_id": source_id,
            "connector_name": connector_name,
            "metadata": metadata,
            "run_id": run_id,
            "actor": actor,
        }
        if occurred_at is not None:
            fields["occurred_at"] = occurred_at
        result = self.append([RunStarted(**fields)])
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
        order, read in pages of ``batch_size``."""
        if batch_size < 1:
            raise ValidationError(f"batch_size must be at least 1, got {batch_size}")
        remaining = limit
        position = after
        while remaining is None or remaining > 0:
            page = batch_size if remaining is None else min(batch_size, remaining)
            rows = self.read_page(position, page, up_to)
            yield from rows
            if len(rows) < page:
                return
            position = rows[-1].position
            if remaining is not None:
                remaining -= len(rows)

    def read_page(self, after: int, limit: int, up_to: int | None = None) -> list[RecordedEvent]:
        """One page of events after ``after`` (and at most ``up_to``): the unit a tailing
        reader polls."""
        with self.connect() as conn:
            return reads.read_events_page(conn, after, limit, up_to)

    def position_at(self, when: datetime) -> int:
        """The last position recorded at or before ``when`` (0 if none).

        ``recorded_at`` never decreases along positions (the append takes it under the head
        lock), so a binary search over the primary key finds it in about log2(N) lookups.
        """
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

    def read_run(
        self, run_id: int, after: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        """The events of one run, in version order: those after position ``after``, at most
        ``limit``. Empty for a run that never started."""
        with self.connect() as conn:
            return reads.read_run(conn, run_id, after, limit)

    def run(self, run_id: int) -> RunState | None:
        """The write-side state of one run, or None if it never started."""
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
        state (``open``: no terminal event yet), by run id; at most ``limit``."""
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


def _prepare(
    batch: Sequence[EventModel], expected_version: int | None, now: datetime | None
) -> tuple[list[str], list[InputProblem]]:
    """Serialise each payload and find what makes the batch unappendable, before any lock.

    Checks: the payload is storable JSON (finite numbers, valid Unicode); the event is written
    with its type's current schema_version; occurred_at is not beyond the clock skew guard
    (given ``now``, the ledger's clock); run_refs are defined before use and once;
    expected_version concerns a single run. Each problem carries the index of its event in
    the batch (None: the batch as a whole).
    """
    payloads: list[str] = []
    problems: list[InputProblem] = []
    defined_refs: set[str] = set()
    run_keys: set[object] = set()
    for index, event in enumerate(batch):
        try:
            payload = payload_json(event)
            size = len(payload.encode("utf-8"))
            (event.actor or "").encode("utf-8")
        except (ValueError, TypeError, RecursionError) as exc:  # UnicodeEncodeError: ValueError
            field = _unstorable_field(event)
            detail = clip(str(exc), _MAX_DETAIL_CHARS, ellipsis="...")
            problems.append(
                InputProblem("payload", f"not storable as JSON ({field}: {detail})", index)
            )
            payload = ""
        else:
            problems.extend(replace(p, index=index) for p in payload_problems(event))
            if size > MAX_PAYLOAD_BYTES:
                field, field_size = _largest_field(event)
                problems.append(
                    InputProblem(
                        "payload",
                        f"{size:,} bytes is over the {MAX_PAYLOAD_BYTES:,}-byte limit of one "
                        f"event ({field} alone is {field_size:,} bytes)",
                        index,
                    )
                )
        payloads.append(payload)
        current = CURRENT_SCHEMA_VERSIONS[event.type]
        if event.schema_version != current:
            problems.append(
                InputProblem(
                    "schema_version",
                    f"{event.type} is written at schema_version {current}, "
                    f"got {event.schema_version}",
                    index,
                )
            )
        if now is not None and event.occurred_at > now + MAX_CLOCK_SKEW:
            problems.append(
                InputProblem(
                    "occurred_at",
                    f"{isoformat_utc(event.occurred_at)} is more than "
                    f"{int(MAX_CLOCK_SKEW.total_seconds() // 60)} minutes ahead of the "
                    f"ledger clock ({isoformat_utc(now)})",
                    index,
                )
            )
        if event.run_ref is not None:
            if isinstance(event, RunStarted):
                if event.run_ref in defined_refs:
                    problems.append(
                        InputProblem("run_ref", f"{event.run_ref!r} is started twice", index)
                    )
                defined_refs.add(event.run_ref)
            elif event.run_ref not in defined_refs:
                problems.append(
                    InputProblem(
                        "run_ref",
                        f"{event.run_ref!r} names no RunStarted earlier in this batch",
                        index,
                    )
                )
        if event.run_id is not None:
            run_keys.add(event.run_id)
        elif event.run_ref is not None:
            run_keys.add(("ref", event.run_ref))
        else:
            run_keys.add(("new run", index))
    if expected_version is not None and len(run_keys) > 1:
        problems.append(
            InputProblem(
                None, "expected_version applies to a batch about one run; this batch has several"
            )
        )
    return payloads, problems


def _largest_field(event: EventModel) -> tuple[str, int]:
    """The payload field with the most bytes of JSON, and that size (the message names it)."""
    sizes = {
        name: len(canonical_json(value).encode("utf-8"))
        for name, value in payload_of(event).items()
    }
    largest = max(sizes, key=sizes.__getitem__)
    return largest, sizes[largest]


def _unstorable_field(event: EventModel) -> str:
    """The payload field that cannot be stored as JSON (the message names it)."""
    for name, value in payload_of(event).items():
        try:
            canonical_json(value).encode("utf-8")
        except (ValueError, TypeError, RecursionError):
            return name
    return "payload"


def _batch_error(batch: Sequence[EventModel], problems: list[InputProblem]) -> ValidationError:
    lines = [
        str(p) if p.index is None else f"event {p.index + 1} ({batch[p.index].event_id}): {p}"
        for p in problems
    ]
    return ValidationError(
        "; ".join(lines), problems=lines, details=problems, index=problems[0].index
    )


class _LostBeforeWriting(Exception):
    """The connection was found dead by the append's first statement: nothing was written,
    so the append can run again on a new connection. Never leaves :meth:`Ledger.append`."""

    def __init__(self, error: DBAPIError) -> None:
        super().__init__(str(error))
        self.error = error


# The locked head: last position, last hash, last run id, last recorded_at, the ledger's clock.
Head = tuple[int, str, int, datetime | None, datetime]


class _Appender:
    """One append, inside the locked transaction of :meth:`Ledger.append`."""

    def __init__(
        self, cursor: DriverCursor, bind: Engine | Connection, clock: Clock | None
    ) -> None:
        self.cursor = cursor
        self.clock = clock
        # The server's clock, selected with the head lock; None where the ledger's clock is
        # this machine's (SQLite) or the one this Ledger was given.
        self.server_now = server_clock(bind) if clock is None else None
        self.sql = append_statements(bind)

    def append(
        self, batch: list[EventModel], payloads: list[str], expected_version: int | None
    ) -> AppendResult:
        event_ids = [str(event.event_id) for event in batch]
        try:
            head, (stored, runs) = self._lock_and_read(
                event_ids,
                {event.run_id for event in batch if event.run_id is not None},
            )
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise _LostBeforeWriting(exc) from exc
            raise
        position, prev_hash, last_run_id, last_recorded_at, clock = head
        # Read under the lock and never behind the previous append, so recorded_at grows with
        # position even if the clock is set back: "as of T" is a prefix of history.
        self.now = max(clock, last_recorded_at) if last_recorded_at else clock
        existing_run_ids = {run_id for run_id, state in runs.items() if state is not None}
        refs: dict[str, int] = {}
        allocated: list[int] = []
        batch_ids: set[str] = set()
        taken = self._explicit_ids_above(last_run_id, batch)
        checked_runs: set[int] = set()
        results: list[RecordedEvent] = []
        new_events: list[RecordedEvent] = []
        recorded_text = isoformat_utc(self.now)  # hashed with every event of the batch
        for index, (event, payload, event_id) in enumerate(
            zip(batch, payloads, event_ids, strict=True)
        ):
            earlier = stored.get(event_id)
            if earlier is not None:
                _check_same_fact(
                    event, payload, earlier, refs, index, in_this_batch=event_id in batch_ids
                )
                if isinstance(event, RunStarted) and event.run_ref is not None:
                    refs[event.run_ref] = earlier.run_id
                results.append(earlier)
                continue
            if isinstance(event, RunStarted) and event.run_id is None:
                last_run_id += 1
                while last_run_id in taken:  # an explicit id an import used: skip it
                    last_run_id += 1
                if last_run_id > MAX_RUN_ID:
                    raise LedgerError(f"run ids are exhausted (maximum {MAX_RUN_ID})")
                run_id = last_run_id
                allocated.append(run_id)
            elif event.run_ref is not None and not isinstance(event, RunStarted):
                run_id = refs[event.run_ref]
            else:
                assert event.run_id is not None  # guaranteed by the model validator
                run_id = event.run_id
            if isinstance(event, RunStarted):
                if run_id not in allocated:
                    taken.add(run_id)  # explicit ids do not move the allocator
                if event.run_ref is not None:
                    refs[event.run_ref] = run_id
            current = runs.get(run_id)
            _check_not_ahead(event, clock, self.server_now is not None, index)
            if expected_version is not None and run_id not in checked_runs:
                _check_expected_version(run_id, expected_version, current, index)
            try:
                new_state = apply_event(current, event, run_id, self.now)
            except StreamError as exc:
                raise exc.at(index) from None
            runs[run_id] = new_state
            checked_runs.add(run_id)
            position += 1
            values = (
                position,
                event_id,
                run_id,
                new_state.version,
                event.type,
                event.schema_version,
                payload,
            )
            content = content_from_values(
                *values, isoformat_utc(event.occurred_at), recorded_text, event.actor
            )
            hash_ = link(prev_hash, content)
            recorded = RecordedEvent(
                *values, event.occurred_at, self.now, event.actor, prev_hash, hash_
            )
            prev_hash = hash_
            stored[event_id] = recorded  # a repeat later in this batch is a duplicate too
            batch_ids.add(event_id)
            results.append(recorded)
            new_events.append(recorded)
        if new_events:
            self._write(
                new_events, runs, existing_run_ids, position, prev_hash, last_run_id, self.now
            )
        return AppendResult(
            events=results, new_events=new_events, run_refs=refs, allocated_run_ids=allocated
        )

    def lock_head(self) -> Head:
        """The head row, locked, and the ledger's clock (see :meth:`_head`)."""
        return self._head(self.cursor.execute(self._lock_sql(), (HEAD_ROW_ID,)).fetchone())

    def _lock_sql(self) -> str:
        return self.sql.lock_head_with_clock if self.server_now is not None else self.sql.lock_head

    def _head(self, row: Sequence[Any] | None) -> Head:
        """The locked head row and the ledger's clock: on MySQL/MariaDB the server's, read in
        the same statement as the lock; on SQLite this machine's (one host); or the clock this
        Ledger was given."""
        if row is None:
            raise SchemaError("the ledger has no head row: run `ledger migrate`")
        if self.server_now is not None:
            row = self.sql.unpack_head_with_clock(row)
            now = self.sql.read_time(row[4])
        else:
            row = self.sql.unpack_head(row)
            now = (self.clock or utcnow)()
        last_recorded_at = None if row[3] is None else self.sql.read_time(row[3])
        return int(row[0]), str(row[1]), int(row[2]), last_recorded_at, now

    def _lock_and_read(
        self, event_ids: list[str], run_ids: set[int]
    ) -> tuple[Head, tuple[dict[str, RecordedEvent], dict[int, RunState | None]]]:
        """The head, locked, then under the lock what :meth:`_read_state` reads. On
        MySQL/MariaDB, when the reads fit one statement, both go in one round trip: the server
        runs the state read after the lock is granted, so it sees every committed append."""
        single = self._single_read(event_ids, run_ids)
        if self.sql.together and single is not None and self.cursor.together_is_safe:
            head_rows, state_rows = self.cursor.execute_together(
                [(self._lock_sql(), (HEAD_ROW_ID,)), single]
            )
            return self._head(head_rows[0] if head_rows else None), self._state_rows(state_rows)
        return self.lock_head(), self._read_state(event_ids, run_ids)

    def _single_read(
        self, event_ids: list[str], run_ids: set[int]
    ) -> tuple[str, tuple[Any, ...]] | None:
        """The one statement of :meth:`_read_state`, when the ids fit one IN list."""
        wanted_events = sorted(set(event_ids))
        wanted_runs = sorted(run_ids)
        if 2 * len(wanted_events) + len(wanted_runs) > reads.IN_CHUNK:
            return None
        sql = self.sql.read_state(len(wanted_events), len(wanted_runs))
        return sql, (*wanted_events, *wanted_runs, *wanted_events)

    def _explicit_ids_above(self, last_run_id: int, batch: list[EventModel]) -> set[int]:
        """Run ids above the allocator that explicit RunStarted (imports) already used; only
        looked up when this batch allocates."""
        if not any(isinstance(e, RunStarted) and e.run_id is None for e in batch):
            return set()
        rows = self.cursor.execute(self.sql.run_ids_above, (last_run_id,)).fetchall()
        return {int(row[0]) for row in rows}

    def _read_state(
        self, event_ids: list[str], run_ids: set[int]
    ) -> tuple[dict[str, RecordedEvent], dict[int, RunState | None]]:
        """Under the head lock: the stored events among ``event_ids`` (I3), and the registry
        rows of ``run_ids`` and of those stored events' runs (I4, I5). One statement when the
        ids fit one IN list, else the events first, then the runs, in chunks."""
        single = self._single_read(event_ids, run_ids)
        if single is not None:
            return self._state_rows(self.cursor.execute(*single).fetchall())
        wanted_events = sorted(set(event_ids))
        stored: dict[str, RecordedEvent] = {}
        for chunk in reads.chunks(wanted_events):
            found, _ = self._state_rows(
                self.cursor.execute(
                    self.sql.read_state(len(chunk), 0, runs_of_events=False), tuple(chunk)
                ).fetchall()
            )
            stored.update(found)
        wanted_runs = sorted(run_ids.union(event.run_id for event in stored.values()))
        runs: dict[int, RunState | None] = {}
        for part in reads.chunks(wanted_runs):
            _, found_runs = self._state_rows(
                self.cursor.execute(self.sql.read_state(0, len(part)), tuple(part)).fetchall()
            )
            runs.update(found_runs)
        return stored, runs

    def _state_rows(
        self, rows: Iterable[Sequence[Any]]
    ) -> tuple[dict[str, RecordedEvent], dict[int, RunState | None]]:
        """Rows of :meth:`AppendStatements.read_state`: events (kind 1) and runs (kind 2)."""
        read_time = self.sql.read_time
        stored: dict[str, RecordedEvent] = {}
        runs: dict[int, RunState | None] = {}
        for row in map(self.sql.unpack_state, rows):
            if row[0] == 1:
                event = reads.event_from_driver(row[1:13], read_time)
                stored[event.event_id] = event
            else:
                run_id = int(row[1])
                runs[run_id] = RunState(
                    run_id=run_id,
                    source_id=int(row[3]),
                    connector_name=row[2],
                    version=int(row[4]),
                    state=row[5],
                    started_at=read_time(row[8]),
                    last_event_at=read_time(row[9]),
                    opened_at=read_time(row[13]),
                    updated_at=read_time(row[14]),
                )
        return stored, runs

    def _write(
        self,
        new_events: list[RecordedEvent],
        runs: dict[int, RunState | None],
        existing_run_ids: set[int],
        position: int,
        last_hash: str,
        last_run_id: int,
        recorded_at: datetime,
    ) -> None:
        # The hot path of every append: rows go to the driver as plain tuples, in statements
        # prepared once per dialect, without SQLAlchemy's per-value type processing
        # (timestamps converted here, the batch's shared recorded_at once).
        sql, stored_time = self.sql, self.sql.stored_time
        recorded = stored_time(recorded_at)
        events = _event_params(new_events, stored_time, recorded)
        touched = sorted({event.run_id for event in new_events})
        created = [
            _run_params(runs[r], stored_time, recorded)
            for r in touched
            if r not in existing_run_ids
        ]
        changed = [
            _run_update_params(runs[r], stored_time, recorded)
            for r in touched
            if r in existing_run_ids
        ]
        head = (position, last_hash, last_run_id, recorded, HEAD_ROW_ID)
        steps: list[tuple[str, list[tuple[Any, ...]]]] = [(sql.insert_events, events)]
        if sql.update_head_and_run and len(changed) == 1 and not created:
            # The live append of a run that exists: its registry row and the head in one
            # statement (MySQL/MariaDB).
            *run_values, run_id = changed[0]
            steps.append(
                (sql.update_head_and_run, [(*run_values, *head[:-1], run_id, HEAD_ROW_ID)])
            )
        else:
            steps += [(sql.insert_run, created)] if created else []
            steps += [(sql.update_run, changed)] if changed else []
            steps.append((sql.update_head, [head]))
        self._send(steps, sum(len(event.payload) + _ROW_CHARS for event in new_events))

    def _send(self, steps: list[tuple[str, list[tuple[Any, ...]]]], text_chars: int) -> None:
        """The writes, in order. On MySQL/MariaDB, when they are small, in one round trip (an
        INSERT of several rows as one statement with a VALUES group per row); otherwise one
        call to the driver per statement (``executemany`` for several rows)."""
        if self.sql.together and text_chars <= _TOGETHER_MAX_CHARS and self.cursor.together_is_safe:
            statements: list[tuple[str, tuple[Any, ...]]] = []
            for statement, rows in steps:
                if len(rows) > 1 and statement.startswith("INSERT"):
                    flat = tuple(value for row in rows for value in row)
                    statements.append((values_groups(statement, len(rows)), flat))
                else:
                    statements += [(statement, row) for row in rows]
            if self.cursor.owns_transaction:
                # The COMMIT in the same round trip: if a statement before it fails, the
                # server stops there and the transaction is rolled back.
                statements.append(("COMMIT", ()))
            self.cursor.execute_together(statements)
            self.cursor.committed = self.cursor.owns_transaction
            return
        for statement, rows in steps:
            if len(rows) == 1:
                self.cursor.execute(statement, rows[0])
            else:
                self.cursor.executemany(statement, rows)


# Writes sent in one round trip carry at most this much text (each event's payload, plus
# _ROW_CHARS for its other columns, its share of the run and head rows and the SQL): escaped
# and encoded (at worst 8 bytes a character) it stays within the 1 MiB the oldest supported
# servers accept in one packet (max_allowed_packet); a bigger batch goes statement by statement
# (PyMySQL's executemany splits its INSERT at 1 MB).
_TOGETHER_MAX_CHARS = 128_000
_ROW_CHARS = 1_000


def _event_params(
    events: list[RecordedEvent], stored: Callable[[datetime], Any], recorded_at: Any
) -> list[tuple[Any, ...]]:
    """Driver parameters of new events, in :data:`EVENT_COLUMNS` order, timestamps as
    ``stored`` gives them to the driver (:func:`ledger.dialects.driver_timestamp`); the batch
    shares one ``recorded_at``, converted once by the caller."""
    return [
        (
            e.position,
            e.event_id,
            e.run_id,
            e.version,
            e.type,
            e.schema_version,
            e.payload,
            stored(e.occurred_at),
            recorded_at,
            e.actor,
            e.prev_hash,
            e.hash,
        )
        for e in events
    ]


def _run_params(
    state: RunState | None, stored: Callable[[datetime], Any], recorded_at: Any
) -> tuple[Any, ...]:
    """A new registry row, in :data:`ledger.reads.RUN_COLUMNS` order (its opened_at and
    updated_at are this append's recorded_at)."""
    assert state is not None
    return (
        state.run_id,
        state.source_id,
        state.connector_name,
        state.version,
        state.state,
        stored(state.started_at),
        stored(state.last_event_at),
        recorded_at,
        recorded_at,
    )


def _run_update_params(
    state: RunState | None, stored: Callable[[datetime], Any], recorded_at: Any
) -> tuple[Any, ...]:
    """What an append changes in an existing registry row (its updated_at is this append's
    recorded_at), in the order of :attr:`AppendStatements.update_run`."""
    assert state is not None
    return (state.version, state.state, stored(state.last_event_at), recorded_at, state.run_id)


def _check_not_ahead(event: EventModel, clock: datetime, from_database: bool, index: int) -> None:
    """The clock skew guard (I10), under the head lock, against the ledger's clock."""
    if event.occurred_at <= clock + MAX_CLOCK_SKEW:
        return
    clocks = (
        f"the database server's clock reads {isoformat_utc(clock)}, this writer's "
        f"{isoformat_utc(utcnow())}"
        if from_database
        else isoformat_utc(clock)
    )
    raise ValidationError(
        f"occurred_at: {isoformat_utc(event.occurred_at)} is more than "
        f"{int(MAX_CLOCK_SKEW.total_seconds() // 60)} minutes ahead of the ledger clock "
        f"({clocks}); nothing was appended",
        index=index,
    )


def _check_expected_version(
    run_id: int, expected: int, current: RunState | None, index: int
) -> None:
    actual = 0 if current is None else current.version
    if actual != expected:
        raise ConcurrencyError(run_id, expected, actual, index)


def _check_same_fact(
    event: EventModel,
    payload: str,
    earlier: RecordedEvent,
    refs: dict[str, int],
    index: int,
    in_this_batch: bool,
) -> None:
    """A reused event_id must name the very same fact, or the retry would silently drop one.

    ``occurred_at`` and ``actor`` are compared only when the writer set them: a retry of a line
    that left ``occurred_at`` to default gets a new default each time, yet is the same fact.
    """
    run_id = event.run_id
    if run_id is None and event.run_ref is not None and not isinstance(event, RunStarted):
        run_id = refs.get(event.run_ref)
    given = event.model_fields_set
    same = (
        event.type == earlier.type
        and (run_id is None or run_id == earlier.run_id)
        and ("occurred_at" not in given or event.occurred_at == earlier.occurred_at)
        and ("actor" not in given or event.actor == earlier.actor)
        and (event.schema_version != earlier.schema_version or payload == earlier.payload)
    )
    if not same:
        where = (
            "used earlier in this batch"
            if in_this_batch
            else f"already stored at position {earlier.position}"
        )
        raise EventIdReusedError(
            f"event_id {earlier.event_id} is {where} for a different fact ({earlier.type} of "
            f"run {earlier.run_id}); an event_id names one fact and cannot be reused for "
            f"{event.type} of run {run_id or event.run_ref}",
            index=index,
        )


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
