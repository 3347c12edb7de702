"""What the templates show: times in UTC with their age, durations, the per-day status bars."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup, escape

from ledger.clock import isoformat_utc, labelled_utc, utcnow
from ledger.durations import format_duration, format_silence
from ledger.text import ABSENT, clip, visible
from projections.schema import RUN_STATUSES

BAR_WIDTH = 18
BAR_GAP = 4
CHART_HEIGHT = 48
# The stylesheet's colours, as SVG fill attributes (the day bars are an image of their own).
COLOURS = {"running": "#0b5cad", "success": "#1a7f37", "partial": "#9a6700", "failed": "#c62828"}


def utc(value: datetime | None) -> str:
    return ABSENT if value is None else labelled_utc(value)


def iso(value: datetime | None) -> str:
    return "" if value is None else isoformat_utc(value)


def age(seconds: float) -> str:
    """``42 s``, ``5 min``, ``3 h``, ``2 d``: the largest unit, rounded down."""
    seconds = abs(int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """``3 h ago`` (``in 2 min`` for a time ahead of the clock)."""
    if value is None:
        return ""
    delta = ((now or utcnow()) - value).total_seconds()
    if abs(delta) < 1:
        return "just now"
    return f"{age(delta)} ago" if delta > 0 else f"in {age(delta)}"


def duration(value: timedelta | int | float | None) -> str:
    if value is None:
        return ABSENT
    return format_duration(value)


def signed_gap(value: timedelta) -> str:
    """recorded − occurred: ``+0s``, ``+2h``, ``-3s``."""
    seconds = int(value.total_seconds())
    return ("-" if seconds < 0 else "+") + format_duration(abs(seconds))


def day_chart(counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Stacked bars (one per day, one segment per status) for an inline SVG: sizes only, the
    colours come from the stylesheet's classes (the CSP allows no inline style)."""
    peak = max((sum(day.values()) for day in counts.values()), default=0) or 1
    bars = []
    for index, (day, by_status) in enumerate(counts.items()):
        x = index * (BAR_WIDTH + BAR_GAP)
        y = CHART_HEIGHT
        segments = []
        for status in RUN_STATUSES:
            count = by_status.get(status, 0)
            if not count:
                continue
            height = max(1, round(count / peak * (CHART_HEIGHT - 2)))
            y -= height
            segments.append({"status": status, "count": count, "y": y, "h": height})
        title = f"{day}: " + (
            ", ".join(f"{s['count']} {s['status']}" for s in segments) or "no runs"
        )
        bars.append({"x": x, "day": day, "segments": segments, "title": title})
    return {
        "width": len(bars) * (BAR_WIDTH + BAR_GAP),
        "height": CHART_HEIGHT,
        "bar_width": BAR_WIDTH,
        "bars": bars,
    }


def shown(value: Any) -> Any:
    """Every value a template prints (Jinja's ``finalize``), before HTML escaping: text made
    :func:`ledger.text.visible`, as the CLI shows it, so that a newline, an ESC or a U+202E
    from a connector cannot lay out or reorder what a page says. Markup the code built (a
    filter's output, ``tojson``) is left as it is."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible(value)
    return value


def form_value(value: Any) -> Markup:
    """A value a form sends back (a hidden reason, a filter typed in): HTML-escaped but not made
    visible, so that the request carries exactly what the person entered (``finalize`` would
    turn a tab into the two characters ``\\t`` on the way)."""
    return escape("" if value is None else str(value))


def clipped(text: str, limit: int = 80) -> str:
    """At most ``limit`` characters of data, a cut marked ``…``: :func:`ledger.text.clip` of
    the text made visible, as the CLI cuts a cell (never Jinja's ``truncate``, which keeps up
    to 5 characters more and cuts at a word with ``...``)."""
    return clip(visible(text), limit)


# A value longer than this (in characters as shown) is folded where it stands: a connector's
# error message holds a stack trace of thousands of characters (up to the 1 MB of an event),
# shown whole it made a run's timeline row (and its legacy row beside it) thousands of lines
# tall at 40 characters a line, the events after it far below.
FOLD_AT = 200


def folds(text: Any) -> bool:
    """Is ``text`` long enough to be folded (see the ``folded`` macro)?"""
    return len(visible(str(text))) > FOLD_AT


def fold_head(text: Any) -> str:
    """What a folded value shows before it is opened: its first characters, as shown."""
    return clipped(str(text), FOLD_AT)


def shown_length(text: Any) -> str:
    """How many characters ``text`` shows (escapes counted as shown), with thousands marked."""
    return f"{len(visible(str(text))):,}"


FILTERS: dict[str, Callable[..., Any]] = {
    "clip": clipped,
    "folds": folds,
    "fold_head": fold_head,
    "shown_length": shown_length,
    "form_value": form_value,
    "utc": utc,
    "iso": iso,
    "ago": ago,
    "duration": duration,
    "silence": format_silence,
    "gap": signed_gap,
}

__all__ = [
    "COLOURS",
    "FILTERS",
    "age",
    "ago",
    "clipped",
    "day_chart",
    "duration",
    "iso",
    "utc",
]
