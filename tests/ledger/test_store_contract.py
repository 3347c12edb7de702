"""The event store contract (DESIGN.md I1–I6), run on SQLite and on MariaDB."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from sqlalchemy import func, make_url, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from forensics.chain import verify_chain
from ledger import (
    AheadOfClockError,
    ConcurrencyError,
    Ledger,
    RecordedEvent,
    RunFinished,
    RunProgressed,
    RunStarted,
    RunTimedOut,
    StreamError,
    ValidationError,
    sweep,
)
from ledger.clock import isoformat_utc, use_clock
from ledger.hashing import chain_hash
from ledger.rules import RunState
from ledger.schema import GENESIS_HASH, ledger_events, ledger_runs
from service.cli import cli
from tests.support import drop_triggers

T0 = datetime(2026, 1, 28, 1, 12, 44, tzinfo=UTC)


def count_events(ledger: Ledger) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ledger_events)).scalar_one())


def started(**fields: object) -> RunStarted:
    return RunStarted(**{"source_id": 1, "connector_name": "SOURCE_1", **fields})  # type: ignore[arg-type]


def started_line() -> dict[str, object]:
    """A RunStarted line as `ledger append` reads it (run_ref ``a``), with a fresh event_id."""
    return {
        "event_id": str(uuid.uuid4()),
        "type": "RunStarted",
        "run_ref": "a",
        "source_id": 1,
        "connector_name": "S",
    }


# ---------------------------------------------------------------- append and read


def test_append_assigns_positions_versions_and_reads_back(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1", metadata={"host": "etl-01", "pid": 42})
    result = ledger.append(
        [
            RunProgressed(run_id=run_id, records_fetched=15, records_created=10),
            RunFinished(run_id=run_id, status="success", records_updated=3),
        ]
    )
    assert (result.appended, result.duplicates) == (2, 0)
    assert (result.first_position, result.last_position) == (2, 3)
    events = list(ledger.read_all())
    assert [e.position for e in events] == [1, 2, 3]
    assert [e.version for e in events] == [1, 2, 3]
    assert [e.type for e in events] == ["RunStarted", "RunProgressed", "RunFinished"]
    assert events[0].event == RunStarted(  # the stored fact decodes to the model that was sent
        event_id=uuid.UUID(events[0].event_id),
        run_id=run_id,
        source_id=1,
        connector_name="SOURCE_1",
        metadata={"host": "etl-01", "pid": 42},
        occurred_at=events[0].occurred_at,
    )
    assert ledger.read_run(run_id) == events
    head = ledger.head()
    assert (head.last_position, head.last_hash, head.last_run_id) == (3, events[-1].hash, run_id)


def test_read_all_pages_after_and_limit(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id, records_fetched=i) for i in range(1, 10)])
    assert [e.position for e in ledger.read_all(after=3, limit=4, batch_size=3)] == [4, 5, 6, 7]
    assert [e.position for e in ledger.read_all(after=8, batch_size=1)] == [9, 10]
    assert list(ledger.read_all(after=10)) == []


def test_recorded_at_names_when_a_position_was_recorded(ledger: Ledger) -> None:
    ledger.start_run(1, "SOURCE_1")
    (stored,) = ledger.read_all()
    assert ledger.recorded_at(stored.position) == stored.recorded_at
    assert ledger.recorded_at(0) is None
    assert ledger.recorded_at(stored.position + 1) is None


def test_run_ids_are_allocated_around_explicit_ones(ledger: Ledger) -> None:
    assert ledger.start_run(1, "SOURCE_1") == 1
    # An explicit id (an import) does not move the allocator, even the highest one...
    assert ledger.start_run(2, "SOURCE_2", run_id=2**31 - 1) == 2**31 - 1
    assert ledger.start_run(1, "SOURCE_1") == 2
    assert ledger.start_run(1, "SOURCE_1", run_id=3) == 3
    assert ledger.start_run(1, "SOURCE_1", run_id=4) == 4
    # ...but the allocator never hands out an id that is taken.
    assert ledger.start_run(1, "SOURCE_1") == 5
    result = ledger.append(
        [
            RunStarted(source_id=1, connector_name="c", run_id=7),
            RunStarted(source_id=1, connector_name="c"),
            RunStarted(source_id=1, connector_name="c"),
        ]
    )
    assert [e.run_id for e in result.events] == [7, 6, 8]
    assert result.allocated_run_ids == [6, 8]


def test_run_refs_resolve_within_one_batch(ledger: Ledger) -> None:
    result = ledger.append(
        [
            RunStarted(run_ref="a", source_id=1, connector_name="SOURCE_1"),
            RunStarted(run_ref="b", source_id=2, connector_name="SOURCE_2"),
            RunProgressed(run_ref="b", records_fetched=2),
            RunFinished(run_ref="a", status="success"),
        ]
    )
    assert result.run_refs == {"a": 1, "b": 2}
    assert result.allocated_run_ids == [1, 2]
    assert [(e.run_id, e.version) for e in result.events] == [(1, 1), (2, 1), (2, 2), (1, 2)]


def test_unresolved_run_ref_is_refused(ledger: Ledger) -> None:
    with pytest.raises(ValidationError, match="run_ref: 'zzz' names no RunStarted"):
        ledger.append([RunProgressed(run_ref="zzz")])
    assert count_events(ledger) == 0


def test_timestamps_round_trip_as_utc_with_microseconds(ledger: Ledger) -> None:
    moment = datetime(2026, 1, 28, 1, 12, 44, 123456, tzinfo=UTC)
    with freeze_time("2026-01-28 02:00:00.654321"):
        run_id = ledger.start_run(1, "SOURCE_1", occurred_at=moment)
    (event,) = ledger.read_run(run_id)
    assert event.occurred_at == moment
    assert event.recorded_at == datetime(2026, 1, 28, 2, 0, 0, 654321, tzinfo=UTC)
    state = ledger.run(run_id)
    assert state is not None
    assert (state.started_at, state.last_event_at) == (moment, moment)


def test_a_nanosecond_time_is_kept_to_the_microsecond_and_its_retry_is_a_duplicate(
    ledger: Ledger,
) -> None:
    from ledger import parse_event

    # Go's RFC3339Nano, Java's Instant
    line = {**started_line(), "occurred_at": "2026-01-28T01:12:44.123456789Z"}
    with freeze_time("2026-01-28 02:00:00"):
        first = ledger.append([parse_event(line)])
        retry = ledger.append([parse_event(line)])
    (event,) = ledger.read_run(first.run_refs["a"])
    assert event.occurred_at == datetime(2026, 1, 28, 1, 12, 44, 123456, tzinfo=UTC)  # cut
    assert (retry.appended, retry.duplicates) == (0, 1)


def test_mysql_sessions_run_in_utc(ledger: Ledger, backend: str) -> None:
    if backend != "mysql":
        pytest.skip("MySQL session settings")
    with ledger.engine.connect() as conn:
        zone, charset = conn.execute(
            text("SELECT @@session.time_zone, @@session.character_set_client")
        ).one()
    assert (zone, charset) == ("+00:00", "utf8mb4")


def test_sqlite_runs_in_wal_with_a_busy_timeout(ledger: Ledger, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite pragmas")
    with ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_run_registry_tracks_state_and_last_activity(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1", occurred_at=T0)
    ledger.append([RunProgressed(run_id=run_id, occurred_at=T0 + timedelta(minutes=5))])
    # A spooled event delivered late, older than the last one: last activity does not go back.
    ledger.append([RunProgressed(run_id=run_id, occurred_at=T0 + timedelta(minutes=2))])
    state = ledger.run(run_id)
    assert state is not None
    assert (state.version, state.state, state.last_event_at) == (
        3,
        "open",
        T0 + timedelta(minutes=5),
    )
    ledger.append([RunTimedOut(run_id=run_id, reason="stale", detected_by="sweeper")])
    assert ledger.run(run_id).state == "timed_out"  # type: ignore[union-attr]
    ledger.append([RunFinished(run_id=run_id, status="success")])
    assert ledger.run(run_id).state == "finished"  # type: ignore[union-attr]
    assert ledger.run(999) is None


# ---------------------------------------------------------------- I1 immutable


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_events SET run_id = run_id + 1",
        "UPDATE ledger_events SET payload = '{}' WHERE position = 1",
        "DELETE FROM ledger_events WHERE position = 1",
        "DELETE FROM ledger_events",
    ],
)
def test_i1_updates_and_deletes_are_refused_by_the_database(ledger: Ledger, statement: str) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    before = ledger.read_run(run_id)
    with pytest.raises(DBAPIError, match="append-only"), ledger.engine.begin() as conn:
        conn.execute(text(statement))
    assert ledger.read_run(run_id) == before


# ---------------------------------------------------------------- I3 idempotent


def test_i3_retry_after_a_lost_reply_appends_nothing(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    batch = [
        RunProgressed(run_id=run_id, records_fetched=5),
        RunProgressed(run_id=run_id, records_fetched=7),
    ]
    first = ledger.append(batch)  # the reply is "lost": the connector never sees `first`
    head = ledger.head()
    retry = ledger.append(batch)
    assert (retry.appended, retry.duplicates) == (0, 2)
    assert [e.position for e in retry.events] == [e.position for e in first.events]
    assert retry.events == first.events
    assert ledger.head() == head
    assert count_events(ledger) == 3


def test_i3_a_batch_mixing_stored_and_new_events_appends_only_the_new(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    old = RunProgressed(run_id=run_id, records_fetched=1)
    ledger.append([old])
    new = RunProgressed(run_id=run_id, records_fetched=2)
    result = ledger.append([old, new, new])  # repeated inside the batch, too
    assert (result.appended, result.duplicates) == (1, 2)
    assert [e.position for e in result.events] == [2, 3, 3]
    assert count_events(ledger) == 3


def test_i3_a_retried_run_start_with_refs_resolves_to_the_stored_run(ledger: Ledger) -> None:
    batch = [
        RunStarted(run_ref="r", source_id=1, connector_name="SOURCE_1"),
        RunProgressed(run_ref="r", records_fetched=3),
    ]
    first = ledger.append(batch)
    retry = ledger.append(batch)
    assert retry.run_refs == first.run_refs == {"r": 1}
    assert retry.appended == 0
    assert retry.allocated_run_ids == []


def test_i3_a_run_start_with_a_ref_repeated_inside_its_batch_is_stored_once(
    ledger: Ledger,
) -> None:
    """The same RunStarted (one event_id) twice in one batch, as a file concatenated with its
    own retry holds it, is a duplicate like any repeated event: it was refused as "run_ref 'r'
    is started twice" only when it named a run_ref (review 27)."""
    start = RunStarted(run_ref="r", source_id=1, connector_name="SOURCE_1")
    progress = RunProgressed(run_ref="r", records_fetched=3)
    result = ledger.append([start, progress, start, progress])
    assert (result.appended, result.duplicates) == (2, 2)
    assert result.run_refs == {"r": 1}
    assert [e.position for e in result.events] == [1, 2, 1, 2]
    # Another RunStarted naming the same ref is still a second start, and the same event_id
    # for another fact is still named as such; neither writes anything.
    other = RunStarted(run_ref="s", source_id=1, connector_name="SOURCE_1")
    with pytest.raises(ValidationError, match="run_ref: 's' is started twice"):
        ledger.append([other, RunStarted(run_ref="s", source_id=1, connector_name="SOURCE_1")])
    clash = other.model_copy(update={"source_id": 2})
    with pytest.raises(ValidationError, match="used earlier in this batch"):
        ledger.append([other, clash])
    assert count_events(ledger) == 2


