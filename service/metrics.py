"""The figures ``ledger serve --metrics-port`` exposes (Prometheus text format) and
``ledger status`` shows: computed from the database at each scrape."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from connectors import Spool, SpoolError
from ledger import Ledger, StorageError, Thresholds, stuck_runs
from ledger.clock import isoformat_utc
from ledger.database import with_timeouts
from ledger.outage import Outage
from ledger.text import visible
from ledger.urls import mask_url
from projections import LedgerStatus, ledger_status
from projections.queries import runs_by_status
from service.config import LedgerConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Figures:
    runs_by_status: dict[str, int]
    open_runs: int
    stuck_runs: int
    events_appended: int
    projector_lag_events: int
    projector_lag_seconds: float
    # Where the projection stopped at an event it cannot apply (None while it applies events).
    projection_error_position: int | None
    spool_backlog: int
    last_sweep_at: datetime | None
    last_sweep_timed_out: int | None


def collect_figures(
    ledger: Ledger,
    thresholds: Thresholds,
    overrides: Mapping[str | tuple[str, int], Thresholds] | None,
    spool: Spool | None,
    last_sweep_at: datetime | None = None,
    last_sweep_timed_out: int | None = None,
    status: LedgerStatus | None = None,
) -> Figures:
    """The figures; pass ``status`` if the caller already read it (``ledger status`` does)."""
    status = status or ledger_status(ledger)
    projection = status.projections[0]
    with ledger.connect("metrics") as conn:
        by_status = runs_by_status(conn)
    stuck = stuck_runs(ledger, thresholds.stale_after, thresholds.max_runtime, overrides=overrides)
    backlog = spool_backlog(spool)
    return Figures(
        runs_by_status=by_status,
        open_runs=status.open_runs,
        stuck_runs=len(stuck),
        events_appended=status.head_position,
        projector_lag_events=projection.lag_events,
        projector_lag_seconds=projection.lag_seconds,
        projection_error_position=projection.checkpoint.error_position,
        spool_backlog=backlog,
        last_sweep_at=last_sweep_at,
        last_sweep_timed_out=last_sweep_timed_out,
    )


SCRAPE_TIMEOUT_S = 3  # per connect/read/write: a stalled scrape ends well inside Prometheus's 10 s


def scrape_url(url: str) -> str:
    """``url`` with short MySQL timeouts, for the engine that answers scrapes."""
    return with_timeouts(url, SCRAPE_TIMEOUT_S)


def spool_backlog(spool: Spool | None) -> int:
    """Events waiting in this host's spool: a local file, readable while the database is not."""
    return spool.status().pending if spool is not None else 0


def _database_up(up: bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "ledger_database_up", "1 if this scrape could read the ledger database", value=int(up)
    )


def _spool_gauge(backlog: int) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "ledger_spool_backlog_events", "Events waiting in this host's spool", value=backlog
    )


