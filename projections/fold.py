"""How events change an ``ingestion_runs`` row: one pure function, shared by the projector, the
rebuild and point-in-time queries, so all three give the same rows (I8).

Rows are dicts keyed by the legacy column names. Timestamps are truncated to whole seconds, as
the legacy ``TIMESTAMP`` columns hold them, so a row folded in memory equals the row read back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger import (
    LedgerError,
    RecordedEvent,
    RunFinished,
    RunProgressed,
    RunStarted,
    RunTimedOut,
)
from ledger.durations import format_duration
from projections.errors import PoisonEventError
from projections.schema import COUNTER_COLUMNS, ingestion_runs

Row = dict[str, Any]
# Every column of ingestion_runs in table order, with the value a new run starts from.
EMPTY_ROW: Row = {
    column.name: (0 if column.name in COUNTER_COLUMNS.values() else None)
    for column in ingestion_runs.columns
}
INT_MAX = 2**31 - 1  # the legacy counters are INT(11)


@dataclass(frozen=True)
class Transition:
    """A status change, for ``ingestion_run_transitions``."""

    position: int
    run_id: int
    from_status: str | None
    to_status: str
    at: datetime
    actor: str | None

    def as_row(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "run_id": self.run_id,
            "from_status": self.from_status,
            "to_status": self.to_status,
            "at": self.at,
            "actor": self.actor,
        }


def whole_seconds(value: datetime) -> datetime:
    return value.replace(microsecond=0)


def fold(row: Row | None, recorded: RecordedEvent) -> tuple[Row, Transition | None]:
    """The row after ``recorded``, and the status change it caused (if any).

    Raises :class:`PoisonEventError` when the event cannot be applied: an unknown type, a
    payload that no longer validates, or an event that contradicts the row.
    """
    try:
        event = recorded.event
    except LedgerError as exc:
        raise PoisonEventError(recorded.position, recorded.type, str(exc)) from exc
    if isinstance(event, RunStarted):
        if row is not None:
            raise PoisonEventError(
                recorded.position, recorded.type, f"run {recorded.run_id} already has a row"
            )
        started: Row = {
            "id": recorded.run_id,
            "sourceId": event.source_id,
            "connectorName": event.connector_name,
            "startedAt": whole_seconds(event.occurred_at),
            "status": "running",
            "createdAt": whole_seconds(_created_at(event, recorded)),
        }
        # In the table's column order, so JSON output reads like the legacy table.
        new_row = {column: started.get(column, EMPTY_ROW[column]) for column in EMPTY_ROW}
        return new_row, _transition(recorded, None, "running", event.actor)
    if row is None:
        raise PoisonEventError(
            recorded.position,
            recorded.type,
            f"run {recorded.run_id} has no row (was its RunStarted skipped?)",
        )
    row = dict(row)
    _add_counters(row, event.counter_deltas())
    if isinstance(event, RunProgressed):
        if row["status"] != "running":
            _record_late(row, recorded, event)
        return row, None
    if isinstance(event, RunFinished):
        if row["status"] != "running":  # the first terminal status wins (DESIGN.md §5)
            _record_late(row, recorded, event)
            return row, None
        _close(row, event.occurred_at)
        row["status"] = event.status
        row["errorMessage"] = event.error_message
        row["errorDetails"] = _merge_details(row["errorDetails"], event.error_details)
        return row, _transition(recorded, "running", event.status, event.actor)
    if isinstance(event, RunTimedOut):
        if row["status"] != "running":
            raise PoisonEventError(
                recorded.position,
                recorded.type,
                f"run {recorded.run_id} is already {row['status']}",
            )
        _close(row, event.occurred_at)
        row["status"] = "failed"
        row["errorMessage"] = timeout_message(event)
        row["errorDetails"] = _merge_details(
            row["errorDetails"],
            {
                "reason": event.reason,
                "threshold_seconds": event.threshold_seconds,
                "last_event_at": _iso(event.last_event_at),
                "detected_by": event.detected_by,
            },
        )
        return row, _transition(recorded, "running", "failed", event.actor or event.detected_by)
    raise PoisonEventError(recorded.position, recorded.type, "no projection rule")


def _created_at(event: RunStarted, recorded: RecordedEvent) -> datetime:
    """When the row was created: when the ledger learned of the run, except for a run
    imported from the legacy table, which keeps its original ``createdAt``."""
    metadata = event.metadata or {}
    legacy = metadata.get("legacy_created_at")
    if metadata.get("imported") and isinstance(legacy, str):
        try:
            return datetime.fromisoformat(legacy.replace("Z", "+00:00"))
        except ValueError:
            pass
    return recorded.recorded_at


def timeout_message(event: RunTimedOut) -> str:
    """The sentence a reader of ``errorMessage`` sees: who, why, threshold, last activity."""
    last = (
        f"last activity {event.last_event_at:%Y-%m-%d %H:%M:%S} UTC"
        if event.last_event_at
        else "no activity recorded"
    )
    if event.threshold_seconds is not None:
        threshold = format_duration(event.threshold_seconds)
        return (
            f"Timed out by {event.detected_by} after the {threshold} threshold "
            f"({event.reason}); {last}."
        )
    return f"Marked failed by {event.detected_by}: {event.reason}; {last}."


def _close(row: Row, completed_at: datetime) -> None:
    row["completedAt"] = whole_seconds(completed_at)
    row["duration"] = max(0, int((row["completedAt"] - row["startedAt"]).total_seconds()))


def _add_counters(row: Row, deltas: dict[str, int]) -> None:
    for field, column in COUNTER_COLUMNS.items():
        if not deltas[field]:
            continue
        overflow: dict[str, int] = (row["errorDetails"] or {}).get("counter_overflow") or {}
        total = int(overflow.get(column) or row[column]) + deltas[field]
        if total <= INT_MAX:
            row[column] = total
            continue
        # The legacy INT(11) cannot hold it: the column stays at its maximum and the true total
        # goes to errorDetails, so no reader is told a wrong number silently.
        row[column] = INT_MAX
        row["errorDetails"] = {
            **(row["errorDetails"] or {}),
            "counter_overflow": {**overflow, column: total},
        }


def _record_late(row: Row, recorded: RecordedEvent, event: RunProgressed | RunFinished) -> None:
    """A fact that arrived after the run was timed out: kept, but the status does not flip."""
    details = dict(row["errorDetails"] or {})
    if isinstance(event, RunProgressed) and event.is_heartbeat:
        details["late_heartbeats"] = {
            "count": int((details.get("late_heartbeats") or {}).get("count") or 0) + 1,
            "last_at": _iso(event.occurred_at),
        }
    else:
        entry: dict[str, Any] = {
            "type": recorded.type,
            "position": recorded.position,
            "occurred_at": _iso(event.occurred_at),
            "recorded_at": _iso(recorded.recorded_at),
        }
        counters = {k: v for k, v in event.counter_deltas().items() if v}
        if counters:
            entry["counters"] = counters
        if isinstance(event, RunFinished):
            entry["status"] = event.status
            if event.error_message:
                entry["error_message"] = event.error_message
        details["late"] = [*(details.get("late") or []), entry]
    row["errorDetails"] = details


def _merge_details(
    current: dict[str, Any] | None, new: dict[str, Any] | None
) -> dict[str, Any] | None:
    if not current:
        return dict(new) if new else None
    return {**current, **(new or {})}


def _transition(
    recorded: RecordedEvent, from_status: str | None, to_status: str, actor: str | None
) -> Transition:
    return Transition(
        recorded.position, recorded.run_id, from_status, to_status, recorded.occurred_at, actor
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
