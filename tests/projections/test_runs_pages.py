"""``find_runs`` answers a page of runs and whether another follows, with the next page's
cursor: live and as of a position alike, so that the CLI, the API and the web view only render
it (none of them reads one run more to find out)."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import event

from ledger import Ledger, RunFinished, RunProgressed, RunTimedOut, UnknownRunError
from ledger import store as store_module
from ledger.rules import state_as_of
from ledger.schema import MAX_POSITION
from projections import Projector
from projections.as_of import runs_as_of
from projections.errors import PoisonEventError
from projections.queries import RunFilter, find_run, find_runs, page_as_of
from projections.schema import RUN_STATUSES, ingestion_runs
from tests.projection_support import append_raw
from tests.support import runs_read_without_replay

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


def interleaved_history(ledger: Ledger, runs: int, seed: int) -> None:
    """``runs`` runs of three connectors and four sources, started, reported and ended in a
    shuffled order (their events interleave), about a fifth left open and a tenth timed out."""
    chooser = random.Random(seed)
    open_runs: list[int] = []
    started = 0
    with freeze_time(T0, tick=True):
        while started < runs or open_runs:
            if started < runs and (not open_runs or chooser.random() < 0.4):
                connector = f"SOURCE_{chooser.randint(1, 3)}"
                open_runs.append(ledger.start_run(chooser.randint(1, 4), connector))
                started += 1
                continue
            run_id = chooser.choice(open_runs)
            roll = chooser.random()
            if roll < 0.5:
                ledger.append([RunProgressed(run_id=run_id, records_fetched=chooser.randint(1, 9))])
                continue
            open_runs.remove(run_id)
            if roll < 0.6:
                continue  # left open
            if roll < 0.65:
                ledger.append([RunTimedOut(run_id=run_id, reason="stale", detected_by="sweeper")])
            else:
                status = chooser.choice(["success", "partial", "failed"])
                ledger.append([RunFinished(run_id=run_id, status=status)])


@pytest.mark.parametrize("runs_a_read", [7, store_module.RUNS_A_READ])
def test_a_page_as_of_a_position_is_the_full_replays_page(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, runs_a_read: int
) -> None:
    """A page as of a position folds only its own runs' events up to it
    (``page_as_of``), newest runs first, a few at a time: for every filter, limit, cursor and
    position it equals the same page of the whole history replayed (``runs_as_of``)."""
    monkeypatch.setattr(store_module, "RUNS_A_READ", runs_a_read)
    interleaved_history(ledger, runs=300, seed=14)
    head = ledger.head().last_position
    filters = [RunFilter(limit=limit) for limit in (1, 7, 50, 301, MAX_POSITION)]
    filters += [RunFilter(status=status, limit=20) for status in RUN_STATUSES]
    filters += [RunFilter(connector="SOURCE_2", limit=30), RunFilter(source_id=3, limit=5)]
    filters += [RunFilter(connector="source_2"), RunFilter(connector="SOURCE_2 ")]
    filters += [RunFilter(status="running", connector="SOURCE_1", source_id=2, limit=3)]
    filters += [RunFilter(limit=40, before=before) for before in (1, 2, 150, 299, 10_000)]
    filters += [RunFilter(status="success", limit=10, before=200)]
    for position in sorted({0, 1, 2, head // 7, head // 3, head // 2, head - 1, head}):
        replayed = list(runs_as_of(ledger, position).values())
        for run_filter in filters:
            assert page_as_of(ledger, position, run_filter) == run_filter.apply(replayed), (
                position,
                run_filter,
            )


def test_a_page_as_of_a_position_reads_about_its_own_runs(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page's runs' events, not the history before the position: the replay of every
    event up to it took seconds a page on a million events."""
    interleaved_history(ledger, runs=400, seed=3)
    head = ledger.head().last_position
    read = runs_read_without_replay(ledger, monkeypatch)
    view = find_runs(ledger, RunFilter(limit=50), None, head - 3)
    assert len(view.rows) == 50
    assert view.more
    assert len(read) == 64  # the first few runs read: the page and one more


