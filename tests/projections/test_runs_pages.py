"""``find_runs`` answers a page of runs and whether another follows, with the next page's
cursor: live and as of a position alike, so that the CLI, the API and the web view only render
it (none of them reads one run more to find out)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from freezegun import freeze_time
from sqlalchemy import event

from ledger import Ledger, RunFinished
from ledger.schema import MAX_POSITION
from projections import Projector
from projections.queries import RunFilter, find_runs
from projections.schema import ingestion_runs

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


def test_a_later_page_of_a_status_reads_about_a_page_of_rows(ledger: Ledger, backend: str) -> None:
    """Keyset paging with a status filter, as the database runs it over 20,000 runs of four
    statuses: the page after ``before`` reads about one page of rows through the
    ``(status, id)`` index. MariaDB, asked for whole rows, read every run of that status
    below ``before`` and sorted them (3,385 rows for 51 here; over 1,000,000 runs the web
    view's "Older runs" took 0.3-2.5 s); the page's ids are now read first, then their rows."""
    rows = [
        {
            "id": run_id,
            "sourceId": run_id % 50,
            "connectorName": f"c-{run_id % 20}",
            "startedAt": T0,
            "status": ("running", "success", "partial", "failed")[run_id % 4],
            "createdAt": T0,
        }
        for run_id in range(1, 20_001)
    ]
    with ledger.engine.begin() as conn:
        conn.execute(ingestion_runs.insert(), rows)
    if backend == "mysql":
        with ledger.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE TABLE ingestion_runs").fetchall()
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "ingestion_runs" in statement and statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(ledger.engine, "before_cursor_execute", record)
    try:
        view = find_runs(ledger, RunFilter("failed", limit=50, before=10_000), None, None)
    finally:
        event.remove(ledger.engine, "before_cursor_execute", record)
    assert [row["id"] for row in view.rows] == list(range(9_999, 9_799, -4))[:50]
    assert view.next_before == 9_803
    (statement, parameters), *_ = statements
    with ledger.engine.connect() as conn:
        if backend == "sqlite":
            plan = [
                row[3]
                for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            ]
            assert not [step for step in plan if step.startswith("SCAN ingestion_runs")], plan
            # the page's ids through the status index (sorting those 51 is no matter)
            assert any(
                "INDEX idx_ingestion_runs_status (status=? AND rowid<?)" in step for step in plan
            ), plan
        else:
            (analyzed,) = conn.exec_driver_sql(f"ANALYZE FORMAT=JSON {statement}", parameters).one()
            read = sum(float(rows) for rows in re.findall(r'"r_rows": ([0-9.]+)', analyzed))
            assert read <= 200, analyzed  # the page's 51 ids, then their 51 rows
