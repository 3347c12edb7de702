"""What makes a batch unappendable, found before any lock (DESIGN.md I5, I10): each payload
serialised and within its limits, its type's current schema_version, occurred_at within the
clock skew guard, run_refs defined before use. :mod:`ledger.appender` checks the rest under
the head lock (the stream rules, expected_version, the guard against the ledger's clock).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from uuid import UUID

import pydantic

from ledger.clock import isoformat_utc
from ledger.durations import format_duration
from ledger.errors import InputProblem, ValidationError
from ledger.events import (
    CURRENT_SCHEMA_VERSIONS,
    EventModel,
    RunStarted,
    event_adapter,
    is_validated,
)
from ledger.limits import payload_problems
from ledger.mapper import (
    canonical_json,
    payload_json,
    payload_of,
    pydantic_problems,
)
from ledger.text import clip, safe_repr

# An occurred_at further ahead of the ledger's clock than this is refused (I10 clock skew guard):
# a run "alive in the future" could never be detected as stuck.
MAX_CLOCK_SKEW = timedelta(minutes=5)


def head_ahead_of_clock(recorded_at: datetime | None, clock: datetime) -> str | None:
    """A warning when the last append's ``recorded_at`` is ahead of the ledger's clock by more
    than the skew guard, naming both times; None otherwise. ``recorded_at`` never goes back
    (as of T is a prefix of positions), so one append made while the clock had jumped forward
    keeps it in the future until the clock passes it: the chain is sound, but the times are
    not to be trusted, and the operator should know. (The guard itself measures against the
    clock, so no writer can date facts up to that future.)"""
    if recorded_at is None or recorded_at <= clock + MAX_CLOCK_SKEW:
        return None
    return (
        f"the last append's recorded_at {isoformat_utc(recorded_at)} is ahead of the ledger's "
        f"clock {isoformat_utc(clock)} by {format_duration(recorded_at - clock)}: an append was "
        "made while the clock was ahead (or the clock stepped back since); appends keep that "
        "recorded_at until the clock passes it"
    )


# One event's payload at most: far above any real run report.
MAX_PAYLOAD_BYTES = 1024 * 1024
# The smallest max_allowed_packet (a MySQL/MariaDB server setting, the largest statement it
# takes) under which both databases accept the same events: one that is large goes to the
# server in a statement of its own, its text escaped by the driver (a backslash or a quote
# doubles), and the projection writes its errorDetails as ASCII-only JSON (a 2-byte character
# becomes \uXXXX: 7 bytes once escaped), 3.5 times the payload at worst, plus the row's other
# columns. Below it, a large event is refused by the server (1153) where SQLite stores it.
# MariaDB's default is 16 MiB, MySQL 8's 64 MiB.
MIN_SERVER_PACKET_BYTES = 4 * 1024 * 1024
# How much of a driver's message a refused payload's problem quotes.
_MAX_DETAIL_CHARS = 120


def validated_batch(
    batch: Sequence[object],
) -> tuple[list[EventModel], list[InputProblem]]:
    """The batch as events validation built, and what makes one of them no event at all.

    An event its model's validation built is taken as it is. Any other (made with
    ``model_construct`` or ``model_copy(update=...)``, which skip validation; an instance of a
    subclass, whose extra or redefined fields a read of the ledger could not decode) is
    validated again, from its values, as the model of its ``type``: what it holds that no
    validated event could (a negative counter, a run id as text, a missing field) is refused
    naming the field, and what validation makes of it is appended instead. Without this, such
    an event was stored as it stood and every later read of it failed (a poison event).

    Raises :class:`TypeError` for an item that is no event model at all (a dict: see
    :func:`ledger.parse_event`)."""
    events: list[EventModel] = []
    problems: list[InputProblem] = []
    for index, event in enumerate(batch):
        if not isinstance(event, EventModel):
            raise TypeError(
                f"event {index + 1} of the batch is a {type(event).__name__}, not an event "
                "model (RunStarted, RunProgressed, RunFinished, RunTimedOut; "
                "ledger.parse_event makes one of a dict)"
            )
        if is_validated(event):
            events.append(event)
            continue
        checked, found = _validated_again(event)
        events.append(event if checked is None else checked)
        problems.extend(replace(problem, index=index) for problem in found)
    return events, problems


def _validated_again(event: EventModel) -> tuple[EventModel | None, list[InputProblem]]:
    try:
        return event_adapter.validate_python(dict(vars(event))), []
    except pydantic.ValidationError as exc:
        return None, pydantic_problems(exc)


def append_option_problems(expected_version: object, clock_read: object) -> list[InputProblem]:
    """What is wrong with an append's ``expected_version`` (None, or a whole number from 0)
    and ``clock_read`` (None, or a datetime with a zone): a version given as text, a bool or
    a negative number is the caller's mistake, not a version conflict."""
    problems: list[InputProblem] = []
    if expected_version is not None and (
        not isinstance(expected_version, int)
        or isinstance(expected_version, bool)
        or expected_version < 0
    ):
        problems.append(
            InputProblem(
                "expected_version",
                f"a whole number from 0 (or None), got {clip(safe_repr(expected_version))}",
            )
        )
    if clock_read is not None and (
        not isinstance(clock_read, datetime) or clock_read.utcoffset() is None
    ):
        problems.append(
            InputProblem(
                "clock_read",
                f"a datetime with a time zone (or None), got {clip(safe_repr(clock_read))}",
            )
        )
    return problems


