"""The ledger's clock steps backwards (an NTP correction on the SQLite host or the database
server) while facts wait in a connector's spool, or while a connector is running: they are
dated ahead of the stepped clock, so the guard (I10, against the ledger's clock itself) refuses
them for now, but the spool keeps them and delivers them once the clock catches up, never
setting them aside for good (I9)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from freezegun import freeze_time

from connectors.sdk import RunContext
from connectors.spool import Spool
from forensics.verify import verify_all
from ledger import Ledger, RunFinished, RunProgressed, stuck_runs
from ledger.batch_checks import MAX_CLOCK_SKEW
from ledger.clock import utcnow
from projections import Projector, rebuild
from tests.projection_support import table_rows
from tests.reliability.summary import Summary

BEFORE_STEP = datetime(2026, 1, 28, 1, 12, 44, tzinfo=UTC)
STEP_BACK = timedelta(minutes=10)  # twice the 5-minute clock skew guard


def test_spooled_facts_from_before_a_clock_step_back_are_delivered(
    ledger: Ledger, backend: str, tmp_path: Path, reliability: Summary
) -> None:
    spool = Spool(tmp_path / "spool")
    with freeze_time(BEFORE_STEP):
        run_id = ledger.start_run(1, "SOURCE_1")
        # The ledger became unreachable: the SDK spools what the run reports, as it happens.
        spool.put(
            [
                RunProgressed(run_id=run_id, records_fetched=7, records_created=5),
                RunFinished(run_id=run_id, status="success"),
            ]
        )
    with freeze_time(BEFORE_STEP - STEP_BACK + timedelta(seconds=30)):  # the clock stepped back
        # Ahead of the ledger's clock by more than the guard: kept, in order, not set aside.
        waiting = spool.flush(ledger)
        stuck_meanwhile = stuck_runs(ledger)
    with freeze_time(BEFORE_STEP - MAX_CLOCK_SKEW):  # the clock has caught up with the guard
        flushed = spool.flush(ledger)
        stuck = stuck_runs(ledger)

    assert (waiting.delivered, waiting.rejected, waiting.remaining) == (0, 0, 2)
    assert stuck_meanwhile == []
    assert (flushed.delivered, flushed.rejected, flushed.remaining) == (2, 0, 0)
    assert spool.status().rejected == 0
    state = ledger.run(run_id)
    assert state is not None
    assert (state.state, state.version, state.last_event_at) == ("finished", 3, BEFORE_STEP)
    assert stuck == []
    assert verify_all(ledger).ok
    Projector(ledger).run_once()
    projected = table_rows(ledger)
    assert (projected[run_id]["status"], projected[run_id]["recordsFetched"]) == ("success", 7)
    rebuild(ledger)
    assert table_rows(ledger) == projected
    reliability.record(
        "clock stepped back",
        backend,
        f"a run's RunProgressed and RunFinished spooled, then the ledger's clock stepped back "
        f"{int(STEP_BACK.total_seconds() // 60)} minutes (twice the skew guard) before the "
        "spool was flushed",
        "none set aside as refused: kept in the spool while ahead of the ledger's clock (the "
        "guard measures against the clock itself), both delivered once it caught up; the run "
        "is finished, not stuck; verify passes, projection = rebuild",
    )


def test_a_live_runs_facts_met_by_a_clock_step_back_wait_in_the_spool(
    db_url: str, backend: str, tmp_path: Path, reliability: Summary
) -> None:
    """The database server's clock steps back while a connector runs on a host whose clock
    did not: its next reports and its end are dated ahead of the ledger's clock. They wait in
    the spool like the flush's, and are delivered once the clock catches up: the run was
    closed for good instead (its facts set aside as refused, left open for the sweeper)."""
    step_back = [timedelta(0)]
    behind = Ledger.from_url(db_url, clock=lambda: utcnow() - step_back[0])
    spool = Spool(tmp_path / "spool")
    try:
        with freeze_time(BEFORE_STEP):
            context = RunContext(
                behind, 1, "SOURCE_1", spool=spool, progress_interval=0, heartbeat_interval=3600
            )
            with context as run:
                run.progress(fetched=5, created=5)
                step_back[0] = STEP_BACK  # the database server's clock stepped back
                run.progress(fetched=7, created=6, skipped=1)
                run.error("row 12 malformed", {"line": 12})
            waiting = spool.status()
            stuck_meanwhile = stuck_runs(behind)
            step_back[0] = MAX_CLOCK_SKEW  # it has caught up with the guard
            flushed = spool.flush(behind)
    finally:
        behind.close()

    result = context.result
    assert result is not None
    assert (result.status, result.spooled, result.error_count) == ("partial", True, 1)
    assert (waiting.pending, waiting.rejected) == (2, 0)
    assert stuck_meanwhile == []
    assert (flushed.delivered, flushed.rejected, flushed.remaining) == (2, 0, 0)
    ledger = Ledger.from_url(db_url)
    try:
        state = ledger.run(result.run_id)
        assert state is not None
        assert (state.state, state.version) == ("finished", 4)
        assert verify_all(ledger).ok
        Projector(ledger).run_once()
        projected = table_rows(ledger)[result.run_id]
        assert (projected["status"], projected["recordsFetched"], projected["recordsCreated"]) == (
            "partial",
            12,
            11,
        )
        rebuild(ledger)
        assert table_rows(ledger)[result.run_id] == projected
    finally:
        ledger.close()
    reliability.record(
        "clock stepped back under a live run",
        backend,
        f"the ledger's clock stepped back {int(STEP_BACK.total_seconds() // 60)} minutes while "
        "a RunContext ran on a host whose clock did not: a report, an error and its end",
        "the RunProgressed and the partial RunFinished waited in the spool (none set aside, "
        "no RunClosedError), delivered once the clock caught up: the run finished with its "
        "counts, verify passes, projection = rebuild",
    )
