"""Crashes (issue 8, item 2): SIGKILL of the projector, of a sweeper and of ``ledger serve``.

What it proves, on SQLite and on MariaDB, with real processes killed by SIGKILL:

* ``ledger project --follow`` killed at 24 random points while two appenders write: at startup,
  between batches, and provably mid-batch (after its ``applying`` debug line, with the checkpoint
  found not to have moved past that batch once the kill settled). One restart catches up; then
  the checkpoint is the head, ``ingestion_runs`` and the transitions equal an in-memory replay
  and a fresh rebuild, and every run's counters equal what the appenders wrote, tallied by the
  appenders themselves (nothing applied twice, nothing lost).
* ``ledger sweep`` over hundreds of stuck runs, killed several times part-way, then run to the
  end: each stuck run has exactly one RunTimedOut, no run has two terminal events, runs that were
  alive, recent or closed are untouched, and the projection equals a fresh rebuild.
* ``ledger serve`` killed while its csv connector is mid-run, several times and restarted each
  time: the killed run is left open (``ledger stuck`` lists it) until the restarted serve's
  sweeper times it out, once; a later run finishes; nothing is counted twice, ``source_records``
  has no duplicate, the projection equals a fresh rebuild and ``ledger verify`` passes.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from connectors.schema import source_records
from ledger import Ledger, RunFinished, RunProgressed, RunStarted, RunTimedOut
from ledger.clock import utcnow
from ledger.events import COUNTER_FIELDS
from ledger.urls import DATABASE_URL_ENV
from projections import Projector, rebuild
from projections.checkpoints import read_checkpoint
from projections.fold import fold_events
from projections.schema import COUNTER_COLUMNS, PROJECTION_NAME
from service.cli import cli
from tests.projection_support import replayed_rows, table_rows, transition_rows
from tests.reliability.summary import Summary
from tests.support import TERMINAL_EVENT_TYPES, counter_deltas, stop_process

REPO = Path(__file__).resolve().parents[2]
LINE_TIMEOUT = 90.0  # seconds to wait for an expected log line: generous, only hit on failure

# ---------------------------------------------------------------------- processes


SPAWNED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def spawned_processes_stopped() -> Iterator[None]:
    """A failed assertion must not leave a serve or a projector running against the database.
    (Named apart from tests/conftest.py's ``no_process_outlives_its_test``, which it shadowed:
    that check runs after this one.)"""
    try:
        yield
    finally:
        while SPAWNED:
            stop_process(SPAWNED.pop(), signal.SIGKILL, read_output=False)  # a thread reads it


def ledger_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from service.cli import main; main()", *args]


class LoggedProcess:
    """A ``ledger`` subprocess whose stderr a thread reads line by line. ``kill_when`` is given
    the lines so far after each new one; the moment it holds, that thread sends SIGKILL, so the
    kill lands as close as possible to the logged moment."""

    def __init__(self, *args: str, kill_when: Callable[[list[str]], bool] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k != DATABASE_URL_ENV}
        self.process = subprocess.Popen(
            ledger_command(*args),
            cwd=REPO,
            env=env,
            text=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self.closed = False
        self.killed_by_trigger = False
        self.changed = threading.Condition()
        self.kill_when = kill_when
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        SPAWNED.append(self.process)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self.changed:
                self.lines.append(line)
                if self.kill_when is not None and self.kill_when(self.lines):
                    self.process.send_signal(signal.SIGKILL)
                    self.kill_when = None
                    self.killed_by_trigger = True
                self.changed.notify_all()
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = LINE_TIMEOUT) -> re.Match[str]:
        """The first line logged that matches ``pattern`` (a regex), waiting for it."""
        deadline = time.monotonic() + timeout
        after = 0
        with self.changed:
            while True:
                for line in self.lines[after:]:
                    match = re.search(pattern, line)
                    if match:
                        return match
                after = len(self.lines)
                if self.closed:
                    raise AssertionError(
                        f"exited ({self.process.poll()}) before logging {pattern!r}:\n{self.log}"
                    )
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no line matching {pattern!r} in {timeout}s:\n{self.log}"
                self.changed.wait(remaining)

    def wait_until_killed(self, timeout: float = LINE_TIMEOUT) -> None:
        """Wait for the ``kill_when`` trigger to fire and the process to die of it."""
        self.finish(timeout)
        assert self.killed_by_trigger, f"exited {self.process.returncode} unkilled:\n{self.log}"
        assert self.process.returncode == -signal.SIGKILL, self.log

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.finish()
        assert self.process.returncode == -signal.SIGKILL, self.log

    def finish(self, timeout: float = LINE_TIMEOUT) -> int:
        """Wait for the exit and for the last line to be read."""
        self.process.wait(timeout=timeout)
        self.reader.join(timeout=timeout)
        return self.process.returncode

    @property
    def log(self) -> str:
        return "".join(self.lines[-60:])


def count_matching(lines: list[str], pattern: str) -> int:
    return sum(1 for line in lines if re.search(pattern, line))


def on_nth_line(pattern: str, nth: int) -> Callable[[list[str]], bool]:
    """A ``kill_when``: true once ``nth`` lines have matched ``pattern``."""
    return lambda lines: count_matching(lines, pattern) >= nth


# ---------------------------------------------------------------------- reading the ledger


def terminal_events_by_run(ledger: Ledger) -> dict[int, list[str]]:
    terminals: dict[int, list[str]] = {}
    for event in ledger.read_all(batch_size=5000):
        terminals.setdefault(event.run_id, [])
        if event.type in TERMINAL_EVENT_TYPES:
            terminals[event.run_id].append(event.type)
    return terminals


def replayed_transitions(ledger: Ledger) -> list[dict[str, Any]]:
    outcome = fold_events({}, ledger.read_all(batch_size=5000), set())
    assert outcome.poison is None
    return [transition.as_row() for transition in outcome.transitions]


def settled_checkpoint(ledger: Ledger) -> int:
    """The checkpoint once a killed projector's transaction is resolved: the locking read waits
    for the server to roll back (or finish committing) what the dead session held (MySQL); on
    SQLite the dead process's transaction is gone with it."""
    with ledger.engine.begin() as conn:
        return read_checkpoint(conn, PROJECTION_NAME, lock=True).position


