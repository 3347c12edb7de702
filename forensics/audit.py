"""``ledger audit``: one run's full timeline, as the legacy table never could show it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ledger import (
    Ledger,
    LedgerError,
    RecordedEvent,
    StoredEventError,
    UnknownRunError,
    ValidationError,
)
from ledger.clock import isoformat_utc, labelled_utc, parse_utc
from ledger.durations import format_duration
from ledger.hashing import chain_hash
from ledger.reads import (
    latest_occurred_at,
    read_head,
    run_status_events,
    run_version_at,
    stored_refs,
)
from ledger.schema import GENESIS_HASH
from ledger.text import clip, shown_name, shown_value
from projections.fold import Row, fold

# A spooled or imported event is flagged when it was recorded this long after it happened.
RECORDED_LATE = timedelta(minutes=5)


@dataclass(frozen=True)
class TimelineEntry:
    event: RecordedEvent
    status_after: str
    # Its own hash matches its content, its prev_hash is the previous row's hash, and the next
    # row's prev_hash (the head's hash, for the last event) is its hash: a row rewritten with
    # its hash recomputed passes the first two, and only what was chained to it tells.
    hash_ok: bool
    late: bool  # it came after the run was already closed by a timeout
    recorded_late: bool  # recorded well after it occurred (spooled, imported)
    silence_before: timedelta | None  # how long the run said nothing before this event
    summary: str
    # It occurred before the run's RunStarted did: accepted (a spool or a writer with a skewed
    # clock must not lose facts), but a timeline that runs backwards is for the auditor to see.
    before_start: bool = False

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
            "before_start": self.before_start,
            "silence_before_seconds": None
            if self.silence_before is None
            else int(self.silence_before.total_seconds()),
        }


# Events read at once: what one page of the audit holds in memory at most.
AUDIT_BATCH = 1000


@dataclass(frozen=True)
class AuditState:
    """What the audit knows of a run before an event: the run's row folded so far (None
    before its RunStarted; of it the audit reads only the status, which is all that decides
    how the next event folds) and the latest ``occurred_at`` so far (silences are measured
    from it). The audit of a page starts from the state before its first event."""

    row: Row | None = None
    last_at: datetime | None = None
    started_at: datetime | None = None  # the RunStarted's occurred_at

    @property
    def status(self) -> str | None:
        return None if self.row is None else str(self.row["status"])


@dataclass(frozen=True)
class AuditPage:
    """Up to a page of a run's timeline, and whether more events follow its last entry."""

    entries: list[TimelineEntry]
    more: bool


def audit_run(ledger: Ledger, run_id: int) -> list[TimelineEntry]:
    """The run's events in version order, each with what it did to the run. Raises
    :class:`UnknownRunError` if the ledger has no such run. The whole timeline in memory: a
    long run is read with :func:`iter_audit` or in pages with :func:`audit_page`."""
    return list(iter_audit(ledger, run_id))


def iter_audit(
    ledger: Ledger, run_id: int, batch_size: int = AUDIT_BATCH
) -> Iterator[TimelineEntry]:
    """:func:`audit_run` read ``batch_size`` events at a time: the whole timeline in one pass
    without holding it. Raises :class:`UnknownRunError` (before yielding) for no such run."""
    events = ledger.read_run(run_id, 0, batch_size)
    if not events:
        raise UnknownRunError(run_id)
    state = AuditState()
    while events:
        entries, state = audit_events(ledger, events, state)
        yield from entries
        if len(events) < batch_size:
            return
        events = ledger.read_run(run_id, events[-1].position, batch_size)


