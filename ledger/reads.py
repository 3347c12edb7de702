"""Reads of the ledger's own tables, on a connection the caller holds.

:class:`ledger.Ledger` opens a connection for each of its reads and calls these. Code that must
read the ledger inside a connection or transaction of its own calls them directly with it: the
projector reads events in the transaction that moves its checkpoint (I7), ``ledger verify``
compares tables within one snapshot, a command reads several things under one error label.
Outside the append path (:mod:`ledger.store`) and the stuck query (:mod:`ledger.stuck`), they
are the only SQL on ``ledger_events``, ``ledger_runs`` and ``ledger_head``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import fields
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Connection, String, cast, func, not_, or_, select
from sqlalchemy.sql import Select

from ledger.dialects import (
    driver_placeholder,
    same_text,
    stored_time_reader,
    time_as_text,
)
from ledger.driver import DriverCursor
from ledger.errors import StoredEventError
from ledger.hashing import EVENT_COLUMNS, HASH, PREV_HASH, hashed_values, rows_reader
from ledger.mapper import readable_schema_versions
from ledger.recorded import LedgerHead, RecordedEvent, StoredRef
from ledger.rules import FINISHED, TIMED_OUT, RunState
from ledger.schema import HEAD_ROW_ID, ledger_events, ledger_head, ledger_runs
from ledger.stored_rows import named_rows
from ledger.text import clip, visible

# Rows per IN (...) list, well under every driver's parameter limit.
IN_CHUNK = 500
RUN_COLUMNS = tuple(c.name for c in ledger_runs.columns)
_TIME_COLUMNS = ("occurred_at", "recorded_at")


def chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---------------------------------------------------------------------- events


def read_events_page(
    conn: Connection, after: int, limit: int, up_to: int | None = None
) -> list[RecordedEvent]:
    """Up to ``limit`` events after position ``after`` (and at most ``up_to``), on ``conn``."""
    # The replay's hot path: one SQL string per dialect, rows as plain tuples, read in one
    # call. Through SQLAlchemy's execute, not a DBAPI cursor (read_rows_page): 0.4 µs an event
    # more, but the statement is the Connection's (its transaction, `-vvv`'s SQL log, the
    # cursor events the tests that race verify hook on).
    sql = _page_sql(driver_placeholder(conn), time_as_text(conn), up_to is not None)
    params = (after, limit) if up_to is None else (after, up_to, limit)
    rows = conn.exec_driver_sql(sql, params).fetchall()
    return events_from_driver(rows, stored_time_reader)


def read_rows_page(
    conn: Connection, after: int, limit: int, up_to: int | None = None
) -> list[tuple[Any, ...]]:
    """The rows :func:`read_events_page` makes its events of, as the driver returns them
    (:data:`EVENT_COLUMNS` order, timestamps as their stored text for
    :func:`ledger.dialects.stored_time_reader`): a rebuild folds them without events
    (:func:`projections.fold.fold_rows`). Read on a DBAPI cursor of ``conn``'s transaction, as
    :func:`stored_rows` is, without SQLAlchemy's result object."""
    sql = _page_sql(driver_placeholder(conn), time_as_text(conn), up_to is not None)
    params = (after, limit) if up_to is None else (after, up_to, limit)
    cursor = DriverCursor.on(conn)
    try:
        return cursor.execute(sql, params).fetchall()
    finally:
        cursor.close()


@lru_cache(maxsize=8)
def _page_sql(mark: str, as_text: Callable[[str], str], bounded: bool) -> str:
    # Timestamps as their stored text (see time_as_text), parsed by stored_time_reader:
    # quicker than the MySQL driver's own datetime conversion.
    up_to = f" AND position <= {mark}" if bounded else ""
    columns = [as_text(name) if name in _TIME_COLUMNS else name for name in EVENT_COLUMNS]
    return (
        f"SELECT {', '.join(columns)} FROM ledger_events WHERE position > {mark}{up_to} "
        f"ORDER BY position LIMIT {mark}"
    )


# Rows (EVENT_COLUMNS order) as the values of RecordedEvent's fields, in the order of its
# fields (its constructor's): how the replay unpacks rows by name (events_from_driver, and
# projections.fold.fold_rows).
as_event_fields = rows_reader(*(field.name for field in fields(RecordedEvent)))