def test_i3_an_event_id_cannot_be_reused_for_another_fact(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    event = RunProgressed(run_id=run_id)
    ledger.append([event])
    with pytest.raises(ValidationError, match="already stored at position 2 for a different fact"):
        ledger.append([RunFinished(event_id=event.event_id, run_id=run_id, status="success")])
    # Reused for a new run: the message names it so, not "run None".
    with pytest.raises(ValidationError, match=r"cannot be reused for RunStarted of a new run$"):
        ledger.append([started(event_id=event.event_id)])
    with pytest.raises(ValidationError, match=r"of run_ref 'r'$"):
        ledger.append([started(event_id=event.event_id, run_ref="r")])


def test_i3_the_unique_constraint_is_the_backstop(ledger: Ledger) -> None:
    ledger.start_run(1, "SOURCE_1")
    (row,) = ledger.read_all()
    copy = {**row.as_row(), "position": 2, "version": 2}
    with pytest.raises(IntegrityError), ledger.engine.begin() as conn:
        conn.execute(ledger_events.insert(), copy)


# ---------------------------------------------------------------- I4 optimistic concurrency


def test_i4_expected_version_mismatch_names_run_and_versions(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id)], expected_version=1)
    head = ledger.head()
    with pytest.raises(ConcurrencyError) as caught:
        ledger.append(
            [RunProgressed(run_id=run_id), RunProgressed(run_id=run_id)], expected_version=1
        )
    assert (caught.value.run_id, caught.value.expected_version, caught.value.actual_version) == (
        run_id,
        1,
        2,
    )
    assert f"run {run_id}" in str(caught.value)
    assert ledger.head() == head


