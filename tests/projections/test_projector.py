"""The ingestion_runs projection (DESIGN.md I7, I8 and §5), on SQLite and on MariaDB."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError

from forensics.verify import verify_all
from ledger import (
    Ledger,
    RunFinished,
    RunProgressed,
    RunStarted,
    RunTimedOut,
    StoredRowError,
    ValidationError,
)
from projections import (
    PoisonEventError,
    ProjectionTimeoutError,
    Projector,
    ledger_status,
    rebuild,
    resolve_position,
    run_as_of,
    runs_as_of,
)
from projections import writer as writer_module
from projections.errors import CheckpointMovedError
from projections.queries import RunFilter, find_runs, get_run
from projections.schema import ingestion_runs
from tests.projection_support import append_raw, replayed_rows, table_rows, transition_rows
from tests.support import drop_triggers

T0 = datetime(2026, 1, 28, 1, 12, 44, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def project(ledger: Ledger, batch_size: int = 1000) -> int:
    return Projector(ledger, batch_size=batch_size).run_once()


# ---------------------------------------------------------------- mapping


def test_started_progressed_finished_map_to_the_legacy_row(ledger: Ledger) -> None:
    with freeze_time("2026-01-28 01:20:00.750"):
        run_id = ledger.start_run(7, "SOURCE_1", occurred_at=T0 + timedelta(microseconds=900))
        ledger.append(
            [
                RunProgressed(
                    run_id=run_id,
                    occurred_at=at(1),
                    records_fetched=15,
                    records_created=10,
                    records_updated=3,
                    records_skipped=2,
                ),
                RunProgressed(
                    run_id=run_id, occurred_at=at(2), claims_created=4, coverage_cells_updated=9
                ),
                RunFinished(
                    run_id=run_id,
                    occurred_at=at(2.5),
                    status="partial",
                    error_message="2 rows malformed",
                    error_details={"rows": [3, 8]},
                    records_skipped=2,
                ),
            ]
        )
    assert project(ledger) == 4
    assert table_rows(ledger)[run_id] == {
        "id": run_id,
        "sourceId": 7,
        "connectorName": "SOURCE_1",
        "startedAt": T0,  # whole seconds, as the legacy TIMESTAMP holds them
        "completedAt": datetime(2026, 1, 28, 1, 15, 14, tzinfo=UTC),
        "duration": 150,
        "status": "partial",
        "recordsFetched": 15,
        "recordsCreated": 10,
        "recordsUpdated": 3,
        "recordsSkipped": 4,
        "claimsCreated": 4,
        "errorMessage": "2 rows malformed",
        "errorDetails": {"rows": [3, 8]},
        "coverageCellsUpdated": 9,
        "createdAt": datetime(2026, 1, 28, 1, 20, tzinfo=UTC),
    }
    assert [(t["from_status"], t["to_status"], t["position"]) for t in transition_rows(ledger)] == [
        (None, "running", 1),
        ("running", "partial", 4),
    ]


def test_the_legacy_seed_run_timed_out_after_days_gets_completed_at_and_duration(
    ledger: Ledger,
) -> None:
    """Run 37 of the seed: started 2026-01-28, stuck, closed on 2026-02-01 ("Duration: nulls")."""
    with freeze_time("2026-02-01 23:33:44"):
        ledger.start_run(
            2, "SOURCE_2", run_id=37, occurred_at=datetime(2026, 1, 28, 1, 12, 45, tzinfo=UTC)
        )
        ledger.append(
            [
                RunTimedOut(
                    run_id=37,
                    reason="stale",
                    threshold_seconds=3600,
                    detected_by="sweeper",
                    last_event_at=datetime(2026, 1, 28, 1, 12, 45, tzinfo=UTC),
                )
            ]
        )
    project(ledger)
    row = table_rows(ledger)[37]
    assert row["status"] == "failed"
    assert row["completedAt"] == datetime(2026, 2, 1, 23, 33, 44, tzinfo=UTC)
    assert row["duration"] == 426_059
    assert row["errorMessage"] == (
        "Timed out by sweeper after the 1h threshold (stale); "
        "last activity 2026-01-28 01:12:45 UTC."
    )
    assert row["errorDetails"] == {
        "reason": "stale",
        "threshold_seconds": 3600,
        "last_event_at": "2026-01-28T01:12:45.000000Z",
        "detected_by": "sweeper",
    }
    assert transition_rows(ledger)[-1]["actor"] == "sweeper"


def test_late_facts_after_a_timeout_add_counters_but_never_flip_the_status(
    ledger: Ledger,
) -> None:
    with freeze_time(at(200)):
        run_id = ledger.start_run(1, "SOURCE_1", occurred_at=T0)
        ledger.append(
            [
                RunTimedOut(
                    run_id=run_id,
                    occurred_at=at(61),
                    reason="stale",
                    threshold_seconds=3600,
                    detected_by="sweeper",
                    last_event_at=T0,
                )
            ]
        )
        ledger.append(
            [
                RunProgressed(run_id=run_id, occurred_at=at(70), records_fetched=5),
                RunProgressed(run_id=run_id, occurred_at=at(71)),
                RunProgressed(run_id=run_id, occurred_at=at(72)),
                RunFinished(run_id=run_id, occurred_at=at(90), status="success", records_created=5),
            ]
        )
    project(ledger)
    row = table_rows(ledger)[run_id]
    assert (row["status"], row["recordsFetched"], row["recordsCreated"]) == ("failed", 5, 5)
    assert row["completedAt"] == at(61)  # the first terminal event decided
    assert row["duration"] == 61 * 60
    assert row["errorMessage"].startswith("Timed out by sweeper")
    details = row["errorDetails"]
    assert details["reason"] == "stale"
    assert details["late_heartbeats"] == {"count": 2, "last_at": "2026-01-28T02:24:44.000000Z"}
    assert [(e["type"], e.get("status"), e["position"]) for e in details["late"]] == [
        ("RunProgressed", None, 3),
        ("RunFinished", "success", 6),
    ]
    assert details["late"][1]["occurred_at"] == "2026-01-28T02:42:44.000000Z"
    assert [t["to_status"] for t in transition_rows(ledger)] == ["running", "failed"]


def test_operator_resolution_message_names_who_and_why(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1", occurred_at=T0)
    ledger.append(
        [
            RunTimedOut(
                run_id=run_id,
                reason="host decommissioned",
                detected_by="operator:alice",
                last_event_at=T0,
            )
        ]
    )
    project(ledger)
    assert table_rows(ledger)[run_id]["errorMessage"] == (
        "Marked failed by operator:alice: host decommissioned; "
        "last activity 2026-01-28 01:12:44 UTC."
    )


def test_counters_beyond_int11_are_kept_in_error_details(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    big = 2**31 - 1
    ledger.append(
        [
            RunProgressed(run_id=run_id, records_fetched=big),
            RunProgressed(run_id=run_id, records_fetched=10),
        ]
    )
    project(ledger)
    row = table_rows(ledger)[run_id]
    assert row["recordsFetched"] == big
    assert row["errorDetails"] == {"counter_overflow": {"recordsFetched": big + 10}}
    ledger.append([RunProgressed(run_id=run_id, records_fetched=5)])
    project(ledger)
    assert table_rows(ledger)[run_id]["errorDetails"]["counter_overflow"] == {
        "recordsFetched": big + 15
    }


# errorDetails values no projector writes (a JSON string, an array, a number), as a hand-run
# UPDATE of the legacy days or a legacy writer still pointed at the table leaves them.
NOT_OBJECT_DETAILS = ["closed by hand, see ticket 42", [1, 2], 42]


@pytest.mark.parametrize("details", NOT_OBJECT_DETAILS)
def test_error_details_written_by_hand_do_not_crash_the_projector(
    ledger: Ledger, details: Any
) -> None:
    """review43: the legacy way of closing a stuck run, an UPDATE of its row, done on the
    projection (status failed, a note as errorDetails); then the connector's own outcome, and
    another run timed out and reported on late. The fold read errorDetails as an object: a
    TypeError or AttributeError out of the projector (a traceback from `ledger project`, the
    follower dead), at every retry. errorDetails that is no object holds none of the ledger's
    own entries: the ledger's details replace it, as a replay has them."""
    by_hand, timed_out = ledger.start_run(1, "SOURCE_1"), ledger.start_run(2, "SOURCE_2")
    ledger.append([RunTimedOut(run_id=timed_out, reason="stale", detected_by="sweeper")])
    project(ledger)
    with ledger.engine.begin() as conn:
        conn.execute(
            update(ingestion_runs)
            .where(ingestion_runs.c.id == by_hand)
            .values(status="failed", errorDetails=details)
        )
        conn.execute(
            update(ingestion_runs)
            .where(ingestion_runs.c.id == timed_out)
            .values(errorDetails=details)
        )
    ledger.append(
        [
            RunFinished(run_id=by_hand, status="success", error_details={"note": "ok"}),
            RunProgressed(run_id=timed_out, records_fetched=3),
            RunFinished(run_id=timed_out, status="partial"),
        ]
    )
    assert project(ledger) == 3
    rows = table_rows(ledger)
    assert [entry["status"] for entry in rows[by_hand]["errorDetails"]["late"]] == ["success"]
    late = rows[timed_out]["errorDetails"]["late"]
    assert [entry["type"] for entry in late] == ["RunProgressed", "RunFinished"]
    assert rows[timed_out]["recordsFetched"] == 3
    assert Projector(ledger).checkpoint().error_position is None


