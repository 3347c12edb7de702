"""A run's timeline as a table (``ledger audit``, and the story ``ledger demo`` tells): one
rendering shared by the command modules, so that none imports another."""

from __future__ import annotations

from datetime import timedelta

from forensics.audit import TimelineEntry
from ledger.durations import format_duration
from ledger.text import shown_name
from service.cli.tables import TableColumn, print_table


def print_audit(run_id: int, timeline: list[TimelineEntry], wide: bool = False) -> None:
    title = f"run {run_id}: {len(timeline)} event(s), times in UTC"
    if not wide:
        # Eight narrow columns wrap every cell over many lines at 80 columns: the narrow form
        # keeps the short columns and gives one wide column the actor, the change and the notes.
        print_table(
            title,
            AUDIT_NARROW_COLUMNS,
            (
                (
                    entry.event.position,
                    entry.event.type,
                    entry.event.occurred_at,
                    entry.status_after,
                    "ok" if entry.hash_ok else "BROKEN",
                    " · ".join((entry.summary, _by(entry.event.actor), *audit_notes(entry))),
                )
                for entry in timeline
            ),
            wide=False,
            full_text=True,
        )
        return
    print_table(
        title,
        AUDIT_COLUMNS,
        (
            (
                entry.event.position,
                entry.event.version,
                entry.event.type,
                entry.event.occurred_at,
                entry.event.recorded_at,
                entry.event.actor,
                entry.summary,
                entry.status_after,
                "ok" if entry.hash_ok else "BROKEN",
                "; ".join(audit_notes(entry)) or None,
            )
            for entry in timeline
        ),
        wide=True,
        full_text=True,
    )


def _by(actor: str | None) -> str:
    """Always there, ``by —`` for no actor, the name quoted unless it is one word: the part
    after the summary (whose writer text is quoted) is the tool's, so no message, metadata or
    actor can add a "by sweeper" of its own, or hide that the event names no actor."""
    return "by —" if actor is None else f"by {shown_name(actor)}"


AUDIT_NARROW_COLUMNS = (
    TableColumn("pos", kind="word"),
    TableColumn("type", kind="word", limit=len("RunProgressed")),
    TableColumn("occurred", kind="time"),
    TableColumn("status", kind="word"),
    TableColumn("hash", kind="word"),
    TableColumn("what, by whom, notes"),
)
AUDIT_COLUMNS = (
    TableColumn("pos", kind="word"),
    TableColumn("v", kind="word"),
    TableColumn("type", kind="word", limit=len("RunProgressed")),
    TableColumn("occurred", kind="time"),
    TableColumn("recorded", kind="time"),  # the notes say when it was late
    TableColumn("actor"),
    TableColumn("what"),
    TableColumn("status", kind="word"),
    TableColumn("hash", kind="word"),
    TableColumn("notes"),
)


def audit_notes(entry: TimelineEntry) -> list[str]:
    event = entry.event
    notes = []
    if entry.silence_before is not None and entry.silence_before >= timedelta(minutes=1):
        notes.append(f"silent {format_duration(entry.silence_before)} before")
    if entry.before_start:
        notes.append("occurred before the run started")
    if entry.late:
        notes.append("LATE: after the timeout")
    if entry.recorded_late:
        notes.append(
            f"recorded {format_duration(event.recorded_at - event.occurred_at)} after it happened"
        )
    return notes
