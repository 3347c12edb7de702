"""``ledger run --max-run-time``: a one-off run (a cron job's) that never ends is bounded as
serve's are. Past its bound it is asked to stop and ends ``failed`` naming the bound (exit 1);
one blocked in a read is timed out by the process itself after the grace period, which then
exits 1 with one line, never a traceback, never a hang. The bound is written as the config's."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import get_args

import pytest
from click.testing import CliRunner
from freezegun import freeze_time

from connectors import RunContext, Spool
from connectors.sdk import RunStatus
from ledger import Ledger, fail_run
from ledger.clock import utcnow
from ledger.events import COUNTER_FIELDS
from service import run_bound
from service.cli import cli
from service.run_bound import RunBound
from service.run_watchdog import timed_out_outcome
from tests.service.support import REPO, fifo_source, wait_for
from tests.support import stop_process


def test_ledger_run_past_max_run_time_is_asked_to_stop_and_ends_failed_naming_the_bound(
    ledger: Ledger, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process, on freezegun's clock: the run reads a source that never ends, the clock
    moves past its bound, and its next report stops it."""

    def progressed() -> bool:
        return any(e.type == "RunProgressed" for e in ledger.read_all())

    with (
        fifo_source(tmp_path, feed=True) as source,
        freeze_time(utcnow() - timedelta(hours=3)) as clock,
        monkeypatch.context() as patch,  # undone before freezegun stops, as it must be
    ):
        # The bound is measured on a monotonic clock, which freezegun leaves real in the
        # watchdog's thread (its ignore list holds `threading`): here the frozen clock's seconds.
        patch.setattr(run_bound, "monotonic", lambda: utcnow().timestamp())

        def move_past_the_bound() -> None:
            try:
                # The watchdog starts before the connector reads: a report means it counts.
                wait_for(progressed)
                run_id = next(iter(ledger.read_all())).run_id
                clock.tick(timedelta(hours=2))
                wait_for(lambda: ledger.run(run_id).state != "open")  # type: ignore[union-attr]
            finally:
                source.end()  # should the bound not act, the run ends (and the test fails)

        mover = threading.Thread(target=move_past_the_bound, daemon=True)
        mover.start()
        try:
            result = CliRunner().invoke(
                cli,
                [
                    "run",
                    "csv",
                    "--path",
                    str(source.path),
                    "--max-run-time",
                    "2h",
                    "--progress-interval",
                    "0",
                    "--spool-dir",
                    str(tmp_path / "spool"),
                    "--db",
                    db_url,
                ],
            )
        finally:
            source.end()
            mover.join(timeout=60)
    assert result.exit_code == 1, result.output
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "failed"
    assert outcome["error"] == "MaxRunTimeExceeded: exceeded max_run_time 2h"
    events = ledger.read_run(outcome["run_id"])
    assert [e.type for e in events][-1] == "RunFinished"
    assert "RunTimedOut" not in [e.type for e in events]  # it stopped itself
    assert events[-1].payload_data["error_message"] == outcome["error"]
    fetched = sum(e.payload_data.get("records_fetched", 0) for e in events)
    assert fetched == outcome["records_fetched"] > 0  # every count it reported is recorded


def bounded_run(path: Path, bound: str, db_url: str, tmp_path: Path) -> subprocess.Popen[str]:
    """``ledger run csv`` of ``path`` bounded to ``bound``, grace 1 s, as a process."""
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from service.cli import main; main()",
            "run",
            "csv",
            "--path",
            str(path),
            "--max-run-time",
            bound,
            "--grace-period",
            "1s",
            "--progress-interval",
            "0",
            "--spool-dir",
            str(tmp_path / "spool"),
            "--db",
            db_url,
        ],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def stop(process: subprocess.Popen[str]) -> None:
    """Killed if still running (a failed wait), and reaped."""
    stop_process(process, signal.SIGKILL)


