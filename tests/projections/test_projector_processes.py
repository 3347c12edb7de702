"""The projector as separate processes: killed with SIGKILL at random moments (I7), two at
once, a rebuild killed mid-way, a MySQL swap interrupted after its RENAME (and what verify and
status say before a projector finishes it), a swap held up by another session's open
transaction, and SIGTERM."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from freezegun import freeze_time
from sqlalchemy import func, select

from forensics.verify import verify_all
from ledger import Ledger, RunFinished, RunProgressed
from projections import Projector, ledger_status, rebuild
from projections.errors import SwapBlockedError
from projections.rebuild_claims import LOCAL_TTL
from projections.schema import rebuild_claims
from tests.projection_support import replayed_rows, table_rows, transition_rows
from tests.support import stop_process, wait_for_exit

pytestmark = [pytest.mark.slow, pytest.mark.processes]
REPO = Path(__file__).resolve().parents[2]


def ledger_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from service.cli import main; main()", *args]


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ledger_command(*args), cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


class Appender(threading.Thread):
    """Appends progress (and now and then a finish plus a new run) until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.ledger = Ledger.from_url(url)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            run_ids = [self.ledger.start_run(1, f"c{i}") for i in range(4)]
            step = 0
            while not self.stop.is_set():
                step += 1
                run_id = run_ids[step % len(run_ids)]
                if step % 25 == 0:
                    self.ledger.append([RunFinished(run_id=run_id, status="success")])
                    run_ids[step % len(run_ids)] = self.ledger.start_run(1, "c")
                else:
                    self.ledger.append(
                        [
                            RunProgressed(run_id=run_id, records_fetched=1)
                            for _ in range(step % 4 + 1)
                        ]
                    )
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            self.ledger.close()


def test_i7_sigkill_at_random_moments_then_restart_equals_a_fresh_rebuild(
    ledger: Ledger, db_url: str
) -> None:
    rng = random.Random(7)
    appender = Appender(db_url)
    appender.start()
    kills = 0
    try:
        for _ in range(12):
            process = spawn(
                "-vv",
                "project",
                "--follow",
                "--batch-size",
                str(rng.choice([3, 50])),
                "--interval",
                "0.01",
                "--db",
                db_url,
            )
            wanted = rng.randint(1, 4)  # kill after a few committed batches: mid-way in the next
            try:
                assert process.stderr is not None
                seen = 0
                for line in process.stderr:
                    if "projected" in line:
                        seen += 1
                        if seen >= wanted:
                            break
            finally:  # the kill the test is about, and on a failure above
                _out, err = stop_process(process, signal.SIGKILL)
            assert process.returncode == -signal.SIGKILL, err
            kills += 1
    finally:
        appender.stop.set()
        appender.join(timeout=60)
    assert appender.error is None, appender.error
    assert kills >= 10
    Projector(ledger).run_once()
    assert Projector(ledger).checkpoint().position == ledger.head().last_position
    incremental, transitions = table_rows(ledger), transition_rows(ledger)
    assert incremental == replayed_rows(ledger)
    rebuild(ledger)
    assert table_rows(ledger) == incremental
    assert transition_rows(ledger) == transitions


def test_two_projector_processes_at_once_count_exactly(ledger: Ledger, db_url: str) -> None:
    run_ids = [ledger.start_run(1, f"c{i}") for i in range(10)]
    for _ in range(60):
        ledger.append(
            [RunProgressed(run_id=r, records_fetched=1, records_created=2) for r in run_ids]
        )
    total = ledger.head().last_position
    processes = [spawn("project", "--batch-size", "5", "--db", db_url) for _ in range(2)]
    applied = 0
    try:
        for process in processes:
            out, err = wait_for_exit(process, timeout=300)
            assert process.returncode == 0, err
            applied += int(out.split()[1])
    finally:  # one failed or hung: the other is stopped too
        for process in processes:
            stop_process(process)
    assert applied == total
    rows = table_rows(ledger)
    assert {(r["recordsFetched"], r["recordsCreated"]) for r in rows.values()} == {(60, 120)}


def test_a_rebuild_killed_midway_leaves_the_live_tables_untouched(
    ledger: Ledger, db_url: str
) -> None:
    run_ids = [ledger.start_run(1, f"c{i}") for i in range(20)]
    for _ in range(100):
        ledger.append([RunProgressed(run_id=r, records_fetched=1) for r in run_ids])
    Projector(ledger).run_once()
    before, transitions = table_rows(ledger), transition_rows(ledger)
    process = spawn("rebuild", "--batch-size", "10", "--db", db_url)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if line.startswith("replayed") and not line.startswith("replayed 0/"):
                break
    finally:  # the kill the test is about, and on a failure above
        stop_process(process, signal.SIGKILL)
    assert table_rows(ledger) == before
    assert transition_rows(ledger) == transitions
    with ledger.engine.connect() as conn:  # its claim outlives it ...
        assert conn.execute(select(func.count()).select_from(rebuild_claims)).scalar() == 1
    # ... and is taken over once it missed a renewal: starts cleanly over the leftovers
    with freeze_time(datetime.now(UTC) + LOCAL_TTL):
        result = rebuild(ledger)
    assert result.events == ledger.head().last_position
    assert table_rows(ledger) == before
    with ledger.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(rebuild_claims)).scalar() == 0


