"""Connector runs in forked children (``os.fork``, ``multiprocessing``'s fork), each with a
RunContext of its own on the Ledger the parent opened, while the parent's run goes on: as
the SDK tells a child that reports for its parent's run to do. Each run holds exactly the
events of the process that recorded it.

The audit of a connector process's life (2026-12-06): the children were handed the parent's
pooled connections, one socket and one server session for several processes, and on
MariaDB every try mixed runs up: a child recorded its RunFinished and its counts into
another child's run (``run 17 of child2: connector:child4 … closed it``, 400 fetched for a
run of 200), others died on ValueErrors of the garbled protocol."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

from ledger import Ledger
from tests import support
from tests.connectors.support import finished, totals

REPO = Path(__file__).resolve().parents[2]
CHILDREN = 4
REPORTS = 150

# The parent's run is open and its pool holds a connection when the children are forked;
# then all of them report at once, one append per report. Each process says how it ended in
# one write of one line (say): the children end at about the same moment, and print() under
# PYTHONUNBUFFERED writes each word and the newline apart, so their lines interleaved
# ("child 5child 6 …", an empty line) and the test failed on its own parse of them.
SCRIPT = """
import os, sys
from connectors import RunContext, Spool
from ledger import Ledger

def say(*words):
    # One write of a short line to a pipe is atomic (POSIX: up to PIPE_BUF bytes).
    os.write(1, (" ".join(map(str, words)) + "\\n").encode())

ledger = Ledger.from_url(sys.argv[1])
spool = Spool(sys.argv[2])
children, reports = int(sys.argv[3]), int(sys.argv[4])
with RunContext(ledger, 1, "parent", spool=spool, progress_interval=0) as run:
    run.progress(fetched=1)
    pids = []
    for number in range(children):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                own = RunContext(ledger, 2, f"child{number}", spool=spool, progress_interval=0)
                with own:
                    for _ in range(reports):
                        own.progress(fetched=1)
                say("child", own.run_id, own.actor)
            except BaseException as exc:
                say("child failed:", type(exc).__name__, exc)
                code = 1
            os._exit(code)
        pids.append(pid)
    for _ in range(reports):
        run.progress(fetched=1)
    codes = [os.waitpid(pid, 0)[1] for pid in pids]
say("parent", run.run_id, run.actor, run.result.status, codes)
"""


def test_forked_children_record_their_own_runs_on_the_parents_ledger(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    args = [db_url, str(tmp_path / "spool"), str(CHILDREN), str(REPORTS)]
    # Unbuffered, as where the lines interleaved: whatever the environment of the suite.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = support.run_to_end([sys.executable, "-c", SCRIPT, *args], timeout=240, cwd=REPO, env=env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "failed" not in done.stdout, done.stdout + done.stderr
    lines = [line.split() for line in done.stdout.splitlines()]
    assert all(len(line) >= 3 for line in lines), done.stdout  # "KIND RUN_ID ACTOR …" each
    children = [(int(run), actor) for kind, run, actor, *_ in lines if kind == "child"]
    parent = next(line for line in lines if line[0] == "parent")
    assert parent[3:] == ["success", "[0,", "0,", "0,", "0]"], done.stdout
    assert len(children) == CHILDREN
    runs = [*children, (int(parent[1]), parent[2])]
    assert len({run_id for run_id, _ in runs}) == len(runs)  # one run each
    for run_id, actor in runs:
        by = Counter(event.actor for event in ledger.read_run(run_id))
        assert by == Counter({actor: by[actor]}), (run_id, actor, by)  # its events only
        assert finished(ledger, run_id)["status"] == "success"
    expected = {actor: REPORTS + (actor == parent[2]) for _, actor in runs}
    assert {actor: totals(ledger, run_id)["records_fetched"] for run_id, actor in runs} == expected


# One thread of the parent inside a write transaction of the spool (as a put or a flush's page
# is) while the main thread forks; it commits once the fork waits for it (the fork gate says
# so), or once the fork has returned where nothing waits. The child then spools an event.
SPOOL_SCRIPT = """
import logging, os, sys, threading, time
from connectors import Spool
from ledger.events import RunProgressed

DEADLINE_S = 30
spool = Spool(sys.argv[1])
spool.put([RunProgressed(run_id=1, records_fetched=1)])
holding, may_commit = threading.Event(), threading.Event()

class ForkWaits(logging.Handler):
    def emit(self, record):
        may_commit.set()

logging.getLogger("ledger.fork_gate").setLevel(logging.DEBUG)
logging.getLogger("ledger.fork_gate").addHandler(ForkWaits())

def hold():
    with spool._connect(immediate=True):  # the spool's write transaction
        holding.set()
        may_commit.wait(DEADLINE_S)

holder = threading.Thread(target=hold)
holder.start()
try:
    holding.wait(DEADLINE_S)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            spool.put([RunProgressed(run_id=2, records_fetched=1)])
            os.write(1, b"child spooled\\n")
            code = 0
        except BaseException as exc:
            os.write(1, f"child failed: {type(exc).__name__} {exc}\\n".encode())
        finally:
            os._exit(code)
    may_commit.set()
    deadline, code = time.monotonic() + DEADLINE_S, None
    while code is None and time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
        else:
            threading.Event().wait(0.05)
    if code is None:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
finally:
    may_commit.set()
    holder.join(DEADLINE_S)
os.write(1, f"child exit {code}, spooled {spool.status().pending}\\n".encode())
"""


def test_a_child_forked_during_a_spool_write_of_another_thread_spools(tmp_path: Path) -> None:
    """It waited the spool's 60 s busy timeout and failed ``database is locked``: the child
    inherited the parent's record of the spool's write lock (review 33)."""
    done = support.run_to_end(
        [sys.executable, "-c", SPOOL_SCRIPT, str(tmp_path / "spool")], timeout=50, cwd=REPO
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[:1] == ["child spooled"], done.stdout + done.stderr
    assert "child exit 0, spooled 2" in done.stdout, done.stdout + done.stderr