def refused_by_mariadb(ledger: Ledger, assignment: str) -> bool:
    """Run ``UPDATE ingestion_runs SET <assignment>`` as a hand-run edit would: True when the
    database refused it (MariaDB's column types and CHECKs, naming the column), False when it
    took it (SQLite stores any value in any column)."""
    hand_edit = text(f"UPDATE ingestion_runs SET {assignment}")
    if ledger.engine.dialect.name != "sqlite":
        column = assignment.split(" ", 1)[0]
        with pytest.raises(DBAPIError, match=column), ledger.engine.begin() as conn:
            conn.execute(hand_edit)
        return True
    with ledger.engine.begin() as conn:
        conn.execute(hand_edit)
    return False


def test_error_details_that_are_not_json_read_as_their_text(ledger: Ledger) -> None:
    """review43: the same hand-run UPDATE with a typo, text that is not JSON. MariaDB's JSON
    column refuses it (json_valid); SQLite stored it, and every read of the row raised
    JSONDecodeError: a traceback from `ledger project`, `runs list`, `runs show`, `verify` and
    `report`. It reads as its text now, which the fold replaces and verify names."""
    run_id = ledger.start_run(1, "SOURCE_1")
    project(ledger)
    if refused_by_mariadb(ledger, "errorDetails = '{closed by hand'"):
        return
    row, _ = get_run(ledger, run_id)
    assert row is not None
    assert row["errorDetails"] == "{closed by hand"
    assert any("errorDetails" in p.message for p in verify_all(ledger).problems)
    ledger.append([RunFinished(run_id=run_id, status="failed", error_details={"code": 7})])
    assert project(ledger) == 1
    assert table_rows(ledger)[run_id]["errorDetails"] == {"code": 7}
    assert verify_all(ledger).ok


