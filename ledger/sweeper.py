"""The sweeper: appends RunTimedOut for stuck runs, as facts, never by patching rows.

Each RunTimedOut is appended with ``expected_version`` = the version the stuck query read, so a
run that reported in between is left alone (the conflict is logged), and of two sweepers racing
on one run the second gets a version conflict (I4): one timeout, never two.

Its ``event_id`` derives from (run, version): timing a run out at the version seen is one fact,
whoever declares it. So an append whose reply was lost is retried once with the same event and
stores nothing twice (I3), and a second sweeper with the same view finds the fact stored.

An operator's ``runs fail`` keeps a random id: each is a decision of its own (who, why), not a
duplicate of another's. The operator gives no version: a run that moved on between the read of
its state and the append (a connector still reporting) is read again and the fail tried again
(:data:`MAX_FAIL_ATTEMPTS`); only a closed run is refused, always as ``open-runs-only``, so of
two operators failing one run at once the second is told the run is closed, on every backend.
A database error is not retried; run again, the command finds the run closed if it committed.

A run whose timeout still fails after its retry (a row lock another session holds past the
wait, a statement the database refuses for that run) is recorded in :attr:`SweepResult.failed`
and the sweep goes on to the next run: stopping there left every later stuck run running until
the next sweep, which stopped at the same run again. What is not one run's stops the sweep at
once: the database unreachable or its schema missing, or a second run in a row failing (a lock
on the whole ledger), so an outage costs the tries of a run or two, not of every run.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ledger import arguments
from ledger.clock import isoformat_utc
from ledger.driver_errors import database_unreachable
from ledger.durations import format_duration
from ledger.errors import (
    AccessDeniedError,
    ConcurrencyError,
    ConnectorNotAllowedError,
    DatabaseFileChangedError,
    DiskError,
    SchemaError,
    ServerSettingError,
    StorageError,
    StreamError,
    UnknownRunError,
    ValidationError,
)
from ledger.events import (
    SWEEPER_ACTOR,
    RunTimedOut,
    operator_actor,
    operator_name_problem,
)
from ledger.mapper import parse_event
from ledger.recorded import AppendResult
from ledger.rules import FINISHED, OPEN, TIMED_OUT, RunState
from ledger.store import Ledger
from ledger.stuck import DEFAULT_STALE_AFTER, StuckRun, Thresholds, stuck_runs
from ledger.text import says_something, visible

log = logging.getLogger(__name__)
# Fixed forever: changing it would give a retried sweep a new id for the same fact.
SWEEP_NAMESPACE = uuid.UUID("183d174b-8ed4-5351-bdc6-8ac8f6f2c98a")
# Tries of an operator's fail on a run that keeps moving on between read and append: each but
# the last at the version read (its RunTimedOut records the run's latest activity); the last
# without one, so a run written to without a pause is failed all the same (the stream rules,
# checked under the head lock, still refuse a closed run).
MAX_FAIL_ATTEMPTS = 5
# The append's refusals of a RunTimedOut for a closed run, and the state each means.
_CLOSED_BY_RULE = {"nothing-after-RunFinished": FINISHED, "single-timeout": TIMED_OUT}


def sweep_event_id(run_id: int, version: int) -> uuid.UUID:
    """The event id of the sweeper's RunTimedOut for ``run_id`` seen at ``version``."""
    return uuid.uuid5(SWEEP_NAMESPACE, f"RunTimedOut/{run_id}/{version}")