def test_i4_expected_version_zero_means_a_new_run(ledger: Ledger) -> None:
    assert ledger.append([started(run_id=5)], expected_version=0).appended == 1
    with pytest.raises(ConcurrencyError):
        ledger.append([RunProgressed(run_id=5)], expected_version=0)


def test_i4_a_retried_conditional_append_is_still_idempotent(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    batch = [RunTimedOut(run_id=run_id, reason="stale", detected_by="sweeper")]
    ledger.append(batch, expected_version=1)
    assert ledger.append(batch, expected_version=1).duplicates == 1


def test_i4_expected_version_needs_a_single_run_batch(ledger: Ledger) -> None:
    with pytest.raises(ValidationError, match="one run"):
        ledger.append([started(), started()], expected_version=0)


def test_i4_a_new_run_repeated_inside_its_batch_is_still_one_run(ledger: Ledger) -> None:
    """The same RunStarted twice (one event_id) at expected_version 0 starts one run: it was
    refused as "a batch about one run; this batch has several" (review 27). Two RunStarted
    still are two runs."""
    start = started()
    result = ledger.append([start, start], expected_version=0)
    assert (result.appended, result.duplicates) == (1, 1)
    with pytest.raises(ValidationError, match="one run"):
        ledger.append([started(), started()], expected_version=0)
    assert ledger.head().last_position == 1


def test_i4_a_new_run_can_only_be_expected_at_version_0(ledger: Ledger) -> None:
    """Refused as input, naming the event, before a run id is allocated for it: the conflict
    it was named a run id that the refused batch alone had taken."""
    head = ledger.head()
    with pytest.raises(ValidationError, match="a new run is at version 0") as refused:
        ledger.append([started(run_ref="r"), RunProgressed(run_ref="r")], expected_version=3)
    assert refused.value.details[0].index == 0
    assert ledger.head() == head
    assert ledger.append([started()], expected_version=0).appended == 1


def test_i4_of_writers_racing_at_one_version_exactly_one_appends(
    ledger: Ledger, db_url: str
) -> None:
    """Eight writers, each on a connection of its own, append a different fact at the version
    they all read, released at once: the version is compared under the head lock, so one
    appends and seven get the conflict (a check made before the lock would pass them all;
    nor can I3 hide a break, the facts being different)."""
    run_id = ledger.start_run(1, "SOURCE_1")
    writers = [Ledger.from_url(db_url) for _ in range(8)]
    barrier = threading.Barrier(len(writers))
    outcomes: list[str] = []

    def write(number: int) -> None:
        barrier.wait(30)
        try:
            writers[number].append(
                [RunProgressed(run_id=run_id, records_fetched=number + 1)], expected_version=1
            )
            outcomes.append("appended")
        except ConcurrencyError as conflict:
            outcomes.append(f"conflict at {conflict.actual_version}")

    threads = [threading.Thread(target=write, args=(number,)) for number in range(len(writers))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for writer in writers:
            writer.close()
    assert sorted(outcomes) == ["appended"] + ["conflict at 2"] * 7
    assert [event.version for event in ledger.read_run(run_id)] == [1, 2]
    assert ledger.head().last_position == 2


# ---------------------------------------------------------------- I5 stream rules


def test_i5_first_event_must_be_run_started(ledger: Ledger) -> None:
    with pytest.raises(StreamError, match=r"run 4: .*no RunStarted") as caught:
        ledger.append([RunProgressed(run_id=4)])
    assert caught.value.rule == "starts-with-RunStarted"
    assert caught.value.run_id == 4


def test_i5_run_started_appears_once(ledger: Ledger) -> None:
    ledger.start_run(1, "SOURCE_1", run_id=9)
    with pytest.raises(StreamError, match="run 9: RunStarted may appear only once"):
        ledger.start_run(1, "SOURCE_1", run_id=9)


def test_i5_nothing_follows_run_finished(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunFinished(run_id=run_id, status="failed")])
    for late in (
        RunProgressed(run_id=run_id),
        RunFinished(run_id=run_id, status="success"),
        RunTimedOut(run_id=run_id, reason="x", detected_by="sweeper"),
    ):
        with pytest.raises(StreamError, match="after RunFinished") as caught:
            ledger.append([late])
        assert caught.value.rule == "nothing-after-RunFinished"


def test_i5_one_timeout_then_late_facts_are_still_recorded(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunTimedOut(run_id=run_id, reason="stale", detected_by="sweeper")])
    with pytest.raises(StreamError, match="RunTimedOut may appear only once"):
        ledger.append([RunTimedOut(run_id=run_id, reason="again", detected_by="operator:al")])
    late = ledger.append(
        [
            RunProgressed(run_id=run_id, records_fetched=4),
            RunFinished(run_id=run_id, status="success"),
        ]
    )
    assert late.appended == 2
    with pytest.raises(StreamError, match="after RunFinished"):
        ledger.append([RunFinished(run_id=run_id, status="success")])


