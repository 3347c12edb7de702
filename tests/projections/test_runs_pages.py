"""``find_runs`` answers a page of runs and whether another follows, with the next page's
cursor: live and as of a position alike, so that the CLI, the API and the web view only render
it (none of them reads one run more to find out)."""

from __future__ import annotations

from datetime import UTC, datetime

from freezegun import freeze_time

from ledger import Ledger, RunFinished
from ledger.schema import MAX_POSITION
from projections import Projector
from projections.queries import RunFilter, find_runs

T0 = datetime(2026, 1, 28, 1, 12, 44, tzinfo=UTC)


def five_runs(ledger: Ledger) -> list[int]:
    """Five runs of SOURCE_1, the second and fourth finished, projected; ids oldest first."""
    with freeze_time(T0):
        run_ids = [ledger.start_run(7, "SOURCE_1") for _ in range(5)]
        for run_id in run_ids[1::2]:
            ledger.append([RunFinished(run_id=run_id, status="success")])
    Projector(ledger).run_once()
    return run_ids


def pages(ledger: Ledger, run_filter: RunFilter, at_position: int | None) -> list[list[int]]:
    """Every page's run ids, following ``next_before`` until the last page."""
    found = []
    while True:
        view = find_runs(ledger, run_filter, None, at_position)
        assert len(view.rows) <= run_filter.limit
        found.append([row["id"] for row in view.rows])
        assert view.more == (view.next_before is not None)
        if view.next_before is None:
            return found
        assert view.next_before == view.rows[-1]["id"]
        run_filter = RunFilter(run_filter.status, limit=run_filter.limit, before=view.next_before)


def test_a_page_says_whether_more_runs_follow_and_where(ledger: Ledger) -> None:
    first, second, third, fourth, fifth = five_runs(ledger)
    head = ledger.head().last_position
    for at_position in (None, head):  # the live table and a replay give the same pages
        assert pages(ledger, RunFilter(limit=2), at_position) == [
            [fifth, fourth],
            [third, second],
            [first],
        ]
        # A page that ends exactly on the last run says no more follow.
        assert pages(ledger, RunFilter(limit=5), at_position) == [
            [fifth, fourth, third, second, first]
        ]
        assert pages(ledger, RunFilter(status="success", limit=1), at_position) == [
            [fourth],
            [second],
        ]
        empty = find_runs(ledger, RunFilter(status="failed"), None, at_position)
        assert (empty.rows, empty.more, empty.next_before) == ([], False, None)


def test_the_highest_limit_reads_every_run_without_overflowing(ledger: Ledger) -> None:
    """A limit of MAX_POSITION (the CLI's highest --limit): the one more row the page reads
    stays within a 64-bit LIMIT."""
    run_ids = five_runs(ledger)
    view = find_runs(ledger, RunFilter(limit=MAX_POSITION))
    assert ([row["id"] for row in view.rows], view.more) == (run_ids[::-1], False)