@dataclass
class SweepResult:
    timed_out: list[StuckRun] = field(default_factory=list)
    skipped: list[tuple[StuckRun, str]] = field(default_factory=list)  # (run, why)
    dry_run: bool = False
    # Runs whose timeout failed for a reason of their own, left running for the next sweep.
    failed: list[tuple[StuckRun, StorageError]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The sweep as JSON: the runs timed out (or that would be), those left alone, and
        those whose timeout failed (with the error)."""
        return {
            "dry_run": self.dry_run,
            "timed_out": [run.to_dict() for run in self.timed_out],
            "skipped": [{**run.to_dict(), "why": why} for run, why in self.skipped],
            "failed": [{**run.to_dict(), "error": str(exc)} for run, exc in self.failed],
        }


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
    failed_last = False  # the run before this one failed (see the module's docstring)
    for run in stuck_runs(ledger, older_than, max_runtime, now, overrides):
        if run_ids is not None and run.run_id not in run_ids:
            continue
        if dry_run:
            result.timed_out.append(run)
            continue
        event = RunTimedOut(
            event_id=sweep_event_id(run.run_id, run.version),
            run_id=run.run_id,
            occurred_at=now,
            reason=run.rule,
            threshold_seconds=int(run.threshold.total_seconds()),
            last_event_at=run.last_event_at,
            detected_by=SWEEPER_ACTOR,
            actor=SWEEPER_ACTOR,
        )
        try:
            appended, retried = _append_retrying_once(ledger, event, run.version)
        except SchemaError:
            raise
        except StorageError as exc:
            if failed_last or _not_one_runs(exc):
                raise  # the next run would fail the same way
            failed_last = True
            log.warning(
                "run %d not timed out, left for the next sweep: %s", run.run_id, visible(str(exc))
            )
            result.failed.append((run, exc))
            continue
        except (ConcurrencyError, StreamError) as exc:
            failed_last = False  # the database answered
            log.info(
                "run %d not timed out: it changed since it was found stuck (%s)",
                run.run_id,
                visible(str(exc)),
            )
            result.skipped.append((run, str(exc)))
            continue
        except ValidationError:
            # The id is stored already, with another clock or threshold in it: a concurrent
            # sweep with the same view timed the run out first.
            if not any(e.event_id == str(event.event_id) for e in ledger.read_run(run.run_id)):
                raise
            appended, retried = None, False
        failed_last = False
        if appended is None or not (appended.new_events or retried):
            why = "already timed out by a concurrent sweep"
            log.info("run %d not timed out: %s", run.run_id, why)
            result.skipped.append((run, why))
            continue
        log.info(
            "timed out run %d (%s, source %d): %s, threshold %s, last activity %s at position %s",
            run.run_id,
            visible(run.connector_name),  # recorded before the name rule, it may hold anything
            run.source_id,
            run.rule,
            format_duration(run.threshold),
            isoformat_utc(run.last_event_at),
            appended.events[0].position,
        )
        result.timed_out.append(run)
    return result


def _not_one_runs(exc: StorageError) -> bool:
    """Whether a failed timeout is the whole database's, every later run's too."""
    whole = AccessDeniedError | DiskError | ServerSettingError | DatabaseFileChangedError
    return database_unreachable(exc) or isinstance(exc, whole)


def _append_retrying_once(
    ledger: Ledger, event: RunTimedOut, version: int
) -> tuple[AppendResult, bool]:
    """Append; on a database error (a lost COMMIT reply among them), once more with the same
    event: if the first try did commit, the second finds it stored. Returns (result, retried)."""
    try:
        return ledger.append([event], expected_version=version), False
    except SchemaError:
        raise
    except StorageError as exc:
        log.warning("timing out run %d failed (%s); retrying once", event.run_id, visible(str(exc)))
    return ledger.append([event], expected_version=version), True


def failable_run(ledger: Ledger, run_id: int, connectors: frozenset[str] | None = None) -> RunState:
    """The write-side state of a run an operator may fail: it exists, it is open, and its
    connector is one of ``connectors`` when given. Raises what :func:`fail_run` would (the web
    view's confirm step asks before it shows anything of the run)."""
    state = ledger.run(run_id)
    if state is None:
        raise UnknownRunError(run_id)
    if connectors is not None and state.connector_name not in connectors:
        raise ConnectorNotAllowedError(run_id, connectors)
    if state.state != OPEN:
        raise _closed_run(run_id, state.state)
    return state


def _closed_run(run_id: int, state: str) -> StreamError:
    """The refusal of failing a closed run (``state``: finished or timed out)."""
    closed = "finished" if state == FINISHED else "already timed out"
    return StreamError(
        run_id, "open-runs-only", f"the run is closed ({closed}); only open runs can be failed"
    )


def fail_run(
    ledger: Ledger,
    run_id: int,
    reason: str,
    operator: str,
    now: datetime | None = None,
    connectors: frozenset[str] | None = None,
) -> int:
    """An operator declares an open run failed (the audited replacement for the legacy
    hand-run UPDATE). Returns the position of the RunTimedOut. A closed run is refused, and
    so is a run of a connector outside ``connectors`` when given (an operator's token bound to
    its connectors), whatever its state."""
    reason = arguments.text(reason, "reason")
    operator = arguments.text(operator, "operator")
    now = None if now is None else arguments.clock_time(now, "now")
    if not says_something(reason):
        raise ValidationError(
            "a reason is required to fail a run by hand (one that shows: not only spaces or "
            "invisible characters)"
        )
    detected_by = operator_actor(operator)
    for attempt in range(1, MAX_FAIL_ATTEMPTS + 1):
        state = failable_run(ledger, run_id, connectors)
        problem = operator_name_problem(detected_by)
        if problem is not None:
            raise ValidationError(f"operator {detected_by!r}: {problem}")
        # Validated as any input is: a reason or operator name over its limit is a
        # ValidationError naming the field, not a pydantic traceback.
        event = parse_event(
            {
                "type": "RunTimedOut",
                "run_id": run_id,
                "occurred_at": now or ledger.clock(),
                "reason": reason,
                "threshold_seconds": None,
                "last_event_at": state.last_event_at,
                "detected_by": detected_by,
                "actor": detected_by,
            }
        )
        last = attempt == MAX_FAIL_ATTEMPTS
        try:
            stored = ledger.append(
                [event], expected_version=None if last else state.version, connectors=connectors
            )
        except ConcurrencyError as exc:
            # Appended to (or closed) since it was read: read it again.
            log.info("failing run %d: it moved on (%s); reading it again", run_id, exc)
            continue
        except StreamError as exc:
            closed = _CLOSED_BY_RULE.get(exc.rule) if exc.run_id == run_id else None
            if closed is None:
                raise
            # Closed since the last read: the refusal of a closed run, as a read would have
            # said (not chained: the API answers a StreamError's cause by its rule).
            raise _closed_run(run_id, closed) from None
        position = stored.events[0].position
        log.info("run %d failed by %s: %s", run_id, detected_by, visible(reason))
        return position
    raise AssertionError("unreachable: the last attempt appends without a version")
