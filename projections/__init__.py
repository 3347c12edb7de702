"""Read models materialised from the ledger: the legacy ``ingestion_runs`` table, its status
transitions, the projector that keeps them current, rebuilds and point-in-time reads."""

from projections.as_of import resolve_position, run_as_of, runs_as_of
from projections.errors import (
    PoisonEventError,
    ProjectionBusyError,
    ProjectionError,
    ProjectionTimeoutError,
    SwapBlockedError,
)
from projections.projector import Projector
from projections.rebuilder import RebuildResult, rebuild
from projections.status import LedgerStatus, ProjectionStatus, ledger_status

__all__ = [
    "LedgerStatus",
    "PoisonEventError",
    "ProjectionBusyError",
    "ProjectionError",
    "ProjectionStatus",
    "ProjectionTimeoutError",
    "Projector",
    "RebuildResult",
    "SwapBlockedError",
    "ledger_status",
    "rebuild",
    "resolve_position",
    "run_as_of",
    "runs_as_of",
]
