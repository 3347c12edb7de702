"""The figures ``ledger serve --metrics-port`` exposes (Prometheus text format), computed from
the database at each scrape; ``ledger status`` shows them too (:mod:`service.status`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from connectors import Spool
from ledger import Ledger, StorageError, Thresholds, stuck_page
from ledger.database import with_timeouts
from ledger.outage import Outage
from ledger.text import visible
from projections import LedgerStatus, ledger_status
from projections.queries import runs_by_status

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
    # Counted in the database (each connector's thresholds in its SQL): a scrape read every
    # stuck run, 20,000 rows every 15 s for a ledger left without its sweeper. A page of one
    # rather than the COUNT alone: the oldest stuck run's row is still read, so an unreadable
    # time there (edited by hand) is named here as by every other reader.
    stuck = stuck_page(
        ledger,
        1,
        older_than=thresholds.stale_after,
        max_runtime=thresholds.max_runtime,
        overrides=overrides,
        count=True,
    )
    backlog = spool_backlog(spool)
    return Figures(
        runs_by_status=by_status,
        open_runs=status.open_runs,
        stuck_runs=stuck.total or 0,
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
