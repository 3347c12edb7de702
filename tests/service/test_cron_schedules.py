"""A connector's ``cron`` schedule fires when crontab would run it (review 4, defect 1).

APScheduler's ``CronTrigger.from_crontab`` numbered the days of the week from Monday: with now
a Saturday, ``0 0 * * 0`` (Sunday) first fired on Monday, ``1-5`` (Monday to Friday) on
Tuesday to Saturday, ``6`` on Sunday, and ``7`` (Sunday) was refused; and a day of month with
a day of week ran the job only when both matched, where cron runs it when either does.

The reference here is this file's own: a crontab matcher written from crontab(5) and a brute
force over the minutes after "now" (frozen with freezegun), compared with the triggers serve
schedules."""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import SAMPLE_CSV
from ledger.clock import utcnow
from ledger.errors import ConfigurationError
from service import load_config
from service.cli import cli
from service.config import LedgerConfig, crontab_trigger
from service.serve import LedgerService

SATURDAY = "2026-12-05 12:00:00"  # the audit's "now"
FIRES_COMPARED = 4
HORIZON_DAYS = 30 * 366  # 29 February on a given weekday comes within 28 years

# ------------------------------------------------------------------ the reference

_DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_MONTH_NAMES = [
    *("", "jan", "feb", "mar", "apr", "may", "jun"),
    *("jul", "aug", "sep", "oct", "nov", "dec"),
]
_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def _number(text: str, field: int) -> int:
    if text.isdigit():
        return int(text)
    return _MONTH_NAMES.index(text) if field == 3 else _DAY_NAMES.index(text)


def allowed(text: str, field: int) -> set[int]:
    """The values crontab(5) gives one field."""
    low, high = _RANGES[field]
    values: set[int] = set()
    for part in text.lower().split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = low, high
        elif "-" in span:
            start, end = span.split("-")
            first, last = _number(start, field), _number(end, field)
            if end == "sun" and first > 0:  # fri-sun: run's documented reading, to Sunday
                last = 7
        else:
            first = _number(span, field)
            last = high if step_text else first
        values.update(range(first, last + 1, step))
    return values


def matcher(expression: str) -> Any:
    minute, hour, dom, month, dow = expression.split()
    minutes, hours = allowed(minute, 0), allowed(hour, 1)
    days, months = allowed(dom, 2), allowed(month, 3)
    weekdays = {day % 7 for day in allowed(dow, 4)}  # 7 is Sunday too
    either = not dom.startswith("*") and not dow.startswith("*")  # Vixie cron's rule

    def day_matches(day: datetime) -> bool:
        by_date = day.day in days
        by_weekday = day.isoweekday() % 7 in weekdays  # isoweekday: Monday 1 … Sunday 7
        if day.month not in months:
            return False
        return (by_date or by_weekday) if either else (by_date and by_weekday)

    return day_matches, sorted(minutes), sorted(hours)


def reference_fires(expression: str, now: datetime, count: int) -> list[datetime]:
    """The first ``count`` minutes at or after ``now`` that crontab would run ``expression``
    at, found day by day and minute by minute (none if it never runs within the horizon)."""
    day_matches, minutes, hours = matcher(expression)
    first = now if now == now.replace(second=0, microsecond=0) else now + timedelta(minutes=1)
    first = first.replace(second=0, microsecond=0)
    fires: list[datetime] = []
    day = first.replace(hour=0, minute=0)
    for _ in range(HORIZON_DAYS):
        if day_matches(day):
            for hour in hours:
                for minute in minutes:
                    moment = day.replace(hour=hour, minute=minute)
                    if moment >= first:
                        fires.append(moment)
                        if len(fires) == count:
                            return fires
        day += timedelta(days=1)
    return fires


def scheduled_fires(expression: str, count: int) -> list[datetime]:
    """The trigger serve schedules: its first fire after now, then each after the last."""
    trigger = crontab_trigger(expression)
    fires: list[datetime] = []
    previous = None
    now = utcnow()
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now if previous is None else previous)
        if fire is None:
            break
        fires.append(fire.astimezone(UTC))
        previous = fire
    return fires


