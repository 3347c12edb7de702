"""What several reliability tests share: where the checkout and the load worker are, a
database URL through the fault proxy, a process's stderr read as it comes, waiting on an
observable while processes must stay up, and the ledger_database_up line of ``/metrics``."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.reliability.fault_proxy import FaultProxy
from tests.support import stop_process

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "load_worker.py"

READ_TIMEOUT_S = 2  # how long a stalled call waits before the SDK gives up on it
WAIT_TIMEOUT_S = 120.0


def through(proxy: FaultProxy, db_url: str, read_timeout: bool = True) -> str:
    url = make_url(db_url).set(host="127.0.0.1", port=proxy.port)
    if read_timeout:
        url = url.update_query_dict({"read_timeout": str(READ_TIMEOUT_S)})
    return url.render_as_string(hide_password=False)


class LineLog(threading.Thread):
    """Reads a process's stderr as it comes (so the pipe never fills) and keeps the lines."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.process = process
        self.lines: list[str] = []

    def run(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def count(self, text: str, since: int = 0) -> int:
        return sum(text in line for line in self.lines[since:])


def wait_until(
    condition: Callable[[], object], processes: list[subprocess.Popen[str]], what: str
) -> None:
    """Poll ``condition`` (an observable, never the clock alone); every process must stay up."""
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while not condition():
        for process in processes:
            assert process.poll() is None, f"{process.args[3:5]} exited while {what}"
        assert time.monotonic() < deadline, f"timed out: {what}"
        threading.Event().wait(0.05)


def kill_when(condition: Callable[[], object], process: subprocess.Popen[bytes], what: str) -> None:
    """SIGKILL ``process`` the moment ``condition`` holds (polled; the process must not exit
    before), and reap it whatever happens."""
    try:
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while not condition():
            assert process.poll() is None, f"the process exited before {what}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            threading.Event().wait(0.01)
    finally:
        stop_process(process, signal.SIGKILL)


def database_up_metric(port: int) -> str:
    """The ledger_database_up line of a scrape (which must answer, outage or not)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert "ledger_spool_backlog_events" in text
    return next(line for line in text.splitlines() if line.startswith("ledger_database_up"))