def edit_started_at_by_hand(ledger: Ledger) -> None:
    """Every ``ingestion_runs.startedAt`` set to what no write stores: 'yesterday' (SQLite),
    a zero date (MariaDB, let in by an empty sql_mode)."""
    sqlite = ledger.engine.dialect.name == "sqlite"
    with ledger.engine.begin() as conn:
        if not sqlite:
            conn.execute(text("SET SESSION sql_mode = ''"))
        bad = "'yesterday'" if sqlite else "'0000-00-00 00:00:00'"
        conn.execute(text(f"UPDATE ingestion_runs SET startedAt = {bad}"))


def test_a_row_time_edited_by_hand_stops_the_projector_naming_the_row(ledger: Ledger) -> None:
    """review43: review 31 named such a row for every reader of ``ingestion_runs``; the
    projector's own read of the row (its run's next event) was still SQLAlchemy's bare
    ValueError: a traceback from `ledger project` and `project --follow`."""
    run_id = ledger.start_run(1, "SOURCE_1")
    project(ledger)
    edit_started_at_by_hand(ledger)
    ledger.append([RunFinished(run_id=run_id, status="success")])
    with pytest.raises(StoredRowError, match=f"ingestion_runs row of run {run_id} .*startedAt"):
        project(ledger)
    assert Projector(ledger).checkpoint().position == 1  # nothing applied on top of it