def assert_projection_is_a_replay_and_a_rebuild(ledger: Ledger) -> None:
    """Catch up in-process, then: checkpoint = head, tables = replay = fresh rebuild."""
    Projector(ledger).run_once()
    assert Projector(ledger).checkpoint().position == ledger.head().last_position
    rows, transitions = table_rows(ledger), transition_rows(ledger)
    assert rows == replayed_rows(ledger)
    assert transitions == replayed_transitions(ledger)
    rebuild(ledger)
    assert table_rows(ledger) == rows
    assert transition_rows(ledger) == transitions


# ---------------------------------------------------------------------- 1. the projector

# Sized for CI's 30 minutes; LEDGER_RELIABILITY_KILLS=N (a multiple of 4) kills N times
# (docs/RELIABILITY.md's table: a run of 24).
KILLS_PER_BACKEND = int(os.environ.get("LEDGER_RELIABILITY_KILLS", "16"))
assert KILLS_PER_BACKEND % 4 == 0, "LEDGER_RELIABILITY_KILLS: a multiple of 4"
AIMED_MID_BATCH = KILLS_PER_BACKEND // 2
APPLYING = re.compile(r"applying (\d+) event\(s\), positions (\d+)\.\.(\d+)")


class RecordingAppender(threading.Thread):
    """Appends to a few open runs until stopped: progress with random counters, finishes,
    operator timeouts followed by late finishes. Tallies every counter it appended per run, and
    each run's status, without reading the ledger: the expected totals."""

    def __init__(self, url: str, name: str, seed: int) -> None:
        super().__init__(daemon=True, name=name)
        self.ledger = Ledger.from_url(url)
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.totals: dict[int, Counter[str]] = {}
        self.statuses: dict[int, str] = {}
        self.events = 0

    def run(self) -> None:
        try:
            open_runs = [self._start() for _ in range(4)]
            while not self.stop.is_set():
                slot = self.rng.randrange(len(open_runs))
                run_id = open_runs[slot]
                roll = self.rng.random()
                if roll < 0.03:
                    self._finish(run_id)
                    open_runs[slot] = self._start()
                elif roll < 0.045:
                    self._time_out_then_finish_late(run_id)
                    open_runs[slot] = self._start()
                else:
                    self._append(
                        run_id, [RunProgressed(run_id=run_id, **self._counts()) for _ in range(4)]
                    )
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            self.ledger.close()

    def _counts(self) -> dict[str, int]:
        return {name: self.rng.randint(0, 9) for name in COUNTER_FIELDS}

    def _append(self, run_id: int, events: list[Any]) -> None:
        self.ledger.append(events)
        for event in events:  # counted once the append returned: it is in the ledger
            self.totals[run_id].update(counter_deltas(event))
        self.events += len(events)

    def _start(self) -> int:
        run_id = self.ledger.start_run(1, self.name)
        self.totals[run_id] = Counter()
        self.statuses[run_id] = "running"
        self.events += 1
        return run_id

    def _finish(self, run_id: int) -> None:
        status = self.rng.choice(["success", "partial", "failed"])
        self._append(run_id, [RunFinished(run_id=run_id, status=status, **self._counts())])
        self.statuses[run_id] = status

    def _time_out_then_finish_late(self, run_id: int) -> None:
        timeout = RunTimedOut(run_id=run_id, reason="crash test", detected_by="operator:test")
        self._append(run_id, [timeout])
        self.statuses[run_id] = "failed"  # the first terminal status wins
        self._append(run_id, [RunFinished(run_id=run_id, status="success", **self._counts())])