def checks_before_lock(
    batch: Sequence[EventModel],
    found: list[InputProblem],
    expected_version: int | None,
    clock_read: datetime | None,
) -> tuple[list[str], list[InputProblem]]:
    """What :meth:`Ledger.append` checks before its lock, after :func:`validated_batch` (whose
    problems are ``found``): the options, then each payload (:func:`prepare_batch`). The
    payloads, or the problems that refuse the batch."""
    problems = [*found, *append_option_problems(expected_version, clock_read)]
    if problems:
        return [], problems
    return prepare_batch(batch, expected_version, now=clock_read)


def prepare_batch(
    batch: Sequence[EventModel], expected_version: int | None, now: datetime | None
) -> tuple[list[str], list[InputProblem]]:
    """Serialise each payload and find what makes the batch unappendable, before any lock.

    Checks: the payload is storable JSON (finite numbers, valid Unicode); the event is written
    with its type's current schema_version; occurred_at is not beyond the clock skew guard
    (given ``now``, the ledger's clock); run_refs are defined before use and once;
    expected_version concerns a single run. Each problem carries the index of its event in
    the batch (None: the batch as a whole).
    """
    payloads: list[str] = []
    problems: list[InputProblem] = []
    # Each run_ref and the event_id of the RunStarted that defines it: that same event again
    # later in the batch is a duplicate (I3, stored once), not a second start.
    defined_refs: dict[str, UUID] = {}
    run_keys: set[object] = set()
    for index, event in enumerate(batch):
        payload, found = event_problems(event, now)
        payloads.append(payload)
        if found:
            problems.extend(replace(p, index=index) for p in found)
        if event.run_ref is not None:
            if isinstance(event, RunStarted):
                defined_by = defined_refs.setdefault(event.run_ref, event.event_id)
                if defined_by != event.event_id:
                    problems.append(
                        InputProblem("run_ref", f"{event.run_ref!r} is started twice", index)
                    )
            elif event.run_ref not in defined_refs:
                problems.append(
                    InputProblem(
                        "run_ref",
                        f"{event.run_ref!r} names no RunStarted earlier in this batch",
                        index,
                    )
                )
        if event.run_id is not None:
            run_keys.add(event.run_id)
        elif event.run_ref is not None:
            run_keys.add(("ref", event.run_ref))
        else:
            run_keys.add(("new run", event.event_id))  # a repeat of it starts no other run
    if expected_version is not None and len(run_keys) > 1:
        problems.append(
            InputProblem(
                None, "expected_version applies to a batch about one run; this batch has several"
            )
        )
    elif expected_version:
        # A new run is at version 0 before its batch: any other expectation cannot hold, and
        # the conflict would name a run id allocated only for the refused batch.
        for index, event in enumerate(batch):
            if isinstance(event, RunStarted) and event.run_id is None:
                problems.append(
                    InputProblem(
                        None,
                        f"expected_version {expected_version} for a batch that starts a new "
                        "run: a new run is at version 0",
                        index,
                    )
                )
    return payloads, problems


