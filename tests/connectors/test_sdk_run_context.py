"""The connector SDK's ``RunContext``, on SQLite and on MariaDB: a body that raises, Ctrl-C or
SIGTERM ends the run failed with the reason; progress is coalesced and never lost, and invalid
progress refused; the error count is exact and its details capped; heartbeats keep a blocked
run alive; a run whose RunStarted could not be stored (the ledger unreachable) does not start,
and one whose reply was lost is not orphaned; a SIGKILLed run stays open for the stuck query; a
connector name that could pass for another is refused before the run."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from sqlalchemy.engine import make_url

from connectors import SAMPLE_CSV, CsvConnector, RunContext, RunNotStartedError, Spool
from connectors.sdk import PROGRESS_FIELDS
from ledger import ClockAheadError, Ledger, LedgerError, RunProgressed, ValidationError
from ledger.clock import use_clock, utcnow
from ledger.events import COUNTER_FIELDS
from service.cli import cli
from tests import support
from tests.connectors.support import finished, run_events, totals

REPO = Path(__file__).resolve().parents[2]


def test_a_body_that_raises_fails_the_run_with_its_traceback(ledger: Ledger, spool: Spool) -> None:
    def ingest_that_breaks() -> None:
        raise ConnectionResetError("source went away")

    run = RunContext(ledger, 1, "SOURCE_1", spool=spool)

    def body() -> None:
        with run:
            run.progress(fetched=3)
            ingest_that_breaks()

    with pytest.raises(ConnectionResetError):
        body()
    payload = finished(ledger, run.run_id)
    assert payload["status"] == "failed"
    assert payload["error_message"] == "ConnectionResetError: source went away"
    assert "ingest_that_breaks" in payload["error_details"]["traceback"]
    assert totals(ledger, run.run_id)["records_fetched"] == 3  # the remainder went out first


class _Unprintable(Exception):
    """A library's exception whose text cannot be made (a ``__str__`` that itself fails)."""

    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_an_exception_whose_str_raises_still_fails_the_run_with_it(
    ledger: Ledger, spool: Spool
) -> None:
    # finish() raised the RuntimeError in place of the connector's exception, before the
    # outcome was appended: the run stayed open (closed as "interpreter exit" at best).
    run = RunContext(ledger, 1, "SOURCE_1", spool=spool)

    def body() -> None:
        with run:
            run.progress(fetched=3)
            raise _Unprintable

    with pytest.raises(_Unprintable):
        body()
    payload = finished(ledger, run.run_id)
    assert payload["status"] == "failed"
    assert payload["error_message"] == "_Unprintable: <exception str() failed: RuntimeError>"
    assert payload["error_details"]["exception"] == "_Unprintable"
    assert "raise _Unprintable" in payload["error_details"]["traceback"]
    assert totals(ledger, run.run_id)["records_fetched"] == 3
    assert ledger.run(run.run_id).state == "finished"  # type: ignore[union-attr]


def test_keyboard_interrupt_is_failed_interrupted(ledger: Ledger, spool: Spool) -> None:
    with pytest.raises(KeyboardInterrupt), RunContext(ledger, 1, "SOURCE_1", spool=spool) as run:
        raise KeyboardInterrupt
    payload = finished(ledger, run.run_id)
    assert (payload["status"], payload["error_details"]["reason"]) == ("failed", "interrupted")
    assert payload["error_message"] == "interrupted by Ctrl-C (SIGINT)"
    assert ledger.run(run.run_id).state == "finished"  # type: ignore[union-attr]


def test_progress_is_coalesced_and_never_lost(ledger: Ledger, spool: Spool) -> None:
    with freeze_time("2026-03-01 12:00:00") as clock:
        with RunContext(
            ledger, 1, "SOURCE_1", spool=spool, progress_interval=5, heartbeat_interval=3600
        ) as run:
            for _ in range(4):  # within 5 s: no event yet
                run.progress(fetched=10, created=1)
                clock.tick(1)
            assert len(run_events(ledger, run.run_id)) == 1
            clock.tick(1)
            run.progress(fetched=10, skipped=2)  # 5 s since the start: one event with the sum
            events = run_events(ledger, run.run_id)
            assert len(events) == 2
            assert (
                events[1].payload_data["records_fetched"],
                events[1].payload_data["records_created"],
            ) == (50, 4)
            run.progress(updated=7, claims=1, coverage_cells=2)  # pending at exit
        types = [e.type for e in run_events(ledger, run.run_id)]
    assert types == ["RunStarted", "RunProgressed", "RunProgressed", "RunFinished"]
    assert totals(ledger, run.run_id) == {
        "records_fetched": 50,
        "records_created": 4,
        "records_updated": 7,
        "records_skipped": 2,
        "claims_created": 1,
        "coverage_cells_updated": 2,
    }


