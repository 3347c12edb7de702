"""Applies a batch of ledger events to a pair of read-model tables, inside the caller's
transaction: rows are folded in memory and each touched row is written once per batch.

Rows go to the driver's ``executemany`` as plain tuples, each value passed through the bind
processor SQLAlchemy itself would apply to its column (so the stored values are the ones a Core
``insert``/``update`` writes), by statements compiled once per table and dialect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Dialect, Table, bindparam, insert, select, update

from ledger import RecordedEvent
from ledger.dialects import stored_time_reader
from ledger.hashing import RUN_ID
from ledger.reads import chunks
from ledger.stored_rows import named_rows
from projections.dialects import bind_processor
from projections.fold import BatchOutcome, Row, fold_events, fold_rows, normalise


@dataclass(frozen=True)
class _Statement:
    """A statement as the driver takes it: its parameters' names (in order, for a positional
    paramstyle), the column each is the value of, and the bind processor (or None) each value
    goes through."""

    sql: str
    names: tuple[str, ...]
    columns: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool

    @classmethod
    def compile(cls, statement: Any, table: Table, dialect: Dialect) -> _Statement:
        compiled = statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup if compiled.positional else compiled.binds)
        columns = tuple(name.removeprefix("b_") for name in names)  # b_id: the update's key
        processors = tuple(bind_processor(table.c[column].type, dialect) for column in columns)
        return cls(compiled.string, names, columns, processors, compiled.positional)

    def execute(self, conn: Connection, rows: Sequence[Row]) -> None:
        # A rebuild writes every run through here: the row's values taken in one C call, and
        # only the columns with a processor (timestamps, the status enum, JSON) passed to it.
        take = itemgetter(*self.columns, *self.columns[:1])  # two or more: always a tuple
        processed = [(index, p) for index, p in enumerate(self.processors) if p is not None]
        values: list[tuple[Any, ...]] = []
        for row in rows:
            value = list(take(row)[: len(self.columns)])
            for index, process in processed:
                value[index] = process(value[index])
            values.append(tuple(value))
        if self.positional:
            conn.exec_driver_sql(self.sql, values)
        else:
            conn.exec_driver_sql(self.sql, [dict(zip(self.names, v, strict=True)) for v in values])


class ReadModelWriter:
    """Writes folded rows to one ``ingestion_runs``-shaped table and its transitions table."""

    def __init__(self, runs: Table, transitions: Table) -> None:
        self.runs = runs
        self.transitions = transitions
        self._columns = [c.name for c in runs.columns]
        self._update = (
            update(runs)
            .where(runs.c.id == bindparam("b_id"))
            .values({name: bindparam(name) for name in self._columns if name != "id"})
        )
        # By the dialect's class: the statements differ between SQLite, MySQL and MariaDB.
        self._compiled: dict[type[Dialect], tuple[_Statement, _Statement, _Statement]] = {}

    def _statements(self, dialect: Dialect) -> tuple[_Statement, _Statement, _Statement]:
        """The insert and update of runs and the insert of transitions, for ``dialect``."""
        found = self._compiled.get(type(dialect))
        if found is None:
            found = self._compiled[type(dialect)] = (
                _Statement.compile(insert(self.runs), self.runs, dialect),
                _Statement.compile(self._update, self.runs, dialect),
                _Statement.compile(insert(self.transitions), self.transitions, dialect),
            )
        return found

    def apply(
        self, conn: Connection, events: list[RecordedEvent], skipped: set[int]
    ) -> BatchOutcome:
        rows = self.load(conn, {event.run_id for event in events})
        existing = set(rows)
        before = {run_id: dict(row) for run_id, row in rows.items()}
        outcome = fold_events(rows, events, skipped)
        self._write(conn, rows, existing, before, outcome)
        return outcome

    def apply_rows(
        self, conn: Connection, page: Sequence[Sequence[Any]], skipped: set[int]
    ) -> BatchOutcome:
        """:meth:`apply` of the events of ``page``, rows as :func:`ledger.reads.read_rows_page`
        returns them, folded by :func:`projections.fold.fold_rows`."""
        run_ids = set(map(itemgetter(RUN_ID), page))
        if any(type(run_id) is not int for run_id in run_ids):  # no append writes such rows
            run_ids = {run_id for run_id in map(_run_id, page) if run_id is not None}
        rows = self.load(conn, run_ids)
        existing = set(rows)
        before = {run_id: dict(row) for run_id, row in rows.items()}
        outcome = fold_rows(rows, page, skipped, stored_time_reader)
        self._write(conn, rows, existing, before, outcome)
        return outcome

    def _write(
        self,
        conn: Connection,
        rows: dict[int, Row],
        existing: set[int],
        before: dict[int, Row],
        outcome: BatchOutcome,
    ) -> None:
        """Insert the rows folded anew, update those changed, insert the transitions."""
        changed = [run_id for run_id, row in rows.items() if before.get(run_id) != row]
        created = [rows[r] for r in sorted(changed) if r not in existing]
        updated = [{**rows[r], "b_id": r} for r in sorted(changed) if r in existing]
        insert_runs, update_runs, insert_transitions = self._statements(conn.dialect)
        if created:
            insert_runs.execute(conn, created)
        if updated:
            update_runs.execute(conn, updated)
        if outcome.transitions:
            insert_transitions.execute(conn, [t.as_row() for t in outcome.transitions])

    def load(self, conn: Connection, run_ids: set[int]) -> dict[int, Row]:
        rows: dict[int, Row] = {}
        # A time edited by hand into a row is the StoredRowError naming it, as every reader of
        # the table says, not a bare ValueError out of the projector (a traceback).
        with named_rows(conn, self.runs):
            for chunk in chunks(sorted(run_ids)):
                query = select(self.runs).where(self.runs.c.id.in_(chunk))
                for row in conn.execute(query).mappings():
                    rows[row["id"]] = normalise(row)
        return rows


def _run_id(row: Sequence[Any]) -> Any:
    """A driver row's run id as the fold looks it up (an event's is ``int()`` of it), or None
    for one that is not a number: no row is loaded for it, and the row raises when the fold
    makes it an event."""
    run_id = row[RUN_ID]
    if type(run_id) is int:
        return run_id
    try:
        return int(run_id)
    except (ValueError, TypeError, OverflowError):
        return None