def test_ledger_run_blocked_past_max_run_time_is_timed_out_and_the_command_exits(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    """A real process in real time (3 s bound, 1 s grace): its csv source sends 500 rows, then
    nothing, for ever; the read blocks, so the run never reports again. The process appends
    RunTimedOut (its own actor, the bound as the threshold), prints the outcome and one line,
    and exits 1, though its main thread is still blocked. (The bound leaves the run seconds to
    store and report its 500 rows: past it, that report would stop the run itself.)"""
    with fifo_source(tmp_path, feed=False) as source:
        source.write("".join(f"{i},x\n" for i in range(500)))  # one batch, then the read blocks
        process = bounded_run(source.path, "3s", db_url, tmp_path)
        try:
            stdout, stderr = process.communicate(timeout=60)
        finally:
            stop(process)
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    reason = (
        "exceeded max_run_time 3s; the connector did not stop within 1s of being asked "
        "(blocked in a call?)"
    )
    outcome = json.loads(stdout)
    run_id = outcome["run_id"]
    assert stderr.splitlines()[-1] == f"Error: run {run_id} timed out: {reason}"
    assert (outcome["status"], outcome["error"]) == ("timed_out", reason)
    assert outcome["records_fetched"] == 500
    state = ledger.run(run_id)
    assert state is not None
    assert state.state == "timed_out"
    events = ledger.read_run(run_id)
    assert [e.type for e in events] == ["RunStarted", "RunProgressed", "RunTimedOut"]
    assert events[1].payload_data["records_fetched"] == 500  # sent before it blocked
    timed_out = events[2]
    actor = f"ledger-run:{socket.gethostname()}:{process.pid}"
    assert (timed_out.actor, timed_out.payload_data["detected_by"]) == (actor, actor)
    assert timed_out.payload_data["reason"] == reason
    assert timed_out.payload_data["threshold_seconds"] == 3


def test_the_outcome_of_a_run_timed_out_is_the_watchdogs_with_a_declared_status(
    ledger: Ledger, tmp_path: Path
) -> None:
    """What ``ledger run`` prints of a run it timed out is built by the library
    (``run_watchdog.timed_out_outcome``: what the run reported, status ``timed_out``, the
    bound's reason), not by the CLI, and its status is one ``RunResult`` declares."""
    context = RunContext(ledger, 4, "csv", spool=Spool(tmp_path / "spool"), progress_interval=0)
    context.start()
    try:
        context.progress(fetched=7)
        context.error("bad row", {"line": 3})
        bound = RunBound(timedelta(seconds=3), timedelta(seconds=1))
        outcome = timed_out_outcome(context, bound)
    finally:
        context.finish()
    assert outcome.to_dict() == {
        "run_id": context.run_id,
        "connector": "csv",
        "source_id": 4,
        "status": "timed_out",
        **dict.fromkeys(COUNTER_FIELDS, 0),
        "records_fetched": 7,
        "error_count": 1,
        "spooled": False,
        "error": bound.reason(),
    }
    assert set(get_args(RunStatus)) == {"success", "partial", "failed", "closed", "timed_out"}


def test_ledger_run_blocked_past_max_run_time_exits_though_its_run_was_closed_meanwhile(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    """An operator fails the blocked run by hand (`ledger runs fail`) before its bound: the
    process has nothing left to time out, but its connector is still blocked, so it still
    ends, naming what happened, instead of waiting for a read that never returns."""
    with fifo_source(tmp_path, feed=False) as source:
        process = bounded_run(source.path, "3s", db_url, tmp_path)
        try:
            wait_for(lambda: ledger.head().last_position >= 1)  # its RunStarted
            (started,) = ledger.read_all()
            fail_run(ledger, started.run_id, "stuck on a FIFO", "alice")
            stdout, stderr = process.communicate(timeout=60)
        finally:
            stop(process)
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert stdout == ""  # no outcome of its own to print: the run's end is the operator's
    assert stderr.splitlines()[-1] == (
        f"Error: run {started.run_id} was closed meanwhile, and its connector did not stop "
        "within 1s of being asked to (past max_run_time 3s)"
    )
    events = ledger.read_run(started.run_id)
    assert [e.type for e in events] == ["RunStarted", "RunTimedOut"]
    assert events[1].actor == "operator:alice"  # the process appended nothing more


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--max-run-time", "0"], "'--max-run-time': '0' is not a duration"),
        (["--max-run-time", "0s"], "'--max-run-time': '0s' must be longer than zero"),
        (["--max-run-time", "soon"], "'--max-run-time': 'soon' is not a duration"),
        (["--max-run-time", "3651d"], "'--max-run-time': '3651d' is longer than 3650 days"),
        (["--max-run-time", "1h", "--grace-period", "-1s"], "'--grace-period': '-1s' is not"),
        (["--grace-period", "5s"], "--grace-period bounds the end of a run past --max-run-time"),
    ],
)
def test_ledger_run_max_run_time_is_a_duration_as_in_the_config(
    ledger: Ledger, db_url: str, tmp_path: Path, args: list[str], why: str
) -> None:
    result = CliRunner().invoke(
        cli, ["run", "csv", *args, "--spool-dir", str(tmp_path / "spool"), "--db", db_url]
    )
    assert result.exit_code == 2, result.output
    assert why in result.output
    assert "Traceback" not in result.output
    assert ledger.head().last_position == 0  # nothing written