def test_a_mysql_swap_interrupted_after_rename_is_finished_by_the_next_projector(
    ledger: Ledger, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend != "mysql":
        pytest.skip("SQLite swaps in one transaction; only MySQL's RENAME commits on its own")
    import projections.dialects as rebuild_module

    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id, records_fetched=5)])
    Projector(ledger).run_once()
    ledger.append([RunProgressed(run_id=run_id, records_fetched=7)])

    def die(*_args: object) -> None:
        raise KeyboardInterrupt("killed between RENAME and the checkpoint update")

    monkeypatch.setattr(rebuild_module, "finish_swap", die)
    with pytest.raises(KeyboardInterrupt):
        rebuild(ledger)
    monkeypatch.undo()
    checkpoint = Projector(ledger).checkpoint()
    assert (checkpoint.position, checkpoint.rebuild_position) == (2, 3)
    assert table_rows(ledger)[run_id]["recordsFetched"] == 12  # the swapped-in shadow
    # Before any projector settles it, the readers take the live tables at the marked position:
    # no "row exists but no event created it", no lag that is not there.
    assert verify_all(ledger).problems == []
    status = ledger_status(ledger).projections[0]
    assert (status.checkpoint.position, status.lag_events) == (3, 0)
    assert Projector(ledger).run_once() == 0  # recovers: moves the checkpoint, re-applies nothing
    assert Projector(ledger).checkpoint().position == 3
    assert table_rows(ledger)[run_id]["recordsFetched"] == 12
    rebuild(ledger)  # and the next rebuild clears the __old leftovers
    assert table_rows(ledger)[run_id]["recordsFetched"] == 12


def test_a_mysql_swap_held_up_by_an_open_reader_gives_up_and_leaves_the_live_tables(
    ledger: Ledger, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A legacy reader with autocommit off keeps the metadata lock of ingestion_runs for as
    long as its transaction is open; every reader queues behind a RENAME waiting for it. The
    swap waits a bounded time, a bounded number of times, then says who holds it up."""
    if backend != "mysql":
        pytest.skip("SQLite swaps in its write transaction; only MySQL waits for metadata locks")
    import projections.dialects as swap_module

    monkeypatch.setattr(swap_module, "SWAP_LOCK_WAIT_S", 1)
    monkeypatch.setattr(swap_module, "SWAP_PAUSE_S", 0.0)
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id, records_fetched=5)])
    Projector(ledger).run_once()
    before = table_rows(ledger)
    with ledger.engine.connect() as reader:
        reader.exec_driver_sql("SELECT COUNT(*) FROM ingestion_runs").all()  # stays open
        reader_id = reader.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one()
        with pytest.raises(SwapBlockedError, match=rf"open transaction: .*\b{reader_id} root@"):
            rebuild(ledger)
        reader.rollback()
    assert table_rows(ledger) == before
    checkpoint = Projector(ledger).checkpoint()
    assert (checkpoint.position, checkpoint.rebuild_position) == (2, None)
    with ledger.engine.connect() as conn:
        left = conn.exec_driver_sql("SHOW TABLES LIKE 'ingestion_run%%\\_\\_%%'").all()
    assert left == []  # no shadow or __old table left behind
    ledger.append([RunFinished(run_id=run_id, status="success")])
    assert rebuild(ledger).position == 3  # the reader gone, the swap goes through
    assert verify_all(ledger).problems == []


def test_sigterm_stops_follow_after_the_current_batch(ledger: Ledger, db_url: str) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id, records_fetched=1) for _ in range(30)])
    process = spawn(
        "-vv", "project", "--follow", "--batch-size", "4", "--interval", "0.01", "--db", db_url
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "following" in line:
                break
    finally:  # the SIGTERM the test is about; killed if it does not stop within 60 s
        _out, err = stop_process(process, signal.SIGTERM, timeout=60)
    assert process.returncode == 0, err
    assert "stopped after the current batch" in err
    checkpoint = Projector(ledger).checkpoint().position
    rows = table_rows(ledger)
    # The table holds exactly what the checkpoint says was applied: no half batch.
    assert (rows[run_id]["recordsFetched"] if rows else 0) == max(0, checkpoint - 1)
