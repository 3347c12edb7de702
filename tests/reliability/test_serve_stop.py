"""``ledger serve`` stopped (SIGTERM) while the database does not answer: it exits within its
grace period plus the README's wrap-up (it took 80-100 s, the driver's read timeout, whatever
``grace_period`` said, and Kubernetes' 30 s default killed it before a run's failure was even
spooled), and a run still going is ended ``failed`` ("shutdown") into the spool; ``ledger
project --follow`` likewise gives up on its batch in flight.

"Does not answer" is, on MariaDB, a proxy that stops forwarding and keeps every connection
open; on SQLite, a write lock held by another connection."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from connectors import Spool
from ledger import Ledger
from projections.projector import FOLLOW_STOP_WAIT_S
from service.serve import WRAP_UP_SECONDS
from tests.reliability.fault_proxy import FaultProxy
from tests.reliability.summary import Summary
from tests.reliability.support import REPO, LineLog, through, wait_until
from tests.service.support import (
    finished_runs,
    hanging_connector,
    open_runs,
    serve,
    write_config,
)
from tests.support import stop_process

GRACE_S = 2.0
# The README's promise is grace period + WRAP_UP_SECONDS; the rest is for a busy 2-CPU machine
# (the process's own start-up is not counted: the clock starts at SIGTERM).
SLACK_S = 8.0


@contextmanager
def silenceable(backend: str, db_url: str) -> Iterator[tuple[str, Callable[[], None]]]:
    """The URL serve is to use, and what makes its database stop answering (undone after)."""
    if backend == "mysql":
        url = make_url(db_url)
        proxy = FaultProxy((url.host or "127.0.0.1", url.port or 3306))
        try:
            yield through(proxy, db_url, read_timeout=False), proxy.freeze  # serve's defaults
        finally:
            proxy.close()
        return
    path = make_url(db_url).database
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def hold_the_write_lock() -> None:
        holder.execute("BEGIN IMMEDIATE")

    try:
        yield db_url, hold_the_write_lock
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.parametrize("with_run", [False, True], ids=["idle", "a-run-going"])
def test_serve_stops_within_its_deadline_when_the_database_stops_answering(
    backend: str,
    db_url: str,
    ledger: Ledger,
    tmp_path: Path,
    reliability: Summary,
    with_run: bool,
) -> None:
    spool_dir = tmp_path / "spool"
    in_its_read = threading.Event()
    with (
        hanging_connector(in_its_read) as hanging,
        silenceable(backend, db_url) as (url, silence),
    ):
        config = write_config(
            tmp_path / "ledger.toml",
            url,
            spool_dir,
            hanging if with_run else "",
            grace=f"{GRACE_S:g}s",
        )
        process = serve(config)
        log = LineLog(process)
        log.start()
        try:
            wait_until(lambda: log.count("scheduled (times UTC)"), [process], "serve's start")
            if with_run:
                # In its source's read, not in a call to the database
                wait_until(in_its_read.is_set, [process], "the hanging run")
            silence()
            took = seconds_to_stop(process)
        finally:
            stop_process(process, read_output=False)
            log.join(timeout=10)
    output = "".join(log.lines)
    assert process.returncode == 0, output
    assert took < GRACE_S + WRAP_UP_SECONDS + SLACK_S, output
    assert "stopped" in log.lines[-1], output
    what = "idle"
    if with_run:
        # The run's failure went to the spool (the database did not answer), nowhere else.
        assert not finished_runs(ledger, "hanging")
        assert Spool(spool_dir).has_pending(), output
        Spool(spool_dir).flush(ledger)
        (run,) = finished_runs(ledger, "hanging")
        assert run["status"] == "failed"
        assert "shutdown" in run["error_message"]
        assert open_runs(ledger) == 0
        what = "with a run going (its source hanging)"
    reliability.record(
        "serve stop, database silent",
        backend,
        f"`ledger serve` {what}, `grace_period = 2s`, SIGTERM once the database stopped "
        "answering (MariaDB: a proxy forwarding nothing, connections kept open; SQLite: a "
        "write lock held elsewhere)",
        f"exit 0 after {took:.1f}s (before: 80-100 s, the driver's read timeout)"
        + (
            '; the run\'s RunFinished `failed` ("shutdown") was in the spool and delivered from it'
            if with_run
            else ""
        ),
    )


def test_project_follow_stops_within_its_wait_when_the_database_stops_answering(
    ledger: Ledger, db_url: str, proxy: FaultProxy, reliability: Summary
) -> None:
    """Its batch in flight waited the driver's read timeout (75 s) before the stop took."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from service.cli import main; main()",
            "project",
            "--follow",
            "--interval",
            "0.05",
            "--db",
            through(proxy, db_url, read_timeout=False),
        ],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    log = LineLog(process)
    log.start()
    try:
        wait_until(lambda: log.count("following"), [process], "the follower's start")
        proxy.freeze()
        wait_until(lambda: proxy.held_calls, [process], "a batch held by the silent database")
        took = seconds_to_stop(process)
    finally:
        stop_process(process, read_output=False)
        log.join(timeout=10)
    output = "".join(log.lines)
    assert process.returncode == 0, output
    assert took < FOLLOW_STOP_WAIT_S + SLACK_S, output
    assert "still waiting on the database" in output
    reliability.record(
        "follow stop, database silent",
        "mysql",
        "`ledger project --follow` with its batch held by a proxy forwarding nothing "
        "(connections kept open), then SIGTERM",
        f"exit 0 after {took:.1f}s, saying the batch was left unapplied (before: the "
        "driver's 75 s read timeout)",
    )


def seconds_to_stop(process: subprocess.Popen[str]) -> float:
    """SIGTERM, then how many seconds the process took to exit. Past 300 s, TimeoutExpired (the
    caller's ``stop_process`` kills it; its output is read by the test's LineLog, not here)."""
    stopped_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=300)
    return time.monotonic() - stopped_at
