"""Stuck runs of a past moment a page at a time (``stuck_page_as_of``), on SQLite and on
MariaDB: the pages together are what ``stuck_runs_as_of`` finds at that moment (each
connector's thresholds applied), whatever is appended between two pages, and the count is
every one of them on any page that asks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from freezegun import freeze_time

from ledger import Ledger, RunFinished, ValidationError, stuck_runs_as_of
from ledger.stuck import StuckCursor, StuckPage, stuck_page, stuck_page_as_of
from tests.ledger.test_stuck_pages import HOUR, NOW, OVERRIDES, interleaved_runs


def all_pages(ledger: Ledger, position: int, limit: int, **options: object) -> list[StuckPage]:
    pages = [stuck_page_as_of(ledger, position, limit, **options)]  # type: ignore[arg-type]
    while pages[-1].next is not None:
        following = stuck_page_as_of(ledger, position, limit, pages[-1].next, **options)  # type: ignore[arg-type]
        pages.append(following)
    return pages


def ids(pages: list[StuckPage]) -> list[int]:
    return [run.run_id for page in pages for run in page.runs]


@pytest.mark.parametrize("limit", [1, 2, 7, 30, 1000])
def test_pages_of_a_moment_together_are_its_stuck_runs(ledger: Ledger, limit: int) -> None:
    interleaved_runs(ledger)
    position = ledger.head().last_position
    with freeze_time(NOW):
        for run_id in range(1, position + 1, 2):  # half of them end later
            ledger.append([RunFinished(run_id=run_id, status="success")])
    options = {"at": NOW, "overrides": OVERRIDES}
    whole = stuck_runs_as_of(ledger, position, **options)  # type: ignore[arg-type]
    assert whole  # stuck at the moment, ended since
    pages = all_pages(ledger, position, limit, **options)
    assert ids(pages) == [run.run_id for run in whole]
    assert all(len(page.runs) == limit for page in pages[:-1])
    counted = all_pages(ledger, position, limit, count=True, **options)
    assert [page.total for page in counted] == [len(whole)] * len(counted)


def test_a_run_appended_between_pages_is_not_of_that_moment(ledger: Ledger) -> None:
    runs = [
        ledger.start_run(1, "SOURCE_1", occurred_at=NOW - 3 * HOUR + timedelta(seconds=i))
        for i in range(3)
    ]
    position = ledger.head().last_position
    first = stuck_page_as_of(ledger, position, 2, at=NOW)
    ledger.start_run(1, "SOURCE_1", occurred_at=NOW - 4 * HOUR)  # would come first now
    ledger.append([RunFinished(run_id=runs[2], status="success")])
    rest = stuck_page_as_of(ledger, position, 2, first.next, at=NOW)
    assert [run.run_id for run in first.runs + rest.runs] == runs
    assert rest.next is None


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_out_of_bounds_is_refused(ledger: Ledger, limit: int) -> None:
    with pytest.raises(ValidationError, match="limit"):
        stuck_page_as_of(ledger, 1, limit)


def test_a_cursor_that_is_not_one_is_refused(ledger: Ledger) -> None:
    with pytest.raises(ValidationError, match="after"):
        stuck_page_as_of(ledger, 1, 5, "1-1")  # type: ignore[arg-type]
    assert stuck_page_as_of(ledger, 0, 5, StuckCursor(NOW, 1)).runs == []


def test_a_cursor_of_a_moment_carries_its_position_through_its_text() -> None:
    cursor = StuckCursor(NOW, 42, 9223372036854775807)
    assert cursor.encode() == "1772452800000000-42~9223372036854775807"
    assert StuckCursor.decode(cursor.encode()) == cursor
    assert len(cursor.encode()) <= 50  # the API's bound on a cursor
    assert StuckCursor.decode("0-2~0").position == 0


@pytest.mark.parametrize(
    "text",
    ["1-2~", "1-2~x", "1-2~-1", "1-2~1~2", "1~2", "1-2~9223372036854775808", "1-2~" + "9" * 20],
)
def test_a_cursor_with_a_position_no_page_wrote_is_refused(text: str) -> None:
    with pytest.raises(ValidationError, match=r"^cursor: "):
        StuckCursor.decode(text)


def test_the_next_page_stands_at_the_cursors_position_whatever_is_appended(
    ledger: Ledger,
) -> None:
    """The cursor's position wins over the one asked for: a time names the last position
    recorded by it, which an append in flight as the first page was read (recorded by then,
    committed after) moves; the cursor keeps the first page's."""
    runs = [
        ledger.start_run(1, "SOURCE_1", occurred_at=NOW - 3 * HOUR + timedelta(seconds=i))
        for i in range(3)
    ]
    position = ledger.head().last_position
    first = stuck_page_as_of(ledger, position, 2, at=NOW, count=True)
    assert first.next is not None
    assert first.next.position == position
    late = ledger.start_run(1, "SOURCE_1", occurred_at=NOW - 2 * HOUR)  # after the cursor's place
    rest = stuck_page_as_of(ledger, position + 1, 2, first.next, at=NOW)
    assert [run.run_id for run in first.runs + rest.runs] == runs
    assert first.total == 3
    assert late not in [run.run_id for run in rest.runs]


def test_a_live_page_refuses_a_cursor_of_a_moment(ledger: Ledger) -> None:
    with pytest.raises(ValidationError, match=r"^cursor: .*as of position 7"):
        stuck_page(ledger, 5, StuckCursor(NOW, 1, 7))


def test_a_cursor_of_a_moment_carries_the_time_it_is_judged_at(ledger: Ledger) -> None:
    """The next page is judged when the first was, whatever ``at`` it is given (the API's, for
    a time ahead of a clock stepped back, is its own now): run 3, stuck only by the later
    time, is on no page, as the first page's count said."""
    runs = [
        ledger.start_run(1, "SOURCE_1", occurred_at=NOW - timedelta(minutes=minutes))
        for minutes in (120, 100, 55)
    ]
    position = ledger.head().last_position
    first = stuck_page_as_of(ledger, position, 1, at=NOW, count=True)
    assert first.next is not None
    assert first.next.judged == NOW
    assert StuckCursor.decode(first.next.encode()) == first.next
    assert len(first.next.encode()) <= 70  # the API's bound on a cursor
    rest = stuck_page_as_of(ledger, position, 5, first.next, at=NOW + timedelta(minutes=15))
    assert [run.run_id for run in first.runs + rest.runs] == runs[:2]
    assert first.total == 2
