"""Applies a batch of ledger events to a pair of read-model tables, inside the caller's
transaction: rows are folded in memory and each touched row is written once per batch."""

from __future__ import annotations

from sqlalchemy import Connection, Table, bindparam, insert, select, update

from ledger import RecordedEvent
from ledger.reads import chunks
from projections.fold import BatchOutcome, Row, fold_events, normalise


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

    def apply(
        self, conn: Connection, events: list[RecordedEvent], skipped: set[int]
    ) -> BatchOutcome:
        rows = self.load(conn, {event.run_id for event in events})
        existing = set(rows)
        before = {run_id: dict(row) for run_id, row in rows.items()}
        outcome = fold_events(rows, events, skipped)
        changed = [run_id for run_id, row in rows.items() if before.get(run_id) != row]
        created = [rows[r] for r in sorted(changed) if r not in existing]
        updated = [{**rows[r], "b_id": r} for r in sorted(changed) if r in existing]
        if created:
            conn.execute(insert(self.runs), created)
        if updated:
            conn.execute(self._update, updated)
        if outcome.transitions:
            conn.execute(insert(self.transitions), [t.as_row() for t in outcome.transitions])
        return outcome

    def load(self, conn: Connection, run_ids: set[int]) -> dict[int, Row]:
        rows: dict[int, Row] = {}
        for chunk in chunks(sorted(run_ids)):
            query = select(self.runs).where(self.runs.c.id.in_(chunk))
            for row in conn.execute(query).mappings():
                rows[row["id"]] = normalise(row)
        return rows
