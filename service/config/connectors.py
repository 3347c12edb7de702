"""``[thresholds]`` and ``[[connectors]]``: when a run is stuck, and each scheduled connector."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from connectors.registry import CONNECTOR_TYPES, build_connector, unknown_options_message
from ledger.errors import ConfigurationError
from ledger.events import ConnectorName, SourceId
from ledger.stuck import DEFAULT_STALE_AFTER, Thresholds
from service.config.crontab import crontab_trigger
from service.config.fields import Duration, Strict


class ThresholdsConfig(Strict):
    stale_after: Duration = DEFAULT_STALE_AFTER
    max_runtime: Duration | None = None

    def to_thresholds(self) -> Thresholds:
        return Thresholds(self.stale_after, self.max_runtime)


class ConnectorThresholds(Strict):
    """A connector's own thresholds; a field left out keeps the global value."""

    stale_after: Duration | None = None
    max_runtime: Duration | None = None

    def over(self, defaults: ThresholdsConfig) -> Thresholds:
        return Thresholds(
            self.stale_after or defaults.stale_after, self.max_runtime or defaults.max_runtime
        )


class ScheduleConfig(Strict):
    interval: Duration | None = None
    cron: str | None = None
    # None: serve.run_at_start decides (which applies to interval schedules only).
    run_at_start: bool | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleConfig:
        if (self.interval is None) == (self.cron is None):
            raise ValueError("give exactly one of interval or cron")
        return self

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:  # as serve reads it, so config check and serve agree
                crontab_trigger(value)
            except ValueError as exc:
                raise ValueError(f"not a crontab expression serve can run: {exc}") from exc
        return value


class ConnectorConfig(Strict):
    name: ConnectorName  # the ledger's rule for connector names, checked when the file is read
    type: Literal["csv", "http-json"]
    source_id: SourceId
    schedule: ScheduleConfig
    options: dict[str, Any] = Field(default_factory=dict)
    thresholds: ConnectorThresholds | None = None
    # A bound on one run's total time, over [serve] max_run_time (service.run_bound).
    max_run_time: Duration | None = None
    enabled: bool = True

    @field_validator("options")
    @classmethod
    def _known_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = info.data.get("type")  # absent when the type itself is invalid
        if kind in CONNECTOR_TYPES:
            unknown = unknown_options_message(CONNECTOR_TYPES[kind], value)
            if unknown:
                raise ValueError(unknown)
        return value

    @model_validator(mode="after")
    def _buildable(self) -> ConnectorConfig:
        """The connector is built here once, so an option its type refuses (a missing one, an
        http-json url that is not http(s)) fails ``config check`` and serve's start, not every
        scheduled run."""
        if not self.enabled:  # a placeholder may leave its options for later
            return self
        try:
            build_connector(self.type, self.source_id, self.name, self.options)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from exc
        return self