def test_a_counter_edited_by_hand_into_text_is_named_by_the_projector_and_readers(
    ledger: Ledger,
) -> None:
    """review47: SQLite stores any value in any column; a hand-run UPDATE writing text into a
    counter was read as that text, and the fold's sum raised a TypeError (a traceback from
    `ledger project`, the follower dead), as did `runs list`. MariaDB's INT column refuses it.
    The row is now the StoredRowError naming it, for the projector and every reader, until a
    rebuild writes it again."""
    run_id = ledger.start_run(1, "SOURCE_1")
    project(ledger)
    if refused_by_mariadb(ledger, "recordsFetched = 'many'"):
        return
    ledger.append([RunProgressed(run_id=run_id, records_fetched=3)])
    named = f"ingestion_runs row of run {run_id} cannot be read: recordsFetched is 'many'"
    with pytest.raises(StoredRowError, match=named):
        project(ledger)
    assert Projector(ledger).checkpoint().position == 1  # nothing applied on top of it
    with pytest.raises(StoredRowError, match=named):
        get_run(ledger, run_id)
    with pytest.raises(StoredRowError, match=named):
        find_runs(ledger, RunFilter())
    rebuild(ledger)
    assert table_rows(ledger)[run_id]["recordsFetched"] == 3


def test_a_follower_waits_out_a_row_edited_by_hand_until_a_rebuild(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    """`project --follow` died at such a row (exit 1), where `serve`'s projector waits it out:
    it now retries it as an outage (one WARNING), and goes on by itself after a rebuild."""
    run_id = ledger.start_run(1, "SOURCE_1")
    project(ledger)
    edit_started_at_by_hand(ledger)
    ledger.append([RunFinished(run_id=run_id, status="success")])
    projector = Projector(ledger)
    stop = threading.Event()
    failed: list[BaseException] = []

    def follow() -> None:
        try:
            projector.follow(stop, 0.01)
        except BaseException as exc:
            failed.append(exc)

    follower = threading.Thread(target=follow)
    with caplog.at_level(logging.WARNING, logger="projections.projector"):
        follower.start()
        try:
            wait_until(lambda: "cannot proceed" in caplog.text or bool(failed))
            assert not failed, failed
            assert f"ingestion_runs row of run {run_id}" in caplog.text
            rebuild(ledger)
            later = ledger.start_run(2, "SOURCE_2")
            wait_until(lambda: later in table_rows(ledger) or bool(failed))
        finally:
            stop.set()
            follower.join(timeout=60)
    assert not follower.is_alive()
    assert not failed, failed
    assert table_rows(ledger)[run_id]["status"] == "success"
    assert caplog.text.count("cannot proceed") == 1


def wait_until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.01)


def test_status_enum_is_enforced_by_the_database(ledger: Ledger) -> None:
    ledger.start_run(1, "SOURCE_1")
    project(ledger)
    with pytest.raises(DBAPIError), ledger.engine.begin() as conn:
        conn.execute(text("UPDATE ingestion_runs SET status = 'stuck'"))


# ---------------------------------------------------------------- I7 exactly once


def test_i7_rows_and_checkpoint_commit_together(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id, records_fetched=3)])
    original = writer_module.ReadModelWriter.apply

    def crash_after_writing(self, conn, events, skipped):  # type: ignore[no-untyped-def]
        original(self, conn, events, skipped)
        raise RuntimeError("killed after writing rows, before the checkpoint")

    monkeypatch.setattr(writer_module.ReadModelWriter, "apply", crash_after_writing)
    with pytest.raises(RuntimeError):
        project(ledger)
    monkeypatch.undo()
    projector = Projector(ledger)
    assert projector.checkpoint().position == 0
    assert table_rows(ledger) == {}
    assert projector.run_once() == 2
    assert table_rows(ledger)[run_id]["recordsFetched"] == 3