# ------------------------------------------------------------------ the examples


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # Sunday, as 0 and as 7: before, Monday 12-07, and "7" refused
        ("0 0 * * 0", ["2026-12-06", "2026-12-13", "2026-12-20", "2026-12-27"]),
        ("0 0 * * 7", ["2026-12-06", "2026-12-13", "2026-12-20", "2026-12-27"]),
        ("0 0 * * sun", ["2026-12-06", "2026-12-13", "2026-12-20", "2026-12-27"]),
        # Monday to Friday: before, Tuesday to Saturday
        ("0 0 * * 1-5", ["2026-12-07", "2026-12-08", "2026-12-09", "2026-12-10", "2026-12-11"]),
        ("0 0 * * 1,3,5", ["2026-12-07", "2026-12-09", "2026-12-11", "2026-12-14"]),
        ("0 0 * * 1-5/2", ["2026-12-07", "2026-12-09", "2026-12-11", "2026-12-14"]),
        ("0 0 * * */2", ["2026-12-06", "2026-12-08", "2026-12-10", "2026-12-12"]),
        # Saturday: before, Sunday 12-06
        ("0 0 * * 6", ["2026-12-12", "2026-12-19", "2026-12-26", "2027-01-02"]),
        ("0 0 * * fri-sun", ["2026-12-06", "2026-12-11", "2026-12-12", "2026-12-13"]),
        ("0 0 * * sun-sun", ["2026-12-06", "2026-12-13", "2026-12-20", "2026-12-27"]),
        ("0 0 * * 5-7", ["2026-12-06", "2026-12-11", "2026-12-12", "2026-12-13"]),
        ("0 0 * * MON,wed-thu", ["2026-12-07", "2026-12-09", "2026-12-10", "2026-12-14"]),
        (
            "*/15 9-17 * * MON-FRI",
            ["2026-12-07 09:00", "2026-12-07 09:15", "2026-12-07 09:30", "2026-12-07 09:45"],
        ),
        # The 13th OR a Friday (before: a 13th that is APScheduler's 5, a Saturday)
        ("0 0 13 * 5", ["2026-12-11", "2026-12-13", "2026-12-18", "2026-12-25"]),
        # A day field starting with * does not restrict for this rule: both must match
        ("0 0 */2 * 1", ["2026-12-07", "2026-12-21", "2027-01-11", "2027-01-25"]),
        # 31 February OR a Monday: the Mondays of February
        ("0 0 31 2 mon", ["2027-02-01", "2027-02-08", "2027-02-15", "2027-02-22"]),
        ("30 2 1 jan,jul *", ["2027-01-01 02:30", "2027-07-01 02:30", "2028-01-01 02:30"]),
        ("5/20 12 * * *", ["2026-12-05 12:05", "2026-12-05 12:25", "2026-12-05 12:45"]),
        ("0 12 * * *", ["2026-12-05 12:00", "2026-12-06 12:00", "2026-12-07 12:00"]),
    ],
)
@freeze_time(SATURDAY)
def test_a_cron_schedule_fires_on_crontabs_days(expression: str, expected: list[str]) -> None:
    assert datetime(2026, 12, 5).weekday() == calendar.SATURDAY
    fires = [at(text) for text in expected]
    assert scheduled_fires(expression, len(fires)) == fires
    assert reference_fires(expression, utcnow(), len(fires)) == fires  # the reference agrees


# ------------------------------------------------------------------ the property


def _value(field: int, number: int, at_end: bool, draw: st.DrawFn) -> str:
    if field == 3 and draw(st.booleans()):
        return _MONTH_NAMES[number].upper() if draw(st.booleans()) else _MONTH_NAMES[number]
    if field == 4 and draw(st.booleans()) and (number < 7 or at_end):
        return _DAY_NAMES[number % 7].capitalize()
    return str(number)


@st.composite
def crontab_items(draw: st.DrawFn, field: int) -> str:
    low, high = _RANGES[field]
    kind = draw(st.sampled_from(["*", "*/S", "N", "N-M", "N-M/S", "N/S"]))
    step = str(draw(st.integers(1, high - low + 2)))
    first = draw(st.integers(low, high))
    last = draw(st.integers(first, high))
    if kind == "*":
        return "*"
    if kind == "*/S":
        return f"*/{step}"
    if kind == "N":
        return _value(field, first, False, draw)
    if kind == "N/S":
        return f"{first}/{step}"
    span = f"{_value(field, first, False, draw)}-{_value(field, last, True, draw)}"
    return span if kind == "N-M" else f"{span}/{step}"