def test_error_count_is_exact_and_details_capped(ledger: Ledger, spool: Spool) -> None:
    with RunContext(ledger, 1, "SOURCE_1", spool=spool, max_error_details=3) as run:
        for i in range(10):
            run.error(f"row {i} bad", {"row": i})
    payload = finished(ledger, run.run_id)
    details = payload["error_details"]
    assert (
        payload["status"],
        details["error_count"],
        len(details["errors"]),
        details["errors_truncated"],
    ) == ("partial", 10, 3, True)
    assert details["errors"][0] == {"message": "row 0 bad", "details": {"row": 0}}


def test_invalid_progress_is_refused(ledger: Ledger, spool: Spool) -> None:
    from ledger import ValidationError

    with RunContext(ledger, 1, "SOURCE_1", spool=spool) as run:
        with pytest.raises(ValidationError, match="fetched=-1"):
            run.progress(fetched=-1)
        with pytest.raises(ValidationError):
            run.progress(created=1.5)  # type: ignore[arg-type]
    assert finished(ledger, run.run_id)["status"] == "success"


def test_heartbeats_keep_a_blocked_run_alive(ledger: Ledger, spool: Spool) -> None:
    """Real time: the body blocks until the ledger shows three heartbeats of its run."""
    with RunContext(ledger, 1, "SOURCE_1", spool=spool, heartbeat_interval=0.05) as run:
        deadline = time.monotonic() + 30
        while len(run_events(ledger, run.run_id)) < 4 and time.monotonic() < deadline:
            threading.Event().wait(0.01)  # the body "blocks": it reports nothing itself
    events = run_events(ledger, run.run_id)
    heartbeats = [e for e in events if e.type == "RunProgressed"]
    assert len(heartbeats) >= 3
    assert all(
        isinstance(e.event, RunProgressed) and support.is_heartbeat(e.event) for e in heartbeats
    )
    assert events[-1].type == "RunFinished"
    count = len(events)
    threading.Event().wait(0.2)
    assert len(run_events(ledger, run.run_id)) == count  # heartbeats stop with the run


def test_a_run_asked_to_stop_raises_at_its_next_report_and_stops_its_heartbeats(
    ledger: Ledger, spool: Spool
) -> None:
    """``request_stop`` (serve's max_run_time): the counts reported before it go out as the
    heartbeats stop, the next report raises after counting what it reports, and the run ends
    failed with that error; no heartbeat keeps it looking alive meanwhile."""
    stop = RuntimeError("exceeded max_run_time 2h")
    run = RunContext(
        ledger, 1, "SOURCE_1", spool=spool, progress_interval=3600, heartbeat_interval=0.05
    )
    run.start()
    run.progress(fetched=5)  # pending: progress_interval is an hour
    run.request_stop(stop)
    assert run._heartbeat is not None
    run._heartbeat.join(timeout=30)
    assert not run._heartbeat.is_alive()  # no heartbeat can come any more
    assert totals(ledger, run.run_id)["records_fetched"] == 5  # sent as it stopped
    assert [e.type for e in run_events(ledger, run.run_id)] == ["RunStarted", "RunProgressed"]
    with pytest.raises(RuntimeError):
        run.error("row 7 bad", {"row": 7})
    with pytest.raises(RuntimeError, match="max_run_time") as raised:
        run.progress(fetched=3)  # raises, once counted
    run.finish(raised.value)
    payload = finished(ledger, run.run_id)
    assert payload["status"] == "failed"
    assert payload["error_message"] == "RuntimeError: exceeded max_run_time 2h"
    assert payload["error_details"]["error_count"] == 1
    assert totals(ledger, run.run_id)["records_fetched"] == 8


def test_an_unreachable_ledger_means_the_run_does_not_start(spool: Spool) -> None:
    ledger = Ledger.from_url("mysql+pymysql://app:sekret-pw@127.0.0.1:1/ledger")
    with pytest.raises(RunNotStartedError, match="not started: the ledger is unreachable") as e:
        RunContext(ledger, 1, "SOURCE_1", spool=spool).start()
    assert "sekret-pw" not in str(e.value)
    assert not spool.has_pending()


