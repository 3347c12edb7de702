"""Helpers for the projection tests: reading tables back, and writing like a newer writer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select, text, update

from ledger import Ledger
from ledger.clock import utcnow
from ledger.hashing import chain_hash
from ledger.schema import HEAD_ROW_ID, ledger_events, ledger_head, ledger_runs
from projections import runs_as_of
from projections.fold import Row, normalise
from projections.schema import ingestion_run_transitions, ingestion_runs


def table_rows(ledger: Ledger) -> dict[int, Row]:
    with ledger.engine.connect() as conn:
        return {r["id"]: normalise(r) for r in conn.execute(select(ingestion_runs)).mappings()}


def transition_rows(ledger: Ledger) -> list[dict[str, Any]]:
    query = select(ingestion_run_transitions).order_by(ingestion_run_transitions.c.position)
    with ledger.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def replayed_rows(ledger: Ledger) -> dict[int, Row]:
    """What a fresh in-memory replay of the whole ledger gives."""
    return runs_as_of(ledger, ledger.head().last_position)


def append_raw(
    ledger: Ledger,
    run_id: int,
    event_type: str,
    payload: str,
    schema_version: int = 1,
    state: str | None = None,
) -> int:
    """Append a row the way a newer run-ledger would (a type this one does not know), keeping
    the chain and head consistent; ``state``: the registry's state that writer's append sets
    (a terminal event of its own closes the run there). Returns its position."""
    with ledger.engine.begin() as conn:
        head = conn.execute(select(ledger_head).with_for_update()).mappings().one()
        version = conn.execute(
            select(ledger_events.c.version)
            .where(ledger_events.c.run_id == run_id)
            .order_by(ledger_events.c.version.desc())
            .limit(1)
        ).scalar_one()
        now = utcnow()
        row: dict[str, Any] = {
            "position": head["last_position"] + 1,
            "event_id": str(uuid.uuid4()),
            "run_id": run_id,
            "version": version + 1,
            "type": event_type,
            "schema_version": schema_version,
            "payload": payload,
            "occurred_at": now,
            "recorded_at": now,
            "actor": "newer-writer",
            "prev_hash": head["last_hash"],
        }
        row["hash"] = chain_hash(row["prev_hash"], row)
        conn.execute(ledger_events.insert(), row)
        conn.execute(
            update(ledger_head)
            .where(ledger_head.c.id == HEAD_ROW_ID)
            .values(last_position=row["position"], last_hash=row["hash"], last_recorded_at=now)
        )
        # As an append keeps the registry: the run's version, activity and updated_at.
        last_event_at = conn.execute(
            select(ledger_runs.c.last_event_at).where(ledger_runs.c.run_id == run_id)
        ).scalar_one()
        conn.execute(
            update(ledger_runs)
            .where(ledger_runs.c.run_id == run_id)
            .values(
                version=row["version"],
                updated_at=now,
                last_event_at=max(last_event_at, now),
                **({} if state is None else {"state": state}),
            )
        )
    return int(row["position"])


@contextmanager
def records_fetched_capped(ledger: Ledger) -> Iterator[None]:
    """An operator's constraint on the projection that refuses recordsFetched >= 1000: a row
    that ``append`` accepted but the database will not store (the projector stops at it)."""
    with ledger.engine.begin() as conn:
        if ledger.engine.dialect.name != "sqlite":
            conn.execute(
                text(
                    "ALTER TABLE ingestion_runs ADD CONSTRAINT test_cap "
                    "CHECK (recordsFetched < 1000)"
                )
            )
        else:
            for when in ("INSERT", "UPDATE"):
                conn.execute(
                    text(
                        f"CREATE TRIGGER test_cap_{when.lower()} BEFORE {when} ON ingestion_runs "
                        "WHEN NEW.recordsFetched >= 1000 BEGIN "
                        "SELECT RAISE(ABORT, 'CHECK constraint failed: test_cap'); END"
                    )
                )
    try:
        yield
    finally:
        if ledger.engine.dialect.name != "sqlite":
            with ledger.engine.begin() as conn:
                conn.execute(text("ALTER TABLE ingestion_runs DROP CONSTRAINT test_cap"))
