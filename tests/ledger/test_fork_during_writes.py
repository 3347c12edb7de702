"""A process forked (``os.fork``, ``multiprocessing``'s fork) while another thread of the parent
is inside a write transaction can write to the ledger, as a process forked a moment later can.

Review 30 found that on SQLite such a child never could: SQLite keeps a file's locks per
process, and the child inherited the parent's record of the write lock that no thread of its
own would ever release, so each of its writes was ``database is locked`` after the busy
timeout, even once the parent had committed. A fork now waits for the SQLite write
transactions in flight (:mod:`ledger.fork_gate`). On MariaDB the child waits for the row lock
and writes: the same test proves it there.

The scripts run in a process of their own (forking pytest would copy the whole suite), which
is killed with its children when it outlives its deadline (``support.run_to_end``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ledger import Ledger
from tests import support

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 60

# The parent opens a run (its pool holds a connection), then one thread holds a write
# transaction (on MariaDB: the ledger_head row locked, as an append does) while the main
# thread forks. The holder commits when the fork gate says the fork waits for it, or, where
# nothing waits (MariaDB, or SQLite before the gate), once the fork has returned in the parent:
# never by the clock. The child appends once through the Ledger it inherited and once
# through one of its own, with a busy timeout of 2 s (wait_bound_s), and says how it went.
SCRIPT = """
import logging, multiprocessing, os, sys, threading, time
from sqlalchemy import select
from ledger import Ledger
from ledger.schema import ledger_head

DEADLINE_S = 30
url, how = sys.argv[1], sys.argv[2]

def say(*words):
    os.write(1, (" ".join(map(str, words)) + "\\n").encode())

ledger = Ledger.from_url(url, wait_bound_s=2)
ledger.start_run(1, "parent")
holding, may_commit = threading.Event(), threading.Event()

class ForkWaits(logging.Handler):
    def emit(self, record):
        may_commit.set()

gate_log = logging.getLogger("ledger.fork_gate")
gate_log.setLevel(logging.DEBUG)
gate_log.addHandler(ForkWaits())

def hold():
    try:
        with ledger.transaction("hold") as conn:
            conn.execute(select(ledger_head.c.last_position).with_for_update()).all()
            holding.set()
            may_commit.wait(DEADLINE_S)
        say("holder committed")
    except BaseException as exc:
        say("holder failed:", type(exc).__name__, exc)

def child_work():
    code = 1
    try:
        inherited = ledger.start_run(2, "child-inherited")
        own = Ledger.from_url(url, wait_bound_s=2)
        started = own.start_run(2, "child-own")
        own.close()
        say("child wrote", inherited, started)
        code = 0
    except BaseException as exc:
        say("child failed:", type(exc).__name__, str(exc).splitlines()[0])
    finally:
        os._exit(code)

holder = threading.Thread(target=hold)
holder.start()
code = None
try:
    if not holding.wait(DEADLINE_S):
        raise SystemExit("the holder never began its transaction")
    if how == "os.fork":
        pid = os.fork()
        if pid == 0:
            child_work()
        may_commit.set()
        deadline = time.monotonic() + DEADLINE_S
        while code is None and time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
            else:
                threading.Event().wait(0.05)
        if code is None:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    else:
        child = multiprocessing.get_context("fork").Process(target=child_work)
        child.start()
        may_commit.set()
        child.join(DEADLINE_S)
        if child.is_alive():
            child.kill()
            child.join()
        code = child.exitcode
finally:
    may_commit.set()
    holder.join(DEADLINE_S)
say("parent wrote", ledger.start_run(3, "parent-after"), "child exit", code)
"""


@pytest.mark.parametrize("how", ["os.fork", "multiprocessing"])
def test_a_child_forked_during_a_write_of_another_thread_writes(
    ledger: Ledger, db_url: str, how: str
) -> None:
    done = support.run_to_end(
        [sys.executable, "-c", SCRIPT, db_url, how],
        timeout=DEADLINE_S,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )

    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "failed" not in done.stdout, out
    assert "holder committed" in done.stdout, out
    assert "child exit 0" in done.stdout, out
    connectors = {run.connector_name for run in ledger.runs()}
    assert {"child-inherited", "child-own", "parent-after"} <= connectors, out


# A fork that cannot wait for a write transaction goes on as it did before the gate, with a
# warning, rather than hang: forked by the thread inside the transaction (it never ends while
# its thread forks), or by one whose wait for another thread's transaction outlives the gate's
# bound (here that thread waits for the fork to return: a deadlock, were the wait unbounded).
# The bound is shortened for the test; the child writes nothing and exits at once.
STUCK_SCRIPT = """
import logging, os, sys, threading, time
import ledger.fork_gate
from ledger import Ledger

DEADLINE_S = 30
url, how = sys.argv[1], sys.argv[2]
ledger.fork_gate.FORK_WAIT_S = 0.5
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")

def say(*words):
    os.write(1, (" ".join(map(str, words)) + "\\n").encode())

def fork_and_reap():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        threading.Event().wait(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None

store = Ledger.from_url(url)
if how == "own":
    with store.transaction("hold"):
        code = fork_and_reap()
else:
    holding, forked = threading.Event(), threading.Event()

    def hold():
        with store.transaction("hold"):
            holding.set()
            forked.wait(DEADLINE_S)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        holding.wait(DEADLINE_S)
        code = fork_and_reap()
    finally:
        forked.set()
        holder.join(DEADLINE_S)
say("parent wrote", store.start_run(3, "parent-after"), "child exit", code)
"""


@pytest.mark.parametrize("how", ["own", "another thread's"])
def test_a_fork_that_cannot_wait_for_a_write_goes_on_with_a_warning(
    ledger: Ledger, db_url: str, how: str, backend: str
) -> None:
    done = support.run_to_end(
        [sys.executable, "-c", STUCK_SCRIPT, db_url, how.split("'")[0]],
        timeout=DEADLINE_S,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )

    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "child exit 0" in done.stdout, out
    assert [run.connector_name for run in ledger.runs()] == ["parent-after"], out
    warned = "WARNING ledger.fork_gate fork" in done.stderr
    assert warned == (backend == "sqlite"), out  # MariaDB's transactions are not gated