def events_from_driver(
    rows: Iterable[Sequence[Any]], read_time: Callable[[Any], datetime]
) -> list[RecordedEvent]:
    """:func:`event_from_driver` for each row. The events of one append share their
    ``recorded_at``, which is read once for all of them."""
    # The replay's hot path: each event is made as RecordedEvent.__init__ would make it, its
    # fields set in one dict rather than by twelve frozen-dataclass setattr calls.
    events: list[RecordedEvent] = []
    append = events.append
    new, set_fields = object.__new__, object.__setattr__
    stored_at: Any = None
    recorded_at: datetime | None = None
    position: Any = None
    try:
        for (
            position,
            event_id,
            run_id,
            version,
            type_,
            schema,
            payload,
            occurred,
            recorded,
            actor,
            prev_hash,
            hash_,
        ) in as_event_fields(rows):
            if recorded != stored_at or recorded_at is None:
                stored_at, recorded_at = recorded, read_time(recorded)
            event = new(RecordedEvent)
            set_fields(
                event,
                "__dict__",
                {
                    "position": int(position),
                    "event_id": event_id,
                    "run_id": int(run_id),
                    "version": int(version),
                    "type": type_,
                    "schema_version": int(schema),
                    "payload": payload,
                    "occurred_at": read_time(occurred),
                    "recorded_at": recorded_at,
                    "actor": actor,
                    "prev_hash": prev_hash,
                    "hash": hash_,
                },
            )
            append(event)
    except (ValueError, TypeError, OverflowError) as exc:
        # Only a row no append wrote gets here (edited by hand after its triggers were
        # dropped): named, as a payload that no longer validates is, not a traceback.
        raise StoredEventError(
            f"the event stored at position {visible(str(position))} cannot be read "
            f"({clip(visible(str(exc)), 200)}): no append of this ledger writes such a row"
        ) from exc
    return events


def event_from_driver(row: Sequence[Any], read_time: Callable[[Any], datetime]) -> RecordedEvent:
    """A ``ledger_events`` row as the driver returns it (:data:`EVENT_COLUMNS` order,
    timestamps as their stored text, ``read_time`` :func:`ledger.dialects.stored_time_reader`
    as the append's packed reads give it)."""
    position, event_id, run_id, version, type_, schema, payload, occurred, recorded, actor = (
        hashed_values(row)
    )
    return RecordedEvent(
        int(position),
        event_id,
        int(run_id),
        int(version),
        type_,
        int(schema),
        payload,
        read_time(occurred),
        read_time(recorded),
        actor,
        row[PREV_HASH],
        row[HASH],
    )


def read_run(
    conn: Connection, run_id: int, after: int = 0, limit: int | None = None
) -> list[RecordedEvent]:
    """The events of one run in version order: those after position ``after``, at most
    ``limit``. Empty for a run that never started.

    When ``after`` is one of the run's own events (a page's cursor), the read seeks on the
    run's (run_id, version) key from that event's version instead of filtering the run's
    earlier rows: a run's versions rise with its positions (I4), so the two select the same
    events, and the page after a millionth event costs what the first does."""
    query = _EVENTS.where(ledger_events.c.run_id == run_id)
    if after:
        version = run_version_at(conn, run_id, after)
        if version is not None:
            query = query.where(ledger_events.c.version > version)
        else:
            query = query.where(ledger_events.c.position > after)
    query = query.order_by(ledger_events.c.version).limit(limit)
    return _stored_events(conn, query)


def read_runs(
    conn: Connection, run_ids: Collection[int], up_to: int | None = None
) -> dict[int, list[RecordedEvent]]:
    """The events of each run of ``run_ids`` in version order (those at positions up to
    ``up_to``, when given), in one statement an IN-list chunk rather than one a run (a run
    that never started has no key): what a check of a page of runs reads."""
    found: dict[int, list[RecordedEvent]] = {}
    # Each run once: a run id given twice in two chunks had its events listed twice.
    for chunk in chunks(sorted(set(run_ids))):
        query = _EVENTS.where(ledger_events.c.run_id.in_(chunk)).order_by(
            ledger_events.c.run_id, ledger_events.c.version
        )
        if up_to is not None:
            query = query.where(ledger_events.c.position <= up_to)
        for event in _stored_events(conn, query):
            found.setdefault(event.run_id, []).append(event)
    return found


def run_version_at(conn: Connection, run_id: int, position: int) -> int | None:
    """The version of run ``run_id``'s event at ``position`` (None if the event stored there,
    if any, is another run's)."""
    query = select(ledger_events.c.version).where(
        (ledger_events.c.position == position) & (ledger_events.c.run_id == run_id)
    )
    value = conn.execute(query).scalar_one_or_none()
    return None if value is None else int(value)


