"""``[sweeper]``, ``[projector]``, ``[spool]``, ``[anchor]`` and ``[serve]``: what ``ledger serve``
runs besides the connectors, and how."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import pydantic
from pydantic import Field, field_validator

from connectors.sdk import MAX_INTERVAL_SECONDS
from ledger.descriptors import names_a_descriptor
from ledger.durations import format_duration
from service.config.fields import Duration, DurationOrZero, Strict, listen_host


class SweeperConfig(Strict):
    interval: Duration = timedelta(minutes=15)


class ProjectorConfig(Strict):
    interval: Duration = timedelta(seconds=1)
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 1000


class SpoolConfig(Strict):
    dir: str | None = None
    flush_interval: Duration = timedelta(minutes=1)


class AnchorConfig(Strict):
    """``[anchor]``: append the ledger head to ``path`` every ``interval`` (see ``ledger
    anchor``); the file is meant to be shipped off the database host."""

    path: Annotated[str, Field(min_length=1)]
    interval: Duration = timedelta(hours=1)

    @field_validator("path")
    @classmethod
    def _usable_path(cls, value: str) -> str:
        if "\0" in value:
            raise ValueError("a path cannot contain a NUL character")
        if not value.strip():
            raise ValueError("give a file path")
        if names_a_descriptor(value):
            # Opened by serve, /dev/fd/3 is whatever serve holds as 3 then (its SQLite
            # ledger, a socket): the anchor was appended into the database.
            raise ValueError(
                f"{value} names a file descriptor, not a file: which file it is depends on "
                "how serve is started, and serve's own (its database) are among them; give "
                "the path of a file"
            )
        return value


class ServeConfig(Strict):
    grace_period: Duration = timedelta(seconds=30)
    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    # Loopback unless the operator opens it: the figures name connectors and sources.
    metrics_host: Annotated[str, pydantic.AfterValidator(listen_host)] = "127.0.0.1"
    progress_interval: DurationOrZero = timedelta(seconds=5)
    heartbeat_interval: Duration = timedelta(seconds=60)
    # Interval connectors, the sweeper and the spool flush run once as serve starts, so a new
    # install shows a run at once instead of after the first interval (cron keeps its times).
    run_at_start: bool = True
    # Each connector's bound on one run's total time unless it sets its own; None: no bound
    # (a bound fails runs, and only the operator knows how long a source's runs may take).
    max_run_time: Duration | None = None

    @field_validator("progress_interval", "heartbeat_interval")
    @classmethod
    def _within_the_sdks_limit(cls, value: timedelta) -> timedelta:
        # The SDK refuses a longer interval at every run (RunContext); refused here, config
        # check names the key instead of serve failing every tick.
        if value.total_seconds() > MAX_INTERVAL_SECONDS:
            raise ValueError(f"at most {format_duration(MAX_INTERVAL_SECONDS)}")
        return value