def test_i5_a_violation_mid_batch_writes_nothing(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    head = ledger.head()
    batch = [
        started(),
        RunProgressed(run_id=run_id),
        RunFinished(run_id=run_id, status="success"),
        RunProgressed(run_id=run_id),
    ]
    with pytest.raises(StreamError) as caught:
        ledger.append(batch)
    assert caught.value.index == 3
    assert ledger.head() == head
    assert count_events(ledger) == 1
    with ledger.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ledger_runs)).scalar_one() == 1


# ---------------------------------------------------------------- clock skew (I10 guard)


def test_occurred_at_far_in_the_future_is_refused(ledger: Ledger) -> None:
    with freeze_time("2026-02-01 12:00:00"):
        now = datetime(2026, 2, 1, 12, tzinfo=UTC)
        ledger.start_run(1, "SOURCE_1", occurred_at=now + timedelta(minutes=4))
        with pytest.raises(ValidationError, match="ahead of the ledger clock"):
            ledger.start_run(1, "SOURCE_1", occurred_at=now + timedelta(minutes=6))
    assert count_events(ledger) == 1


def test_one_append_while_the_clock_was_years_ahead_lets_no_writer_date_facts_up_to_it(
    ledger: Ledger,
) -> None:
    """The audit's: one append while the clock had jumped 4 years forward fixes recorded_at
    there (it never goes back, by design); the guard measured against max(clock, last
    recorded_at), so any writer could then date facts up to that future, and its runs could
    never be seen as stuck. The guard measures against the ledger's clock itself."""
    with freeze_time("2030-01-28 01:00:00"):  # the ledger's clock jumped forward
        ledger.start_run(1, "SOURCE_1")
    with freeze_time("2026-01-28 01:00:00"):  # and was put right
        with pytest.raises(AheadOfClockError, match="ahead of the ledger clock") as caught:
            ledger.start_run(2, "SOURCE_2", occurred_at=datetime(2029, 6, 1, tzinfo=UTC))
        assert "2026-01-28T01:00:00.000000Z" in str(caught.value)
        honest = ledger.start_run(2, "SOURCE_2")  # dated by the (right) clock
    assert count_events(ledger) == 2
    # recorded_at stays monotonic, as it is meant to.
    assert ledger.read_run(honest)[0].recorded_at == datetime(2030, 1, 28, 1, tzinfo=UTC)


def database_clock(ledger: Ledger) -> datetime:
    with ledger.engine.connect() as conn:
        now = conn.execute(text("SELECT UTC_TIMESTAMP(6)")).scalar_one()
    return now.replace(tzinfo=UTC)  # type: ignore[no-any-return]


