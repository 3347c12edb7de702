"""Point-in-time reads: the ``ingestion_runs`` rows as they were at a past moment or position.

The events recorded up to that point are replayed in memory through the projector's own fold
(:mod:`projections.fold`), with the same skips, and nothing is written. Because ``recorded_at``
never decreases along positions, "as of time T" is the prefix of positions up to
:meth:`ledger.Ledger.position_at`. It never goes back, but it can be ahead of the clock (the
clock stepped back: appends since are stamped with the last ``recorded_at``), so the position
of a time is found from the time asked for, never from the clock it is judged by.
"""

from __future__ import annotations

import re
from datetime import datetime

from ledger import Ledger, RecordedEvent, UnknownRunError, ValidationError
from ledger.arguments import EPOCH
from ledger.clock import parse_utc
from projections.checkpoints import skipped_positions
from projections.errors import PoisonEventError
from projections.fold import Row, Transition, fold_events
from projections.schema import PROJECTION_NAME

# A time, a space, then an offset: "…T04:00:00+01:00" typed into a URL, whose query string
# decodes the "+" to a space.
_PLUS_AS_SPACE = re.compile(r"(\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d(?::?\d\d)?)\Z")


# How the API and the web view name the two in a query string, and the longest as_of text
# they take (an ISO-8601 time is some 32 characters).
QUERY_NAMES = ("as_of", "at_position")
QUERY_AS_OF_MAX_LENGTH = 100


def parse_as_of(
    as_of: str | None,
    at_position: int | None,
    names: tuple[str, str] = ("--as-of", "--at-position"),
) -> datetime | None:
    """The moment ``as_of`` names (ISO-8601; no zone means UTC), None if not given. Raises
    :class:`ValidationError` for a text that is not a time, or when both are given (``names``
    are how the caller's user spells the two options)."""
    if as_of is not None and at_position is not None:
        raise ValidationError(f"give {names[0]} or {names[1]}, not both")
    if as_of is None:
        return None
    text = _PLUS_AS_SPACE.sub(r"\1+\2", as_of, count=1)
    try:
        return parse_utc(text, naive="utc")
    except ValueError as exc:
        raise ValidationError(f"{names[0]}: {as_of!r} {exc}") from exc


def not_after_now(ledger: Ledger, as_of: datetime) -> datetime:
    """``as_of``, or the ledger's clock if it is later: a time ahead of the clock is no history
    yet, so a read as of it stands now (judging runs stuck at the future time would fail runs
    that are alive). The web view, the report and every as-of read share this one rule."""
    now = ledger.clock()
    return min(as_of, now)


def resolve_position(ledger: Ledger, as_of: datetime | None, at_position: int | None) -> int:
    if at_position is not None:
        return min(at_position, ledger.head().last_position)
    if as_of is not None:
        return ledger.position_at(as_of)
    return ledger.head().last_position


def judged_moment(
    ledger: Ledger, as_of: datetime | None, at_position: int | None
) -> tuple[int, datetime]:
    """Where a read as of ``as_of`` or ``at_position`` stands, and when it is judged (what
    "silent for" and the thresholds of stuck runs count to): the one rule of every surface that
    judges runs (``ledger stuck``, ``ledger report``, the API, the web's pages). A time stands
    at the last position recorded by it, as ``runs list`` reads it, and is judged at itself; a
    position (one past the head is the head) is judged when its event was recorded, position 0
    (or an empty ledger) now. Neither is judged after now (:func:`not_after_now`). One of the
    two must be given."""
    if as_of is None and at_position is None:
        raise ValidationError("give as_of or at_position")
    # The asked time, not the clock, finds the position: after the clock stepped back, events
    # recorded (and shown by `runs list`) are stamped ahead of it, and "as of a time ahead of
    # the clock" stood before them, showing a past the ledger had left (no runs at all).
    position = resolve_position(ledger, as_of, at_position)
    judged = as_of or ledger.recorded_at(position) or ledger.clock()
    # No event is older than the epoch, so a time before it stands where the epoch does (no
    # run yet), as a list of runs as of it reads: judged at itself it was refused by the
    # stuck query's own check, naming its ``at`` rather than the caller's as_of.
    return position, not_after_now(ledger, max(judged, EPOCH))


def skips_up_to(ledger: Ledger, up_to: int) -> set[int]:
    """The positions up to ``up_to`` that the projection skips (an operator's decision)."""
    with ledger.connect() as conn:
        return skipped_positions(conn, PROJECTION_NAME, 1, up_to)


def runs_as_of(ledger: Ledger, position: int, batch_size: int = 5000) -> dict[int, Row]:
    """Every run's row as of ``position`` (the whole history up to it is replayed)."""
    return replay_as_of(ledger, position, batch_size)[0]


def replay_as_of(
    ledger: Ledger, position: int, batch_size: int = 5000
) -> tuple[dict[int, Row], list[Transition]]:
    """Every run's row and every status transition as of ``position``, replayed. Raises the
    :class:`PoisonEventError` of an event before it that cannot be applied (and is not
    skipped)."""
    rows, transitions, poison = replay_until_poison(ledger, position, batch_size)
    if poison is not None:
        raise poison
    return rows, transitions


def replay_until_poison(
    ledger: Ledger, position: int, batch_size: int = 5000
) -> tuple[dict[int, Row], list[Transition], PoisonEventError | None]:
    """:func:`replay_as_of`, stopping at an event that cannot be applied, as the projector
    stops there: the rows and transitions before it, and its error (None if none)."""
    rows: dict[int, Row] = {}
    skipped = skips_up_to(ledger, position)
    if position <= 0:
        return rows, [], None
    events = ledger.read_all(batch_size=batch_size, up_to=position)
    outcome = fold_events(rows, events, skipped)
    return rows, outcome.transitions, outcome.poison


def run_as_of(
    ledger: Ledger, run_id: int, position: int, history: list[RecordedEvent] | None = None
) -> tuple[Row | None, list[Transition]]:
    """One run's row and transitions as of ``position``, from that run's events only
    (``history``, when the caller read them already); no row when the run started after it.
    Raises :class:`UnknownRunError` if it never started."""
    rows: dict[int, Row] = {}
    if history is None:
        history = ledger.read_run(run_id)
    if not history:
        raise UnknownRunError(run_id)
    events = [e for e in history if e.position <= position]
    outcome = fold_events(rows, events, skips_up_to(ledger, position))
    if outcome.poison is not None:
        raise outcome.poison
    return rows.get(run_id), outcome.transitions
