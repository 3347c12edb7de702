"""The rebuild's fold of driver rows (:func:`projections.fold.fold_rows`, whose common
``RunProgressed`` route adds counters straight from the row) gives exactly what reading the
rows as events and folding them (:func:`projections.fold.fold_events`) gives: the same rows,
transitions, outcome and poison event, or the same error for a row that cannot be read. Over
pages of rows as the ledger writes them and rows just outside that (payloads that no longer
validate, counters past the legacy columns, other schema versions, unreadable rows), in memory
and as each database returns them."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import Ledger, RunFinished, RunProgressed, RunTimedOut
from ledger.dialects import stored_time_reader
from ledger.errors import LedgerError
from ledger.events import ACTOR_NAME_MAX, COUNTER_FIELDS, COUNTER_LIMIT, MAX_RUN_ID
from ledger.reads import events_from_driver, read_events_page, read_rows_page
from projections.fold import EMPTY_ROW, INT_MAX, BatchOutcome, Row, fold_events, fold_rows
from tests import support
from tests.projection_support import append_raw

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RUNS = (1, 2, 3)


def stored_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


counter_values = st.integers(0, 12) | st.sampled_from([INT_MAX, INT_MAX - 3, COUNTER_LIMIT - 1])
odd_counter = st.sampled_from([-1, COUNTER_LIMIT, "1", 1.0, True, None, [1], {"a": 1}])


@st.composite
def payloads(draw: st.DrawFn, event_type: str) -> dict[str, Any]:
    payload: dict[str, Any]
    if event_type == "RunStarted":
        payload = {
            "source_id": draw(st.integers(0, 5)),
            "connector_name": draw(st.sampled_from(["c", "conn", "x" * 300, ""])),
            "metadata": draw(st.none() | st.just({"k": 1}) | st.just([1])),
        }
    elif event_type == "RunTimedOut":
        payload = {
            "reason": "stale",
            "threshold_seconds": draw(st.none() | st.integers(-1, 100)),
            "last_event_at": draw(st.none() | st.just("2026-01-01T00:00:00.000000Z")),
            "detected_by": "sweeper",
        }
    else:
        payload = {name: draw(counter_values) for name in COUNTER_FIELDS}
        if draw(st.integers(0, 5)) == 0:
            payload[draw(st.sampled_from(COUNTER_FIELDS))] = draw(odd_counter)
        if event_type == "RunFinished":
            payload.update(
                status=draw(st.sampled_from(["success", "partial", "failed", "running"])),
                error_message=draw(st.none() | st.just("boom")),
                error_details=draw(st.none() | st.just({"reason": "mine", "x": 1})),
            )
    shape = draw(st.integers(0, 12))
    if shape == 0 and payload:
        payload.pop(draw(st.sampled_from(sorted(payload))))
    elif shape == 1:
        payload["extra"] = 1
    return payload


@st.composite
def driver_rows(draw: st.DrawFn, position: int) -> tuple[Any, ...]:
    """One ``ledger_events`` row as SQLite's driver returns it, as written or just outside."""
    event_type = draw(
        st.sampled_from(["RunProgressed"] * 12 + ["RunStarted", "RunFinished", "RunTimedOut"])
        | st.just("RunPaused")
    )
    payload_text = json.dumps(
        draw(payloads(event_type)), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    payload_text = draw(
        st.just(payload_text) | st.sampled_from(["not json", "[1]", "null", " {}", '{"a":'])
        if draw(st.integers(0, 15)) == 0
        else st.just(payload_text)
    )
    occurred = T0 + timedelta(minutes=position)
    odd = draw(st.integers(0, 30)) == 0  # one value of the envelope outside what is written
    row = [
        position,
        str(uuid.UUID(int=position)),
        draw(st.sampled_from(RUNS)),
        position,
        event_type,
        1,
        payload_text,
        stored_text(occurred),
        stored_text(occurred + timedelta(seconds=draw(st.sampled_from([0, 1])))),
        draw(st.none() | st.just("op")),
        "0" * 64,
        "1" * 64,
    ]
    if odd:
        index, value = draw(
            st.sampled_from(
                [
                    (0, str(position)),  # read as int(): the same event
                    (1, str(uuid.UUID(int=position)).upper()),
                    (2, 0),
                    (2, MAX_RUN_ID + 1),
                    (2, "1"),
                    (2, "one"),  # cannot be read
                    (3, "2"),
                    (5, 0),
                    (5, 2),
                    (5, "1"),
                    (7, "yesterday"),  # cannot be read
                    (7, "0001-01-01 00:00:00.000000"),
                    (8, "later"),
                    (9, "a" * (ACTOR_NAME_MAX + 1)),
                    (9, ""),
                ]
            )
        )
        row[index] = value
    return tuple(row)


@st.composite
def pages(draw: st.DrawFn) -> tuple[dict[int, Row], list[tuple[Any, ...]], set[int]]:
    """Rows already folded (some running, some with bookkeeping or counters near the legacy
    maximum, some closed), a page of driver rows, and the positions skipped."""
    rows: dict[int, Row] = {}
    for run_id in RUNS:
        state = draw(
            st.sampled_from(["none", "running", "near max", "overflow", "odd overflow", "failed"])
        )
        if state == "none":
            continue
        row = {**EMPTY_ROW, "id": run_id, "sourceId": 1, "connectorName": "c"}
        row.update(startedAt=T0, createdAt=T0, status="running")
        if state == "near max":
            row["recordsFetched"] = INT_MAX - 10
            row["recordsCreated"] = INT_MAX - 4
        elif state == "overflow":
            row["recordsFetched"] = INT_MAX
            row["errorDetails"] = {"counter_overflow": {"recordsFetched": INT_MAX + 5}}
        elif state == "odd overflow":  # no fold writes it: the common route must not add
            row["errorDetails"] = {"counter_overflow": {"recordsFetched": 7}}
        elif state == "failed":
            row.update(status="failed", completedAt=T0, duration=0, errorDetails={"reason": "r"})
        rows[run_id] = row
    count = draw(st.integers(1, 25))
    page = [draw(driver_rows(position)) for position in range(1, count + 1)]
    skipped = set(draw(st.lists(st.integers(1, count), max_size=3)))
    return rows, page, skipped


def outcome_of(outcome: BatchOutcome) -> tuple[Any, ...]:
    poison = outcome.poison
    return (
        outcome.processed,
        outcome.last_position,
        None if poison is None else (poison.position, poison.event_type, str(poison)),
        outcome.transitions,
    )


def fold_both_ways(
    rows: dict[int, Row], page: list[tuple[Any, ...]], skipped: set[int]
) -> tuple[Any, Any]:
    """(rows, outcome) of each route, or the error (type, message) each raised."""
    results = []
    for route in ("events", "rows"):
        folded = copy.deepcopy(rows)
        try:
            if route == "events":
                outcome = fold_events(folded, events_from_driver(page, stored_time_reader), skipped)
            else:
                outcome = fold_rows(folded, page, skipped, stored_time_reader)
        except LedgerError as exc:
            results.append((type(exc), str(exc)))
            continue
        results.append((folded, outcome_of(outcome)))
    return results[0], results[1]


@settings(max_examples=300, deadline=None)
@given(case=pages())
def test_rows_fold_as_events_do(
    case: tuple[dict[int, Row], list[tuple[Any, ...]], set[int]],
) -> None:
    by_events, by_rows = fold_both_ways(*case)
    assert by_rows == by_events


def test_the_common_route_is_taken_and_stops_where_the_long_way_must_decide() -> None:
    """The cases the common route hands on, each checked against the long way."""
    running = {**EMPTY_ROW, "id": 1, "sourceId": 1, "connectorName": "c", "status": "running"}
    running.update(startedAt=T0, createdAt=T0, recordsFetched=INT_MAX - 1)

    def progressed(position: int, payload: str) -> tuple[Any, ...]:
        at = stored_text(T0)
        event_id = str(uuid.UUID(int=position))
        return (position, event_id, 1, position, "RunProgressed", 1, payload, at, at, None, "", "")

    counters = dict.fromkeys(COUNTER_FIELDS, 0)
    fits = json.dumps({**counters, "records_fetched": 1}, sort_keys=True, separators=(",", ":"))
    overflows = fits.replace('"records_fetched":1', '"records_fetched":2')
    not_valid = fits.replace('"records_fetched":1', '"records_fetched":-1')
    for page in (
        [progressed(2, fits)],
        [progressed(2, overflows)],
        [progressed(2, not_valid), progressed(3, fits)],
        [progressed(2, not_valid), (4, "x", "one", *progressed(4, fits)[3:])],
    ):
        by_events, by_rows = fold_both_ways({1: running}, page, set())
        assert by_rows == by_events
    assert (
        fold_both_ways({1: running}, [progressed(2, fits)], set())[1][0][1]["recordsFetched"]
        == INT_MAX
    )


# ---------------------------------------------------------------------- as each database reads


def _append_history(ledger: Ledger, scripts: list[tuple[list[int], str]]) -> None:
    for index, (steps, ending) in enumerate(scripts):
        run_id = ledger.start_run(index, f"c{index}", occurred_at=T0)
        events: list[Any] = [
            RunProgressed(run_id=run_id, records_fetched=n, occurred_at=T0) for n in steps
        ]
        if ending in ("success", "failed"):
            events.append(RunFinished(run_id=run_id, status=ending, occurred_at=T0))
        elif ending == "timeout":
            events.append(
                RunTimedOut(run_id=run_id, reason="stale", detected_by="sweeper", occurred_at=T0)
            )
            events.append(RunProgressed(run_id=run_id, records_fetched=1, occurred_at=T0))
        if events:
            ledger.append(events)
        if ending == "poison":  # a payload that no longer validates, written by hand
            append_raw(ledger, run_id, "RunProgressed", '{"records_fetched":-1}')
            ledger.append([RunProgressed(run_id=run_id, records_fetched=1, occurred_at=T0)])


@pytest.mark.slow
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    scripts=st.lists(
        st.tuples(
            st.lists(st.integers(0, 9), max_size=4),
            st.sampled_from(["open", "success", "failed", "timeout", "poison"]),
        ),
        min_size=1,
        max_size=5,
    ),
    batch=st.integers(1, 7),
)
def test_pages_read_from_the_database_fold_as_events_do(
    scripts: list[tuple[list[int], str]],
    batch: int,
    backend: str,
    sqlite_template: Path,
    tmp_path: Path,
    db_url: str,
) -> None:
    """What each driver returns (MariaDB's timestamps cast to text, its integers) folds by
    both routes alike, page by page, poison events included."""
    ledger = support.fresh_store(
        backend, sqlite_template, tmp_path, db_url if backend == "mysql" else None
    )
    try:
        _fold_pages(ledger, scripts, batch)
    finally:
        ledger.close()


def _fold_pages(ledger: Ledger, scripts: list[tuple[list[int], str]], batch: int) -> None:
    _append_history(ledger, scripts)
    rows_by_events: dict[int, Row] = {}
    rows_by_rows: dict[int, Row] = {}
    after = 0
    with ledger.engine.connect() as conn:
        while True:
            page = read_rows_page(conn, after, batch)
            events = read_events_page(conn, after, batch)
            assert events_from_driver(page, stored_time_reader) == events
            if not page:
                break
            by_events = fold_events(rows_by_events, events, set())
            by_rows = fold_rows(rows_by_rows, page, set(), stored_time_reader)
            assert rows_by_rows == rows_by_events
            assert outcome_of(by_rows) == outcome_of(by_events)
            if by_events.poison is not None:  # skipped, as `ledger project --skip-position`
                after = by_events.poison.position
                continue
            after = events[-1].position
    assert len(rows_by_rows) == len(scripts)