@pytest.fixture
def on_the_database_clock(backend: str, db_url: str) -> Iterator[Ledger]:
    """A Ledger on the database server's clock, as in production (the suite's own Ledgers
    keep time by this process's clock, for freezegun)."""
    if backend != "mysql":
        pytest.skip("SQLite runs on this machine's clock: there is no other clock to differ from")
    previous = use_clock(None)
    store = Ledger.from_url(db_url)
    try:
        yield store
    finally:
        store.close()
        use_clock(previous)


def test_a_writer_a_year_ahead_is_refused_and_cannot_drag_the_ledgers_clock(
    on_the_database_clock: Ledger, db_url: str
) -> None:
    """Issue 12 item 3: one clock for every writer, the database server's."""
    ledger = on_the_database_clock
    real_now = database_clock(ledger)
    a_year_ahead = real_now + timedelta(days=365)
    with freeze_time(a_year_ahead):
        with pytest.raises(ValidationError, match="ahead of the ledger clock") as caught:
            ledger.start_run(1, "SOURCE_1")  # occurred_at defaults to the writer's clock
        message = str(caught.value)
        assert f"this writer's {a_year_ahead.year}-" in message
        assert f"the database server's clock reads {real_now.year}-" in message
        # A fact the skewed writer dates honestly is accepted, recorded by the server's clock.
        skewed = ledger.start_run(1, "SOURCE_1", occurred_at=real_now)
        assert sweep(ledger).timed_out == []  # its sweeper measures silence by that clock too
        listed = CliRunner().invoke(  # so does its CLI's clock skew guard
            cli, ["append", "-", "--db", db_url], input='{"type":"RunProgressed","run_id":1}\n'
        )
        assert listed.exit_code == 2
        assert "line 1: occurred_at:" in listed.stderr
    assert ledger.read_run(skewed)[0].recorded_at <= database_clock(ledger)
    honest = ledger.start_run(2, "SOURCE_2")
    recorded = ledger.read_run(honest)[0].recorded_at
    assert real_now <= recorded <= database_clock(ledger)
    assert ledger.run(skewed).last_event_at < database_clock(ledger)  # type: ignore[union-attr]
    as_of = isoformat_utc(database_clock(ledger))
    listed = CliRunner().invoke(
        cli,
        ["runs", "list", "--as-of", as_of, "--format", "json", "--db", db_url],
        catch_exceptions=False,
    )
    assert {row["id"] for row in json.loads(listed.stdout)} == {skewed, honest}


def test_a_writer_behind_the_database_keeps_the_databases_time(
    on_the_database_clock: Ledger,
) -> None:
    """A slow host neither refuses a fact dated by the true time nor records in its past."""
    ledger = on_the_database_clock
    real_now = database_clock(ledger)
    with freeze_time(real_now - timedelta(minutes=10)):
        run_id = ledger.start_run(1, "SOURCE_1", occurred_at=real_now + timedelta(minutes=4))
        assert ledger.clock() >= real_now
    assert ledger.read_run(run_id)[0].recorded_at >= real_now


def patient_url(db_url: str) -> str:
    """``db_url`` whose sessions may sit in a transaction for ten minutes (MariaDB)."""
    parsed = make_url(db_url)
    if parsed.get_backend_name() == "sqlite":
        return db_url
    return parsed.update_query_dict({"idle_transaction_timeout": "600"}).render_as_string(
        hide_password=False
    )


def test_recorded_at_is_the_ledgers_clock_once_the_head_lock_is_granted(
    backend: str, db_url: str
) -> None:
    """The ledger's clock is read with the head lock, not before waiting for it: an append
    that waited behind another transaction holding the head records a time no earlier than
    the moment that transaction let go. On MariaDB the clock came from ``UTC_TIMESTAMP(6)`` in
    the locking statement, which the server evaluates once as the statement starts: an
    append that waited 50 s for the lock was stamped 50 s before it could write, before
    events that committed while it waited were visible to anyone. (SQLite reads this
    machine's clock in Python once ``BEGIN IMMEDIATE`` returned.)"""
    previous = use_clock(None)  # the ledger's clock as in production: the server's on MariaDB
    # The holder's transaction sits idle while the append queues behind it: past the ledger's
    # idle bound (30 s) the server would end it and the append would never wait.
    holder_url = patient_url(db_url)
    writer, holder = Ledger.from_url(db_url), Ledger.from_url(holder_url)
    waiting: threading.Thread | None = None
    try:
        run_id = writer.start_run(1, "SOURCE_1")
        appended: list[RecordedEvent] = []
        failed: list[BaseException] = []

        def append_behind_the_holder() -> None:
            try:
                appended.extend(
                    writer.append([RunProgressed(run_id=run_id, records_fetched=1)]).events
                )
            except BaseException as exc:  # reported by the main thread, not lost in this one
                failed.append(exc)

        waiting = threading.Thread(target=append_behind_the_holder)
        lock = "" if backend == "sqlite" else " FOR UPDATE"
        with holder.transaction("hold the head") as conn:
            conn.execute(text(f"SELECT last_position FROM ledger_head WHERE id = 1{lock}"))
            waiting.start()
            if backend == "mysql":  # until the append is seen waiting for a lock in this database
                deadline = time.monotonic() + 120
                with holder.engine.connect() as watcher:
                    while not watcher.execute(
                        text(
                            "SELECT COUNT(*) FROM information_schema.INNODB_TRX t "
                            "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
                            "WHERE t.trx_state = 'LOCK WAIT' AND p.DB = DATABASE()"
                        )
                    ).scalar_one():
                        assert waiting.is_alive(), ("the append ended without waiting", failed)
                        assert time.monotonic() < deadline, "the append never waited"
                        # InnoDB refreshes what INNODB_TRX shows only once it has gone 0.1 s
                        # unread: polled faster, a first look taken before the append queued
                        # is what every later look sees (CI failed on it once).
                        time.sleep(0.2)
            released_at = holder.clock()
    finally:
        if waiting is not None and waiting.ident is not None:
            waiting.join(60)  # the append ends once the holder let go, on a failure too
        writer.close()
        holder.close()
        use_clock(previous)
    assert not failed, failed
    assert appended[0].recorded_at >= released_at, (appended[0].recorded_at, released_at)