def run_status_events(
    conn: Connection, run_id: int, after_version: int, up_to_version: int, limit: int
) -> list[RecordedEvent]:
    """Up to ``limit`` of the run's events with a version in ``(after_version,
    up_to_version]`` that can change its status (every type but RunProgressed), in version
    order: what the status before a page of its timeline is folded from."""
    query = (
        _EVENTS.where(
            (ledger_events.c.run_id == run_id)
            & (ledger_events.c.version > after_version)
            & (ledger_events.c.version <= up_to_version)
            & (ledger_events.c.type != "RunProgressed")
        )
        .order_by(ledger_events.c.version)
        .limit(limit)
    )
    return _stored_events(conn, query)


def latest_occurred_at(conn: Connection, run_id: int, up_to_version: int) -> datetime | None:
    """The latest ``occurred_at`` of the run's events up to ``up_to_version`` (None if none)."""
    of_run = (ledger_events.c.run_id == run_id) & (ledger_events.c.version <= up_to_version)
    query = select(func.max(_as_text(ledger_events.c.occurred_at))).where(of_run)
    value = conn.execute(query).scalar_one_or_none()
    if value is None:
        return None
    try:
        return stored_time_reader(value)
    except (TypeError, ValueError) as exc:  # a row no append wrote: which one, then say so
        where = select(ledger_events.c.position).where(
            of_run & (_as_text(ledger_events.c.occurred_at) == value)
        )
        position = conn.execute(where.limit(1)).scalar_one_or_none()
        raise StoredEventError(
            f"the event stored at position {position} cannot be read "
            f"({clip(visible(str(exc)), 200)}): no append of this ledger writes such a row"
        ) from exc


def _as_text(column: Any) -> Any:
    """A timestamp column as the text it stores (SQLite: as it is; MySQL: ``CAST(… AS CHAR)``),
    read by :func:`ledger.dialects.stored_time_reader` rather than by SQLAlchemy's processor."""
    return cast(column, String).label(column.name)


# Every column of ledger_events in EVENT_COLUMNS order, the timestamps as their stored text:
# the selects of a run's events, read into events as the position reads are.
_EVENTS = select(
    *(
        _as_text(ledger_events.c[name]) if name in _TIME_COLUMNS else ledger_events.c[name]
        for name in EVENT_COLUMNS
    )
)


def _stored_events(conn: Connection, query: Select[Any]) -> list[RecordedEvent]:
    """The events of a select of :data:`_EVENTS`. A row no append wrote (a ``recorded_at`` of
    'yesterday', an ``occurred_at`` of NULL, edited by hand) is a :class:`StoredEventError`
    naming its position, as :func:`read_events_page` says it: SQLAlchemy's own date parse
    raised a bare ValueError (a 500 of the web view, a traceback)."""
    return events_from_driver(conn.execute(query), stored_time_reader)


def first_events(conn: Connection, limit: int) -> list[RecordedEvent]:
    """Each run's first event (version 1: its RunStarted, I5), in position order, for the first
    ``limit`` runs."""
    query = (
        _EVENTS.where(ledger_events.c.version == 1).order_by(ledger_events.c.position).limit(limit)
    )
    return _stored_events(conn, query)


def count_events(conn: Connection, except_runs: Collection[int] = ()) -> int:
    """How many events are stored, not counting those of ``except_runs``."""
    query = (
        select(func.count())
        .select_from(ledger_events)
        .where(ledger_events.c.run_id.not_in(list(except_runs)))
    )
    return int(conn.execute(query).scalar_one())


def event_type_at(conn: Connection, position: int) -> str | None:
    """The type of the event at ``position`` (None if none is stored there)."""
    query = select(ledger_events.c.type).where(ledger_events.c.position == position)
    value = conn.execute(query).scalar_one_or_none()
    return None if value is None else str(value)


def recorded_at(conn: Connection, position: int) -> datetime | None:
    """When the event at ``position`` was recorded (None if none is stored there)."""
    query = select(_as_text(ledger_events.c.recorded_at)).where(
        ledger_events.c.position == position
    )
    value = conn.execute(query).scalar_one_or_none()
    return None if value is None else _stored_time(value, position)


def _stored_time(value: Any, position: object) -> datetime:
    """A ``recorded_at`` read as its stored text: SQLAlchemy's own parse of a row no append
    wrote ('yesterday', edited by hand) raised a bare ValueError (the status lag, the as-of
    banner, the anchor: a traceback)."""
    try:
        return stored_time_reader(value)
    except (TypeError, ValueError) as exc:
        raise StoredEventError(
            f"the event stored at position {visible(str(position))} cannot be read "
            f"({clip(visible(str(exc)), 200)}): no append of this ledger writes such a row"
        ) from exc


