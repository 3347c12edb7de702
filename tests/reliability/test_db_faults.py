"""Item 3 of the reliability suite: MariaDB behind a faulty network (``fault_proxy.py``).

* Connector runs recorded through the SDK while the proxy cuts connections mid-transaction,
  before COMMIT, between COMMIT and its reply, stalls them, drops idle ones and refuses all for
  a while: after every call, each event is in the ledger once or waiting in the spool (both only
  when COMMIT's reply was lost), and once the network is back every run holds exactly the
  events and counts its connector reported; no run was opened twice.
* ``ledger project --follow`` and ``ledger serve`` behind the proxy through drops, lost COMMIT
  replies and an outage: both keep running, the projector resumes by itself, serve's later
  runs complete, and the projection equals a fresh rebuild.

A real database behind a real socket: nothing is mocked. MariaDB only: SQLite has no network
(its outage, a held write lock, is covered by tests/connectors/test_spool.py).
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from connectors import RunContext, Spool
from forensics.chain import verify_chain
from ledger import Ledger, RunFinished, RunProgressed
from projections import Projector, rebuild
from tests.projection_support import replayed_rows, table_rows
from tests.reliability.fault_proxy import FAULTS, FaultProxy
from tests.reliability.summary import Summary
from tests.reliability.support import (
    READ_TIMEOUT_S,
    LineLog,
    database_up_metric,
    through,
    wait_until,
)
from tests.service.support import (
    REPO,
    STATIONS,
    finished_runs,
    open_runs,
    serve,
    write_config,
)
from tests.support import free_port, stop_process

RUNS = 10
PROGRESS_PER_RUN = 15
ONE_FAULT_IN = 3  # on average one operation in three meets a fault
FAULT_ROUNDS = 16
LEDGER = (sys.executable, "-c", "from service.cli import main; main()")


def progress_ids(ledger: Ledger, run_id: int) -> set[str]:
    return {e.event_id for e in ledger.read_run(run_id) if e.type == "RunProgressed"}


def spooled_ids(spool: Spool, run_id: int) -> set[str]:
    if not spool.path.exists():
        return set()
    with sqlite3.connect(spool.path) as conn:
        rows = conn.execute(
            "SELECT event_id FROM spooled WHERE run_id = ? AND type = 'RunProgressed'", (run_id,)
        ).fetchall()
    return {row[0] for row in rows}


class FaultSchedule:
    """Picks the fault each operation meets, from a seeded random generator."""

    def __init__(self, proxy: FaultProxy, seed: int) -> None:
        self.proxy = proxy
        self.rng = random.Random(seed)
        self.stalls_left = 4  # each stall costs a read timeout of real time

    def before_operation(self) -> str | None:
        if self.rng.randrange(ONE_FAULT_IN):
            return None
        kinds = ["cut-mid-transaction", "cut-before-commit", "lose-commit-reply", "drop-all"]
        if self.stalls_left:
            kinds.append("stall")
        fault = self.rng.choice(kinds)
        if fault == "drop-all":
            self.proxy.drop_all()
        else:
            self.stalls_left -= fault == "stall"
            self.proxy.arm(fault)
        return fault


def test_sdk_appends_commit_once_or_fail_cleanly_through_every_fault(
    ledger: Ledger,
    db_url: str,
    proxy: FaultProxy,
    tmp_path: Path,
    reliability: Summary,
) -> None:
    spool = Spool(tmp_path / "spool")
    proxied = Ledger.from_url(through(proxy, db_url))
    schedule = FaultSchedule(proxy, seed=8)
    rng = random.Random(3)
    outcomes: Counter[str] = Counter()
    reported: dict[int, int] = {}
    try:
        for number in range(RUNS):
            schedule.before_operation()  # RunStarted meets faults too
            with RunContext(
                proxied,
                1,
                "FAULTY_NETWORK",
                spool=spool,
                progress_interval=0,
                heartbeat_interval=3600,
            ) as run:
                for call in range(1, PROGRESS_PER_RUN + 1):
                    outage = number == RUNS // 2 and call in (5, 6, 7)
                    if outage and call == 5:
                        proxy.outage()
                    fault = None if outage else schedule.before_operation()
                    before = progress_ids(ledger, run.run_id) & spooled_ids(spool, run.run_id)
                    run.progress(fetched=rng.randint(1, 100), created=1)
                    stored = progress_ids(ledger, run.run_id)
                    waiting = spooled_ids(spool, run.run_id)
                    # Nothing lost, nothing extra: every call's event is stored or spooled.
                    assert len(stored | waiting) == call
                    # In both places only when a COMMIT's reply was lost on this very call.
                    both = (stored & waiting) - before
                    if fault == "lose-commit-reply" and proxy.armed is None:
                        outcomes["lost reply: stored once, spooled for retry"] += len(both)
                    else:
                        assert not both, f"stored and spooled without a lost reply ({fault})"
                    if outage and call == 7:
                        proxy.restore()
                    proxy.disarm()  # an armed fault that did not fire must not leak forward
            assert run.result is not None
            reported[run.run_id] = run.result.totals["records_fetched"]
        flushed = spool.flush(ledger)
    finally:
        proxied.close()

    assert flushed.remaining == 0
    assert flushed.rejected == 0
    assert not spool.rejected()
    runs = {e.run_id for e in ledger.read_all() if e.type == "RunStarted"}
    assert runs == set(reported), "a run was opened twice or not at all"
    for run_id, fetched in reported.items():
        events = ledger.read_run(run_id)
        types = Counter(e.type for e in events)
        assert types == {"RunStarted": 1, "RunProgressed": PROGRESS_PER_RUN, "RunFinished": 1}
        assert events[-1].payload_data["status"] == "success"
        assert sum(e.payload_data.get("records_fetched", 0) for e in events) == fetched
    assert verify_chain(ledger).ok
    fired = proxy.fired
    for kind in (*FAULTS, "outage"):
        assert fired[kind], f"no {kind} fired: the schedule did not test it"
    assert proxy.refused
    reliability.record(
        "3 database faults",
        "mysql",
        f"{RUNS} SDK runs × {PROGRESS_PER_RUN} progress appends through a proxy that cut "
        f"{fired['cut-mid-transaction']} transactions mid-way, {fired['cut-before-commit']} "
        f"before COMMIT, lost {fired['lose-commit-reply']} COMMIT replies, stalled "
        f"{fired['stall']} calls ({READ_TIMEOUT_S}s read timeout), dropped every connection "
        f"{fired['drop-all'] - fired['outage']} times, refused {proxy.refused} connections in "
        "an outage",
        f"after every call each event was stored once or spooled; "
        f"{outcomes['lost reply: stored once, spooled for retry']} lost-reply commits stored "
        f"once, their retry stored nothing; {len(reported)} runs, each with exactly its "
        f"{PROGRESS_PER_RUN} progress events and exact counts, none opened twice; chain verified",
    )


def spawn_follower(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*LEDGER, "-v", "project", "--follow", "--interval", "0.05", "--db", url],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_projector_and_serve_keep_running_through_drops_lost_replies_and_an_outage(
    ledger: Ledger,
    db_url: str,
    proxy: FaultProxy,
    tmp_path: Path,
    reliability: Summary,
) -> None:
    url = through(proxy, db_url)
    port = free_port()
    serve_url = through(proxy, db_url, read_timeout=False)  # serve's own defaults, as deployed
    config = write_config(tmp_path / "ledger.toml", serve_url, tmp_path / "spool", STATIONS)
    follower, server = spawn_follower(url), serve(config, "--metrics-port", str(port))
    processes = [follower, server]
    follower_log, server_log = LineLog(follower), LineLog(server)
    follower_log.start()
    server_log.start()
    run_ids = [ledger.start_run(9, f"DIRECT_{i}") for i in range(4)]
    rng = random.Random(11)
    faults: Counter[str] = Counter()
    try:
        wait_until(lambda: finished_runs(ledger, "stations"), processes, "serve's first run")
        for _ in range(FAULT_ROUNDS):
            ledger.append([RunProgressed(run_id=rng.choice(run_ids), records_fetched=1)])
            fault = rng.choice([*FAULTS[:3], "drop-all"])
            faults[fault] += 1
            if fault == "drop-all":
                proxy.drop_all()
                continue
            proxy.arm(fault)  # fires on whichever process commits next
            wait_until(lambda: proxy.armed is None, processes, f"{fault} to fire")
        # The follower logs an outage once, as it starts: let it get over the last fault's
        # first, or the outage below would be the same one, already reported.
        wait_until(
            lambda: (
                follower_log.count("retrying until it can")
                == follower_log.count("proceeding again")
            ),
            processes,
            "the follower over the last fault",
        )
        # Serve too logs each outage once, as it starts (its projector's, its ticks', its
        # scrapes'): it must be over the last fault's before the outage below is a new one.
        wait_until(
            lambda: server_log.count("cannot proceed") == server_log.count("proceeding again"),
            processes,
            "serve over the last fault",
        )
        # An outage: both must notice, serve must still answer, and both must come back.
        since_follower, since_server = len(follower_log.lines), len(server_log.lines)
        proxy.outage()
        ledger.append([RunProgressed(run_id=run_ids[0], records_fetched=1)])
        wait_until(
            lambda: follower_log.count("cannot proceed", since_follower),
            processes,
            "the follower meets the outage",
        )
        wait_until(
            # One WARNING as an outage starts (its projector's, a tick's or a scrape's), not an
            # ERROR per tick.
            lambda: server_log.count("cannot proceed", since_server),
            processes,
            "serve meets the outage",
        )
        assert database_up_metric(port) == "ledger_database_up 0.0"
        proxy.restore()
        # The database stops answering: a scrape must still answer within its 10 s timeout.
        proxy.freeze()
        assert database_up_metric(port) == "ledger_database_up 0.0"
        proxy.thaw()
        done_before = len(finished_runs(ledger, "stations"))
        wait_until(
            lambda: len(finished_runs(ledger, "stations")) >= done_before + 2,
            processes,
            "serve's runs after the outage",
        )
        head = ledger.head().last_position
        wait_until(
            lambda: Projector(ledger).checkpoint().position >= head,
            processes,
            "the follower resumes and catches up",
        )
        assert database_up_metric(port) == "ledger_database_up 1.0"
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # both at once: they stop side by side
        for process in processes:
            stop_process(process, read_output=False)  # the logs read stderr
    follower_log.join(timeout=10)
    server_log.join(timeout=10)
    assert follower.returncode == 0, "".join(follower_log.lines)
    assert server.returncode == 0, "".join(server_log.lines)
    Spool(tmp_path / "spool").flush(ledger)  # what serve left spooled at its very end, if any
    ledger.append([RunFinished(run_id=run_id, status="success") for run_id in run_ids])
    Projector(ledger).run_once()
    assert open_runs(ledger) == 0, "serve left a run open"
    for run in finished_runs(ledger, "stations"):
        types = Counter(e.type for e in ledger.read_run(run["run_id"]))
        assert types["RunStarted"] == 1
        assert types["RunFinished"] + types["RunTimedOut"] == 1
    projected = table_rows(ledger)
    assert projected == replayed_rows(ledger)
    rebuild(ledger)
    assert table_rows(ledger) == projected
    assert verify_chain(ledger).ok
    stations = len(finished_runs(ledger, "stations"))
    reliability.record(
        "3 database faults",
        "mysql",
        f"`ledger project --follow` and `ledger serve` (a csv connector every second) behind "
        f"the proxy: {faults['lose-commit-reply']} lost COMMIT replies, "
        f"{faults['cut-before-commit']} cuts before COMMIT, "
        f"{faults['cut-mid-transaction']} cuts mid-transaction, {faults['drop-all']} drops of "
        f"every connection, an outage refusing {proxy.refused} connections, then a database "
        "that stops answering",
        f"both kept running (exit 0 on SIGTERM); the follower logged "
        f"{follower_log.count('cannot proceed')} retries and resumed by itself; serve's /metrics "
        f"answered ledger_database_up 0 in the outage and while the database was silent, and "
        f"serve finished {stations} runs, each with one terminal "
        f"event; projection = replay = fresh rebuild; chain verified",
    )


def test_timeouts_in_the_url_replace_the_defaults(backend: str, db_url: str) -> None:
    """The stall above relies on it: without it a stalled call would hang for 75 s."""
    if backend != "mysql":
        pytest.skip("read/write timeouts are PyMySQL's")
    configured = Ledger.from_url(db_url + "?read_timeout=3")
    default = Ledger.from_url(db_url)
    try:
        for store, expected in ((configured, 3), (default, 75)):
            with store.engine.connect() as conn:
                driver = conn.connection.dbapi_connection
                assert driver is not None
                assert driver._read_timeout == expected  # type: ignore[attr-defined]
                assert driver._write_timeout == 75  # type: ignore[attr-defined]
    finally:
        configured.close()
        default.close()
