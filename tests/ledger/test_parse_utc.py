"""``parse_utc``: the one parser of times given as text (issue 13), beside ``isoformat_utc``.
Five call sites each parsed ISO-8601 their own way; each says here what it needs of naive
times, and the sites' own tests hold what they accept and refuse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.clock import ensure_utc, isoformat_utc, parse_utc

NOON = datetime(2026, 1, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-28T12:00:00Z",
        "2026-01-28T12:00:00.000000Z",
        "2026-01-28 12:00:00+00:00",
        "2026-01-28T14:00:00+02:00",
        "2026-01-28T07:00:00-05:00",
    ],
)
def test_a_time_with_a_zone_comes_back_in_utc(text: str) -> None:
    for naive in ("utc", "refuse"):
        parsed = parse_utc(text, naive=naive)
        assert parsed == NOON
        assert parsed.tzinfo is UTC


def test_it_reads_back_what_isoformat_utc_writes() -> None:
    moment = datetime(2026, 12, 4, 23, 40, 0, 123456, tzinfo=UTC)
    assert parse_utc(isoformat_utc(moment), naive="refuse") == moment


def test_a_naive_time_is_utc_or_refused_as_the_caller_says() -> None:
    assert parse_utc("2026-01-28T12:00:00", naive="utc") == NOON
    with pytest.raises(ValueError, match=r"^has no time zone \(naive times are refused\)$"):
        parse_utc("2026-01-28T12:00:00", naive="refuse")


def test_keep_offset_leaves_the_zone_the_text_gives() -> None:
    parsed = parse_utc("2026-01-28T14:00:00+02:00", naive="utc", keep_offset=True)
    assert parsed.utcoffset() == timedelta(hours=2)
    assert parsed.isoformat() == "2026-01-28T14:00:00+02:00"
    assert parse_utc("2026-01-28T12:00:00", naive="utc", keep_offset=True).tzinfo is UTC


def test_refusals_say_what_is_wrong_without_repeating_the_text() -> None:
    with pytest.raises(ValueError, match=r"^is not an ISO-8601 time$"):
        parse_utc("yesterday", naive="utc")
    with pytest.raises(ValueError, match=r"^is not an ISO-8601 time \(month must be in 1\.\.12\)$"):
        parse_utc("2026-13-01T00:00:00Z", naive="utc")
    with pytest.raises(ValueError, match=r"^is out of range in UTC$"):
        parse_utc("9999-12-31T23:59:59-14:00", naive="utc")
    # Python said "offset must be a timedelta strictly between -timedelta(hours=24) and
    # timedelta(hours=24), not datetime.timedelta(days=1).": its objects, not the text's terms.
    for offset in ("+24:00", "-24:00", "+25:30"):
        offset_refused = r"\(the UTC offset must be between -23:59 and \+23:59\)$"
        with pytest.raises(ValueError, match=r"^is not an ISO-8601 time " + offset_refused):
            parse_utc(f"2026-01-01T00:00:00{offset}", naive="utc")
    # Only the upper case Z: the one call site that takes a lower case z says so itself.
    with pytest.raises(ValueError, match="is not an ISO-8601 time"):
        parse_utc("2026-01-28T12:00:00z", naive="utc")


def test_an_offset_past_the_last_utc_time_is_kept_with_keep_offset() -> None:
    late = parse_utc("9999-12-31T23:59:59-14:00", naive="utc", keep_offset=True)
    assert late.tzinfo == timezone(timedelta(hours=-14))


LONGEST_OFFSET = timedelta(hours=23, minutes=59)


def isoformat_the_long_way(value: datetime) -> str:
    """isoformat_utc as it was written before it used datetime.isoformat."""
    value = ensure_utc(value)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:"
        f"{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}Z"
    )


@settings(max_examples=1000, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.builds(timezone, st.timedeltas(-LONGEST_OFFSET, LONGEST_OFFSET)),
    )
    | st.datetimes(timezones=st.just(UTC))
)
def test_isoformat_utc_is_the_long_way_for_every_time(moment: datetime) -> None:
    assert isoformat_utc(moment) == isoformat_the_long_way(moment)
