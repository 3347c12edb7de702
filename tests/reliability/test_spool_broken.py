"""The connector host's spool file is broken (corrupted by a crash of the disk, overwritten by
hand) while the ledger is reachable. The spool is the fallback for an unreachable ledger: a run
that has nothing in it must still start, report and finish straight into the ledger, and one
whose own events wait there must not have its later events pass them (I9)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from connectors.sdk import RunContext
from connectors.spool import Spool
from forensics.verify import verify_all
from ledger import Ledger, RunProgressed, StorageError
from projections import Projector, rebuild
from service.cli import cli
from tests.projection_support import table_rows
from tests.reliability.summary import Summary


def _corrupt(spool: Spool) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{spool.path}{suffix}").unlink(missing_ok=True)
    spool.path.write_bytes(b"not a spool: the disk lost it\n" * 200)


def test_a_broken_spool_does_not_stop_runs_the_ledger_can_record(
    ledger: Ledger, backend: str, tmp_path: Path, reliability: Summary
) -> None:
    spool = Spool(tmp_path / "spool")
    earlier = ledger.start_run(1, "SOURCE_1")
    spool.put([RunProgressed(run_id=earlier, records_fetched=1)])  # an earlier outage
    assert spool.flush(ledger).delivered == 1  # delivered since: the file stays
    _corrupt(spool)

    with RunContext(ledger, 2, "SOURCE_2", spool=spool, progress_interval=0) as run:
        for _ in range(3):
            run.progress(fetched=4, created=2)
        run.error("one bad record")

    assert run.result is not None
    assert (run.result.status, run.result.spooled) == ("partial", False)
    events = ledger.read_run(run.run_id)
    assert [e.type for e in events] == ["RunStarted", *["RunProgressed"] * 3, "RunFinished"]
    assert len({e.event_id for e in events}) == len(events)
    assert ledger.run(run.run_id).state == "finished"  # type: ignore[union-attr]

    # A run whose own events wait in a spool that then breaks: its later events wait too.
    whole = Spool(tmp_path / "other-spool")
    stalled = RunContext(
        ledger, 3, "SOURCE_3", spool=whole, progress_interval=0, heartbeat_interval=3600
    )
    stalled.start()
    whole.put([RunProgressed(run_id=stalled.run_id, records_fetched=9)])
    assert stalled.result is not None
    stalled.result.spooled = True  # as the SDK marks a run after spooling for it
    _corrupt(whole)
    with pytest.raises(StorageError):
        stalled.progress(fetched=1)
    RunContext._open.discard(stalled)  # left open on purpose: not for the exit hook to close
    assert [e.type for e in ledger.read_run(stalled.run_id)] == ["RunStarted"]

    assert verify_all(ledger).ok
    Projector(ledger).run_once()
    projected = table_rows(ledger)
    assert projected[run.run_id]["recordsFetched"] == 12
    assert projected[stalled.run_id]["status"] == "running"  # visibly open: the sweeper's
    rebuild(ledger)
    assert table_rows(ledger) == projected
    reliability.record(
        "broken spool",
        backend,
        "the spool file of a connector host overwritten with garbage while the ledger is "
        "reachable; a run started, reported 3 times and finished; another run whose own "
        "events waited in a spool that then broke",
        "the first run started, reported and finished straight into the ledger (it was refused "
        "at start, 'not started: the ledger could not record it'); the other's later events "
        "did not pass its spooled ones: the error reached the connector and the run stayed "
        "open for the sweeper; verify passes, projection = rebuild",
    )


def test_a_damaged_row_is_set_aside_and_does_not_block_the_spool(
    ledger: Ledger, tmp_path: Path
) -> None:
    # One spooled row whose body is not JSON (a page damaged on disk, an edit by hand): every
    # flush raised JSONDecodeError before delivering anything, `ledger spool flush` gave a
    # traceback, and every RunContext on the host (which flushes before it appends) failed to
    # start with it. Now the row is rejected with the reason, the rest delivered in order.
    spool = Spool(tmp_path / "spool")
    earlier = ledger.start_run(1, "SOURCE_1")
    spool.put([RunProgressed(run_id=earlier, records_fetched=n) for n in (1, 2, 3)])
    with closing(sqlite3.connect(spool.path)) as conn, conn:
        conn.execute(
            "UPDATE spooled SET body = ? WHERE seq = (SELECT MIN(seq) FROM spooled)",
            ('{"type": "RunProgressed", "run_id": 1, "records_fe',),
        )

    with RunContext(ledger, 2, "SOURCE_2", spool=spool) as run:
        run.progress(fetched=5)

    assert finished_status(ledger, run.run_id) == "success"
    assert [e.payload_data["records_fetched"] for e in ledger.read_run(earlier)[1:]] == [2, 3]
    [rejected] = spool.rejected()
    assert str(rejected["reason"]).startswith("the spooled body is not JSON (Unterminated string")
    assert spool.status().pending == 0
    result = CliRunner().invoke(
        cli, ["spool", "status", "--spool-dir", str(spool.folder), "--wide"]
    )
    assert result.exit_code == 1  # the rejected row is shown, never dropped
    assert "the spooled body is not JSON" in result.output


def finished_status(ledger: Ledger, run_id: int) -> str:
    last = ledger.read_run(run_id)[-1]
    assert last.type == "RunFinished"
    return str(last.payload_data["status"])


def test_a_row_whose_run_cannot_be_looked_up_is_set_aside_and_closes_no_live_run(
    ledger: Ledger, tmp_path: Path
) -> None:
    # One spooled row whose run id was edited by hand (text where a run id goes): the flush's
    # look-up of the run it was written for was refused (ValidationError), and that refusal
    # was raised out of every flush. `ledger spool flush` exited 2 for ever ("run_id: a whole
    # number, got str 'one'"), no `ledger run` on the host could start, and a live run's next
    # report took it for the ledger refusing the run's own events: the run was "closed", its
    # counts and outcome set aside as refused for good, and it stayed running in the ledger.
    spool = Spool(tmp_path / "spool")
    earlier = ledger.start_run(1, "SOURCE_1")
    written_for = str(ledger.read_run(earlier)[0].event_id)
    run = RunContext(ledger, 2, "SOURCE_2", spool=spool, progress_interval=0)
    run.start()
    spool.put([RunProgressed(run_id=earlier, records_fetched=n) for n in (1, 2, 3)], written_for)
    with closing(sqlite3.connect(spool.path)) as conn, conn:
        conn.execute("UPDATE spooled SET run_id = 'one' WHERE seq = (SELECT MIN(seq) FROM spooled)")

    run.progress(fetched=5, created=5)
    assert run.finish().status == "success"

    assert [e.type for e in ledger.read_run(run.run_id)] == [
        "RunStarted",
        "RunProgressed",
        "RunFinished",
    ]
    assert [e.payload_data["records_fetched"] for e in ledger.read_run(earlier)[1:]] == [2, 3]
    [rejected] = spool.rejected()
    assert rejected["run_id"] == "one"
    assert str(rejected["reason"]).startswith(
        f"the run these events were written for (run 'one', RunStarted {written_for}) cannot "
        "be looked up in this ledger: run_id: a whole number"
    )
    assert spool.status().pending == 0

    # The same row met by `ledger spool flush`: set aside, the rest delivered, exit 1.
    other = Spool(tmp_path / "other-spool")
    other.put([RunProgressed(run_id=earlier, records_fetched=n) for n in (4, 5)], written_for)
    with closing(sqlite3.connect(other.path)) as conn, conn:
        conn.execute("UPDATE spooled SET run_id = 1.5 WHERE seq = (SELECT MIN(seq) FROM spooled)")
    result = CliRunner().invoke(
        cli, ["spool", "flush", "--spool-dir", str(other.folder), "--db", ledger.url]
    )
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout) == {
        "delivered": 1,
        "duplicates": 0,
        "rejected": 1,
        "remaining": 0,
    }
    assert ledger.read_run(earlier)[-1].payload_data["records_fetched"] == 5