@st.composite
def crontabs(draw: st.DrawFn) -> str:
    fields = []
    for field in range(5):
        items = draw(st.lists(crontab_items(field), min_size=1, max_size=3))
        # The common shapes most of the time: a field of its own is rare in real schedules.
        fields.append(",".join(items) if draw(st.integers(0, 3)) else "*")
    return " ".join(fields)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    expression=crontabs(),
    now=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2030, 12, 31)),
)
def test_any_crontab_fires_when_a_brute_force_over_the_minutes_says(
    expression: str, now: datetime
) -> None:
    with freeze_time(now):
        expected = reference_fires(expression, utcnow(), FIRES_COMPARED)
        if not expected:  # refused: it would never run
            with pytest.raises(ValueError, match="would never run"):
                crontab_trigger(expression)
            return
        fires = scheduled_fires(expression, FIRES_COMPARED)
    assert fires == expected, expression


# ------------------------------------------------------------------ config check and serve


def cron_config(tmp_path: Path, cron: str) -> Path:
    path = tmp_path / "ledger.toml"
    path.write_text(
        '[[connectors]]\nname = "nightly"\ntype = "csv"\nsource_id = 1\n'
        f'schedule = {{ cron = "{cron}" }}\noptions = {{ path = "{SAMPLE_CSV}" }}\n',
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("cron", ["0 0 * * 7", "0 0 * * 0-7", "0 0 13 * 5", "0 0 * * 5-sun"])
def test_config_check_takes_what_crontab_takes(tmp_path: Path, cron: str) -> None:
    result = CliRunner().invoke(cli, ["config", "check", str(cron_config(tmp_path, cron))])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("cron", "problem"),
    [
        ("0 0 * * 8", "day of week: 8 is out of range 0-7 (0 and 7 are Sunday)"),
        ("0 0 31 2 *", "day of month '31' never falls in month '2': it would never run"),
        ("0 0 30,31 feb *", "never falls in month 'feb'"),
        ("0 0 * * 5-1", "day of week: '5-1' goes from high to low"),
        ("0 0 * * sat-mon", "day of week: 'sat-mon' goes from high to low"),
        ("0 0 * * fun", "day of week: 'fun' is not a value: use 0-7 or a name (sun, mon,"),
        ("*/0 * * * *", "minute: a step of 0"),
        ("0 0 * *", "give 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("0 0 1,,2 * *", "day of month '1,,2': '' is not N, N-M, */S, N-M/S or a list"),
    ],
)
def test_config_check_refuses_what_crontab_refuses_naming_the_field(
    tmp_path: Path, cron: str, problem: str
) -> None:
    result = CliRunner().invoke(cli, ["config", "check", str(cron_config(tmp_path, cron))])
    assert result.exit_code == 2, result.output
    assert (
        "connectors[0] ('nightly', source 1).schedule.cron: not a crontab expression serve can "
        "run: "
    ) in result.output
    assert problem in result.output
    assert "Traceback" not in result.output
    with pytest.raises(ConfigurationError):  # serve reads the file the same way
        load_config(cron_config(tmp_path, cron))


@pytest.fixture
def services() -> Iterator[list[LedgerService]]:
    made: list[LedgerService] = []
    yield made
    for service in made:
        service.ledger.close()
        service.scrape_ledger.close()
        service.shutdown_ledger.close()


@freeze_time(SATURDAY)
def test_serve_schedules_a_cron_connector_on_crontabs_days(
    db_url: str, services: list[LedgerService]
) -> None:
    crons = ["0 0 * * 0", "0 0 * * 7", "0 0 * * 1-5", "0 0 * * 6", "*/15 9-17 * * MON-FRI"]
    service = LedgerService(
        LedgerConfig.model_validate(
            {
                "database_url": db_url,
                "connectors": [
                    {
                        "name": f"c{index}",
                        "type": "csv",
                        "source_id": 1,
                        "options": {"path": str(SAMPLE_CSV)},
                        "schedule": {"cron": cron},
                    }
                    for index, cron in enumerate(crons)
                ],
            }
        )
    )
    services.append(service)
    service.add_jobs()
    summary = service.schedule_summary()
    assert 'connector:c0:1 cron "0 0 * * 0", first 2026-12-06 00:00:00' in summary
    assert 'connector:c1:1 cron "0 0 * * 7", first 2026-12-06 00:00:00' in summary
    assert 'connector:c2:1 cron "0 0 * * 1-5", first 2026-12-07 00:00:00' in summary
    assert 'connector:c3:1 cron "0 0 * * 6", first 2026-12-12 00:00:00' in summary
    assert 'connector:c4:1 cron "*/15 9-17 * * MON-FRI", first 2026-12-07 09:00:00' in summary
