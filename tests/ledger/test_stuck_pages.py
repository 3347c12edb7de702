"""Stuck runs a page at a time (``stuck_page``), on SQLite and on MariaDB: the pages together
are what ``stuck_runs`` finds, each connector's thresholds applied in SQL, and a change
between two pages neither repeats a run nor breaks the paging."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from ledger import Ledger, RunFinished, RunProgressed, Thresholds, ValidationError, stuck_runs
from ledger.stuck import StuckCursor, StuckPage, stuck_page

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def start_at(ledger: Ledger, when: datetime, connector: str, source: int = 1) -> int:
    with freeze_time(when):
        return ledger.start_run(source, connector, occurred_at=when)


def all_pages(
    ledger: Ledger, limit: int, after: StuckCursor | None = None, **options: object
) -> list[StuckPage]:
    pages = [stuck_page(ledger, limit, after, **options)]  # type: ignore[arg-type]
    while pages[-1].next is not None:
        pages.append(stuck_page(ledger, limit, pages[-1].next, **options))  # type: ignore[arg-type]
    return pages


def ids(page: StuckPage) -> list[int]:
    return [run.run_id for run in page.runs]


# A connector allowed 5 hours of silence, one allowed 2 for source 7 only, the rest 60m.
OVERRIDES: dict[str | tuple[str, int], Thresholds] = {
    "patient": Thresholds(stale_after=5 * HOUR),
    ("quick", 7): Thresholds(stale_after=2 * HOUR),
}


def interleaved_runs(ledger: Ledger) -> dict[str, list[int]]:
    """Runs silent 3h to 1h30 in 10 minute steps, by turns of a connector left to the defaults
    (stuck), one whose own 5h are not passed (not stuck: in the middle of every page) and a
    pair whose own 2h are passed by half of them."""
    runs: dict[str, list[int]] = {"SOURCE_1": [], "patient": [], "quick": []}
    for step in range(10):
        when = NOW - 3 * HOUR + step * 10 * MINUTE
        for name, source in (("SOURCE_1", 1), ("patient", 1), ("quick", 7)):
            runs[name].append(start_at(ledger, when + step * timedelta(seconds=1), name, source))
    return runs


def test_pages_together_are_the_stuck_runs_with_overrides_filtering_rows_in_the_middle(
    ledger: Ledger,
) -> None:
    runs = interleaved_runs(ledger)
    everything = stuck_runs(ledger, now=NOW, overrides=OVERRIDES)
    assert not {run.run_id for run in everything} & set(runs["patient"])
    assert len(everything) == 10 + 6  # every SOURCE_1 run, quick's silent for 2h or more
    for limit in (1, 3, 4, 16, 17, 2**63):
        pages = all_pages(ledger, limit, now=NOW, overrides=OVERRIDES)
        assert [run for page in pages for run in page.runs] == everything, limit
        # Full pages though "patient" runs lie between: its threshold was applied in SQL,
        # before the page's LIMIT (in Python after it, a page read 3 rows and kept 2).
        assert all(len(page.runs) == limit for page in pages[:-1]), limit
        assert pages[-1].runs, limit
        assert pages[-1].next is None, limit


def test_the_count_is_every_stuck_run_whatever_the_page(ledger: Ledger) -> None:
    interleaved_runs(ledger)
    page = stuck_page(ledger, 2, now=NOW, overrides=OVERRIDES, count=True)
    assert page.total == 16
    assert stuck_page(ledger, 2, now=NOW, overrides=OVERRIDES).total is None


def test_max_runtime_and_a_connector_name_differing_by_case_are_held_to_their_own(
    ledger: Ledger,
) -> None:
    """A run listed only for running too long (active a minute ago), and "PATIENT" which is
    not "patient" (MySQL's collation would take one for the other)."""
    long_running = start_at(ledger, NOW - 8 * HOUR, "SOURCE_1")
    with freeze_time(NOW - MINUTE):
        ledger.append([RunProgressed(run_id=long_running, occurred_at=NOW - MINUTE)])
    shouting = start_at(ledger, NOW - 2 * HOUR, "PATIENT")
    quiet = start_at(ledger, NOW - 2 * HOUR, "patient")
    options = {"now": NOW, "overrides": OVERRIDES, "max_runtime": 6 * HOUR}
    everything = stuck_runs(ledger, **options)  # type: ignore[arg-type]
    assert [run.run_id for run in everything] == [shouting, long_running]
    assert quiet not in [run.run_id for run in everything]
    pages = all_pages(ledger, 1, **options)
    assert [run for page in pages for run in page.runs] == everything
    assert [run.rule for run in everything] == ["stale", "max_runtime"]


def test_runs_that_end_or_become_stuck_between_pages_are_never_listed_twice(
    ledger: Ledger,
) -> None:
    first_runs = [start_at(ledger, NOW - 3 * HOUR + i * MINUTE, "SOURCE_1") for i in range(6)]
    first = stuck_page(ledger, 2, now=NOW)
    assert ids(first) == first_runs[:2]
    later = NOW + 30 * MINUTE
    with freeze_time(later):
        # A listed run and the next one in line end; another is active again; a new run
        # becomes stuck as time passes (it started after the cursor's place).
        ledger.append([RunFinished(run_id=first_runs[0], status="success", occurred_at=later)])
        ledger.append([RunFinished(run_id=first_runs[2], status="success", occurred_at=later)])
        ledger.append([RunProgressed(run_id=first_runs[3], occurred_at=later)])
    fresh = start_at(ledger, NOW - 40 * MINUTE, "SOURCE_1")
    listed = ids(first)
    cursor = first.next
    while cursor is not None:
        page = stuck_page(ledger, 2, cursor, now=later)
        listed += ids(page)
        cursor = page.next
    assert listed == [*first_runs[:2], first_runs[4], first_runs[5], fresh]
    assert len(set(listed)) == len(listed)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-",
        "1-",
        "-1",
        "abc-1",
        "1.5-2",
        "١٢-3",  # Arabic-Indic digits: str.isdigit, not ASCII
        "1-2-3",
        " 1-2",
        "1" * 19 + "-2",
        "1-" + "9" * 11,
        "999999999999999999-1",  # past year 9999
    ],
)
def test_a_cursor_not_written_by_a_page_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValidationError, match=r"^cursor: "):
        StuckCursor.decode(text)


