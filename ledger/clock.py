"""The one clock of run-ledger.

Every timestamp the library produces comes from :func:`utcnow`, so freezegun drives every test
and nothing ever reads a local time zone.
"""

from __future__ import annotations

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