class LedgerCollector(Collector):
    """Reads the figures at scrape time (no state to drift from the database)."""

    def __init__(self, figures: Callable[[], Figures], spool: Spool | None = None) -> None:
        self.figures = figures
        self.spool = spool
        # Prometheus scrapes every 15 s or so: an outage is one WARNING and one INFO, not a
        # line per scrape for as long as it lasts.
        self.outage = Outage("metrics scrape (ledger_database_up 0)", log)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        # The spool is a local file, read on its own: readable while the database is down, and
        # a spool that cannot be read is not reported as the database being down.
        try:
            yield _spool_gauge(spool_backlog(self.spool))
        except StorageError as exc:
            log.error("metrics: cannot read the spool: %s", visible(str(exc)))
        try:
            figures = self.figures()
        except StorageError as exc:
            # A scrape during an outage must still answer (not fail with 500): that is when an
            # operator most needs to see the database down and the spool filling up.
            self.outage.failed(exc)
            yield _database_up(False)
            return
        self.outage.ended()
        yield _database_up(True)
        runs = GaugeMetricFamily(
            "ledger_runs", "Runs in ingestion_runs, by status", labels=["status"]
        )
        for status, count in figures.runs_by_status.items():
            runs.add_metric([status], count)
        yield runs
        yield GaugeMetricFamily(
            "ledger_open_runs", "Runs with no terminal event", value=figures.open_runs
        )
        yield GaugeMetricFamily(
            "ledger_stuck_runs", "Open runs past their thresholds", value=figures.stuck_runs
        )
        yield CounterMetricFamily(
            "ledger_events_appended", "Events in the ledger", value=figures.events_appended
        )
        yield GaugeMetricFamily(
            "ledger_projector_lag_events",
            "Events not yet applied to ingestion_runs",
            value=figures.projector_lag_events,
        )
        yield GaugeMetricFamily(
            "ledger_projector_lag_seconds",
            "Age of the oldest event not yet applied",
            value=figures.projector_lag_seconds,
        )
        yield GaugeMetricFamily(
            "ledger_projection_error",
            "1 while the projection is stopped at an event it cannot apply (see ledger status)",
            value=int(figures.projection_error_position is not None),
        )
        if figures.last_sweep_at is not None:
            yield GaugeMetricFamily(
                "ledger_last_sweep_timestamp_seconds",
                "When this process last swept",
                value=figures.last_sweep_at.timestamp(),
            )
            yield GaugeMetricFamily(
                "ledger_last_sweep_timed_out",
                "Runs the last sweep timed out",
                value=figures.last_sweep_timed_out or 0,
            )


# --- what `ledger status` shows, in one call


@dataclass(frozen=True)
class StatusReport:
    """The ledger's status (head, open runs, projections), the figures, the stale threshold
    they were counted with, the spool read, and the database (its URL, password masked)."""

    status: LedgerStatus
    figures: Figures
    stale_after: timedelta
    spool_path: Path
    database: str
    spool_exists: bool = True  # False: no spool file there (nothing was ever spooled, a typo)
    spool_error: str | None = None  # the spool file could not be read (the backlog shows 0)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON. The projection error's time and each skip's time are written
        as ``str(datetime)`` (``2026-01-01 12:00:00+00:00``), as ``ledger status`` always has."""
        status = self.status
        figures = self.figures
        return {
            "database": self.database,
            "head_position": status.head_position,
            "head_hash": status.head_hash,
            "head_recorded_at": isoformat_utc(status.head_recorded_at)
            if status.head_recorded_at
            else None,
            "open_runs": status.open_runs,
            "stuck_runs": figures.stuck_runs,
            "runs_by_status": figures.runs_by_status,
            "spool_backlog": figures.spool_backlog,
            "spool_path": str(self.spool_path),
            "spool_exists": self.spool_exists,
            "spool_error": self.spool_error,
            "projections": [
                {
                    "name": p.name,
                    "checkpoint": p.checkpoint.position,
                    "lag_events": p.lag_events,
                    "lag_seconds": round(p.lag_seconds, 3),
                    "error": None
                    if p.checkpoint.error_position is None
                    else {
                        "position": p.checkpoint.error_position,
                        "type": p.checkpoint.error_type,
                        "message": p.checkpoint.error_message,
                        "at": None if p.checkpoint.error_at is None else str(p.checkpoint.error_at),
                    },
                    "skips": [
                        {**vars(skip), "skipped_at": str(skip.skipped_at)} for skip in p.skips
                    ],
                }
                for p in status.projections
            ],
        }


def status_report(
    ledger: Ledger, config: LedgerConfig | None = None, spool_dir: str | None = None
) -> StatusReport:
    """What ``ledger status`` shows, with the thresholds, overrides and spool folder of
    ``config`` when given (``spool_dir`` first, if given)."""
    thresholds = config.thresholds.to_thresholds() if config else Thresholds()
    spool = Spool(spool_dir or (config.spool.dir if config else None))
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
        spool_exists=spool_exists,
        spool_error=spool_error,
    )
