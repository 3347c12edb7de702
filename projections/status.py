"""What ``ledger status`` reports: how far the projection is behind the ledger, and why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from ledger import Ledger
from ledger.database import translate_errors
from ledger.schema import ledger_events, ledger_runs
from projections.checkpoints import Checkpoint, Skip, list_skips, read_checkpoint
from projections.schema import PROJECTION_NAME


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    checkpoint: Checkpoint
    lag_events: int
    lag_seconds: float  # age of the oldest event not yet applied; 0 when caught up
    skips: list[Skip]


@dataclass(frozen=True)
class LedgerStatus:
    head_position: int
    head_recorded_at: datetime | None
    open_runs: int
    projections: list[ProjectionStatus]
    head_hash: str = ""  # what `ledger anchor` writes down with the position


def ledger_status(ledger: Ledger) -> LedgerStatus:
    head = ledger.head()
    with translate_errors(ledger.url, "status"), ledger.engine.connect() as conn:
        open_runs = int(
            conn.execute(
                select(func.count()).select_from(ledger_runs).where(ledger_runs.c.state == "open")
            ).scalar_one()
        )
        checkpoint = read_checkpoint(conn, PROJECTION_NAME)
        oldest_pending = conn.execute(
            select(ledger_events.c.recorded_at).where(
                ledger_events.c.position == checkpoint.position + 1
            )
        ).scalar_one_or_none()
        skips = list_skips(conn, PROJECTION_NAME)
    lag_seconds = 0.0
    if oldest_pending is not None:
        lag_seconds = max(0.0, (ledger.clock() - oldest_pending).total_seconds())
    projection = ProjectionStatus(
        name=PROJECTION_NAME,
        checkpoint=checkpoint,
        lag_events=max(0, head.last_position - checkpoint.position),
        lag_seconds=lag_seconds,
        skips=skips,
    )
    return LedgerStatus(
        head.last_position, head.last_recorded_at, open_runs, [projection], head.last_hash
    )