@dataclass
class ProjectorKill:
    how: str  # what the kill aimed at: "mid-batch", "after-commit" or "random-delay"
    landed: str = ""  # where it provably landed: "startup", "mid-batch" or "between batches"


def on_batch_start(nth: int, min_events: int = 10) -> Callable[[list[str]], bool]:
    """True at the first ``applying`` line of ``min_events`` or more, from the ``nth`` batch on:
    a batch big enough that the kill lands before its commit."""

    def started(lines: list[str]) -> bool:
        match = APPLYING.search(lines[-1])
        return (
            match is not None
            and int(match.group(1)) >= min_events
            and count_matching(lines, APPLYING.pattern) >= nth
        )

    return started


def kill_projector_once(db_url: str, ledger: Ledger, how: str, rng: random.Random) -> ProjectorKill:
    """Spawn ``ledger -vv project --follow``, SIGKILL it as ``how`` says, and classify where the
    kill landed from its log and the settled checkpoint."""
    kill = ProjectorKill(how)
    batch_size = rng.choice([100, 150, 250]) if how == "mid-batch" else rng.choice([7, 60, 400])
    wanted = rng.randint(1, 2)  # maybe let a batch commit first: the kill lands on a later one
    trigger: Callable[[list[str]], bool] | None = None
    if how == "mid-batch":
        trigger = on_batch_start(wanted)
    elif how == "after-commit":
        trigger = on_nth_line(r"projected \d+ event", wanted)  # logged after the commit
    process = LoggedProcess(
        "-vv",
        "project",
        "--follow",
        "--batch-size",
        str(batch_size),
        "--interval",
        "0.01",
        "--db",
        db_url,
        kill_when=trigger,
    )
    if trigger is None:
        time.sleep(rng.uniform(0.05, 1.6))  # a random moment: importing, connecting, batches
        process.kill()
    else:
        process.wait_until_killed()
    starts = [APPLYING.search(line) for line in process.lines]
    last_start = next((m for m in reversed(starts) if m), None)
    checkpoint = settled_checkpoint(ledger)
    if last_start is None:
        kill.landed = "startup"
    elif checkpoint < int(last_start.group(3)):
        # The batch had begun (its first position is the one after the checkpoint it locked)
        # and its commit never happened: the kill landed inside the transaction.
        assert checkpoint == int(last_start.group(2)) - 1, (checkpoint, last_start.group(0))
        kill.landed = "mid-batch"
    else:
        kill.landed = "between batches"
    return kill


