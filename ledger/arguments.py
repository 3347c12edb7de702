"""The values a Python caller passes to :class:`ledger.Ledger`'s reads, checked before any SQL.

A position, run id, source id or count is a whole number (an ``int``, a subclass of it, not a
``bool``); a name is text; a time carries its zone. Anything else is a
:class:`ledger.ValidationError` naming the argument, the same on both databases: unchecked,
``read_run(1, limit=-1)`` read every event on SQLite and was a SQL syntax error (a
``StorageError``, the database's fault) on MariaDB, ``read_all(after=2**70)`` an
``OverflowError`` from SQLite's driver, ``read_all(up_to="x")`` every event on one and none
on the other.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from ledger.errors import InputProblem, ValidationError
from ledger.rules import RUN_STATES
from ledger.text import clip, safe_repr

# The largest value a BIGINT column (a position) holds, and so SQLite's driver binds: a larger
# number compares as this one does with every stored key (after it: nothing; up to it: all).
LARGEST_KEY = 2**63 - 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def whole_number(value: object, name: str, *, least: int | None = 0) -> int:
    """``value``, a whole number from ``least`` (None: any), held within the range a key
    column compares with (:data:`LARGEST_KEY`), or a :class:`ValidationError` naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise refused(name, f"a whole number, got {_shown(value)}")
    if least is not None and value < least:
        raise refused(name, f"a whole number from {least}, got {clip(safe_repr(int(value)), 80)}")
    return max(-LARGEST_KEY, min(int(value), LARGEST_KEY))


def optional_whole_number(value: object, name: str, *, least: int | None = 0) -> int | None:
    return None if value is None else whole_number(value, name, least=least)


def run_ids(values: object, name: str = "run_ids") -> list[int]:
    """Run ids given as a collection of whole numbers (not one number, not text)."""
    if isinstance(values, str | bytes) or not isinstance(values, Collection):
        raise refused(name, f"a collection of run ids, got {_shown(values)}")
    return [whole_number(value, name, least=None) for value in values]


def optional_name(value: object, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise refused(name, f"text, got {_shown(value)}")


def run_state(value: object) -> str | None:
    if value is None or (isinstance(value, str) and value in RUN_STATES):
        return value
    raise refused("state", f"one of {', '.join(RUN_STATES)}, got {_shown(value)}")


def moment(value: object, name: str) -> datetime:
    """A datetime with a zone: a naive one would be compared as a guess."""
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return value
    raise refused(name, f"a datetime with a time zone, got {_shown(value)}")


def refused(name: str, message: str) -> ValidationError:
    """The :class:`ValidationError` of argument ``name``, its one problem naming it."""
    return ValidationError(f"{name}: {message}", details=[InputProblem(name, message)])


def _shown(value: object) -> str:
    return f"{type(value).__name__} {clip(safe_repr(value), 80)}"


# The longest threshold a stuck query takes: far beyond any run, and "now" minus it stays a
# date (a larger one was an OverflowError out of the query).
LONGEST_THRESHOLD = timedelta(days=36_525)


def threshold(value: object, name: str) -> timedelta:
    """A stuck threshold: a timedelta longer than zero, at most :data:`LONGEST_THRESHOLD`."""
    if not isinstance(value, timedelta):
        raise refused(name, f"a timedelta, got {_shown(value)}")
    if value <= timedelta(0):
        raise refused(name, f"must be longer than zero, got {value}")
    if value > LONGEST_THRESHOLD:
        raise refused(name, f"at most {LONGEST_THRESHOLD.days:,} days, got {value}")
    return value


def seconds(value: object, name: str, *, zero: bool = True) -> float:
    """A duration in seconds: a finite int or float from 0 (above it unless ``zero``). NaN
    as a deadline is a wait that never ends (every comparison with it is false), a negative
    poll a ``ValueError`` out of ``time.sleep``, a zero one a busy loop."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise refused(name, f"a number of seconds, got {_shown(value)}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int past float's range (10**400)
        finite = False
    if not finite or value < 0 or (value == 0 and not zero):
        bound = "from 0" if zero else "above 0"
        raise refused(name, f"a finite number of seconds {bound}, got {clip(safe_repr(value), 80)}")
    return float(value)


def clock_time(value: object, name: str) -> datetime:
    """A moment to judge runs at: a datetime with a zone, from the Unix epoch on (no event is
    older; an earlier one, year 1, made the query's arithmetic overflow) to the end of 9999
    in UTC (a later one, given in a zone west of UTC, was a StorageError out of the query as
    it was converted to UTC)."""
    moment(value, name)
    assert isinstance(value, datetime)
    if value < EPOCH:
        raise refused(name, f"not before 1970, got {value.isoformat()}")
    try:
        value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00-14:00 is in the year 10000 in UTC
        raise refused(name, f"not after 9999 in UTC, got {value.isoformat()}") from None
    return value


def text(value: object, name: str) -> str:
    if isinstance(value, str):
        return value
    raise refused(name, f"text, got {_shown(value)}")
