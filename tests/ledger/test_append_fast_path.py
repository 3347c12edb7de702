"""Property: the append fast path (statements prepared once per dialect, sent to the driver as
they are) writes exactly the rows the SQLAlchemy-expression path it replaced wrote (issue 14).

:class:`ExpressionAppender` is that earlier path, kept here as the reference: the same append
logic, with the head lock, the dedupe lookup, the registry read and the writes built as
SQLAlchemy ``select()``/``insert()``/``update()`` expressions. The same random batches go
through both into two fresh stores with the same clock; every column of ``ledger_events``,
``ledger_runs`` and ``ledger_head`` must then be equal, as the driver returns it (the stored
text on SQLite), and every refused batch refused with the same error. The pages
:meth:`ledger.Ledger.read_all` reads as plain tuples must equal SQLAlchemy's typed read.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, bindparam, insert, select, update

from forensics.chain import verify_chain
from ledger import (
    AppendResult,
    EventModel,
    Ledger,
    LedgerError,
    RecordedEvent,
    RunFinished,
    RunProgressed,
    RunStarted,
    RunTimedOut,
    appender,
    reads,
)
from ledger.clock import utcnow
from ledger.dialects import write_transaction
from ledger.driver import DriverCursor
from ledger.events import MAX_RUN_ID
from ledger.rules import RunState
from ledger.schema import HEAD_ROW_ID, ledger_events, ledger_head, ledger_runs
from tests import support

pytestmark = pytest.mark.slow


class ExpressionAppender(appender.Appender):
    """The append path before issue 14: SQLAlchemy expressions built and compiled per call."""

    conn: Connection

    def _lock_and_read(
        self, event_ids: list[str], run_ids: set[int]
    ) -> tuple[appender.Head, tuple[dict[str, RecordedEvent], dict[int, RunState | None]]]:
        return self.lock_head(), self._read_state(event_ids, run_ids)

    def lock_head(self) -> appender.Head:
        columns: list[Any] = list(ledger_head.c)
        if self.server_now is not None:
            columns.append(self.server_now.label("database_now"))
        query = select(*columns).where(ledger_head.c.id == HEAD_ROW_ID).with_for_update()
        row = self.conn.execute(query).mappings().one()
        if self.server_now is not None:
            now: datetime = row["database_now"].replace(tzinfo=UTC)
        else:
            now = (self.clock or utcnow)()
        return (
            int(row["last_position"]),
            str(row["last_hash"]),
            int(row["last_run_id"]),
            row["last_recorded_at"],
            now,
        )

    def _explicit_ids_above(self, last_run_id: int, batch: list[EventModel]) -> set[int]:
        if not any(isinstance(e, RunStarted) and e.run_id is None for e in batch):
            return set()
        query = select(ledger_runs.c.run_id).where(ledger_runs.c.run_id > last_run_id)
        return set(self.conn.execute(query).scalars())

    def _read_state(
        self, event_ids: list[str], run_ids: set[int]
    ) -> tuple[dict[str, RecordedEvent], dict[int, RunState | None]]:
        stored: dict[str, RecordedEvent] = {}
        for chunk in reads.chunks(sorted(set(event_ids))):
            query = select(ledger_events).where(ledger_events.c.event_id.in_(chunk))
            for row in self.conn.execute(query).mappings():
                stored[row["event_id"]] = support.recorded_event(row)
        wanted = set(run_ids).union(earlier.run_id for earlier in stored.values())
        return stored, dict(reads.run_states(self.conn, sorted(wanted)))

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
        self.conn.execute(insert(ledger_events), [e.as_row() for e in new_events])
        touched = {event.run_id for event in new_events}

        def row(run_id: int) -> dict[str, Any]:
            return {name: getattr(runs[run_id], name) for name in reads.RUN_COLUMNS}

        created = [row(r) for r in sorted(touched - existing_run_ids)]
        changed = [row(r) for r in sorted(touched & existing_run_ids)]
        if created:
            self.conn.execute(insert(ledger_runs), created)
        if changed:
            self.conn.execute(
                update(ledger_runs)
                .where(ledger_runs.c.run_id == bindparam("b_run_id"))
                .values(
                    version=bindparam("version"),
                    state=bindparam("state"),
                    last_event_at=bindparam("last_event_at"),
                    updated_at=bindparam("updated_at"),
                ),
                [{**r, "b_run_id": r["run_id"]} for r in changed],
            )
        self.conn.execute(
            update(ledger_head)
            .where(ledger_head.c.id == HEAD_ROW_ID)
            .values(
                last_position=position,
                last_hash=last_hash,
                last_run_id=last_run_id,
                last_recorded_at=recorded_at,
            )
        )


class ExpressionLedger(Ledger):
    def _append_once(self, request: appender.AppendRequest) -> AppendResult:
        with write_transaction(self.engine) as conn:
            appender = ExpressionAppender(DriverCursor.on(conn), conn, self.own_clock)
            appender.conn = conn
            return appender.append(request)


def stepping_clock(start: datetime) -> Callable[[], datetime]:
    """The same sequence of instants for both stores: one millisecond further each read."""
    ticks: Iterator[int] = itertools.count()
    return lambda: start + timedelta(milliseconds=next(ticks))


def table_rows(conn: Connection, table: str, key: str) -> list[tuple[Any, ...]]:
    """Every column of every row, as the driver returns it (no type processing)."""
    return [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY {key}")]


def stored_tables(ledger: Ledger) -> dict[str, list[tuple[Any, ...]]]:
    with ledger.connect() as conn:
        return {
            "ledger_events": table_rows(conn, "ledger_events", "position"),
            "ledger_runs": table_rows(conn, "ledger_runs", "run_id"),
            "ledger_head": table_rows(conn, "ledger_head", "id"),
        }


# One step: (kind, run slot, count). Kinds cover every branch of the append: allocation,
# explicit ids above the allocator (imports), run_refs, duplicates (in and across batches),
# stream rule and expected_version refusals, the clock skew guard, and a batch too large for
# one combined state read (the chunked path).
KINDS = [
    "start",
    "start",
    "progress",
    "progress",
    "finish",
    "timeout",
    "import",
    "ref",
    "repeat",
    "unknown_run",
    "future",
    "bulk",
]
step = st.tuples(st.sampled_from(KINDS), st.integers(0, 3), st.integers(0, 1000))
histories = st.lists(
    st.tuples(st.lists(step, min_size=1, max_size=4), st.one_of(st.none(), st.integers(-1, 1))),
    min_size=1,
    max_size=6,
)


def build_batch(
    steps: list[tuple[str, int, int]], run_ids: list[int], earlier: list[EventModel], now: datetime
) -> list[EventModel]:
    events: list[EventModel] = []
    for kind, slot, count in steps:
        run_id = run_ids[(slot + count) % len(run_ids)] if run_ids else 1
        if kind == "start":
            events.append(RunStarted(source_id=slot, connector_name=f"c{slot}", occurred_at=now))
        elif kind == "progress":
            events.append(RunProgressed(run_id=run_id, records_fetched=count, occurred_at=now))
        elif kind == "finish":
            events.append(RunFinished(run_id=run_id, status="partial", occurred_at=now))
        elif kind == "timeout":
            events.append(RunTimedOut(run_id=run_id, reason="stale", detected_by="sweeper"))
        elif kind == "import":
            events.append(RunStarted(run_id=2 + slot, source_id=9, connector_name="imported"))
        elif kind == "ref":
            ref = f"ref{len(events)}"
            events.append(RunStarted(run_ref=ref, source_id=slot, connector_name="by ref"))
            events.append(RunProgressed(run_ref=ref, records_created=count, actor="ref"))
        elif kind == "repeat" and (earlier or events):
            pool = earlier + events
            events.append(pool[count % len(pool)])
        elif kind == "unknown_run":
            events.append(RunProgressed(run_id=MAX_RUN_ID - slot))
        elif kind == "future":
            events.append(RunProgressed(run_id=run_id, occurred_at=now + timedelta(hours=1)))
        elif kind == "bulk":
            for offset in range(26):  # 260 events: over the one-statement state read
                ref = f"bulk{len(events)}-{offset}"
                events.append(RunStarted(run_ref=ref, source_id=offset, connector_name="bulk"))
                events += [
                    RunProgressed(run_ref=ref, records_fetched=n, occurred_at=now) for n in range(8)
                ]
                events.append(RunFinished(run_ref=ref, status="success"))
    return events


def append_both(
    stores: tuple[Ledger, Ledger], batch: list[EventModel], expected_version: int | None
) -> list[RecordedEvent] | None:
    outcomes: list[tuple[str, Any]] = []
    for ledger in stores:
        try:
            result = ledger.append(batch, expected_version=expected_version)
        except LedgerError as exc:
            outcomes.append((type(exc).__name__, str(exc)))
        else:
            outcomes.append(("ok", result))
    (fast_kind, fast), (reference_kind, reference) = outcomes
    assert fast_kind == reference_kind, outcomes
    if fast_kind != "ok":
        assert fast == reference
        return None
    assert fast == reference  # the same AppendResult: events, new events, refs, allocations
    new_events: list[RecordedEvent] = fast.new_events
    return new_events


@pytest.fixture(scope="module")
def reference_mysql() -> Iterator[str | None]:
    """A second MariaDB database, for the reference store (reset for each example)."""
    base = support.mysql_base_url()
    if base is None:
        yield None
        return
    url = support.create_mysql_database(base)
    support.migrate(url)
    try:
        yield url
    finally:
        support.drop_mysql_database(url)


def fresh_pair(
    backend: str, template: Path, tmp_path: Path, db_url: str, reference_url: str | None
) -> tuple[Ledger, Ledger]:
    """Two empty stores with the same clock: the fast path's and the reference's."""
    start = utcnow()
    fast = support.fresh_store(backend, template, tmp_path, db_url if backend == "mysql" else None)
    base = support.fresh_store(backend, template, tmp_path, reference_url)
    fast.own_clock = stepping_clock(start)
    return fast, ExpressionLedger(base.engine, base.url, stepping_clock(start))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories)
def test_fast_path_writes_the_rows_of_the_expression_path(
    history: list[tuple[list[tuple[str, int, int]], int | None]],
    backend: str,
    sqlite_template: Path,
    tmp_path: Path,
    db_url: str,
    reference_mysql: str | None,
) -> None:
    fast, reference = fresh_pair(backend, sqlite_template, tmp_path, db_url, reference_mysql)
    start = utcnow()
    try:
        run_ids: list[int] = []
        earlier: list[EventModel] = []
        for steps, offset in history:
            batch = build_batch(steps, run_ids, earlier, start)
            if not batch:
                continue
            expected_version = None
            first = batch[0].run_id
            if offset is not None and first is not None and {e.run_id for e in batch} == {first}:
                state = fast.run(first)
                expected_version = max(0, (state.version if state else 0) + offset)
            new_events = append_both((fast, reference), batch, expected_version)
            if new_events is None:
                continue
            run_ids += [e.run_id for e in new_events if e.type == "RunStarted"]
            earlier += batch
            assert stored_tables(fast) == stored_tables(reference)
        assert stored_tables(fast) == stored_tables(reference)
        assert verify_chain(fast).ok
        # Pages read as plain tuples give the events SQLAlchemy's typed read gives.
        with fast.connect() as conn:
            query = select(ledger_events).order_by(ledger_events.c.position)
            typed = [support.recorded_event(row) for row in conn.execute(query).mappings()]
        assert list(fast.read_all(batch_size=7)) == typed
        assert [e.recorded_at.tzinfo for e in typed] == [UTC] * len(typed)
    finally:
        fast.close()
        reference.close()
