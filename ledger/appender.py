"""One append, inside the transaction that holds the ``ledger_head`` lock (DESIGN.md I1–I6):
drop the events already stored (I3), check ``expected_version`` (I4), the stream rules (I5) and
the clock skew guard against the ledger's clock (I10), number the new events from the head
(I2), chain their hashes (I6), and write events, run registry and head in as few round trips
as the database allows (:mod:`ledger.append_sql`). :class:`ledger.Ledger` runs it, again on a
conflict or a dead connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from ledger import reads
from ledger.append_sql import append_statements, values_groups
from ledger.batch_checks import MAX_CLOCK_SKEW
from ledger.clock import Clock, isoformat_utc, utcnow
from ledger.dialects import (
    server_clock,
)
from ledger.driver import DriverCursor
from ledger.driver_errors import driver_gave_up_waiting
from ledger.errors import (
    AheadOfClockError,
    ConcurrencyError,
    ConnectorNotAllowedError,
    EventIdReusedError,
    LedgerError,
    SchemaError,
    StreamError,
)
from ledger.events import MAX_RUN_ID, EventModel, RunStarted
from ledger.hashing import content_from_values, link
from ledger.recorded import AppendResult, RecordedEvent, recorded_event
from ledger.rules import RunState, apply_event
from ledger.schema import HEAD_ROW_ID

log = logging.getLogger(__name__)


class LostBeforeWriting(Exception):
    """The connection was found dead by the append's first statement: nothing was written,
    so the append can run again on a new connection. Never leaves :meth:`Ledger.append`."""

    def __init__(self, error: DBAPIError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class AppendRequest:
    """One call of :meth:`Ledger.append`, checked and serialised before the transaction and
    carried unchanged through every retry of it."""

    events: list[EventModel]
    payloads: list[str]  # each event's payload as stored (``mapper.payload_of``)
    expected_version: int | None = None
    # The only connectors whose runs the append may write for (an API token bound to its
    # connectors); None: any.
    connectors: frozenset[str] | None = None


# The locked head: last position, last hash, last run id, last recorded_at, the ledger's clock.
Head = tuple[int, str, int, datetime | None, datetime]


class Appender:
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

    def append(self, request: AppendRequest) -> AppendResult:
        batch, payloads = request.events, request.payloads
        expected_version, connectors = request.expected_version, request.connectors
        event_ids = [str(event.event_id) for event in batch]
        try:
            head, (stored, runs) = self._lock_and_read(
                event_ids,
                {event.run_id for event in batch if event.run_id is not None},
            )
        except DBAPIError as exc:
            # Not when the driver gave up waiting for the answer: the server is there, queued
            # behind a lock the row-lock wait does not bound (a table lock, a global read
            # lock), and a new connection would wait the whole read timeout again.
            if exc.connection_invalidated and not driver_gave_up_waiting(exc):
                raise LostBeforeWriting(exc) from exc
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
            if connectors is not None:
                # Before any other check: a run of another connector is refused whatever its
                # state, so a bound caller learns nothing of it but that.
                _check_connector(event, index, connectors, refs, runs)
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
            recorded = recorded_event(
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
# and encoded (at worst 8 bytes a character) it stays within 1 MiB, well inside the
# max_allowed_packet the ledger needs (ledger.batch_checks.MIN_SERVER_PACKET_BYTES); a bigger
# batch goes statement by statement (PyMySQL's executemany splits its INSERT at about 1 MB of
# escaped text, or sends one large row alone).
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
    """The clock skew guard (I10), under the head lock, against the ledger's clock itself: not
    against the last ``recorded_at``, which one append during a forward jump of the clock
    fixes in the future for good (it never goes back), and which would then let every writer
    date facts up to that future. A refusal lapses as the clock catches up (a spool keeps
    the event: :class:`AheadOfClockError`)."""
    if event.occurred_at <= clock + MAX_CLOCK_SKEW:
        return
    clocks = (
        f"the database server's clock reads {isoformat_utc(clock)}, this writer's "
        f"{isoformat_utc(utcnow())}"
        if from_database
        else isoformat_utc(clock)
    )
    raise AheadOfClockError(
        f"occurred_at: {isoformat_utc(event.occurred_at)} is more than "
        f"{int(MAX_CLOCK_SKEW.total_seconds() // 60)} minutes ahead of the ledger clock "
        f"({clocks}); nothing was appended",
        index=index,
    )


def _run_named(run_id: int | None, event: EventModel) -> str:
    """The run an event is about, as a message names it: by id, by run_ref, or a new one."""
    if run_id is not None:
        return f"run {run_id}"
    if event.run_ref is not None:
        return f"run_ref {event.run_ref!r}"
    return "a new run"


def _check_connector(
    event: EventModel,
    index: int,
    allowed: frozenset[str],
    refs: dict[str, int],
    runs: dict[int, RunState | None],
) -> None:
    """Refuse an event for a run of a connector outside ``allowed`` (exact names): a new run
    by its ``connector_name``, a stored run by the registry's row read under the lock (a run's
    connector never changes). An event about a run that does not exist is left to the stream
    rules; one addressed by ``run_ref`` concerns a run this batch started, checked already."""
    if isinstance(event, RunStarted):
        if event.connector_name not in allowed:
            raise ConnectorNotAllowedError(None, allowed, index)
        return
    run_id = event.run_id if event.run_id is not None else refs.get(event.run_ref or "")
    state = runs.get(run_id) if run_id is not None else None
    if state is not None and state.connector_name not in allowed:
        raise ConnectorNotAllowedError(run_id, allowed, index)


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
            f"{event.type} of {_run_named(run_id, event)}",
            index=index,
        )