def stored_refs(conn: Connection, positions: Iterable[int]) -> dict[int, StoredRef]:
    """The stored events at ``positions`` (those that exist), by position, read raw."""
    wanted = sorted({p for p in positions if p > 0})
    columns = (
        ledger_events.c.position,
        ledger_events.c.run_id,
        ledger_events.c.type,
        ledger_events.c.hash,
        _as_text(ledger_events.c.recorded_at),
        ledger_events.c.prev_hash,
    )
    found: dict[int, StoredRef] = {}
    for part in chunks(wanted):
        for row in conn.execute(select(*columns).where(ledger_events.c.position.in_(part))):
            found[int(row.position)] = StoredRef(
                int(row.position),
                int(row.run_id),
                str(row.type),
                str(row.hash),
                _stored_time(row.recorded_at, row.position),
                str(row.prev_hash),
            )
    return found


def stored_rows(conn: Connection, after: int, limit: int) -> list[tuple[Any, ...]]:
    """Up to ``limit`` rows after ``after`` as stored, columns in
    :data:`ledger.hashing.EVENT_COLUMNS` order and timestamps as text: what verify rehashes
    (:func:`ledger.hashing.stored_row_hash`), with no models and no type conversion."""
    sql = _stored_page_sql(driver_placeholder(conn), time_as_text(conn))
    cursor = DriverCursor.on(conn)
    try:
        return cursor.execute(sql, (after, limit)).fetchall()
    finally:
        cursor.close()


@lru_cache(maxsize=8)
def _stored_page_sql(mark: str, as_text: Callable[[str], str]) -> str:
    columns = [as_text(name) if name in _TIME_COLUMNS else name for name in EVENT_COLUMNS]
    return (
        f"SELECT {', '.join(columns)} FROM ledger_events WHERE position > {mark} "
        f"ORDER BY position LIMIT {mark}"
    )


def last_stored_position(conn: Connection) -> int | None:
    """The highest position of any stored row (None when there is none), whatever the head
    says."""
    value = conn.execute(select(func.max(ledger_events.c.position))).scalar_one_or_none()
    return None if value is None else int(value)


def first_stored_position(conn: Connection) -> int | None:
    """The lowest position of any stored row (None when there is none): 1 wherever only
    appends wrote, since they number from 1; a row below it was written around them."""
    value = conn.execute(select(func.min(ledger_events.c.position))).scalar_one_or_none()
    return None if value is None else int(value)


def stored_event_ids(conn: Connection, event_ids: Sequence[str]) -> set[str]:
    """Which of ``event_ids`` are stored."""
    found: set[str] = set()
    for part in chunks(sorted(set(event_ids))):
        query = select(ledger_events.c.event_id).where(ledger_events.c.event_id.in_(part))
        found.update(str(event_id) for event_id in conn.execute(query).scalars())
    return found


def lowest_position_between(conn: Connection, after: int, up_to: int) -> int | None:
    """The lowest stored position in ``(after, up_to]``, if any."""
    within = (ledger_events.c.position > after) & (ledger_events.c.position <= up_to)
    value = conn.execute(select(func.min(ledger_events.c.position)).where(within)).scalar()
    return None if value is None else int(value)


# ---------------------------------------------------------------------- head and runs


def read_head(conn: Connection) -> LedgerHead | None:
    """The ``ledger_head`` row (None if it is missing: an unmigrated or damaged database)."""
    query = select(ledger_head).where(ledger_head.c.id == HEAD_ROW_ID)
    with named_rows(conn, ledger_head):
        row = conn.execute(query).mappings().one_or_none()
    if row is None:
        return None
    return LedgerHead(
        row["last_position"], row["last_hash"], row["last_run_id"], row["last_recorded_at"]
    )


def run_states(conn: Connection, run_ids: Sequence[int]) -> dict[int, RunState]:
    """The registry rows of ``run_ids`` (those that exist), by run id."""
    found: dict[int, RunState] = {}
    for part in chunks(run_ids):
        query = select(ledger_runs).where(ledger_runs.c.run_id.in_(part))
        found.update((state.run_id, state) for state in _states(conn, query))
    return found


def find_runs(
    conn: Connection,
    *,
    connector_name: str | None = None,
    source_id: int | None = None,
    state: str | None = None,
    limit: int | None = None,
) -> list[RunState]:
    """Registry rows, by run id, of a connector (its exact name), a source, a state."""
    query = select(ledger_runs).order_by(ledger_runs.c.run_id).limit(limit)
    if connector_name is not None:
        query = query.where(same_text(ledger_runs.c.connector_name, connector_name, conn))
    if source_id is not None:
        query = query.where(ledger_runs.c.source_id == source_id)
    if state is not None:
        query = query.where(ledger_runs.c.state == state)
    return _states(conn, query)