def audit_page(ledger: Ledger, run_id: int, after: int = 0, limit: int = AUDIT_BATCH) -> AuditPage:
    """Up to ``limit`` entries of the run's timeline after its event at position ``after`` (0:
    from its start), each as the whole timeline has it: the audit starts from the state
    before the page (:func:`state_before`). Raises :class:`UnknownRunError` for no such run
    and :class:`ValidationError` when ``after`` is not a position of one of its events."""
    if limit < 1:
        raise ValidationError(f"limit must be at least 1, got {limit}")
    if not ledger.read_run(run_id, 0, 1):
        raise UnknownRunError(run_id)
    state = state_before(ledger, run_id, after) if after else AuditState()
    events = ledger.read_run(run_id, after, limit + 1)
    entries, _ = audit_events(ledger, events[:limit], state)
    return AuditPage(entries, len(events) > limit)


def state_before(
    ledger: Ledger, run_id: int, position: int, batch_size: int = AUDIT_BATCH
) -> AuditState:
    """The state a page after the run's event at ``position`` starts from, without reading
    every event before it: the status is folded from the events that can change it (a
    RunProgressed never does, nor makes a later event fold otherwise), ``batch_size`` at a
    time, and the latest ``occurred_at`` is the database's MAX. The row's counters and details are
    therefore not the run's (the audit shows only its status). Raises
    :class:`ValidationError` when no event of the run is stored at ``position``."""
    with ledger.connect("audit") as conn:
        version = run_version_at(conn, run_id, position)
        if version is None:
            raise ValidationError(f"position {position} is not an event of run {run_id}")
        last_at = latest_occurred_at(conn, run_id, version)
        row: Row | None = None
        started_at: datetime | None = None
        after_version = 0
        while True:
            events = run_status_events(conn, run_id, after_version, version, batch_size)
            for event in events:
                row, _ = _apply(row, event)
                started_at = _started_at(started_at, event)
            if len(events) < batch_size:
                return AuditState(row, last_at, started_at)
            after_version = events[-1].version


def audit_events(
    ledger: Ledger, events: list[RecordedEvent], state: AuditState
) -> tuple[list[TimelineEntry], AuditState]:
    """The timeline entries of ``events`` (consecutive events of one run, in version order)
    audited from ``state``, the state before the first; and the state after the last."""
    previous_hashes, chained_to = _neighbour_hashes(ledger, [e.position for e in events])
    timeline: list[TimelineEntry] = []
    row, last_at, started_at = state.row, state.last_at, state.started_at
    for event in events:
        started_at = _started_at(started_at, event)
        status_before = row["status"] if row else None
        row, status = _apply(row, event)
        content_ok = chain_hash(event.prev_hash, event.as_row()) == event.hash
        link_ok = previous_hashes.get(event.position - 1) == event.prev_hash
        # Nothing stored after it (a row deleted there): verify names that position.
        next_ok = chained_to.get(event.position, event.hash) == event.hash
        timeline.append(
            TimelineEntry(
                event=event,
                status_after=status,
                hash_ok=content_ok and link_ok and next_ok,
                late=status_before is not None and status_before != "running",
                recorded_late=event.recorded_at - event.occurred_at > RECORDED_LATE,
                silence_before=None if last_at is None else event.occurred_at - last_at,
                summary=_summary(event),
                before_start=started_at is not None and event.occurred_at < started_at,
            )
        )
        last_at = _latest(last_at, event)
    return timeline, AuditState(row, last_at, started_at)


def _started_at(started_at: datetime | None, event: RecordedEvent) -> datetime | None:
    """When the run started: its (first) RunStarted's occurred_at, once met."""
    if started_at is None and event.type == "RunStarted":
        return event.occurred_at
    return started_at


def _apply(row: Row | None, event: RecordedEvent) -> tuple[Row | None, str]:
    """The row after ``event`` and the status the audit shows: an event that cannot be
    applied leaves the row as it was."""
    try:
        folded, _ = fold(row, event)
    except LedgerError as exc:
        return row, f"(cannot apply: {exc})"
    return folded, str(folded["status"])


def _latest(last_at: datetime | None, event: RecordedEvent) -> datetime:
    return event.occurred_at if last_at is None else max(last_at, event.occurred_at)


