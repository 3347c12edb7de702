"""A 5-field crontab expression as crontab means it, turned into an APScheduler trigger.

APScheduler's own ``CronTrigger.from_crontab`` is not crontab: its day-of-week numbers start
at Monday (0 = Monday, 6 = Sunday, 7 refused), so ``0 0 * * 1-5`` would run Tuesday to
Saturday; and a job whose day of month and day of week are both restricted runs only when
both match, where cron runs it when either does. Here each field is read into the set of
values crontab gives it, and APScheduler is handed those sets, numbered its way.

The syntax is Vixie cron's (cronie's): ``*``, ``N``, ``N-M``, steps ``*/S`` and ``N-M/S``,
comma lists of these, month names ``jan``-``dec`` and day names ``sun``-``sat`` (any case).
Day of week is 0-7, 0 and 7 both Sunday; ``sun`` ending a range means 7 (``fri-sun``, where
crontab would refuse it). ``N/S`` (from N to the field's last value) is accepted too, as
APScheduler accepted it.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from ledger.text import clip, visible

FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
# Spelt out: calendar.month_abbr follows the locale.
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_NAMES: tuple[dict[str, int], ...] = ({}, {}, {}, _MONTHS, _DAYS)
_ITEM = re.compile(r"(?P<first>\*|[0-9a-z]+)(?:-(?P<last>[0-9a-z]+))?(?:/(?P<step>[0-9]+))?")
_LEAP_YEAR = 2000  # the one calendar where every (month, day) that can ever happen does


@dataclass(frozen=True)
class Crontab:
    """The values each field allows; weekdays numbered crontab's way, 0 = Sunday … 6."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    # Vixie cron's rule: a day field that does not start with "*" restricts; when both do,
    # a day matching either runs the job.
    days_restricted: bool
    weekdays_restricted: bool

    @property
    def either_day(self) -> bool:
        """Whether a day runs the job when its day of month OR its day of week matches."""
        return self.days_restricted and self.weekdays_restricted

    def days_happen(self) -> bool:
        """Whether some month of :attr:`months` has some day of :attr:`days` (no 31 February)."""
        return any(
            day <= calendar.monthrange(_LEAP_YEAR, month)[1]
            for month in self.months
            for day in self.days
        )


def parse_crontab(expression: str) -> Crontab:
    """The sets of a 5-field crontab expression; ValueError says what is wrong, and where."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"give 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    values = [_field(index, text) for index, text in enumerate(fields)]
    minutes, hours, days, months, weekdays = values
    crontab = Crontab(
        frozenset(minutes),
        frozenset(hours),
        frozenset(days),
        frozenset(months),
        frozenset(day % 7 for day in weekdays),
        days_restricted=not fields[2].startswith("*"),
        weekdays_restricted=not fields[4].startswith("*"),
    )
    if not crontab.days_happen() and not crontab.either_day:
        raise ValueError(
            f"day of month {_shown(fields[2])} never falls in month {_shown(fields[3])}: "
            "it would never run"
        )
    return crontab


def crontab_trigger(expression: str) -> BaseTrigger:
    """The trigger (times UTC) firing when crontab would run ``expression``; ValueError says
    what is wrong with it. Both ``config check`` and ``serve`` read a schedule through this."""
    crontab = parse_crontab(expression)
    if not crontab.either_day:  # one day field restricts, or neither: both must match
        return _cron(crontab, crontab.days, crontab.weekdays)
    every_weekday = frozenset(range(7))
    every_day = frozenset(range(1, 32))
    by_weekday = _cron(crontab, every_day, crontab.weekdays)
    if not crontab.days_happen():  # 31 February OR Monday: the Mondays of February
        return by_weekday
    return OrTrigger([_cron(crontab, crontab.days, every_weekday), by_weekday])


def _cron(crontab: Crontab, days: frozenset[int], weekdays: frozenset[int]) -> CronTrigger:
    return CronTrigger(
        minute=_listed(crontab.minutes, 60),
        hour=_listed(crontab.hours, 24),
        day=_listed(days, 31),
        month=_listed(crontab.months, 12),
        # APScheduler numbers the days from Monday: crontab's 1 (Monday) is its 0.
        day_of_week=_listed(frozenset((day - 1) % 7 for day in weekdays), 7),
        timezone="UTC",
    )


def _listed(values: frozenset[int], every: int) -> str:
    return "*" if len(values) == every else ",".join(str(value) for value in sorted(values))


def _field(index: int, text: str) -> set[int]:
    values: set[int] = set()
    for item in text.lower().split(","):
        try:
            values.update(_item(index, item))
        except ValueError as exc:
            where = f" {_shown(text)}" if "," in text else ""  # else the item names it
            raise ValueError(f"{FIELD_NAMES[index]}{where}: {exc}") from None
    return values


def _item(index: int, item: str) -> range:
    low, high = _BOUNDS[index]
    match = _ITEM.fullmatch(item)
    if match is None:
        raise ValueError(f"{_shown(item)} is not N, N-M, */S, N-M/S or a list of them")
    first_text, last_text, step_text = match.group("first", "last", "step")
    step = 1 if step_text is None else int(step_text)
    if step == 0:
        raise ValueError("a step of 0")
    if first_text == "*":
        if last_text is not None:
            raise ValueError(f"{_shown(item)}: * is every value, it cannot start a range")
        return range(low, high + 1, step)
    first = _value(index, first_text)
    if last_text is not None:
        last = _value(index, last_text)
        if index == 4 and last_text == "sun" and first > 0:
            last = 7  # fri-sun: Friday to Sunday, crontab's 7
    else:
        last = high if step_text is not None else first  # N/S: from N to the last value
    if first > last:
        raise ValueError(f"{_shown(item)} goes from high to low: write a range low to high")
    return range(first, last + 1, step)


def _shown(text: str) -> str:
    return "'" + clip(visible(text), 40) + "'"


def _value(index: int, text: str) -> int:
    low, high = _BOUNDS[index]
    if text.isdecimal() and text.isascii():
        number = int(text)
        if not low <= number <= high:
            sunday = " (0 and 7 are Sunday)" if index == 4 else ""
            raise ValueError(f"{number} is out of range {low}-{high}{sunday}")
        return number
    names = _NAMES[index]
    if text not in names:
        named = f" or a name ({', '.join(names)})" if names else ""
        raise ValueError(f"{_shown(text)} is not a value: use {low}-{high}{named}")
    return names[text]