def test_i7_rerunning_applies_nothing_twice(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id, records_fetched=3)])
    assert project(ledger) == 2
    assert project(ledger) == 0
    assert table_rows(ledger)[run_id]["recordsFetched"] == 3


def test_two_projectors_in_threads_never_double_count(ledger: Ledger) -> None:
    run_ids = [ledger.start_run(1, f"c{i}") for i in range(5)]
    for _ in range(40):
        ledger.append([RunProgressed(run_id=r, records_fetched=1) for r in run_ids])
    counts: list[int] = []

    def work() -> None:
        counts.append(Projector(Ledger.from_url(ledger.url), batch_size=7).run_once())

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 205
    assert {row["recordsFetched"] for row in table_rows(ledger).values()} == {40}


def test_a_batch_another_projector_committed_first_is_not_counted_twice(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint's compare-and-set (issue 18): on a Galera cluster the named lock holds on
    one node only, and another node's projector may commit the same batch while this one
    applies it; once replicated, its rows and its checkpoint are what this transaction's
    writes see. Played here on one connection: the other projector's batch applied and its
    checkpoint written inside this one's transaction. The write of the checkpoint then finds
    it moved, the transaction is rolled back and the batch read again: counted once. Without
    the compare-and-set (the cluster tests pass without it: certification caught their
    races) this commits every count twice."""
    run_id = ledger.start_run(1, "SOURCE_1")
    project(ledger)
    ledger.append([RunProgressed(run_id=run_id, records_fetched=5) for _ in range(3)])
    projector = Projector(ledger)
    real_apply = projector.writer.apply
    raced: list[int] = []

    def another_projector_first(conn: Any, events: Any, skipped: Any) -> Any:
        if not raced:
            theirs = real_apply(conn, events, skipped)
            conn.execute(
                text("UPDATE projection_checkpoints SET position = :p WHERE name = :n"),
                {"p": theirs.last_position, "n": projector.name},
            )
            raced.append(theirs.last_position)
        return real_apply(conn, events, skipped)

    monkeypatch.setattr(projector.writer, "apply", another_projector_first)
    assert projector.run_once() == 3
    assert raced == [ledger.head().last_position]
    assert table_rows(ledger) == replayed_rows(ledger)
    row, _ = get_run(ledger, run_id)
    assert row is not None
    assert row["recordsFetched"] == 15  # not 30


def test_a_follower_losing_every_batch_to_another_projector_stops_at_once(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A projector on another Galera node keeps moving the checkpoint: this one retries the
    batch (up to a minute), but a shutdown ends the retries instead of waiting them out."""
    ledger.start_run(1, "contested")
    projector = Projector(ledger)
    attempts = threading.Semaphore(0)

    def lost(one_by_one: bool) -> tuple[int, bool]:
        attempts.release()
        raise CheckpointMovedError("another projector advanced the checkpoint first")

    monkeypatch.setattr(projector, "_apply_batch", lost)
    stop = threading.Event()
    follower = threading.Thread(target=projector.follow, args=(stop,))
    follower.start()
    try:
        for _ in range(3):  # it is retrying
            assert attempts.acquire(timeout=30)
    finally:
        stop.set()
        follower.join(timeout=5)  # before the fix: the rest of the minute's retries
    assert not follower.is_alive()


# ---------------------------------------------------------------- I8 deterministic replay


def test_i8_one_pass_small_batches_and_rebuild_agree(ledger: Ledger) -> None:
    with freeze_time(at(500)):
        for i in range(6):
            run_id = ledger.start_run(i, f"c{i % 2}", occurred_at=at(i))
            ledger.append([RunProgressed(run_id=run_id, occurred_at=at(i + 1), records_fetched=i)])
            if i % 3 == 0:
                ledger.append([RunFinished(run_id=run_id, occurred_at=at(i + 2), status="success")])
            elif i % 3 == 1:
                ledger.append(
                    [
                        RunTimedOut(
                            run_id=run_id,
                            occurred_at=at(i + 90),
                            reason="stale",
                            detected_by="sweeper",
                            threshold_seconds=3600,
                        ),
                        RunFinished(run_id=run_id, occurred_at=at(i + 95), status="failed"),
                    ]
                )
    project(ledger, batch_size=1)
    small_batches, small_transitions = table_rows(ledger), transition_rows(ledger)
    assert small_batches == replayed_rows(ledger)
    result = rebuild(ledger, batch_size=4)
    assert result.events == ledger.head().last_position
    assert table_rows(ledger) == small_batches
    assert transition_rows(ledger) == small_transitions
    assert Projector(ledger).checkpoint().position == result.position


# ---------------------------------------------------------------- poison events


def test_a_poison_event_stops_the_projector_until_skipped(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    poison = append_raw(ledger, run_id, "RunPaused", '{"why":"newer writer"}')
    ledger.append([RunProgressed(run_id=run_id, records_fetched=4)])
    projector = Projector(ledger)
    with pytest.raises(PoisonEventError, match=f"position {poison} \\(RunPaused\\)") as caught:
        projector.run_once()
    assert (caught.value.position, caught.value.event_type) == (poison, "RunPaused")
    assert projector.checkpoint().position == poison - 1  # what came before it is applied
    assert table_rows(ledger)[run_id]["recordsFetched"] == 0  # nothing after it
    status = ledger_status(ledger).projections[0]
    assert (status.checkpoint.error_position, status.checkpoint.error_type) == (poison, "RunPaused")
    with pytest.raises(PoisonEventError):
        projector.run_once()  # still stopped
    with pytest.raises(PoisonEventError):
        projector.wait_for(poison + 1, timeout=5)
    projector.skip(poison, reason="written by a newer run-ledger; harmless", actor="operator:al")
    assert projector.run_once() == 2
    assert table_rows(ledger)[run_id]["recordsFetched"] == 4
    status = ledger_status(ledger).projections[0]
    assert status.checkpoint.error_position is None
    assert [(s.position, s.actor, s.event_type) for s in status.skips] == [
        (poison, "operator:al", "RunPaused")
    ]
    assert rebuild(ledger).events == poison + 1  # rebuild honours the skip too
    assert table_rows(ledger)[run_id]["recordsFetched"] == 4


@pytest.mark.parametrize("reason", ["  ", "\x00", "\u200b\u2060"])
def test_a_skip_reason_that_shows_nothing_is_refused(ledger: Ledger, reason: str) -> None:
    """A skip hides an event from the projection for good: its reason is what an auditor reads
    in its place, so one that prints as nothing is refused as an empty one is."""
    run_id = ledger.start_run(1, "SOURCE_1")
    poison = append_raw(ledger, run_id, "RunPaused", '{"why":"newer writer"}')
    projector = Projector(ledger)
    with pytest.raises(ValidationError, match="a skip needs a reason"):
        projector.skip(poison, reason=reason, actor="operator:al")
    assert ledger_status(ledger).projections[0].skips == []


def test_skips_are_checked(ledger: Ledger) -> None:
    ledger.start_run(1, "SOURCE_1")
    projector = Projector(ledger)
    with pytest.raises(ValidationError, match="no event at position 5"):
        projector.skip(5, "x", "operator:al")
    with pytest.raises(ValidationError, match="reason"):
        projector.skip(1, "  ", "operator:al")
    with pytest.raises(ValidationError, match="no name after 'operator:'"):
        projector.skip(1, "x", "operator:")  # an operator's act by no one (issue 15)
    projector.run_once()
    with pytest.raises(ValidationError, match="already applied"):
        projector.skip(1, "x", "operator:al")


def test_only_the_position_the_projection_stopped_at_can_be_skipped(ledger: Ledger) -> None:
    """A skip of a good pending event would hide it (its run `running` in the table for good,
    verify clean): refused, as are a reason and an actor the skips table cannot hold, on both
    databases alike."""
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunFinished(run_id=run_id, status="success")])
    projector = Projector(ledger)
    with pytest.raises(
        ValidationError, match="the projection has not stopped on an event, and its"
    ):
        projector.skip(2, "hide it", "operator:al")
    with pytest.raises(ValidationError, match="reason: at most 2000 characters, got 70000"):
        projector.skip(2, "r" * 70_000, "operator:al")
    with pytest.raises(ValidationError, match="at most 200 characters, got 204"):
        projector.skip(2, "x", "operator:" + "a" * 195)
    poison = append_raw(ledger, run_id, "RunPaused", "{}")
    later = ledger.start_run(2, "SOURCE_2")
    with pytest.raises(PoisonEventError):
        projector.run_once()
    with pytest.raises(ValidationError, match=f"the projection stopped at position {poison}"):
        projector.skip(poison + 1, "the next one", "operator:al")
    projector.skip(poison, "a newer writer's type", "operator:al")
    assert projector.run_once() == 2  # the skipped position and the run after it
    assert table_rows(ledger)[run_id]["status"] == "success"
    assert table_rows(ledger)[later]["status"] == "running"