def test_a_ledger_without_its_schema_is_not_called_unreachable(
    spool: Spool, tmp_path: Path
) -> None:
    with support.unmigrated_databases(tmp_path) as databases:
        for _url, ledger in databases:
            with pytest.raises(RunNotStartedError, match="not started: the ledger could not rec"):
                RunContext(ledger, 1, "SOURCE_1", spool=spool).start()


def test_a_host_whose_clock_is_ahead_starts_no_run_and_says_it_is_the_environment(
    db_url: str, spool: Spool, tmp_path: Path
) -> None:
    """This host's clock 20 minutes ahead of the ledger's (the database server's, here a clock
    given to the ledger): RunStarted, dated by this host, is refused by the skew guard (I10).
    That is this host's time to set right, not bad input: `ledger run` said exit 2."""
    previous = use_clock(lambda: utcnow() - timedelta(minutes=20))
    try:
        ledger = Ledger.from_url(db_url)
        with pytest.raises(RunNotStartedError, match="this host's clock is ahead") as caught:
            RunContext(ledger, 1, "SOURCE_1", spool=spool).start()
        assert isinstance(caught.value.__cause__, ClockAheadError)
        assert not spool.has_pending()
        result = CliRunner().invoke(
            cli,
            [
                *("run", "csv", "--path", str(SAMPLE_CSV), "--db", db_url),
                *("--spool-dir", str(tmp_path / "cli-spool")),
            ],
        )
    finally:
        use_clock(previous)
    assert result.exit_code == 3, result.output
    assert "this host's clock is ahead of the ledger's; set it right (NTP)" in result.stderr
    assert ledger.head().last_position == 0
    ledger.close()


