"""The one clock of run-ledger.

Every timestamp this process produces comes from :func:`utcnow`, so freezegun drives every test
and nothing ever reads a local time zone. The ledger's own clock (``recorded_at``, the clock skew
guard, the sweeper's "now") is the database server's; a test or a single-host tool can make it
this process's clock instead with :func:`use_clock`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime


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
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:"
        f"{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}Z"
    )


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
