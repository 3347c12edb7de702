"""The suite's own handling of the processes and ports its tests use (tests/support.py): a
process that will not stop is killed and reaped instead of outliving pytest with a
TimeoutExpired in place of the test's failure; a process group dies whole (the TypeScript
client's node and the servers it starts); ``free_port`` keeps to ``$LEDGER_TEST_PORTS``."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import PORTS_ENV, free_port, running_children, stop_process

# A process that shrugs off SIGTERM (a serve stuck in its shutdown), once it is ready.
DEAF = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)
# The same, that first starts a child of its own in its process group and names it.
DEAF_WITH_A_CHILD = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def started(code: str, **options: object) -> tuple[subprocess.Popen[str], str]:
    """The process running ``code``, and the first line it printed (it is ready then)."""
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, **options
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def gone(pid: int) -> bool:
    """No such process, or only its exit status left for its parent (here: init) to read."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def test_a_process_that_will_not_stop_is_killed_and_reaped() -> None:
    process, ready = started(DEAF)
    try:
        assert ready == "ready"
        assert process.pid in running_children()
        out, _err = stop_process(process, timeout=1)  # no TimeoutExpired: the test's own fails
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL  # what the test then asserts says it
    assert out == ""  # the pipe read to its end
    assert process.stdout is not None
    assert process.stdout.closed
    assert process.pid not in running_children()


def test_a_process_that_stops_is_only_asked_to() -> None:
    process, _ready = started("import time; print('ready', flush=True); time.sleep(600)")
    out, _err = stop_process(process)
    assert process.returncode == -signal.SIGTERM
    assert out == ""
    stop_process(process)  # stopped already: nothing to do, no error
    assert process.returncode == -signal.SIGTERM


def test_a_process_group_dies_whole() -> None:
    """What the TypeScript client's test relies on: its node process leads a session of its
    own, and the servers node started die with it though node never gets to kill them."""
    process, child = started(DEAF_WITH_A_CHILD, start_new_session=True)
    try:
        stop_process(process, timeout=1, group=True)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while not gone(int(child)):  # killed at once; init reaps it when it gets to it
        assert time.monotonic() < deadline, f"the child {child} outlived its group's leader"
        threading.Event().wait(0.02)


def test_free_port_keeps_to_the_range_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        monkeypatch.setenv(PORTS_ENV, f"{port}-{port}")
        with pytest.raises(AssertionError, match=f"no free port in {PORTS_ENV}"):
            free_port()  # the only port of the range is taken
    assert free_port() == port
    monkeypatch.setenv(PORTS_ENV, "")
    assert free_port() > 0  # unset: the system's choice
