"""Durations as people write them: ``90s``, ``15m``, ``6h``, ``2d`` (and combinations like
``1h30m``)."""

from __future__ import annotations

import re
from datetime import timedelta

from ledger.errors import ConfigurationError
from ledger.text import clip

MAX_SECONDS = 3650 * 86400  # ten years: anything longer is a typo, and overflows datetimes
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# [0-9], not \d: \d and int() take every script's digits, and "\u0661\u0662m" was 12 minutes.
_PART = re.compile(r"([0-9]+)([smhdw])")


def parse_duration(text: str, what: str | None = "duration") -> timedelta:
    """Parse ``90s``/``15m``/``6h``/``2d``/``1h30m``; refuse zero, negative and garbage.

    Errors start with ``what:``; None leaves it out, for a caller (click) that names the
    option itself.
    """
    where = f"{what}: " if what else ""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _PART.sub("", compact):
        raise ConfigurationError(
            f"{where}{text!r} is not a duration; write it like 90s, 15m, 6h or 2d"
        )
    parts = [(n.lstrip("0") or "0", unit) for n, unit in _PART.findall(compact)]
    # int() refuses more than 4,300 digits (a ValueError, a traceback): a number with more
    # digits than the longest duration's seconds is too long whatever its unit.
    too_many_digits = any(len(n) > len(str(MAX_SECONDS)) for n, _ in parts)
    seconds = 0 if too_many_digits else sum(int(n) * _UNITS[unit] for n, unit in parts)
    if too_many_digits or seconds > MAX_SECONDS:
        shown = repr(clip(text, 40))
        raise ConfigurationError(f"{where}{shown} is longer than {MAX_SECONDS // 86400} days")
    if seconds <= 0:
        raise ConfigurationError(f"{where}{text!r} must be longer than zero")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta | int | float) -> str:
    """The shortest exact form: 3600 s → ``1h``, 5400 s → ``1h30m``, 42 s → ``42s``."""
    seconds = int(value.total_seconds() if isinstance(value, timedelta) else value)
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)


def format_silence(value: timedelta) -> str:
    """How long a run has been silent (now minus its last activity). A last activity dated
    ahead of now (a writer's clock ahead, within the skew guard) is no silence: ``0s``, marked,
    never ``-3m55s``. One wording for ``ledger stuck`` and the web's Stuck page."""
    if value >= timedelta(0):
        return format_duration(value)
    return f"0s (last activity {format_duration(-value)} ahead of now)"