def test_of_two_events_that_cannot_be_applied_a_page_fails_on_the_earliest(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runs a page folds are read some at a time: a newer writer's event in an old run
    (read last) and a later one in a new run (read first) fail the page on the earlier, as
    the whole replay and the projector stop there."""
    monkeypatch.setattr(store_module, "RUNS_A_READ", 5)
    interleaved_history(ledger, runs=40, seed=8)
    oldest, newest = 1, max(run.run_id for run in ledger.runs())
    first = append_raw(ledger, oldest, "RunPaused", "{}")
    append_raw(ledger, newest, "RunPaused", "{}")
    head = ledger.head().last_position
    with pytest.raises(PoisonEventError, match=f"position {first}"):
        runs_as_of(ledger, head)
    with pytest.raises(PoisonEventError, match=f"position {first}"):
        page_as_of(ledger, head, RunFilter(limit=MAX_POSITION))


def test_an_event_that_cannot_be_applied_fails_its_runs_pages_until_it_is_skipped(
    ledger: Ledger,
) -> None:
    """An event the fold cannot apply (a type a newer run-ledger wrote) fails every page as of
    a later moment that holds its run, as the whole replay does; a page of other runs stands.
    Once the operator skips it, every page equals the whole replay's again."""
    interleaved_history(ledger, runs=120, seed=5)
    (victim, *_) = ledger.runs(connector_name="SOURCE_2", limit=1)
    position = append_raw(ledger, victim.run_id, "RunPaused", "{}")
    everything = RunFilter(limit=MAX_POSITION)
    with pytest.raises(PoisonEventError, match=f"position {position}"):
        page_as_of(ledger, position, everything)
    with pytest.raises(PoisonEventError, match=f"position {position}"):
        runs_as_of(ledger, position)
    others = RunFilter(connector="SOURCE_1", limit=MAX_POSITION)
    before = list(runs_as_of(ledger, position - 1).values())  # the same rows but the victim's
    assert page_as_of(ledger, position, others) == others.apply(before) != []
    projector = Projector(ledger)
    with pytest.raises(PoisonEventError):
        projector.run_once()  # stops on it
    projector.skip(position, "a newer writer's event", "ops:alice")
    replayed = list(runs_as_of(ledger, position).values())
    for run_filter in (everything, RunFilter(status="running", limit=10), others):
        assert page_as_of(ledger, position, run_filter) == run_filter.apply(replayed)


def test_a_run_as_of_a_position_reads_its_events_up_to_it(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One run as of a position (``runs show --as-of``, ``GET /v1/runs/{id}?at_position=``, the
    web's run page as of a moment) is the whole replay's row and the write-side state then,
    read from the run's events up to the position: its 40 heartbeats after it are not read
    (each was read and decoded to be dropped, a long run's tens of thousands on every such
    read); a run started after the position is not started yet, one never started unknown."""
    with freeze_time(T0):
        run_id = ledger.start_run(7, "SOURCE_1")
        ledger.append([RunProgressed(run_id=run_id, records_fetched=2)])
        ledger.append([RunTimedOut(run_id=run_id, reason="x", detected_by="sweeper")])
        for _ in range(40):
            ledger.append([RunProgressed(run_id=run_id)])
        ledger.append([RunFinished(run_id=run_id, status="success")])
        later = ledger.start_run(7, "SOURCE_1")
    head = ledger.head().last_position
    whole = {position: runs_as_of(ledger, position) for position in range(head + 1)}
    states = {position: state_as_of(ledger.read_run(run_id), position) for position in whole}
    read: list[int] = []
    read_runs, read_run = ledger.read_runs, ledger.read_run

    def counted_runs(run_ids: Any, up_to: int | None = None) -> Any:
        found = read_runs(run_ids, up_to)
        read.extend(e.position for events in found.values() for e in events)
        return found

    def counted_run(run: int, after: int = 0, limit: int | None = None) -> Any:
        found = read_run(run, after, limit)
        read.extend(e.position for e in found)
        return found

    monkeypatch.setattr(ledger, "read_runs", counted_runs)
    monkeypatch.setattr(ledger, "read_run", counted_run)
    for position in range(head + 1):
        read.clear()
        view = find_run(ledger, run_id, at_position=position)
        assert view.row == whole[position].get(run_id), position
        assert view.state == states[position], position
        assert all(at <= max(position, 1) for at in read), (position, read)
        assert find_run(ledger, later, at_position=position).not_started == (position < head)
    with pytest.raises(UnknownRunError):
        find_run(ledger, later + 1, at_position=head)