def test_a_cursor_goes_through_its_text_unchanged() -> None:
    cursor = StuckCursor(datetime(2026, 3, 2, 9, 1, 2, 345678, tzinfo=UTC), 42)
    assert StuckCursor.decode(cursor.encode()) == cursor
    assert cursor.encode() == "1772442062345678-42"


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_out_of_bounds_is_refused(ledger: Ledger, limit: int) -> None:
    with pytest.raises(ValidationError, match=r"^limit: "):
        stuck_page(ledger, limit, now=NOW)


def test_no_stuck_run_is_one_empty_last_page(ledger: Ledger) -> None:
    start_at(ledger, NOW - MINUTE, "SOURCE_1")
    assert stuck_page(ledger, 5, now=NOW, count=True) == StuckPage([], None, 0)


def test_runs_silent_since_the_same_instant_are_split_across_pages_by_run_id(
    ledger: Ledger,
) -> None:
    """The order's tie-break is the run id: a page may end between two runs of one instant."""
    same = [start_at(ledger, NOW - 2 * HOUR, "SOURCE_1") for _ in range(5)]
    pages = all_pages(ledger, 2, now=NOW)
    assert [ids(page) for page in pages] == [same[0:2], same[2:4], same[4:]]


def test_a_run_stuck_by_max_runtime_active_between_pages_comes_again_at_its_new_place(
    ledger: Ledger,
) -> None:
    """The documented limit of a cursor on the last activity (README, GET /v1/stuck): a run
    still stuck after it reported in has moved past the cursor."""
    moving = start_at(ledger, NOW - 8 * HOUR, "SOURCE_1")
    staying = start_at(ledger, NOW - 7 * HOUR, "SOURCE_1")
    first = stuck_page(ledger, 1, now=NOW, max_runtime=6 * HOUR)
    assert ids(first) == [moving]
    with freeze_time(NOW + MINUTE):
        ledger.append([RunProgressed(run_id=moving, occurred_at=NOW + MINUTE)])
    rest = all_pages(ledger, 1, after=first.next, now=NOW + 2 * MINUTE, max_runtime=6 * HOUR)
    assert [ids(page) for page in rest] == [[staying], [moving]]
    assert rest[-1].runs[0].rule == "max_runtime"


def test_pages_agree_with_stuck_runs_over_mixed_pairs_names_and_runtimes(ledger: Ledger) -> None:
    """Runs of names differing by case, sources with and without a pair of their own, a name
    with and without its own thresholds, silences and ages drawn at random (seeded)."""
    draw = random.Random(22)
    for _ in range(40):
        name = draw.choice(["a", "A", "b", "c"])
        started = NOW - draw.randint(10, 600) * MINUTE
        run_id = start_at(ledger, started, name, draw.choice([1, 2]))
        if draw.random() < 0.5:
            active = started + draw.randint(1, int((NOW - started) / MINUTE)) * MINUTE
            with freeze_time(active):
                ledger.append([RunProgressed(run_id=run_id, occurred_at=active)])
    overrides: dict[str | tuple[str, int], Thresholds] = {
        "a": Thresholds(stale_after=3 * HOUR),
        ("a", 2): Thresholds(stale_after=30 * MINUTE, max_runtime=4 * HOUR),
        ("b", 1): Thresholds(stale_after=6 * HOUR),
        "C": Thresholds(stale_after=8 * HOUR),  # not "c": MySQL's collation would match it
    }
    options = {"now": NOW, "overrides": overrides, "max_runtime": 7 * HOUR}
    everything = stuck_runs(ledger, **options)  # type: ignore[arg-type]
    assert 5 < len(everything) < 35  # some of each
    for limit in range(1, 8):
        pages = all_pages(ledger, limit, **options)
        assert [run for page in pages for run in page.runs] == everything, limit
    assert stuck_page(ledger, 1, count=True, **options).total == len(everything)  # type: ignore[arg-type]
