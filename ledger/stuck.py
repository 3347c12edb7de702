"""Stuck detection (I10): a query over runs without a terminal event, on the ledger itself.

A run is stuck when it has no RunFinished and no RunTimedOut (``ledger_runs.state = 'open'``)
and either its last activity (the latest ``occurred_at`` of its events, heartbeats included) is
older than ``older_than``, or it started more than ``max_runtime`` ago. The write-side registry
is kept by every append in the same transaction as the events, so this works with the projector
stopped, and the ``(state, last_event_at)`` / ``(state, started_at)`` indexes make its cost
follow the number of open runs, not the length of history.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select

from ledger.clock import isoformat_utc
from ledger.durations import parse_duration
from ledger.errors import ValidationError
from ledger.rules import OPEN, RunState, replay_event
from ledger.schema import ledger_runs
from ledger.store import Ledger
from ledger.stored_rows import named_rows

# The legacy cleanup job's rule, also as the CLI's options and the config file write it.
DEFAULT_STALE_AFTER_TEXT = "60m"
DEFAULT_STALE_AFTER = parse_duration(DEFAULT_STALE_AFTER_TEXT)


@dataclass(frozen=True)
class Thresholds:
    """When an open run counts as stuck. ``max_runtime`` None: no limit on total run time."""

    stale_after: timedelta = DEFAULT_STALE_AFTER
    max_runtime: timedelta | None = None

    def __post_init__(self) -> None:
        if self.stale_after <= timedelta(0):
            raise ValidationError(f"stale_after must be longer than zero, got {self.stale_after}")
        if self.max_runtime is not None and self.max_runtime <= timedelta(0):
            raise ValidationError(f"max_runtime must be longer than zero, got {self.max_runtime}")


@dataclass(frozen=True)
class StuckRun:
    run_id: int
    source_id: int
    connector_name: str
    started_at: datetime
    last_event_at: datetime
    version: int
    rule: str  # "stale" or "max_runtime"
    threshold: timedelta  # the threshold of that rule, for this run's connector

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON (times in UTC ISO-8601; the threshold is the caller's own)."""
        return {
            "run_id": self.run_id,
            "source_id": self.source_id,
            "connector_name": self.connector_name,
            "started_at": isoformat_utc(self.started_at),
            "last_event_at": isoformat_utc(self.last_event_at),
            "version": self.version,
            "rule": self.rule,
        }


def stuck_runs(
    ledger: Ledger,
    older_than: timedelta = DEFAULT_STALE_AFTER,
    max_runtime: timedelta | None = None,
    now: datetime | None = None,
    overrides: Mapping[str | tuple[str, int], Thresholds] | None = None,
    run_ids: Collection[int] | None = None,
) -> list[StuckRun]:
    """Open runs that are stuck, oldest activity first. ``overrides`` maps a connector name,
    or a (connector name, source id) pair, to its own thresholds; the pair wins over the name,
    and the defaults apply to every other run. ``run_ids``: only which of those runs are stuck
    (a page of runs asks about its own rows: every stuck run read for each page of 50 made
    its time grow with the number of stuck runs)."""
    if run_ids is not None and not run_ids:
        return []
    now = now or ledger.clock()
    default = Thresholds(older_than, max_runtime)
    every = [default, *(overrides or {}).values()]
    # One indexed scan of open runs with the loosest cut-offs; each run's own connector
    # thresholds are then applied to that short list.
    widest_stale = min(t.stale_after for t in every)
    runtimes = [t.max_runtime for t in every if t.max_runtime is not None]
    conditions = [ledger_runs.c.last_event_at < now - widest_stale]
    if runtimes:
        conditions.append(ledger_runs.c.started_at < now - min(runtimes))
    query = (
        select(ledger_runs)
        .where(ledger_runs.c.state == OPEN, or_(*conditions))
        .order_by(ledger_runs.c.last_event_at, ledger_runs.c.run_id)
    )
    if run_ids is not None:
        query = query.where(ledger_runs.c.run_id.in_(sorted(set(run_ids))))
    with ledger.connect("stuck query") as conn, named_rows(conn, ledger_runs):
        rows = conn.execute(query).mappings().all()
    return _stuck_among([RunState(**row) for row in rows], now, default, overrides or {})


def stuck_runs_as_of(
    ledger: Ledger,
    position: int,
    at: datetime | None = None,
    older_than: timedelta = DEFAULT_STALE_AFTER,
    max_runtime: timedelta | None = None,
    overrides: Mapping[str | tuple[str, int], Thresholds] | None = None,
) -> list[StuckRun]:
    """:func:`stuck_runs` as the ledger stood at ``position``: the runs' states replayed from
    the events up to it (the append's own rules, :func:`ledger.rules.replay_event`), judged
    at ``at`` (by default when the event at ``position`` was recorded). Reads history up to
    ``position``: seconds on millions of events, where :func:`stuck_runs` reads only the open
    runs."""
    states: dict[int, RunState] = {}
    recorded_at: datetime | None = None
    for event in ledger.read_all(up_to=position):
        recorded_at = event.recorded_at
        # An event this code cannot apply counts as the run's activity, its state unchanged
        # (the ledger's one rule of a replay, rules.replay_event).
        state, _ = replay_event(states.get(event.run_id), event)
        if state is not None:
            states[event.run_id] = state
    moment = at or recorded_at or ledger.clock()
    open_runs = sorted(
        (state for state in states.values() if state.state == OPEN),
        key=lambda state: (state.last_event_at, state.run_id),
    )
    default = Thresholds(older_than, max_runtime)
    return _stuck_among(open_runs, moment, default, overrides or {})


def _stuck_among(
    open_runs: list[RunState],
    now: datetime,
    default: Thresholds,
    overrides: Mapping[str | tuple[str, int], Thresholds],
) -> list[StuckRun]:
    """Which of ``open_runs`` are stuck at ``now``, each by its connector's own thresholds
    (a (connector, source) pair over a connector name over ``default``)."""
    stuck = []
    for run in open_runs:
        limits = overrides.get((run.connector_name, run.source_id)) or overrides.get(
            run.connector_name, default
        )
        if run.last_event_at < now - limits.stale_after:
            rule, threshold = "stale", limits.stale_after
        elif limits.max_runtime is not None and run.started_at < now - limits.max_runtime:
            rule, threshold = "max_runtime", limits.max_runtime
        else:
            continue
        stuck.append(
            StuckRun(
                run.run_id,
                run.source_id,
                run.connector_name,
                run.started_at,
                run.last_event_at,
                run.version,
                rule,
                threshold,
            )
        )
    return stuck