def test_projector_sigkilled_at_random_points_then_restarted_equals_a_fresh_rebuild(
    ledger: Ledger, db_url: str, backend: str, reliability: Summary
) -> None:
    rng = random.Random(f"projector-{backend}")
    quarter = KILLS_PER_BACKEND // 4
    plan = ["mid-batch"] * AIMED_MID_BATCH + ["after-commit"] * quarter + ["random-delay"] * quarter
    rng.shuffle(plan)
    appenders = [RecordingAppender(db_url, f"appender-{i}", rng.randrange(10**6)) for i in (1, 2)]
    for appender in appenders:
        appender.start()
    try:
        kills = [kill_projector_once(db_url, ledger, how, rng) for how in plan]
    finally:
        for appender in appenders:
            appender.stop.set()
        for appender in appenders:
            appender.join(timeout=120)
    for appender in appenders:
        assert appender.error is None, repr(appender.error)

    restarted = LoggedProcess("project", "--batch-size", "500", "--db", db_url)
    assert restarted.finish() == 0, restarted.log
    head = ledger.head().last_position
    assert Projector(ledger).checkpoint().position == head

    rows = table_rows(ledger)
    expected_totals = {run: totals for a in appenders for run, totals in a.totals.items()}
    expected_statuses = {run: status for a in appenders for run, status in a.statuses.items()}
    assert set(rows) == set(expected_totals)
    for run_id, row in rows.items():
        counted = {field: row[column] for field, column in COUNTER_COLUMNS.items()}
        assert counted == {f: expected_totals[run_id][f] for f in COUNTER_FIELDS}, run_id
        assert row["status"] == expected_statuses[run_id], run_id
    assert sum(a.events for a in appenders) == head
    assert_projection_is_a_replay_and_a_rebuild(ledger)

    landed = Counter(kill.landed for kill in kills)
    aimed_and_landed = sum(k.how == k.landed == "mid-batch" for k in kills)
    assert len(kills) == KILLS_PER_BACKEND
    assert aimed_and_landed >= AIMED_MID_BATCH // 2, kills  # most aimed mid-batch land there
    reliability.record(
        "crashes: projector",
        backend,
        f"SIGKILL of project --follow at {len(kills)} points with 2 appenders running "
        f"({landed['mid-batch']} proven mid-batch, {landed['between batches']} between "
        f"batches, {landed['startup']} at startup); {head} events",
        f"after one restart: checkpoint = head; {len(rows)} runs and their transitions equal a "
        "replay and a fresh rebuild; every counter equals the appenders' own tally",
    )


# ---------------------------------------------------------------------- 2. the sweeper

STUCK_RUNS = 400
SWEEPER_KILLS = 6


@dataclass
class SweepFixture:
    stuck: list[int] = field(default_factory=list)
    untouchable: list[int] = field(default_factory=list)  # alive, recent or already closed


def start_runs(ledger: Ledger, count: int, connector: str, at: Any) -> list[int]:
    run_ids: list[int] = []
    for first in range(0, count, 100):
        batch = [
            RunStarted(source_id=1, connector_name=connector, occurred_at=at)
            for _ in range(min(100, count - first))
        ]
        run_ids += [event.run_id for event in ledger.append(batch).events]
    return run_ids


def make_stuck_and_untouchable_runs(ledger: Ledger) -> SweepFixture:
    now = utcnow()
    long_ago = now - timedelta(hours=3)
    fixture = SweepFixture()
    fixture.stuck = start_runs(ledger, STUCK_RUNS, "stuck", long_ago)
    ledger.append(  # a quarter showed some life, still long ago
        RunProgressed(run_id=r, records_fetched=3, occurred_at=long_ago + timedelta(minutes=30))
        for r in fixture.stuck[::4]
    )
    recent = start_runs(ledger, 40, "recent", now - timedelta(minutes=5))
    alive = start_runs(ledger, 40, "alive", long_ago)
    ledger.append(RunProgressed(run_id=r, occurred_at=now - timedelta(minutes=2)) for r in alive)
    closed = start_runs(ledger, 40, "closed", long_ago)
    ledger.append(
        RunFinished(run_id=r, status="success", occurred_at=long_ago + timedelta(minutes=1))
        for r in closed
    )
    fixture.untouchable = recent + alive + closed
    return fixture


def timed_out_runs(ledger: Ledger) -> Counter[int]:
    return Counter(e.run_id for e in ledger.read_all(batch_size=5000) if e.type == "RunTimedOut")


