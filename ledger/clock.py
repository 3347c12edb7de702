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
    return ensure_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