def event_problems(event: EventModel, now: datetime | None) -> tuple[str, list[InputProblem]]:
    """The event's serialised payload ("" if it cannot be) and what makes the event itself
    unappendable, whatever batch it is in: its payload not storable JSON, over its limits
    (:func:`ledger.limits.payload_problems`, :data:`MAX_PAYLOAD_BYTES`), an old
    schema_version, occurred_at beyond the clock skew guard (given ``now``, the ledger's
    clock). Each problem without an index: the caller places it."""
    problems: list[InputProblem] = []
    try:
        payload = payload_json(event)
        size = len(payload.encode("utf-8"))
        (event.actor or "").encode("utf-8")
    except (ValueError, TypeError, RecursionError) as exc:  # UnicodeEncodeError: ValueError
        field = _unstorable_field(event)
        detail = clip(str(exc), _MAX_DETAIL_CHARS, ellipsis="...")
        problems.append(InputProblem("payload", f"not storable as JSON ({field}: {detail})"))
        payload = ""
    else:
        problems.extend(payload_problems(event))
        if size > MAX_PAYLOAD_BYTES:
            field, field_size = _largest_field(event)
            problems.append(
                InputProblem(
                    "payload",
                    f"{size:,} bytes is over the {MAX_PAYLOAD_BYTES:,}-byte limit of one "
                    f"event ({field} alone is {field_size:,} bytes)",
                )
            )
    current = CURRENT_SCHEMA_VERSIONS[event.type]
    if event.schema_version != current:
        problems.append(
            InputProblem(
                "schema_version",
                f"{event.type} is written at schema_version {current}, got {event.schema_version}",
            )
        )
    if now is not None and event.occurred_at > now + MAX_CLOCK_SKEW:
        problems.append(
            InputProblem(
                "occurred_at",
                f"{isoformat_utc(event.occurred_at)} is more than "
                f"{int(MAX_CLOCK_SKEW.total_seconds() // 60)} minutes ahead of the "
                f"ledger clock ({isoformat_utc(now)})",
            )
        )
    return payload, problems


def _largest_field(event: EventModel) -> tuple[str, int]:
    """The payload field with the most bytes of JSON, and that size (the message names it)."""
    sizes = {
        name: len(canonical_json(value).encode("utf-8"))
        for name, value in payload_of(event).items()
    }
    largest = max(sizes, key=sizes.__getitem__)
    return largest, sizes[largest]


def _unstorable_field(event: EventModel) -> str:
    """The payload field that cannot be stored as JSON (the message names it)."""
    for name, value in payload_of(event).items():
        try:
            canonical_json(value).encode("utf-8")
        except (ValueError, TypeError, RecursionError):
            return name
    return "payload"


def batch_error(batch: Sequence[EventModel], problems: list[InputProblem]) -> ValidationError:
    lines = [
        str(p) if p.index is None else f"event {p.index + 1} ({_event_id(batch[p.index])}): {p}"
        for p in problems
    ]
    return ValidationError(
        "; ".join(lines), problems=lines, details=problems, index=problems[0].index
    )


def _event_id(event: EventModel) -> object:
    return getattr(event, "event_id", None)  # a model made without validation may lack it
