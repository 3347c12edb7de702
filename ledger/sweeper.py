"""The sweeper: appends RunTimedOut for stuck runs, as facts, never by patching rows.

Each RunTimedOut is appended with ``expected_version`` = the version the stuck query read, so a
run that reported in between is left alone (the conflict is logged), and of two sweepers racing
on one run the second gets a version conflict (I4): one timeout, never two.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ledger.durations import format_duration
from ledger.errors import ConcurrencyError, StreamError, ValidationError
from ledger.events import RunTimedOut, name_problem
from ledger.store import Ledger
from ledger.stuck import DEFAULT_STALE_AFTER, StuckRun, Thresholds, stuck_runs
from ledger.text import visible

log = logging.getLogger(__name__)
SWEEPER = "sweeper"


@dataclass
class SweepResult:
    timed_out: list[StuckRun] = field(default_factory=list)
    skipped: list[tuple[StuckRun, str]] = field(default_factory=list)  # (run, why)
    dry_run: bool = False


def sweep(
    ledger: Ledger,
    now: datetime | None = None,
    dry_run: bool = False,
    older_than: timedelta = DEFAULT_STALE_AFTER,
    max_runtime: timedelta | None = None,
    overrides: Mapping[str | tuple[str, int], Thresholds] | None = None,
    run_ids: Collection[int] | None = None,
) -> SweepResult:
    """Time out every stuck run, or only those of ``run_ids`` (or, with ``dry_run``, only
    report them)."""
    now = now or ledger.clock()
    result = SweepResult(dry_run=dry_run)
    for run in stuck_runs(ledger, older_than, max_runtime, now, overrides):
        if run_ids is not None and run.run_id not in run_ids:
            continue
        if dry_run:
            result.timed_out.append(run)
            continue
        reason = "stale" if run.rule == "stale" else "max_runtime"
        event = RunTimedOut(
            run_id=run.run_id,
            occurred_at=now,
            reason=reason,
            threshold_seconds=int(run.threshold.total_seconds()),
            last_event_at=run.last_event_at,
            detected_by=SWEEPER,
            actor=SWEEPER,
        )
        try:
            appended = ledger.append([event], expected_version=run.version)
        except (ConcurrencyError, StreamError) as exc:
            log.info(
                "run %d not timed out: it changed since it was found stuck (%s)",
                run.run_id,
                visible(str(exc)),
            )
            result.skipped.append((run, str(exc)))
            continue
        log.warning(
            "timed out run %d (%s, source %d): %s, threshold %s, last activity %s at position %s",
            run.run_id,
            visible(run.connector_name),  # recorded before the name rule, it may hold anything
            run.source_id,
            reason,
            format_duration(run.threshold),
            run.last_event_at.isoformat(),
            appended.last_position,
        )
        result.timed_out.append(run)
    return result


def fail_run(
    ledger: Ledger, run_id: int, reason: str, operator: str, now: datetime | None = None
) -> int:
    """An operator declares an open run failed (the audited replacement for the legacy
    hand-run UPDATE). Returns the position of the RunTimedOut. A closed run is refused."""
    if not reason.strip():
        raise ValidationError("a reason is required to fail a run by hand")
    state = ledger.run(run_id)
    if state is None:
        raise ValidationError(f"run {run_id} does not exist")
    if state.state != "open":
        closed = "finished" if state.state == "finished" else "already timed out"
        raise StreamError(
            run_id, "open-runs-only", f"the run is closed ({closed}); only open runs can be failed"
        )
    detected_by = operator if operator.startswith("operator:") else f"operator:{operator}"
    problem = name_problem(detected_by)
    if problem is not None:
        raise ValidationError(f"operator {detected_by!r}: {problem}")
    event = RunTimedOut(
        run_id=run_id,
        occurred_at=now or ledger.clock(),
        reason=reason,
        threshold_seconds=None,
        last_event_at=state.last_event_at,
        detected_by=detected_by,
        actor=detected_by,
    )
    stored = ledger.append([event], expected_version=state.version)
    position = stored.events[0].position
    log.warning("run %d failed by %s: %s", run_id, detected_by, visible(reason))
    return position
