"""What ``ledger status`` and ``/v1/status`` show, in one call: the ledger's status
(:mod:`projections.status`), the figures of the metrics, the spool, and the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from connectors import Spool, SpoolError
from ledger import Ledger, SchemaError, Thresholds
from ledger.clock import isoformat_utc
from ledger.urls import mask_url
from projections import LedgerStatus, ledger_status
from service.config import LedgerConfig
from service.metrics import Figures, collect_figures

# What /v1/status says in place of the OS's message, which names the server's file.
SPOOL_UNREADABLE = "the spool file could not be read (`ledger status` on the server says why)"


@dataclass(frozen=True)
class StatusReport:
    """The ledger's status (head, open runs, projections), the figures, the stale threshold
    they were counted with, the spool read, and the database (its URL, password masked, and
    its kind)."""

    status: LedgerStatus
    figures: Figures
    stale_after: timedelta
    spool_path: Path
    database: str
    database_kind: str  # sqlite, mysql or mariadb: what /v1/status names
    spool_exists: bool = True  # False: no spool file there (nothing was ever spooled, a typo)
    spool_error: str | None = None  # the spool file could not be read (the backlog shows 0)
    # The schema is not at this run-ledger's revision: every writer refuses it (the message
    # says what to do: run `ledger migrate`, or upgrade run-ledger). None when current.
    schema_warning: str | None = None

    def to_dict(self, public: bool = False) -> dict[str, Any]:
        """The report as JSON, every time as :func:`~ledger.clock.isoformat_utc`.

        ``public`` (``/v1/status``) leaves out what would show any read token the server's
        files and where its database is: ``database`` is its kind, never its URL, user, host
        or file; the spool's path is left out, and a spool that could not be read says so
        without the OS's message (which names the file; the server's ``ledger status`` shows
        it)."""
        status = self.status
        figures = self.figures
        report: dict[str, Any] = {
            "database": self.database_kind if public else self.database,
            "head_position": status.head_position,
            "head_hash": status.head_hash,
            "head_recorded_at": isoformat_utc(status.head_recorded_at)
            if status.head_recorded_at
            else None,
            "clock_warning": status.clock_warning,
            "open_runs": status.open_runs,
            "stuck_runs": figures.stuck_runs,
            "runs_by_status": figures.runs_by_status,
            "spool_backlog": figures.spool_backlog,
            "spool_path": str(self.spool_path),
            "spool_exists": self.spool_exists,
            "spool_error": self.spool_error,
            "schema_warning": self.schema_warning,
            "projections": [projection.to_dict() for projection in status.projections],
        }
        if public:
            del report["spool_path"]
            del report["schema_warning"]  # /readyz answers it; the message names the database
            if self.spool_error is not None:
                report["spool_error"] = SPOOL_UNREADABLE
        return report


def status_report(
    ledger: Ledger,
    config: LedgerConfig | None = None,
    spool_dir: str | None = None,
    *,
    schema: bool = True,
) -> StatusReport:
    """What ``ledger status`` shows, with the thresholds, overrides and spool folder of
    ``config`` when given (``spool_dir`` first, if given). ``schema=False``: no
    ``schema_warning`` (its queries are not made): the API's public status leaves it out."""
    thresholds = config.thresholds.to_thresholds() if config else Thresholds()
    spool = Spool(spool_dir or (config.spool.dir if config else None))
    schema_warning = _schema_warning(ledger) if schema else None
    status = ledger_status(ledger)
    # An unreadable or corrupted spool failed the whole command: the operator saw nothing of
    # the ledger on the day the spool needed looking at. It is shown beside the rest.
    spool_error: str | None = None
    readable: Spool | None = spool
    try:
        spool_exists = spool.status().exists
    except SpoolError as exc:
        spool_error, readable, spool_exists = str(exc), None, True
    figures = collect_figures(
        ledger, thresholds, config.overrides() if config else None, readable, status=status
    )
    return StatusReport(
        status,
        figures,
        thresholds.stale_after,
        spool.path,
        mask_url(ledger.url),
        ledger.database_kind,
        spool_exists=spool_exists,
        spool_error=spool_error,
        schema_warning=schema_warning,
    )


def _schema_warning(ledger: Ledger) -> str | None:
    """Why the schema is not the one this run-ledger writes, or None. After an upgrade of
    run-ledger without `ledger migrate` (or a database left by a newer one) every writer
    refuses the database, while the status of the ledger it reads looks healthy."""
    try:
        ledger.check_schema()
    except SchemaError as exc:
        return str(exc)
    return None


__all__ = ["SPOOL_UNREADABLE", "StatusReport", "status_report"]
