"""The one clock of run-ledger.

Every timestamp this process produces comes from :func:`utcnow`, so freezegun drives every test
and nothing ever reads a local time zone. The ledger's own clock (``recorded_at``, the clock skew
guard, the sweeper's "now") is the database server's; a test or a single-host tool can make it
this process's clock instead with :func:`use_clock`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal


def utcnow() -> datetime:
    """The current time as an aware UTC datetime, truncated to microseconds."""
    return datetime.now(UTC)


def ensure_utc(value: datetime, field: str = "datetime") -> datetime:
    """Return ``value`` converted to UTC; refuse naive datetimes, whose zone is a guess."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{field} must carry a time zone (naive datetimes are refused)")
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # pydantic reports ValueError, not OverflowError
        raise ValueError(f"{field} is out of range: {exc}") from exc


def isoformat_utc(value: datetime) -> str:
    """Canonical text of a timestamp: UTC, ISO-8601, always six fractional digits, ``Z``."""
    if value.tzinfo is not UTC:
        value = ensure_utc(value)
    # isoformat pads the year to four digits and, in UTC, ends with "+00:00", which goes: the
    # text of f"{year:04d}-{month:02d}-…{microsecond:06d}Z", made in C (every append hashes it).
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


def parse_utc(text: str, *, naive: Literal["utc", "refuse"], keep_offset: bool = False) -> datetime:
    """ISO-8601 text as an aware datetime in UTC: the one parser of times given as text.

    ``Z`` is UTC. A time with no zone is UTC with ``naive="utc"`` (an operator's ``--as-of``, a
    legacy TIMESTAMP column: both mean UTC) and refused with ``naive="refuse"`` (a stored fact,
    whose zone would be a guess). ``keep_offset`` leaves a time in the zone its text gives
    (``legacy_created_at`` keeps the legacy text's own offset: it is part of the fact).

    Raises ValueError saying what is wrong without repeating the text, which the caller names
    as its own user spells it: ``is not an ISO-8601 time``, ``has no time zone (naive times are
    refused)``, ``is out of range in UTC``.
    """
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        # Python's reason when it says more than the text ("month must be in 1..12"); its
        # "Invalid isoformat string: '…'" would only repeat the text, unclipped.
        reason = "" if str(exc).startswith("Invalid isoformat string") else f" ({exc})"
        if str(exc).startswith("offset must be a timedelta"):
            # "… strictly between -timedelta(hours=24) and timedelta(hours=24), not
            # datetime.timedelta(days=1)": Python's objects, not the text's terms.
            reason = " (the UTC offset must be between -23:59 and +23:59)"
        raise ValueError(f"is not an ISO-8601 time{reason}") from None
    if parsed.tzinfo is None:
        if naive == "refuse":
            raise ValueError("has no time zone (naive times are refused)")
        return parsed.replace(tzinfo=UTC)
    if keep_offset:
        return parsed
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-14:00 is past the last UTC time
        raise ValueError("is out of range in UTC") from None


Clock = Callable[[], datetime]
# The clock a Ledger uses when none is given: None means the database server's (see
# ledger.store.Ledger). Tests set this process's clock with use_clock(utcnow), so that freezegun
# drives time through every Ledger the code under test opens, the CLI's included.
_default_clock: Clock | None = None


def default_clock() -> Clock | None:
    """The clock a new Ledger uses when none is given (None: the database server's)."""
    return _default_clock


def use_clock(clock: Clock | None) -> Clock | None:
    """Make ``clock`` the default of Ledgers opened from now on; returns the previous one.

    For tests and single-host tools: ``use_clock(utcnow)`` trusts this process's clock (which
    freezegun drives) instead of reading the database server's.
    """
    global _default_clock
    previous, _default_clock = _default_clock, clock
    return previous


def format_utc_seconds(value: datetime, *, iso: bool = False) -> str:
    """A timestamp to the second: for people, ``2026-01-28 03:00:07`` (UTC, which the caller
    says, as in ``… UTC`` or a column titled "times in UTC"); with ``iso``,
    ``2026-01-28T03:00:07Z`` (the legacy TIMESTAMP columns hold whole seconds)."""
    text = isoformat_utc(value)[:19]
    return text + "Z" if iso else text.replace("T", " ")


def labelled_utc(value: datetime) -> str:
    """A timestamp to the second, saying its zone: ``2026-01-28 03:00:07 UTC``."""
    return f"{format_utc_seconds(value)} UTC"