def run_ids_started_by(
    conn: Connection,
    position: int,
    *,
    connector_name: str | None = None,
    source_id: int | None = None,
    before: int | None = None,
    limit: int,
) -> list[int]:
    """The ids of the runs that existed at ``position`` (their RunStarted, version 1 by I5,
    at or before it), newest first, at most ``limit``: of a connector (its exact name), a
    source, below ``before``, when given. Read down the registry's key, each run's start
    found on its (run_id, version) key: a page of them costs about the page."""
    started = ledger_events.alias("started")
    query = (
        select(ledger_runs.c.run_id)
        .join(started, (started.c.run_id == ledger_runs.c.run_id) & (started.c.version == 1))
        .where(started.c.position <= position)
        .order_by(ledger_runs.c.run_id.desc())
        .limit(limit)
    )
    if connector_name is not None:
        query = query.where(same_text(ledger_runs.c.connector_name, connector_name, conn))
    if source_id is not None:
        query = query.where(ledger_runs.c.source_id == source_id)
    if before is not None:
        query = query.where(ledger_runs.c.run_id < before)
    return [int(run_id) for run_id in conn.execute(query).scalars()]


def run_ids_open_at(conn: Connection, position: int) -> list[int]:
    """The ids of the runs that can have been open at ``position``, by run id: started at or
    before it, and not shown closed by then by their own events. A closed run never opens
    again (the stream rules, I5), so a run is left out only when an event of its own at or
    before ``position`` closed it: a RunFinished or RunTimedOut of a schema_version this code
    reads (:func:`ledger.mapper.readable_schema_versions`; a newer writer's closes nothing in
    a replay, :func:`ledger.rules.replay_event`). That event is sought where the registry
    says it is, the registry only pointing: its version's event (the run's last), or, for a
    run it calls closed whose last event is not a closing one (a timed-out run that reported
    later), the run's own events up to ``position``. So a registry row that disagrees with
    the events (a hand edit of ``state`` or ``version``, which ``ledger verify`` reports)
    adds runs to replay, never takes one out: the past is read from the events alone. The
    runs returned hold every run open then, and a few closed then, which their own events
    tell apart. One pass down the registry with two seeks on the ``(run_id, version)`` key a
    run (a third, down that run's key, for a timed-out run that reported later): what a past
    moment's stuck runs cost instead of replaying every event before it."""
    started = ledger_events.alias("started")
    last = ledger_events.alias("last")
    closing = ledger_events.alias("closing")
    query = (
        select(ledger_runs.c.run_id)
        .join(started, (started.c.run_id == ledger_runs.c.run_id) & (started.c.version == 1))
        .outerjoin(
            last,
            (last.c.run_id == ledger_runs.c.run_id) & (last.c.version == ledger_runs.c.version),
        )
        .where(started.c.position <= position)
        .where(
            last.c.position.is_(None)
            | (last.c.position > position)
            | (
                not_(_closes_the_run(last))
                & not_(
                    ledger_runs.c.state.in_((TIMED_OUT, FINISHED))
                    # A scalar subquery, not EXISTS: MariaDB turns a correlated EXISTS into
                    # an IN that it materialises, reading every event up to position.
                    & select(closing.c.version)
                    .where(
                        closing.c.run_id == ledger_runs.c.run_id,
                        closing.c.position <= position,
                        _closes_the_run(closing),
                    )
                    .limit(1)
                    .scalar_subquery()
                    .is_not(None)
                )
            )
        )
        .order_by(ledger_runs.c.run_id)
    )
    return [int(run_id) for run_id in conn.execute(query).scalars()]


def _closes_the_run(event: Any) -> ColumnElement[bool]:
    """An event (a row of an alias of ``ledger_events``) that closes its run when replayed:
    a RunTimedOut or RunFinished of a schema_version this code reads."""
    return or_(
        *(
            (event.c.type == event_type)
            & event.c.schema_version.in_(readable_schema_versions(event_type))
            for event_type in ("RunTimedOut", "RunFinished")
        )
    )


def count_runs(conn: Connection, state: str | None = None) -> int:
    """How many runs there are, or are in ``state`` (``open``: no terminal event)."""
    query = select(func.count()).select_from(ledger_runs)
    if state is not None:
        query = query.where(ledger_runs.c.state == state)
    return int(conn.execute(query).scalar_one())


def _states(conn: Connection, query: Any) -> list[RunState]:
    with named_rows(conn, ledger_runs):
        return [
            RunState(**{name: row[name] for name in RUN_COLUMNS})
            for row in conn.execute(query).mappings()
        ]
