"""The suite's own handling of the processes and ports its tests use (tests/support.py): a
process that will not stop is killed and reaped instead of outliving pytest with a
TimeoutExpired in place of the test's failure; a process group dies whole (the TypeScript
client's node and the servers it starts); a command that does not exit in time fails the test
and dies with all it started; the safety net (tests/conftest.py) blames a test for the children
it left running and for nothing else; ``free_port`` keeps to ``$LEDGER_TEST_PORTS``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    PORTS_ENV,
    free_port,
    run_to_end,
    running_children,
    stop_process,
    wait_for_exit,
)

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


# A process that starts a child of its own in the background (its output elsewhere, as a
# server's), names it and exits, leaving it running.
LEAVES_A_CHILD = (
    "import subprocess, sys\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],\n"
    "                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "print(child.pid, flush=True)\n"
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


def dies(pid: int) -> None:
    deadline = time.monotonic() + 30
    while not gone(pid):  # killed at once; init reaps it when it gets to it
        assert time.monotonic() < deadline, f"{pid} outlived the command that started it"
        threading.Event().wait(0.02)


def test_a_process_that_does_not_exit_in_time_fails_the_test_and_is_killed() -> None:
    process, _ready = started(DEAF)
    try:
        with pytest.raises(pytest.fail.Exception, match=r"did not exit within 1s \(killed\)"):
            wait_for_exit(process, timeout=1)  # not a TimeoutExpired, the process left running
    finally:
        stop_process(process, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL


def test_a_command_run_to_its_end_gives_its_output_and_exit_code() -> None:
    done = run_to_end([sys.executable, "-c", "import sys; print('out'); sys.exit(3)"], timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "")


def test_a_command_that_does_not_end_in_time_dies_with_what_it_started() -> None:
    """The benchmark harness's server and writers, a README block's background command:
    ``subprocess.run`` killed the command on its timeout and left them running."""
    with pytest.raises(pytest.fail.Exception, match="did not exit within 1s") as failure:
        run_to_end([sys.executable, "-c", DEAF_WITH_A_CHILD], timeout=1)
    child = int(str(failure.value).split("--- stdout\n")[1].split()[0])  # what it printed
    dies(child)


def test_what_a_command_left_running_dies_when_it_ends() -> None:
    done = run_to_end([sys.executable, "-c", LEAVES_A_CHILD], timeout=60)
    assert done.returncode == 0, done.stderr
    dies(int(done.stdout))


def test_only_running_children_of_this_process_are_counted() -> None:
    """What the safety net looks at: a grandchild is its parent's business, an exited child
    (not yet reaped) runs nothing."""
    process, grandchild = started(DEAF_WITH_A_CHILD, start_new_session=True)
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while not gone(exited.pid):  # exited, its status not read yet
            assert time.monotonic() < deadline, "python -c pass did not exit"
            threading.Event().wait(0.02)
        children = running_children()
        assert process.pid in children
        assert int(grandchild) not in children
        assert exited.pid not in children
    finally:
        stop_process(process, signal.SIGKILL, group=True)
        stop_process(exited)


SAFETY_NET_TESTS = """
import subprocess, sys
import pytest

SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]
UP_THEN_SLEEP = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"]


@pytest.fixture(scope="module")
def server():
    process = subprocess.Popen(SLEEP)  # started before the test's net, stopped after it
    yield process
    process.kill()
    process.wait()


def test_uses_the_module_server(server):
    assert server.poll() is None


def test_stops_its_process():
    process = subprocess.Popen(SLEEP)
    process.kill()
    process.wait()


def test_leaves_its_process_running():
    # Waits for the child's first line: until it has exec'd, its command line is pytest's own
    # (a fork of it), and the net would name that on a busy machine.
    process = subprocess.Popen(UP_THEN_SLEEP, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "up\\n"


def test_uses_the_module_server_again(server):
    assert server.poll() is None
"""


def test_the_safety_net_blames_a_test_only_for_what_it_left_running(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest("from tests.conftest import no_process_outlives_its_test\n")
    pytester.makepyfile(test_nets=SAFETY_NET_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaves_its_process_running*",
            "*processes outlived the test (killed now)*time.sleep(600)*",
        ]
    )


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


def test_a_child_whose_thread_ends_while_the_children_are_read_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread that ends hands its children to a thread of the process still running (the
    main one): when that happens after the main thread's ``children`` file was read and before
    the ended thread's, the child is in neither as read, and the safety net missed it."""
    started_child: list[subprocess.Popen[bytes]] = []
    started, release = threading.Event(), threading.Event()

    def start_and_wait() -> None:
        started_child.append(subprocess.Popen(["sleep", "600"]))
        started.set()
        release.wait(30)

    helper = threading.Thread(target=start_and_wait)
    helper.start()
    assert started.wait(30), "the helper thread started no child"
    main_children = Path(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/children")
    read_text = Path.read_text

    def read_then_end_the_helper(self: Path, *args: Any, **kwargs: Any) -> str:
        text = read_text(self, *args, **kwargs)
        if self == main_children and helper.is_alive():
            release.set()  # the helper ends now: its child moves to the main thread, read
            helper.join()
        return text

    try:
        monkeypatch.setattr(Path, "read_text", read_then_end_the_helper)
        children = running_children()
        monkeypatch.undo()
        assert started_child[0].pid in children
    finally:
        release.set()
        helper.join()
        for child in started_child:
            stop_process(child, signal.SIGKILL)