# ---------------------------------------------------------------- I6 tamper-evident


def test_i6_each_row_chains_to_the_previous(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append(
        [
            RunProgressed(run_id=run_id, records_fetched=1),
            RunFinished(run_id=run_id, status="success"),
        ]
    )
    events = list(ledger.read_all())
    assert events[0].prev_hash == GENESIS_HASH
    for previous, current in itertools.pairwise(events):
        assert current.prev_hash == previous.hash
    for event in events:
        assert event.hash == chain_hash(event.prev_hash, event.as_row())
    report = verify_chain(ledger)
    assert (report.ok, report.checked) == (True, 3)


def test_i6_verify_over_a_range(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id) for _ in range(5)])
    report = verify_chain(ledger, from_position=3, to_position=5)
    assert (report.ok, report.checked) == (True, 3)


def test_i6_verify_of_an_empty_ledger(ledger: Ledger) -> None:
    assert verify_chain(ledger).ok


@pytest.mark.parametrize(
    ("column", "value"),
    [
        (
            "payload",
            '{"claims_created":0,"coverage_cells_updated":0,"records_created":0,'
            '"records_fetched":500,"records_skipped":0,"records_updated":0}',
        ),
        ("run_id", 2),
        ("actor", "operator:mallory"),
        ("occurred_at", datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_i6_an_altered_row_is_named(ledger: Ledger, column: str, value: object) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id, records_fetched=5) for _ in range(3)])
    drop_triggers(ledger.engine)
    with ledger.engine.begin() as conn:
        conn.execute(
            ledger_events.update().where(ledger_events.c.position == 3).values({column: value})
        )
    report = verify_chain(ledger)
    assert (report.ok, report.first_bad_position, report.checked) == (False, 3, 2)
    assert "altered" in (report.problem or "")


def test_i6_a_deleted_row_is_named(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id) for _ in range(4)])
    drop_triggers(ledger.engine)
    with ledger.engine.begin() as conn:
        conn.execute(ledger_events.delete().where(ledger_events.c.position == 3))
    report = verify_chain(ledger)
    assert (report.ok, report.first_bad_position) == (False, 3)
    assert "missing" in (report.problem or "")


def test_i6_a_deleted_last_row_is_caught_against_the_head(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id) for _ in range(4)])
    drop_triggers(ledger.engine)
    with ledger.engine.begin() as conn:
        conn.execute(ledger_events.delete().where(ledger_events.c.position == 5))
    report = verify_chain(ledger)
    assert (report.ok, report.first_bad_position, report.checked) == (False, 5, 4)


# ---------------------------------------------------------------- found in review


def test_i3_retry_through_a_run_ref_continues_the_stored_run(ledger: Ledger) -> None:
    start = RunStarted(run_ref="b", source_id=1, connector_name="SOURCE_1")
    ledger.append([start])  # stored; the reply is lost
    result = ledger.append([start, RunProgressed(run_ref="b", records_fetched=2)])
    assert (result.appended, result.duplicates, result.run_refs) == (1, 1, {"b": 1})
    assert [e.version for e in ledger.read_run(1)] == [1, 2]
    assert ledger.run(1).version == 2  # type: ignore[union-attr]


def test_i3_a_reused_event_id_with_other_content_is_refused(ledger: Ledger) -> None:
    first = RunStarted(source_id=1, connector_name="SOURCE_1", occurred_at=T0)
    ledger.append([first])
    impostor = RunStarted(
        event_id=first.event_id, source_id=99, connector_name="OTHER", occurred_at=T0, run_ref="b"
    )
    with pytest.raises(ValidationError, match="different fact"):
        ledger.append([impostor, RunProgressed(run_ref="b", records_fetched=1)])
    assert ledger.head().last_position == 1


def test_i1_replace_cannot_overwrite_an_event(ledger: Ledger, backend: str) -> None:
    ledger.start_run(1, "SOURCE_1")
    (row,) = ledger.read_all()
    verb = "INSERT OR REPLACE" if backend == "sqlite" else "REPLACE"
    with pytest.raises(DBAPIError), ledger.engine.begin() as conn:
        conn.execute(
            text(
                f"{verb} INTO ledger_events (position, event_id, run_id, version, type, "
                "schema_version, payload, occurred_at, recorded_at, actor, prev_hash, hash) "
                "SELECT position, event_id, run_id, version, type, schema_version, '{}', "
                "occurred_at, recorded_at, 'mallory', prev_hash, hash FROM ledger_events"
            )
        )
    assert list(ledger.read_all()) == [row]


