"""Ctrl-C during the load test leaves no ``load_worker.py`` behind.

The load test (``test_load.py``) is run by a pytest subprocess, on SQLite, with workers given far
more events than they could store before the interrupt; once its workers exist, the subprocess
alone gets SIGINT (as from Ctrl-C, but not sent to the workers: a terminal would send it to the
whole process group, and a worker that ignores it or is stuck in a call must be stopped all the
same). When pytest has exited, no worker of that run may still be running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.reliability.support import REPO, WORKER

WORKERS = 2
START_TIMEOUT = 120.0  # pytest's start, the migration and the workers' start, on a busy machine
# pytest's own exit after the interrupt: its workers stopped, its fixtures torn down. Over 60 s
# once in CI with the other test session running beside it on 2 cores.
EXIT_TIMEOUT = 180.0


def running_workers(marker: str) -> list[int]:
    """The pids of live ``load_worker.py`` processes whose arguments include ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile
            continue
        if state != "Z" and str(WORKER).encode() in arguments and marker.encode() in arguments:
            pids.append(int(entry.name))
    return pids


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_ctrl_c_during_the_load_test_leaves_no_worker_behind(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "LEDGER_TEST_MYSQL_URL"  # SQLite is enough to prove the clean-up
    }
    env.update(
        LEDGER_RELIABILITY_PROCESSES=str(WORKERS),
        LEDGER_RELIABILITY_EVENTS="100000000",  # still appending when the interrupt comes
        PYTHONPATH=str(REPO),
    )
    log = (tmp_path / "pytest.log").open("w")
    command = [sys.executable, "-m", "pytest", "tests/reliability/test_load.py", "-q"]
    child = subprocess.Popen(
        [*command, "-p", "no:cacheprovider", "-k", "sqlite"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the SIGINT below reaches pytest only, not the workers
    )
    marker = f"load-{child.pid}"  # the seed test_load.py gives its workers
    try:
        wait_until(
            lambda: child.poll() is not None or len(running_workers(marker)) == WORKERS,
            START_TIMEOUT,
            "the load test started no workers",
        )
        assert child.poll() is None, (tmp_path / "pytest.log").read_text()
        os.kill(child.pid, signal.SIGINT)
        try:
            child.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"pytest still running {EXIT_TIMEOUT:.0f}s after SIGINT; its log:\n"
                + (tmp_path / "pytest.log").read_text()[-5000:]
            ) from None
        # Killed and reaped by the test itself: none left, not even for init to reap.
        assert running_workers(marker) == [], (tmp_path / "pytest.log").read_text()
    finally:
        for pid in running_workers(marker):
            os.kill(pid, signal.SIGKILL)
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=EXIT_TIMEOUT)
        log.close()