# ---------------------------------------------------------------- read-your-writes


def test_wait_for_returns_once_applied_and_times_out_otherwise(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    projector = Projector(ledger)
    with pytest.raises(ProjectionTimeoutError, match="is a projector running"):
        projector.wait_for(1, timeout=0)
    stop = threading.Event()
    follower = threading.Thread(target=projector.follow, args=(stop, 0.01))
    follower.start()
    try:
        position = ledger.append([RunFinished(run_id=run_id, status="success")]).last_position
        assert position is not None
        projector.wait_for(position, timeout=30)
        assert table_rows(ledger)[run_id]["status"] == "success"
    finally:
        stop.set()
        follower.join(timeout=30)
    assert not follower.is_alive()


# ---------------------------------------------------------------- point in time


def test_as_of_shows_running_before_the_timeout_and_failed_after(ledger: Ledger) -> None:
    with freeze_time("2026-01-28 01:12:44"):
        run_id = ledger.start_run(2, "SOURCE_2")
    with freeze_time("2026-02-01 23:33:44"):
        ledger.append(
            [
                RunTimedOut(
                    run_id=run_id,
                    reason="stale",
                    detected_by="sweeper",
                    threshold_seconds=3600,
                    last_event_at=T0,
                )
            ]
        )
    before = resolve_position(ledger, datetime(2026, 1, 30, tzinfo=UTC), None)
    after = resolve_position(ledger, datetime(2026, 2, 2, tzinfo=UTC), None)
    assert (before, after) == (1, 2)
    assert resolve_position(ledger, datetime(2026, 1, 1, tzinfo=UTC), None) == 0
    row, transitions = run_as_of(ledger, run_id, before)
    assert row is not None
    assert (row["status"], row["completedAt"], row["duration"]) == ("running", None, None)
    assert [t.to_status for t in transitions] == ["running"]
    row, _ = run_as_of(ledger, run_id, after)
    assert row is not None
    assert row["status"] == "failed"
    assert row["duration"] == 426_060
    assert runs_as_of(ledger, before)[run_id]["status"] == "running"
    assert table_rows(ledger) == {}  # point-in-time reads write nothing
    assert run_as_of(ledger, run_id, 0) == (None, [])


def test_position_at_is_a_binary_search_over_recorded_at(ledger: Ledger) -> None:
    for day in range(1, 8):
        with freeze_time(datetime(2026, 3, day, 12, tzinfo=UTC)):
            ledger.start_run(1, "SOURCE_1")
    assert ledger.position_at(datetime(2026, 3, 4, 12, tzinfo=UTC)) == 4
    assert ledger.position_at(datetime(2026, 3, 4, 11, tzinfo=UTC)) == 3
    assert ledger.position_at(datetime(2026, 2, 1, tzinfo=UTC)) == 0
    assert ledger.position_at(datetime(2027, 1, 1, tzinfo=UTC)) == 7


# ---------------------------------------------------------------- status


def test_status_reports_lag_and_open_runs(ledger: Ledger) -> None:
    with freeze_time("2026-03-01 12:00:00"):
        ledger.start_run(1, "SOURCE_1")
        ledger.start_run(2, "SOURCE_2")
    with freeze_time("2026-03-01 12:00:30"):
        report = ledger_status(ledger)
    assert (report.head_position, report.open_runs) == (2, 2)
    projection = report.projections[0]
    assert (projection.lag_events, projection.lag_seconds) == (2, 30.0)
    project(ledger)
    projection = ledger_status(ledger).projections[0]
    assert (projection.checkpoint.position, projection.lag_events, projection.lag_seconds) == (
        2,
        0,
        0.0,
    )


def test_run_started_events_alone_are_not_all(ledger: Ledger) -> None:
    """A guard for the helpers above: the table really is read back, not the replay."""
    ledger.append([RunStarted(source_id=1, connector_name="x")])
    assert table_rows(ledger) == {}
    project(ledger)
    assert set(table_rows(ledger)) == {1}


NOT_JSON_OBJECTS = {
    "not JSON": ('{"records_fetched": 1', "not JSON"),
    "null": ("null", "not a JSON object"),
    "a list": ("[1]", "not a JSON object"),
    "a string": ('"ab"', "not a JSON object"),
    "nested too deep to read": ("[" * 100_000 + "]" * 100_000, "not JSON"),
}


@pytest.mark.parametrize("payload", NOT_JSON_OBJECTS)
def test_a_stored_payload_that_is_not_a_json_object_is_poison_not_a_crash(
    ledger: Ledger, payload: str
) -> None:
    """A row no append of this ledger wrote (a foreign writer, a hand edit) whose payload is
    not a JSON object stops the projection at that event, recorded and skippable, like any
    poison; the follower goes on retrying instead of dying with a TypeError."""
    text, says = NOT_JSON_OBJECTS[payload]
    run_id = ledger.start_run(1, "c")
    position = append_raw(ledger, run_id, "RunProgressed", text)
    projector = Projector(ledger)
    with pytest.raises(PoisonEventError) as raised:
        projector.run_once()
    assert raised.value.position == position
    assert says in str(raised.value)
    assert projector.checkpoint().position == position - 1
    with pytest.raises(ValidationError, match=says):
        _ = list(ledger.read_all())[-1].event


def test_a_payload_that_no_longer_validates_is_poison(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    bad = append_raw(ledger, run_id, "RunProgressed", '{"records_fetched":-5}')
    with pytest.raises(PoisonEventError, match=f"position {bad} \\(RunProgressed\\)"):
        Projector(ledger).run_once()


def test_an_upcaster_resolves_a_newer_schema_version(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledger import mapper

    run_id = ledger.start_run(1, "SOURCE_1")
    newer = append_raw(ledger, run_id, "RunProgressed", '{"fetched":9}', schema_version=2)
    projector = Projector(ledger)
    with pytest.raises(PoisonEventError, match="schema_version 2 is newer"):
        projector.run_once()
    # The fix ships: RunProgressed is now at schema 2, and schema 2 spelled the counter "fetched".
    monkeypatch.setitem(mapper.CURRENT_SCHEMA_VERSIONS, "RunProgressed", 3)
    monkeypatch.setattr(mapper, "_UPCASTERS", {})
    mapper.register_upcaster("RunProgressed", 1)(lambda payload: payload)
    mapper.register_upcaster("RunProgressed", 2)(
        lambda payload: {"records_fetched": payload.pop("fetched"), **payload}
    )
    assert projector.run_once() == 1
    assert projector.checkpoint().position == newer
    assert table_rows(ledger)[run_id]["recordsFetched"] == 9


def test_a_replay_as_of_a_position_reads_nothing_past_it_even_over_a_gap(
    ledger: Ledger,
) -> None:
    """A row deleted around the append path (verify names it): the replay up to position N
    must still stop at N, not read N events and so one past it."""
    first = ledger.start_run(1, "c")
    ledger.append([RunProgressed(run_id=first, records_fetched=1)])
    ledger.append([RunProgressed(run_id=first, records_fetched=1)])
    second = ledger.start_run(2, "d")  # position 4
    drop_triggers(ledger.engine)
    with ledger.engine.begin() as conn:
        conn.execute(text("DELETE FROM ledger_events WHERE position = 2"))
    rows = runs_as_of(ledger, 3)
    assert second not in rows
    assert rows[first]["recordsFetched"] == 1