def test_sigkill_leaves_the_run_open_for_the_stuck_query(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    code = (
        "import sys\n"
        "from connectors import RunContext, Spool\n"
        "from ledger import Ledger\n"
        f"run = RunContext(Ledger.from_url({db_url!r}), 1, 'SOURCE_1', "
        f"spool=Spool({str(tmp_path)!r}))\n"
        "print(run.start(), flush=True)\n"
        "sys.stdin.read()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        run_id = int(process.stdout.readline())
    finally:  # the kill the test is about (and on a failure above); reaps it, closes the pipes
        support.stop_process(process, signal.SIGKILL)
    state = ledger.run(run_id)
    assert state is not None
    assert state.state == "open"


def test_sigterm_during_ledger_run_closes_the_run_as_interrupted(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    # A source that never ends: a FIFO with a writer that never closes it (opened read-write,
    # which does not wait for a reader), so the run is still going whenever SIGTERM comes. A
    # file of 200,000 rows could be read to its end first on a busy machine ("success").
    fifo = tmp_path / "never-ending.csv"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    os.write(writer, b"id,name\n")
    done = threading.Event()

    def feed() -> None:  # rows as a live source sends them, for as long as the run reads
        row = 0
        while not done.wait(0.01):
            with contextlib.suppress(BlockingIOError):  # the pipe full: the reader is gone
                os.write(writer, "".join(f"{row + i},x\n" for i in range(100)).encode())
                row += 100

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from service.cli import main; main()",
            "-v",
            "run",
            "csv",
            "--path",
            str(fifo),
            "--progress-interval",
            "0",
            "--spool-dir",
            str(tmp_path / "s"),
            "--db",
            db_url,
        ],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "started" in line:
                break
    finally:  # the SIGTERM the test is about; killed if it does not stop within 120 s
        stdout, stderr = support.stop_process(process, signal.SIGTERM, timeout=120)
        done.set()
        feeder.join()
        os.close(writer)
    assert process.returncode != -signal.SIGKILL, f"not stopped by SIGTERM in 120 s: {stderr}"
    run_id = max(ledger.read_all(), key=lambda e: e.run_id).run_id
    payload = finished(ledger, run_id)
    assert payload["status"] == "failed"
    assert payload["error_details"]["reason"] == "interrupted"
    assert payload["error_message"] == "stopped by SIGTERM"  # not "SystemExit: 143"
    assert json.loads(stdout)["error"] == "stopped by SIGTERM"


@pytest.mark.parametrize("committed", [True, False], ids=["after-commit", "before-append"])
def test_ctrl_c_as_the_run_starts_leaves_no_run_open(
    ledger: Ledger, db_url: str, tmp_path: Path, committed: bool
) -> None:
    # A real SIGINT, sent by the process to itself just after RunStarted committed (the SDK
    # not yet holding its run id) or just before it is appended. After the commit, the run
    # stayed open, with nobody to end it: `with` never entered the block.
    code = (
        "import os, signal, sys\n"
        "from connectors import RunContext, Spool\n"
        "from ledger import Ledger, RunStarted\n"
        "append = Ledger.append\n"
        "def appending(self, events, *args, **kwargs):\n"
        "    starting = isinstance(events[0], RunStarted)\n"
        f"    if starting and not {committed}:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    result = append(self, events, *args, **kwargs)\n"
        "    if starting:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    return result\n"
        "Ledger.append = appending\n"
        f"run = RunContext(Ledger.from_url({db_url!r}), 1, 'SOURCE_1', "
        f"spool=Spool({str(tmp_path)!r}))\n"
        "try:\n"
        "    with run:\n"
        "        print('entered', flush=True)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', run.result, flush=True)\n"
    )
    done = support.run_to_end([sys.executable, "-c", code], timeout=120, cwd=REPO)

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout.startswith("interrupted"), done.stdout
    assert ledger.runs(state="open") == []
    runs = ledger.runs()
    if not committed:
        assert runs == []  # never started
        return
    assert [run.state for run in runs] == ["finished"]
    payload = finished(ledger, runs[0].run_id)
    assert (payload["status"], payload["error_message"]) == (
        "failed",
        "interrupted by Ctrl-C (SIGINT)",
    )
    assert payload["error_details"]["reason"] == "interrupted"


def test_a_lost_reply_to_run_started_does_not_orphan_the_run(
    ledger: Ledger, spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_append = Ledger.append
    calls: list[int] = []

    def commit_then_lose_the_reply(self: Ledger, events: Any, **kwargs: Any) -> Any:
        result = real_append(self, events, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            from ledger import StorageError

            raise StorageError("connection lost after COMMIT")
        return result

    monkeypatch.setattr(Ledger, "append", commit_then_lose_the_reply)
    run = RunContext(ledger, 1, "SOURCE_1", spool=spool)
    run_id = run.start()
    monkeypatch.undo()
    run.finish()
    events = ledger.read_run(run_id)
    assert [e.type for e in events] == ["RunStarted", "RunFinished"]
    assert ledger.head().last_run_id == run_id  # one run, not an orphan and a second one


@pytest.mark.parametrize("name", ["stations ", "sta\u200btions", "\u202estations"])
def test_a_connector_name_that_could_pass_for_another_is_refused_before_the_run(
    ledger: Ledger, spool: Spool, name: str
) -> None:
    with pytest.raises(ValidationError, match=r"^connector_name: .* is not allowed$"):
        CsvConnector(1, SAMPLE_CSV, name=name).run(ledger, spool=spool)
    assert ledger.head().last_position == 0


def test_a_host_name_too_long_for_the_actor_is_cut_and_the_run_starts(
    ledger: Ledger, spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``connector:NAME@HOST:PID`` over the ledger's 200-character actor limit (a 100-character
    connector name on a host whose name is longer than Linux allows: macOS allows 255) was
    refused at RunStarted, so no run of it could start; the host's name is cut instead."""
    host = "ingest-worker." + "very-long-segment." * 10 + "example.internal"
    monkeypatch.setattr("connectors.sdk.socket.gethostname", lambda: host)
    name = "n" * 100
    with RunContext(ledger, 1, name, spool=spool) as run:
        run.progress(fetched=1)
    started = run_events(ledger, run.run_id)[0]
    assert started.actor is not None
    assert len(started.actor) == 200
    assert started.actor.startswith(f"connector:{name}@ingest-worker.very-long-segment.")
    assert started.actor.endswith(f"…:{os.getpid()}")
    assert started.event.metadata["host"] == host  # the whole name, where nothing cuts it
    assert finished(ledger, run.run_id)["status"] == "success"


def test_a_report_after_a_finish_that_could_not_send_is_refused_until_finish_again(
    ledger: Ledger, backend: str, spool: Spool
) -> None:
    """finish() with the ledger locked and the spool unusable keeps its outcome to retry; a
    report then sent that outcome ahead of the retry (carrying the first attempt's state), and
    the retry's own RunFinished was refused as "another writer closed it". Now the report is
    refused, and the retried finish() records the outcome once."""
    if backend != "sqlite":
        pytest.skip("the outage is made with SQLite's write lock, the SDK's logic is the same")
    path = make_url(ledger.url).database
    assert path is not None
    impatient = Ledger.from_url(ledger.url, sqlite_busy_timeout_ms=50)
    run = RunContext(impatient, 1, "SOURCE_1", spool=spool, progress_interval=3600)
    run.start()
    run.progress(fetched=1)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the ledger cannot be written...
    for leftover in (spool.path, Path(f"{spool.path}-wal"), Path(f"{spool.path}-shm")):
        leftover.unlink(missing_ok=True)
    spool.path.mkdir(parents=True)  # ...nor the spool: a folder where its file goes
    with pytest.raises(LedgerError):
        run.finish()
    blocker.execute("ROLLBACK")
    blocker.close()
    spool.path.rmdir()
    with pytest.raises(ValidationError, match="call finish\\(\\) again"):
        run.progress(fetched=2)
    with pytest.raises(ValidationError, match="call finish\\(\\) again"):
        run.error("late")
    result = run.finish()
    assert result.status == "success"
    events = run_events(ledger, run.run_id)
    assert [e.type for e in events] == ["RunStarted", "RunProgressed", "RunFinished"]
    assert events[1].payload_data["records_fetched"] == 1
    impatient.close()


def _stopped_in_the_connector(stop: BaseException) -> None:
    raise stop


@pytest.mark.parametrize(
    ("stop", "recorded"),
    [
        (
            SystemExit(143),
            {"exception": "SIGTERM", "message": "stopped by SIGTERM", "signal": "SIGTERM"},
        ),
        (
            SystemExit(129),
            {"exception": "SIGHUP", "message": "stopped by SIGHUP", "signal": "SIGHUP"},
        ),
        (
            KeyboardInterrupt(),
            {
                "exception": "SIGINT",
                "message": "interrupted by Ctrl-C (SIGINT)",
                "signal": "SIGINT",
            },
        ),
        (
            SystemExit("interpreter exit with the run still open"),
            {
                "exception": "SystemExit",
                "message": "stopped: interpreter exit with the run still open",
            },
        ),
    ],
    ids=["sigterm", "sighup", "ctrl-c", "interpreter-exit"],
)
def test_a_stopped_runs_details_say_what_its_message_says(
    ledger: Ledger, spool: Spool, stop: BaseException, recorded: dict[str, Any]
) -> None:
    """A run stopped by SIGTERM was recorded with the message "stopped by SIGTERM" but details
    saying ``"exception": "SystemExit", "message": "143"`` and a traceback ending
    ``SystemExit: 143``. The details now say what the message says, as the TypeScript client
    records a signal, and keep the facts: the signal, the exit status, where the run was."""
    context = RunContext(ledger, 1, "stopped", spool=spool)
    with pytest.raises(type(stop)), context:
        _stopped_in_the_connector(stop)
    payload = finished(ledger, context.run_id)
    assert payload["error_message"] == recorded["message"]
    details = dict(payload["error_details"])
    where = details.pop("traceback")
    assert "_stopped_in_the_connector" in where  # where the run was when it was stopped
    expected = {**recorded, "reason": "interrupted"}
    if isinstance(stop, SystemExit) and isinstance(stop.code, int):
        expected["exit_status"] = stop.code
    assert details == expected
    assert "SystemExit" not in where
    assert "KeyboardInterrupt" not in where


def test_progress_keywords_are_the_counters_each_under_its_short_name() -> None:
    """``PROGRESS_FIELDS`` is derived from the counters' one list (``COUNTER_FIELDS``): every
    keyword of ``RunContext.progress`` names one counter, in the model's order, and no counter
    is left without its keyword."""
    keywords = [
        name for name in inspect.signature(RunContext.progress).parameters if name != "self"
    ]
    assert list(PROGRESS_FIELDS) == keywords
    assert tuple(PROGRESS_FIELDS.values()) == COUNTER_FIELDS
    assert PROGRESS_FIELDS == {
        "fetched": "records_fetched",
        "created": "records_created",
        "updated": "records_updated",
        "skipped": "records_skipped",
        "claims": "claims_created",
        "coverage_cells": "coverage_cells_updated",
    }
