"""``ledger audit``: one run's full timeline, as the legacy table never could show it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ledger import Ledger, LedgerError, RecordedEvent, UnknownRunError
from ledger.clock import isoformat_utc, labelled_utc
from ledger.durations import format_duration
from ledger.hashing import chain_hash
from ledger.reads import stored_refs
from ledger.schema import GENESIS_HASH
from ledger.text import clip
from projections.fold import Row, fold

# A spooled or imported event is flagged when it was recorded this long after it happened.
RECORDED_LATE = timedelta(minutes=5)


@dataclass(frozen=True)
class TimelineEntry:
    event: RecordedEvent
    status_after: str
    hash_ok: bool  # its own hash matches its content, and its prev_hash the previous row's
    late: bool  # it came after the run was already closed by a timeout
    recorded_late: bool  # recorded well after it occurred (spooled, imported)
    silence_before: timedelta | None  # how long the run said nothing before this event
    summary: str

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON: the event's place and times (UTC), what it did, the flags."""
        event = self.event
        return {
            "position": event.position,
            "version": event.version,
            "type": event.type,
            "occurred_at": isoformat_utc(event.occurred_at),
            "recorded_at": isoformat_utc(event.recorded_at),
            "actor": event.actor,
            "summary": self.summary,
            "status_after": self.status_after,
            "hash_ok": self.hash_ok,
            "late": self.late,
            "recorded_late": self.recorded_late,
            "silence_before_seconds": None
            if self.silence_before is None
            else int(self.silence_before.total_seconds()),
        }


def audit_run(ledger: Ledger, run_id: int) -> list[TimelineEntry]:
    """The run's events in version order, each with what it did to the run. Raises
    :class:`UnknownRunError` if the ledger has no such run."""
    events = ledger.read_run(run_id)
    if not events:
        raise UnknownRunError(run_id)
    previous_hashes = _previous_hashes(ledger, [e.position for e in events])
    timeline: list[TimelineEntry] = []
    row: Row | None = None
    last_at = None
    for event in events:
        status_before = row["status"] if row else None
        try:
            row, _ = fold(row, event)
            status = str(row["status"])
        except LedgerError as exc:
            status = f"(cannot apply: {exc})"
        content_ok = chain_hash(event.prev_hash, event.as_row()) == event.hash
        link_ok = previous_hashes.get(event.position - 1) == event.prev_hash
        timeline.append(
            TimelineEntry(
                event=event,
                status_after=status,
                hash_ok=content_ok and link_ok,
                late=status_before is not None and status_before != "running",
                recorded_late=event.recorded_at - event.occurred_at > RECORDED_LATE,
                silence_before=None if last_at is None else event.occurred_at - last_at,
                summary=summarise(event),
            )
        )
        last_at = event.occurred_at if last_at is None else max(last_at, event.occurred_at)
    return timeline


def _previous_hashes(ledger: Ledger, positions: list[int]) -> dict[int, str]:
    with ledger.connect("audit") as conn:
        refs = stored_refs(conn, [p - 1 for p in positions])
    return {0: GENESIS_HASH, **{position: ref.hash for position, ref in refs.items()}}


def summarise(event: RecordedEvent) -> str:
    """A one-line reading of the payload."""
    data: dict[str, Any] = event.payload_data
    if event.type == "RunStarted":
        meta = data.get("metadata") or {}
        extra = ", ".join(
            f"{k}={meta[k]}" for k in ("host", "pid", "trigger", "imported") if k in meta
        )
        return f"source {data.get('source_id')}, {data.get('connector_name')}" + (
            f" ({extra})" if extra else ""
        )
    counters = {
        k.removeprefix("records_"): v
        for k, v in data.items()
        if isinstance(v, int) and v and k not in ("threshold_seconds",)
    }
    counts = ", ".join(f"{k} +{v}" for k, v in counters.items())
    if event.type == "RunProgressed":
        return counts or "heartbeat"
    if event.type == "RunFinished":
        text = str(data.get("status"))
        if data.get("error_message"):
            text += f": {data['error_message']}"
        return text + (f" ({counts})" if counts else "")
    if event.type == "RunTimedOut":
        # Worded as the projection words errorMessage: "1h", "2026-01-28 01:12:45 UTC".
        threshold = data.get("threshold_seconds")
        last = data.get("last_event_at")
        return (
            f"{data.get('reason')} by {data.get('detected_by')}"
            + (f", threshold {_duration(threshold)}" if threshold else "")
            + (f", last activity {_utc_time(last)}" if last else "")
        )
    return clip(", ".join(f"{k}={v}" for k, v in sorted(data.items())), 120)


def _duration(seconds: object) -> str:
    # Not through timedelta: an event may hold any whole number of seconds (past 999,999,999
    # days a timedelta overflows), and the audit must show every stored fact.
    if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds > 0:
        return format_duration(seconds)
    return f"{seconds}s"


def _utc_time(value: object) -> str:
    """A stored time to the second, ``2026-01-28 01:12:45 UTC``; anything else as it is."""
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        return str(value)
    return labelled_utc(moment)