# A copy of the second event, colliding with a stored row on one unique key alone (the
# other two moved out of the way), or on all of them for an upsert.
_ONE_KEY_COLLIDES = {
    "position": "position, 'aaaaaaaa-0000-4000-8000-000000000001', run_id + 1000, version",
    "event_id": "position + 1000, event_id, run_id + 1000, version",
    "run_id and version": "position + 1000, 'aaaaaaaa-0000-4000-8000-000000000002', run_id, "
    "version",
}


@pytest.mark.parametrize("key", [*_ONE_KEY_COLLIDES, "upsert"])
def test_i1_no_insert_replaces_or_updates_an_event_through_any_unique_key(
    ledger: Ledger, backend: str, key: str
) -> None:
    """Each unique key of ``ledger_events`` on its own: SQLite's ``INSERT OR REPLACE``
    deletes the row it collides with without firing DELETE triggers, so its insert trigger
    must look at every key (a collision on all three at once proves only the first it
    checks); MariaDB's ``REPLACE`` fires the DELETE trigger, and an upsert either database's
    UPDATE trigger or the insert trigger first."""
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id, records_fetched=1)])
    before = list(ledger.read_all())
    rest = "type, schema_version, '{}', occurred_at, recorded_at, 'mallory', prev_hash, hash"
    columns = (
        "(position, event_id, run_id, version, type, schema_version, payload, occurred_at, "
        "recorded_at, actor, prev_hash, hash)"
    )
    if key == "upsert":
        conflict = (
            "ON CONFLICT (position) DO UPDATE SET actor = 'mallory'"
            if backend == "sqlite"
            else "ON DUPLICATE KEY UPDATE actor = 'mallory'"
        )
        statement = (
            f"INSERT INTO ledger_events {columns} SELECT position, event_id, run_id, version, "
            f"{rest} FROM ledger_events WHERE position = 2 {conflict}"
        )
    else:
        verb = "INSERT OR REPLACE" if backend == "sqlite" else "REPLACE"
        statement = (
            f"{verb} INTO ledger_events {columns} SELECT {_ONE_KEY_COLLIDES[key]}, {rest} "
            "FROM ledger_events WHERE position = 2"
        )
    with pytest.raises(DBAPIError, match="append-only"), ledger.engine.begin() as conn:
        conn.execute(text(statement))
    assert list(ledger.read_all()) == before
    assert verify_chain(ledger).ok


def test_i6_a_row_written_past_the_head_is_named(ledger: Ledger) -> None:
    ledger.start_run(1, "SOURCE_1")
    (row,) = ledger.read_all()
    forged = {**row.as_row(), "position": 2, "event_id": str(uuid.uuid4()), "version": 2}
    with ledger.engine.begin() as conn:
        conn.execute(ledger_events.insert(), forged)
    report = verify_chain(ledger)
    assert (report.ok, report.first_bad_position) == (False, 2)
    assert "beyond the ledger head" in (report.problem or "")


def test_recorded_at_never_goes_back_when_the_clock_does(ledger: Ledger) -> None:
    with freeze_time("2026-02-01 12:00:00"):
        run_id = ledger.start_run(1, "SOURCE_1", occurred_at=T0)
    with freeze_time("2026-02-01 11:00:00"):  # another host, an hour behind
        ledger.append([RunProgressed(run_id=run_id)])  # dated by its own clock
    first, second = ledger.read_run(run_id)
    assert second.recorded_at == first.recorded_at == datetime(2026, 2, 1, 12, tzinfo=UTC)


def test_only_the_current_schema_version_is_written(ledger: Ledger) -> None:
    with pytest.raises(ValidationError, match="schema_version: RunStarted is written at"):
        ledger.append([started(schema_version=7)])
    assert ledger.head().last_position == 0


def test_read_all_refuses_an_empty_page(ledger: Ledger) -> None:
    with pytest.raises(ValidationError, match="batch_size"):
        list(ledger.read_all(batch_size=0))


# ---------------------------------------------------------------- found by the second test pass