def test_sweeper_sigkilled_midway_then_rerun_times_out_each_stuck_run_once(
    ledger: Ledger, db_url: str, backend: str, reliability: Summary
) -> None:
    rng = random.Random(f"sweeper-{backend}")
    fixture = make_stuck_and_untouchable_runs(ledger)
    untouched_before = {r: ledger.read_run(r) for r in fixture.untouchable}
    swept_by_kill: list[int] = []
    for attempt in range(SWEEPER_KILLS):
        remaining = STUCK_RUNS - sum(swept_by_kill)
        if attempt == 0:  # once during startup: importing, connecting, the stuck query
            process = LoggedProcess("sweep", "--db", db_url)
            time.sleep(rng.uniform(0.05, 0.4))
            process.kill()
        else:
            wanted = rng.randint(1, max(1, remaining // 3))
            process = LoggedProcess(
                "-v",  # "timed out run" is an INFO line
                "sweep",
                "--db",
                db_url,
                kill_when=on_nth_line("timed out run", wanted),
            )
            process.wait_until_killed()
        timed_out = timed_out_runs(ledger)
        assert set(timed_out) <= set(fixture.stuck)
        assert set(timed_out.values()) <= {1}
        swept_by_kill.append(len(timed_out) - (STUCK_RUNS - remaining))
        assert len(timed_out) < STUCK_RUNS, "a kill came after the sweep had finished"

    finishing = subprocess.run(
        ledger_command("sweep", "--format", "json", "--db", db_url),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finishing.returncode == 0, finishing.stderr
    report = json.loads(finishing.stdout)
    assert len(report["timed_out"]) == STUCK_RUNS - sum(swept_by_kill)
    assert report["skipped"] == []

    timed_out = timed_out_runs(ledger)
    assert timed_out == Counter(dict.fromkeys(fixture.stuck, 1))
    assert all(len(t) <= 1 for t in terminal_events_by_run(ledger).values())
    assert {r: ledger.read_run(r) for r in fixture.untouchable} == untouched_before
    again = CliRunner().invoke(cli, ["sweep", "--format", "json", "--db", db_url])
    assert json.loads(again.stdout)["timed_out"] == []
    assert_projection_is_a_replay_and_a_rebuild(ledger)
    rows = table_rows(ledger)
    assert {rows[r]["status"] for r in fixture.stuck} == {"failed"}
    assert {rows[r]["status"] for r in fixture.untouchable} == {"running", "success"}

    reliability.record(
        "crashes: sweeper",
        backend,
        f"SIGKILL of ledger sweep {SWEEPER_KILLS} times over {STUCK_RUNS} stuck runs "
        f"(timed out before each kill: {', '.join(map(str, swept_by_kill))}), then a full rerun",
        f"each of {STUCK_RUNS} stuck runs has exactly one RunTimedOut; "
        f"{len(fixture.untouchable)} alive/recent/closed runs untouched; projection = rebuild",
    )


# ---------------------------------------------------------------------- 3. ledger serve

SERVE_KILLS = 3
CSV_ROWS = 30_000
CSV_BATCH = 100  # records per upsert transaction, each followed by its RunProgressed
CONNECTOR = "crash-csv"
SOURCE_ID = 7
STARTED = rf"run (\d+) of {CONNECTOR} started"


def write_csv(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name", "city", "capacity"])
        for index in range(CSV_ROWS):
            writer.writerow([f"R-{index:06d}", f"Station {index}", "Porto", index % 50])
    return path


def write_serve_config(folder: Path, db_url: str, csv_path: Path) -> Path:
    """A csv connector every second; the sweeper every second with a 4s stale threshold,
    against 1s heartbeats, so a killed run is swept soon and a live one never is."""
    config = folder / "ledger.toml"
    config.write_text(
        f'database_url = "{db_url}"\n'
        '[thresholds]\nstale_after = "4s"\n'
        '[sweeper]\ninterval = "1s"\n'
        '[projector]\ninterval = "1s"\nbatch_size = 200\n'
        f'[spool]\ndir = "{folder / "spool"}"\nflush_interval = "2s"\n'
        '[serve]\ngrace_period = "30s"\nprogress_interval = "0s"\nheartbeat_interval = "1s"\n'
        "[[connectors]]\n"
        f'name = "{CONNECTOR}"\ntype = "csv"\nsource_id = {SOURCE_ID}\n'
        'schedule = { interval = "1s" }\n'
        f'options = {{ path = "{csv_path}", key = "id", batch_size = {CSV_BATCH} }}\n',
        encoding="utf-8",
    )
    return config


def serve_process(config: Path) -> LoggedProcess:
    return LoggedProcess("-v", "serve", "--config", str(config))


def wait_until_stuck(db_url: str, run_id: int) -> None:
    """``ledger stuck --older-than 1s`` lists the run (polled: it must be silent for 1s)."""
    deadline = time.monotonic() + 30
    while True:
        result = CliRunner().invoke(
            cli, ["stuck", "--older-than", "1s", "--format", "json", "--db", db_url]
        )
        listed = [run["run_id"] for run in json.loads(result.stdout)] if result.stdout else []
        if run_id in listed:
            assert result.exit_code == 1
            return
        assert time.monotonic() < deadline, result.output
        time.sleep(0.2)


def source_record_counts(ledger: Ledger) -> tuple[int, int]:
    """(rows, distinct keys) of the connector's source in ``source_records``."""
    table = source_records
    keys = func.count(func.distinct(table.c.external_id))
    query = select(func.count(), keys).where(table.c.source_id == SOURCE_ID)
    with ledger.engine.connect() as conn:
        rows, distinct = conn.execute(query).one()
    return int(rows), int(distinct)


def test_serve_sigkilled_mid_run_then_restarted_never_double_counts(
    ledger: Ledger, db_url: str, backend: str, tmp_path: Path, reliability: Summary
) -> None:
    rng = random.Random(f"serve-{backend}")
    config = write_serve_config(tmp_path, db_url, write_csv(tmp_path / "records.csv"))
    killed: list[int] = []
    process = serve_process(config)
    for _ in range(SERVE_KILLS):
        if killed:  # the restarted serve sweeps the run its predecessor left open, once stale
            process.wait_for_line(rf"timed out run {killed[-1]} ")
        started = process.wait_for_line(STARTED)
        run_id = int(started.group(1))
        assert run_id not in killed
        time.sleep(rng.uniform(0.05, 0.35))  # a random moment inside the run
        process.kill()
        state = ledger.run(run_id)
        assert state is not None
        assert state.state == "open", "the run ended before the kill"
        killed.append(run_id)
        wait_until_stuck(db_url, run_id)
        # What the dead process left is consistent: chain, streams, registry, and the
        # projection up to its checkpoint (an open run is not a problem for verify).
        left = CliRunner().invoke(cli, ["verify", "--db", db_url])
        assert left.exit_code == 0, left.output
        process = serve_process(config)

    process.wait_for_line(rf"timed out run {killed[-1]} ")
    finished = process.wait_for_line(rf"{CONNECTOR}:{SOURCE_ID}: run (\d+) success")
    process.process.send_signal(signal.SIGTERM)
    assert process.finish() == 0, process.log
    assert "stopped" in process.log

    terminals = terminal_events_by_run(ledger)
    assert all(len(t) == 1 for t in terminals.values()), terminals  # none open, none twice
    for run_id in killed:
        (timeout,) = [e for e in ledger.read_run(run_id) if e.type in TERMINAL_EVENT_TYPES]
        assert timeout.type == "RunTimedOut"
        assert timeout.payload_data["detected_by"] == "sweeper"
    assert source_record_counts(ledger) == (CSV_ROWS, CSV_ROWS)

    assert_projection_is_a_replay_and_a_rebuild(ledger)
    rows = table_rows(ledger)
    complete = rows[int(finished.group(1))]
    assert complete["recordsFetched"] == CSV_ROWS
    assert complete["recordsCreated"] + complete["recordsSkipped"] == CSV_ROWS
    assert all(rows[r]["recordsFetched"] < CSV_ROWS for r in killed)
    created = sum(row["recordsCreated"] for row in rows.values())
    assert created <= CSV_ROWS  # each record counted created once at most
    # A kill between a batch's upsert commit and its RunProgressed leaves that batch in
    # source_records but in no run's counters (the next run counts it skipped): one batch at
    # most per kill.
    assert CSV_ROWS - created <= CSV_BATCH * len(killed)
    for row in rows.values():
        handled = row["recordsCreated"] + row["recordsUpdated"] + row["recordsSkipped"]
        assert handled == row["recordsFetched"], row
    verified = CliRunner().invoke(cli, ["verify", "--db", db_url])
    assert verified.exit_code == 0, verified.output

    reliability.record(
        "crashes: serve",
        backend,
        f"SIGKILL of ledger serve {SERVE_KILLS} times mid csv run "
        f"(runs {', '.join(map(str, killed))} killed after "
        f"{', '.join(str(rows[r]['recordsFetched']) for r in killed)} of {CSV_ROWS} rows), "
        "restarted each time, then SIGTERM",
        "each killed run left open (ledger stuck lists it, verify exit 0), then timed out once "
        f"by the restarted sweeper; a later run finished; {len(rows)} runs, none counted twice "
        f"({created} of {CSV_ROWS} records counted created); source_records without "
        "duplicates; projection = rebuild; verify exit 0",
    )