def _neighbour_hashes(
    ledger: Ledger, positions: list[int]
) -> tuple[dict[int, str], dict[int, str]]:
    """The hash stored at each position before one of ``positions``, and what each of
    ``positions`` is chained to: the next row's ``prev_hash``, or the head's hash for the
    event at the head (read first: an append landing meanwhile chains to the same hash; a row
    forged past the head is verify's finding, not the head event's)."""
    with ledger.connect("audit") as conn:
        head = read_head(conn)
        refs = stored_refs(conn, [p + step for p in positions for step in (-1, 1)])
    previous = {0: GENESIS_HASH, **{position: ref.hash for position, ref in refs.items()}}
    chained_to = {position - 1: ref.prev_hash for position, ref in refs.items()}
    if head is not None and head.last_position in positions:
        chained_to[head.last_position] = str(head.last_hash)
    return previous, chained_to


def _summary(event: RecordedEvent) -> str:
    """:func:`summarise`, or what stops it: a stored payload that cannot be read (a row no
    append of this ledger wrote) is one entry of the timeline, shown with its hash check,
    not the end of the audit (the web's run page answered it as a bad ``after``)."""
    try:
        return summarise(event)
    except LedgerError as exc:
        return f"(cannot read: {exc})"


def summarise(event: RecordedEvent) -> str:
    """A one-line reading of the payload."""
    data: Any = event.payload_data
    if not isinstance(data, dict):  # JSON, but not an object: a row no append wrote
        raise StoredEventError(
            f"stored {event.type} {event.event_id} has a payload that is not a JSON object "
            f"(a JSON {type(data).__name__})"
        )
    if event.type == "RunStarted":
        meta = data.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        # Every value a writer gave is quoted (shown_value, shown_name): a trigger of
        # "schedule) · by operator:alice (" cannot read as the narrow audit's actor.
        extra = ", ".join(
            f"{k}={shown_value(meta[k])}"
            for k in ("host", "pid", "trigger", "imported")
            if k in meta
        )
        return (
            f"source {shown_value(data.get('source_id'))}, {_name(data.get('connector_name'))}"
            + (f" ({extra})" if extra else "")
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
            text += f": {shown_value(data['error_message'])}"
        return text + (f" ({counts})" if counts else "")
    if event.type == "RunTimedOut":
        # Worded as the projection words errorMessage: "1h", "2026-01-28 01:12:45 UTC". The
        # sweeper's reason is one word ("stale"), shown as it is; an operator's sentence quoted.
        threshold = data.get("threshold_seconds")
        last = data.get("last_event_at")
        return (
            f"{_name(data.get('reason'))} by {_name(data.get('detected_by'))}"
            + (f", threshold {_duration(threshold)}" if threshold else "")
            + (f", last activity {_utc_time(last)}" if last else "")
        )
    return clip(", ".join(f"{k}={shown_value(v)}" for k, v in sorted(data.items())), 120)


def _name(value: object) -> str:
    """A stored name or word as :func:`shown_name` shows it; a payload that holds no text there
    shows what it holds, as JSON."""
    return shown_name(value) if isinstance(value, str) and value else shown_value(value)


def _duration(seconds: object) -> str:
    # Not through timedelta: an event may hold any whole number of seconds (past 999,999,999
    # days a timedelta overflows), and the audit must show every stored fact.
    if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds > 0:
        return format_duration(seconds)
    return f"{seconds}s"


def _utc_time(value: object) -> str:
    """A stored time to the second, ``2026-01-28 01:12:45 UTC``; anything else as it is."""
    if isinstance(value, datetime):
        return str(value) if value.tzinfo is None else labelled_utc(value)
    try:
        return labelled_utc(parse_utc(str(value), naive="refuse"))
    except ValueError:  # not a time, or one with no zone: shown as it is stored
        return str(value)