def test_i3_backstop_when_a_writer_bypassed_the_lock(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dedupe step misses a row (as if a writer had slipped past the head lock): the unique
    constraint refuses the second copy and the retried append returns the stored one."""
    from ledger import appender

    run_id = ledger.start_run(1, "SOURCE_1")
    event = RunProgressed(run_id=run_id, records_fetched=1)
    ledger.append([event])
    head = ledger.head()
    real = appender.Appender._state_rows
    calls: list[int] = []

    def blind_once(
        self: appender.Appender, rows: Iterable[Sequence[Any]]
    ) -> tuple[dict[str, RecordedEvent], dict[int, RunState | None]]:
        calls.append(1)
        stored, runs = real(self, rows)
        return ({} if len(calls) == 1 else stored), runs

    monkeypatch.setattr(appender.Appender, "_state_rows", blind_once)
    result = ledger.append([event])
    assert len(calls) == 2
    assert (result.appended, result.duplicates) == (0, 1)
    assert ledger.head() == head


def test_i3_retry_of_a_line_whose_occurred_at_defaulted(ledger: Ledger) -> None:
    from ledger import parse_event

    line = started_line()
    with freeze_time("2026-03-01 12:00:00"):
        first = ledger.append([parse_event(line)])
    with freeze_time("2026-03-01 12:00:09"):  # the retry gets another default occurred_at
        retry = ledger.append([parse_event(line)])
    assert (retry.appended, retry.duplicates, retry.run_refs) == (0, 1, first.run_refs)


def test_i3_a_retry_naming_another_actor_or_time_is_another_fact(ledger: Ledger) -> None:
    event = RunStarted(source_id=1, connector_name="S", actor="connector:a", occurred_at=T0)
    ledger.append([event])
    for change in ({"actor": "connector:b"}, {"occurred_at": T0 + timedelta(seconds=1)}):
        with pytest.raises(ValidationError, match="different fact"):
            ledger.append([event.model_copy(update=change)])


def test_a_reused_event_id_inside_one_batch_is_named_as_such(ledger: Ledger) -> None:
    first = started(occurred_at=T0)
    clash = started(event_id=first.event_id, source_id=2, occurred_at=T0)
    with pytest.raises(ValidationError, match="used earlier in this batch"):
        ledger.append([first, clash])


def test_i4_expected_version_of_a_run_that_does_not_exist(ledger: Ledger) -> None:
    with pytest.raises(ConcurrencyError) as caught:
        ledger.append([started(run_id=8)], expected_version=3)
    assert (caught.value.expected_version, caught.value.actual_version) == (3, 0)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("event_id", str(uuid.uuid4())),
        ("type", "RunFinished"),
        ("version", 99),
        ("schema_version", 2),
        ("recorded_at", datetime(2030, 1, 1, tzinfo=UTC)),
        ("prev_hash", "f" * 64),
        ("hash", "0" * 64),
    ],
)
def test_i6_every_hashed_column_is_covered(ledger: Ledger, column: str, value: object) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id) for _ in range(3)])
    drop_triggers(ledger.engine)
    with ledger.engine.begin() as conn:
        conn.execute(
            ledger_events.update().where(ledger_events.c.position == 2).values({column: value})
        )
    report = verify_chain(ledger)
    assert (report.ok, report.first_bad_position) == (False, 2)


def test_i6_a_tampered_head_is_named(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id)])
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE ledger_head SET last_hash = :h"), {"h": "a" * 64})
    report = verify_chain(ledger)
    assert (report.ok, report.first_bad_position) == (False, 2)
    assert "ledger_head" in (report.problem or "")


def test_i6_verify_of_a_range_past_the_head(ledger: Ledger) -> None:
    ledger.start_run(1, "SOURCE_1")
    assert verify_chain(ledger, from_position=3).ok
    assert verify_chain(ledger, from_position=3, to_position=9).ok


def test_payloads_over_the_limit_are_refused_on_both_databases(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    huge = RunFinished(run_id=run_id, status="failed", error_details={"blob": "x" * 2_000_000})
    with pytest.raises(ValidationError, match="over the 1,048,576-byte limit"):
        ledger.append([huge])
    assert ledger.head().last_position == 1


def test_deeply_nested_metadata_is_an_input_error(ledger: Ledger) -> None:
    nested: dict[str, object] = {}
    for _ in range(5000):
        nested = {"n": nested}
    with pytest.raises(ValidationError):
        ledger.append([started(metadata=nested)])
    assert ledger.head().last_position == 0


def append_from_threads(store: Ledger, threads: int, runs_each: int, events_each: int) -> None:
    """Several threads sharing one Ledger, each starting runs and appending to them."""
    import threading

    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(runs_each):
                run_id = store.start_run(1, "SOURCE_1")
                store.append(
                    [RunProgressed(run_id=run_id, records_fetched=1) for _ in range(events_each)]
                )
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []


def test_one_ledger_shared_by_threads(ledger: Ledger) -> None:
    append_from_threads(ledger, threads=6, runs_each=15, events_each=3)
    assert ledger.head().last_position == 6 * 15 * 4
    assert verify_chain(ledger).ok


def test_in_memory_sqlite_shared_by_threads() -> None:
    from migrations.runner import upgrade

    memory = Ledger.from_url("sqlite://")
    upgrade(memory.engine, memory.url)
    append_from_threads(memory, threads=6, runs_each=20, events_each=4)
    assert memory.head().last_position == 6 * 20 * 5
    assert verify_chain(memory).ok


def test_read_all_lets_go_of_each_event_it_handed_over(ledger: Ledger) -> None:
    # A replay that drops each event as it goes frees it (and the model its .event built) at
    # once, instead of the page keeping them all for the garbage collector to go over.
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id, records_fetched=i) for i in range(1, 6)])
    events = ledger.read_all(batch_size=4)
    first = next(events)
    assert first.event.type == "RunStarted"
    gone = weakref.ref(first)
    del first
    second = next(events)  # the page of four is still being read
    assert gone() is None
    assert [second.position, *(event.position for event in events)] == [2, 3, 4, 5, 6]
