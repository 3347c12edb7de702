"""The ledger's own status: its head, its open runs, and how far each projection is behind it
and why (what ``ledger status``, ``/v1/status`` and the metrics read; the report they show,
with the spool and the figures, is :mod:`service.status`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger import Ledger
from ledger.batch_checks import head_ahead_of_clock
from ledger.reads import count_runs, recorded_at
from ledger.rules import OPEN
from projections.checkpoints import Checkpoint, Skip, list_skips, read_checkpoint, settled
from projections.schema import PROJECTION_NAME


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    checkpoint: Checkpoint
    lag_events: int
    lag_seconds: float  # age of the oldest event not yet applied; 0 when caught up
    skips: list[Skip]

    def to_dict(self) -> dict[str, Any]:
        """The projection as JSON; ``checkpoint`` is its position."""
        return {
            "name": self.name,
            "checkpoint": self.checkpoint.position,
            "lag_events": self.lag_events,
            "lag_seconds": round(self.lag_seconds, 3),
            "error": self.checkpoint.error_to_dict(),
            "skips": [skip.to_dict() for skip in self.skips],
        }


@dataclass(frozen=True)
class LedgerStatus:
    head_position: int
    head_recorded_at: datetime | None
    open_runs: int
    projections: list[ProjectionStatus]
    head_hash: str = ""  # what `ledger anchor` writes down with the position
    # The head's recorded_at ahead of the ledger's clock beyond the skew guard (both named),
    # and that clock as status read it.
    clock_warning: str | None = None
    clock: datetime | None = None


def ledger_status(ledger: Ledger) -> LedgerStatus:
    head = ledger.head()
    with ledger.connect("status") as conn:
        open_runs = count_runs(conn, OPEN)
        checkpoint = settled(conn, read_checkpoint(conn, PROJECTION_NAME))
        oldest_pending = recorded_at(conn, checkpoint.position + 1)
        skips = list_skips(conn, PROJECTION_NAME)
    now = ledger.clock()
    lag_seconds = 0.0
    if oldest_pending is not None:
        lag_seconds = max(0.0, (now - oldest_pending).total_seconds())
    projection = ProjectionStatus(
        name=PROJECTION_NAME,
        checkpoint=checkpoint,
        lag_events=max(0, head.last_position - checkpoint.position),
        lag_seconds=lag_seconds,
        skips=skips,
    )
    return LedgerStatus(
        head.last_position,
        head.last_recorded_at,
        open_runs,
        [projection],
        head.last_hash,
        head_ahead_of_clock(head.last_recorded_at, now),
        now,
    )
