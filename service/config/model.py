"""``LedgerConfig``: the whole file, its sections, and the rules across them (one job per
connector and source, a connector's thresholds over the globals)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from datetime import datetime, timedelta

from pydantic import Field, ValidationInfo, field_validator

from ledger.database import create_ledger_engine
from ledger.durations import format_duration
from ledger.errors import ConfigurationError
from ledger.store import Ledger
from ledger.stuck import (
    StuckCursor,
    StuckPage,
    StuckRun,
    Thresholds,
    stuck_page,
    stuck_page_as_of,
    stuck_runs,
    stuck_runs_as_of,
)
from ledger.sweeper import SweepResult, sweep
from ledger.urls import DEFAULT_DATABASE_URL
from service.config.connectors import ConnectorConfig, ConnectorThresholds, ThresholdsConfig
from service.config.fields import Strict, same_port, split_listen
from service.config.http import ApiConfig, WebConfig
from service.config.serving import (
    AnchorConfig,
    ProjectorConfig,
    ServeConfig,
    SpoolConfig,
    SweeperConfig,
)

# A run idle between heartbeats is silent for up to one heartbeat_interval: stale_after must
# be at least this many of them, so that one heartbeat late or lost does not time it out.
HEARTBEATS_PER_STALE_AFTER = 2


class LedgerConfig(Strict):
    database_url: str = DEFAULT_DATABASE_URL
    thresholds: ThresholdsConfig = ThresholdsConfig()
    sweeper: SweeperConfig = SweeperConfig()
    projector: ProjectorConfig = ProjectorConfig()
    spool: SpoolConfig = SpoolConfig()
    serve: ServeConfig = ServeConfig()
    anchor: AnchorConfig | None = None  # no [anchor] section: no anchor is written
    api: ApiConfig = ApiConfig()  # no [api] listen: serve runs no API
    web: WebConfig = WebConfig()  # mounted at /web/ of the API when enabled
    connectors: list[ConnectorConfig] = Field(default_factory=list)

    @field_validator("database_url")
    @classmethod
    def _usable_url(cls, value: str) -> str:
        try:  # an engine connects lazily: this checks the URL, not the server
            create_ledger_engine(value).dispose()
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("api")
    @classmethod
    def _own_port(cls, value: ApiConfig, info: ValidationInfo) -> ApiConfig:
        serve = info.data.get("serve")  # absent when [serve] itself is invalid
        if isinstance(serve, ServeConfig):
            problem = metrics_port_problem(serve.metrics_host, serve.metrics_port, value)
            if problem is not None:
                raise ValueError(problem)
        return value

    @field_validator("connectors")
    @classmethod
    def _unique_jobs(cls, value: list[ConnectorConfig]) -> list[ConnectorConfig]:
        seen: set[tuple[str, int]] = set()
        for connector in value:
            key = (connector.name, connector.source_id)
            if key in seen:
                raise ValueError(
                    f"connector {connector.name!r} with source_id "
                    f"{connector.source_id} is configured twice"
                )
            seen.add(key)
        return value

    @field_validator("connectors")
    @classmethod
    def _heartbeats_within_stale_after(
        cls, value: list[ConnectorConfig], info: ValidationInfo
    ) -> list[ConnectorConfig]:
        """Refuse a connector whose runs serve's own sweeper would time out while they are
        healthy: idle between two heartbeats (a slow page, a long batch) a run is silent for up
        to ``heartbeat_interval``, so its ``stale_after`` must leave room for one heartbeat
        late or lost. (Below it, serve timed out its own live runs, and their later success
        showed ``failed``.)"""
        serve, thresholds = info.data.get("serve"), info.data.get("thresholds")
        if not isinstance(serve, ServeConfig) or not isinstance(thresholds, ThresholdsConfig):
            return value  # [serve] or [thresholds] is invalid itself, and said so
        least = HEARTBEATS_PER_STALE_AFTER * serve.heartbeat_interval
        for connector in value:
            own = connector.thresholds or ConnectorThresholds()
            stale_after = own.over(thresholds).stale_after
            if connector.enabled and stale_after < least:
                raise ValueError(
                    f"connector {connector.name!r}: stale_after "
                    f"{format_duration(stale_after)} is shorter than twice [serve] "
                    f"heartbeat_interval {format_duration(serve.heartbeat_interval)}: serve's "
                    "sweeper would time out its runs while they wait between heartbeats; set "
                    f"stale_after to at least {format_duration(least)}"
                )
        return value

    def serve_warnings(self) -> list[str]:
        """What ``ledger serve`` would quietly not do with this file, though each section is
        valid on its own (``ledger api --listen`` may be the one meant to use it)."""
        warnings = []
        if self.web.enabled and self.api.listen is None:
            warnings.append(
                "[web] enabled = true, but [api] listen is not set: `ledger serve` serves no "
                "pages (the web view is served on the API's listener; `ledger api --listen "
                "HOST:PORT` would serve it)"
            )
        return warnings

    def runs_at_start(self, connector: ConnectorConfig) -> bool:
        """Whether ``connector`` runs once as serve starts, besides its schedule."""
        if connector.schedule.run_at_start is not None:
            return connector.schedule.run_at_start
        return self.serve.run_at_start and connector.schedule.interval is not None

    def max_run_time(self, connector: ConnectorConfig) -> timedelta | None:
        """The bound on one run's total time for ``connector`` (its own over ``[serve]``'s);
        None: no bound."""
        return connector.max_run_time or self.serve.max_run_time

    def stuck_runs(
        self,
        ledger: Ledger,
        position: int | None = None,
        at: datetime | None = None,
        *,
        stale_after: timedelta | None = None,
        max_runtime: timedelta | None = None,
        run_ids: Collection[int] | None = None,
    ) -> list[StuckRun]:
        """The runs stuck by this config's thresholds (a connector's own over the globals):
        now, or as the ledger stood at ``position`` (judged at ``at``, by default when that
        position was recorded). A ``stale_after`` or ``max_runtime`` given replaces that
        threshold for every run, each connector's own included; the other stays as
        configured. ``run_ids``: only which of these runs are stuck."""
        thresholds, overrides = self.stuck_thresholds(stale_after, max_runtime)
        if position is not None:
            return stuck_runs_as_of(
                ledger,
                position,
                at,
                older_than=thresholds.stale_after,
                max_runtime=thresholds.max_runtime,
                overrides=overrides,
                run_ids=run_ids,
            )
        return stuck_runs(
            ledger,
            older_than=thresholds.stale_after,
            max_runtime=thresholds.max_runtime,
            overrides=overrides,
            run_ids=run_ids,
        )

    def stuck_page(
        self,
        ledger: Ledger,
        limit: int,
        after: StuckCursor | None = None,
        *,
        position: int | None = None,
        at: datetime | None = None,
        stale_after: timedelta | None = None,
        max_runtime: timedelta | None = None,
        count: bool = False,
    ) -> StuckPage:
        """A page of :meth:`stuck_runs`, after ``after``: now (:func:`ledger.stuck.stuck_page`),
        or as the ledger stood at ``position``, judged at ``at``
        (:func:`ledger.stuck.stuck_page_as_of`), with the same thresholds and the same
        replacing of a ``stale_after`` or ``max_runtime`` given."""
        thresholds, overrides = self.stuck_thresholds(stale_after, max_runtime)
        if position is not None:
            return stuck_page_as_of(
                ledger,
                position,
                limit,
                after,
                at,
                older_than=thresholds.stale_after,
                max_runtime=thresholds.max_runtime,
                overrides=overrides,
                count=count,
            )
        return stuck_page(
            ledger,
            limit,
            after,
            older_than=thresholds.stale_after,
            max_runtime=thresholds.max_runtime,
            overrides=overrides,
            count=count,
        )

    def sweep(
        self,
        ledger: Ledger,
        *,
        dry_run: bool = False,
        stale_after: timedelta | None = None,
        max_runtime: timedelta | None = None,
    ) -> SweepResult:
        """Time out the runs :meth:`stuck_runs` finds (the same thresholds, and the same
        replacing of a ``stale_after`` or ``max_runtime`` given), as serve's sweeper does."""
        thresholds, overrides = self.stuck_thresholds(stale_after, max_runtime)
        return sweep(
            ledger,
            dry_run=dry_run,
            older_than=thresholds.stale_after,
            max_runtime=thresholds.max_runtime,
            overrides=overrides,
        )

    def stuck_thresholds(
        self, stale_after: timedelta | None = None, max_runtime: timedelta | None = None
    ) -> tuple[Thresholds, dict[str | tuple[str, int], Thresholds]]:
        """The global thresholds and each connector's own, with a ``stale_after`` or
        ``max_runtime`` given replacing that threshold in every one of them."""
        given: dict[str, timedelta] = {}
        if stale_after is not None:
            given["stale_after"] = stale_after
        if max_runtime is not None:
            given["max_runtime"] = max_runtime
        thresholds = replace(self.thresholds.to_thresholds(), **given)
        overrides = {key: replace(value, **given) for key, value in self.overrides().items()}
        return thresholds, overrides

    def overrides(self) -> dict[str | tuple[str, int], Thresholds]:
        """Per-connector thresholds by (connector name, source id), merged over the globals."""
        return {
            (c.name, c.source_id): c.thresholds.over(self.thresholds)
            for c in self.connectors
            if c.thresholds
        }


def metrics_port_problem(host: str, port: int | None, api: ApiConfig) -> str | None:
    """What is wrong when serve's ``/metrics`` listener (``host``, ``port``) would take the
    port of its own API (``[api] listen``), or None. The metrics listener starts first, so the
    API would fail on a port "already in use" by its own process. (``[web]`` has no listener
    of its own: it is served on the API's.)"""
    if port is None or api.listen is None:
        return None
    if not same_port((host, port), split_listen(api.listen)):
        return None
    return (
        f"listen {api.listen} takes the port of [serve] metrics_port {port} (metrics_host "
        f"{host}): serve's metrics and its API each need a port of their own"
    )
