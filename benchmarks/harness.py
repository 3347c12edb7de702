"""``python -m benchmarks [--db URL] [--quick] [--peer eventsourcing] [--json FILE] [--plot F.png]``

For a SQLite file (always) and MariaDB (when ``--db`` names a server), measure each figure
(appends, reads, writers, rebuild, follow lag, stuck query, chain verification) beside the
raw driver limit for the same work measured in the same run and, with
``--peer eventsourcing``, beside the ``eventsourcing`` library doing the same work in the same
process (``pip install -e '.[bench]'``), and print a table: figure, value, peer, raw, the ratio
to each, target, met. The append workloads are runs of RunStarted + 8 RunProgressed +
RunFinished; the append figures are the median of interleaved rounds (raw, run-ledger, peer in
turn), because the machine's fsync latency swings from one minute to the next and only ratios
measured side by side mean anything. History is generated through the library's own batch
append. The databases are scratch ones (temp files; ``<db>_bench_<random>`` on the server),
dropped at the end. The harness exits 0 when it ran, whether or not the targets are met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from benchmarks.raw import RawDatabase, mysql_connection, raw_scan
from forensics.chain import verify_chain
from ledger import Ledger, RunFinished, RunProgressed, RunStarted, stuck_runs
from ledger.dialects import is_mysql_backend
from ledger.reads import count_runs
from ledger.rules import OPEN
from ledger.urls import mask_secrets, mask_url, tcp_port_problem, unparseable_url_message
from migrations.runner import upgrade
from projections import Projector
from projections.schema import ingestion_runs

REPO = Path(__file__).resolve().parent.parent
PEERS = ("eventsourcing",)
BENCH_EXTRA = "pip install -e '.[bench]'"
PEER_MYSQL = "pip install --no-deps -r benchmarks/peer-mysql.txt"


@dataclass
class Check:
    """One target of a figure; ``met`` is None when it was not measured (no ``--peer``)."""

    target: str
    met: bool | None


@dataclass
class Figure:
    database: str
    name: str
    value: float
    unit: str
    raw: float | None  # the raw limit for the same work, same unit
    peer: float | None = None  # the peer library doing the same work, same unit
    checks: list[Check] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)  # per round, per system

    @property
    def ratio(self) -> float | None:
        """To the raw limit."""
        return None if not self.raw else self.value / self.raw

    @property
    def peer_ratio(self) -> float | None:
        return None if not self.peer else self.value / self.peer

    @property
    def met(self) -> bool | None:
        """False when a target is missed; None when one was not measured (or there is none)."""
        states = [check.met for check in self.checks]
        if False in states:
            return False
        return None if not states or None in states else True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "samples": {  # NaN: a round the peer did not finish (it failed and was dropped)
                system: [None if x != x else x for x in values]
                for system, values in self.samples.items()
            },
            "ratio": self.ratio,
            "peer_ratio": self.peer_ratio,
            "met": self.met,
            "target": "; ".join(check.target for check in self.checks) or "-",
        }


def of_raw(value: float, raw: float, share: float) -> Check:
    return Check(f">= {share:.0%} of raw", value >= share * raw)


def of_peer(value: float, peer: float | None, times: float = 1.5) -> Check:
    return Check(f">= {times:g}x peer", None if peer is None else value >= times * peer)


@dataclass
class Sizes:
    rounds: int = 5  # interleaved rounds of each append workload (raw, run-ledger, peer)
    live_runs: int = 40  # runs of 10 single-event calls per round (400 events)
    batch10_calls: int = 100  # calls of one run's 10 events per round
    batch1000_calls: int = 4  # calls of 1,000 events (100 runs) per round
    read_rounds: int = 3  # interleaved rounds of read and decode
    history_small: int = 100_000
    history_large: int = 1_000_000
    stuck_runs_small: int = 10_000
    stuck_runs_large: int = 1_000_000
    web_runs: int = 1_000_000  # ingestion_runs rows behind the web view's runs page
    legacy_small: int = 10_000  # legacy rows of the two `ledger import-legacy` runs
    legacy_large: int = 100_000
    writers: tuple[int, ...] = (1, 2, 4, 8)
    appenders_each: int = 500
    lag_seconds: float = 20.0
    api_runs: int = 40  # runs of 10 single-event calls per round, through the API and not
    api_batch_calls: int = 40  # calls of 100 events per round, each way

    def quick(self) -> Sizes:
        return Sizes(
            api_runs=10,
            api_batch_calls=10,
            live_runs=10,
            batch10_calls=20,
            batch1000_calls=1,
            history_small=10_000,
            history_large=50_000,
            stuck_runs_small=1_000,
            stuck_runs_large=20_000,
            web_runs=50_000,
            legacy_small=5_000,
            legacy_large=50_000,
            appenders_each=30,
            lag_seconds=4.0,
        )

    def tiny(self) -> Sizes:
        """For the smoke test: every figure, in seconds (its values mean nothing)."""
        return Sizes(
            rounds=2,
            live_runs=2,
            batch10_calls=4,
            batch1000_calls=1,
            read_rounds=1,
            history_small=2_000,
            history_large=4_000,
            stuck_runs_small=200,
            stuck_runs_large=1_000,
            web_runs=2_000,
            legacy_small=500,
            legacy_large=1_000,
            writers=(1, 2),
            appenders_each=10,
            lag_seconds=1.0,
            api_runs=1,
            api_batch_calls=1,
        )


def _child_figures(task: str, *args: str) -> dict[str, Any]:
    """Run ``task`` of :mod:`benchmarks.child` in a process of its own (its peak RSS is then
    the task's alone) and return the figures it prints as JSON."""
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.child", task, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, Any] = json.loads(child.stdout)
    return figures


def history_batch(first_run: int, runs: int, per_run: int = 10) -> list[Any]:
    """``runs`` complete runs of ``per_run`` events each (start, progress, finish)."""
    events: list[Any] = []
    for offset in range(runs):
        ref = f"r{first_run + offset}"
        events.append(RunStarted(run_ref=ref, source_id=1, connector_name="bench"))
        events += [
            RunProgressed(run_ref=ref, records_fetched=3, records_created=2)
            for _ in range(per_run - 2)
        ]
        events.append(RunFinished(run_ref=ref, status="success"))
    return events


def grow_history(ledger: Ledger, target_events: int, per_run: int = 10) -> None:
    """Batch-append complete runs until the ledger holds ``target_events`` events."""
    runs_per_batch = 1000 // per_run
    while ledger.head().last_position < target_events:
        missing = target_events - ledger.head().last_position
        runs = max(1, min(runs_per_batch, missing // per_run))
        ledger.append(history_batch(0, runs, per_run))


def ledger_live(ledger: Ledger, runs: int) -> float:
    """Events/s, one event per durable ``Ledger.append`` call: runs of RunStarted +
    8 RunProgressed + RunFinished, each event built and appended on its own."""
    started = time.perf_counter()
    for _ in range(runs):
        result = ledger.append([RunStarted(source_id=1, connector_name="bench")])
        run_id = result.events[0].run_id
        for _ in range(8):
            ledger.append([RunProgressed(run_id=run_id, records_fetched=3, records_created=2)])
        ledger.append([RunFinished(run_id=run_id, status="success")])
    return runs * 10 / (time.perf_counter() - started)


def ledger_batches(ledger: Ledger, calls: int, runs_per_call: int) -> float:
    """Events/s, ``runs_per_call`` complete runs of 10 events per ``Ledger.append`` call (the
    events built in the timed loop, as the peer's aggregates are)."""
    started = time.perf_counter()
    for _ in range(calls):
        ledger.append(history_batch(0, runs_per_call))
    return calls * runs_per_call * 10 / (time.perf_counter() - started)


def ledger_read_decode(ledger: Ledger) -> tuple[int, float]:
    """(events, events/s) of ``Ledger.read_all()`` and ``.event`` on each."""
    started = time.perf_counter()
    decoded = sum(1 for recorded in ledger.read_all() if recorded.event)
    return decoded, decoded / (time.perf_counter() - started)


def interleaved(rounds: int, measures: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Each measure once a round, in turn; their samples, round by round."""
    samples: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            samples[name].append(measure())
    return samples


class Bench:
    def __init__(
        self,
        name: str,
        url: str,
        sqlite_path: str | None,
        raw_url: str,
        raw_sqlite: str | None,
        sizes: Sizes,
        console: Console,
        peer: Any = None,
        peer_reason: str | None = None,
    ) -> None:
        self.name, self.url, self.sqlite_path = name, url, sqlite_path
        self.raw_url, self.raw_sqlite = raw_url, raw_sqlite
        self.sizes, self.console = sizes, console
        self.peer, self.peer_reason = peer, peer_reason  # reason: why the peer is missing
        self.ledger = Ledger.from_url(url)
        upgrade(self.ledger)
        self.figures: list[Figure] = []
        self.curves: dict[str, list[Any]] = {"rebuild": [], "stuck": [], "writers": []}
        self.notes: list[str] = []

    def log(self, text: str) -> None:
        self.console.log(f"[{self.name}] {text}")

    def add(self, *args: Any, **kwargs: Any) -> Figure:
        figure = Figure(self.name, *args, **kwargs)
        self.figures.append(figure)
        return figure

    @property
    def mysql(self) -> bool:
        return self.sqlite_path is None

    # -------------------------------------------------------------- the peer

    def _peer_measure(self, measure: Callable[[Any], float]) -> Callable[[], float]:
        """A measure of the peer, which gives it up (with the reason) if the peer fails."""

        def run() -> float:
            if self.peer is None:
                return float("nan")
            try:
                return measure(self.peer)
            except Exception as exc:  # reported as the peer being unavailable, not faked
                self.log(f"the peer failed, dropped: {type(exc).__name__}: {exc}")
                self.peer_reason = f"failed: {type(exc).__name__}: {_one_line(exc)[:300]}"
                self.peer.close()
                self.peer = None
                return float("nan")

        return run

    def _measures(
        self, raw: Callable[[], float], ledger: Callable[[], float], peer: Callable[[Any], float]
    ) -> dict[str, Callable[[], float]]:
        measures = {"raw": raw, "run-ledger": ledger}
        if self.peer is not None:
            measures["peer"] = self._peer_measure(peer)
        return measures

    def _medians(self, samples: dict[str, list[float]]) -> tuple[float, float, float | None]:
        peer = [x for x in samples.get("peer", []) if x == x]  # NaN: the peer failed
        return (
            statistics.median(samples["run-ledger"]),
            statistics.median(samples["raw"]),
            statistics.median(peer) if peer and self.peer is not None else None,
        )

    # -------------------------------------------------------------- 1 and 2: appends

    def appends(self) -> None:
        raw = RawDatabase(self.raw_url, self.raw_sqlite)
        sizes = self.sizes
        try:
            self._append_figure(
                "1. live append (1 event/call)",
                f"live appends, one event per call: {sizes.rounds} interleaved rounds of "
                f"{sizes.live_runs * 10} events",
                lambda: raw.single_inserts(sizes.live_runs * 10),
                lambda: ledger_live(self.ledger, sizes.live_runs),
                lambda peer: peer.live(sizes.live_runs),
                lambda value, raw_value, peer_value: (
                    ([] if self.mysql else [of_peer(value, peer_value)])
                    + [of_raw(value, raw_value, 0.70)]
                ),
            )
            self._append_figure(
                "2. batch append (10/call, one run)",
                f"batch appends of one run's 10 events: {sizes.rounds} rounds",
                lambda: raw.batch_inserts(sizes.batch10_calls, size=10),
                lambda: ledger_batches(self.ledger, sizes.batch10_calls, 1),
                lambda peer: peer.batches(sizes.batch10_calls, 1),
                lambda value, raw_value, peer_value: [of_peer(value, peer_value)],
            )
            self._append_figure(
                "2. batch append (1,000/call)",
                f"batch appends of 1,000 (100 runs): {sizes.rounds} rounds",
                lambda: raw.batch_inserts(sizes.batch1000_calls, size=1000),
                lambda: ledger_batches(self.ledger, sizes.batch1000_calls, 100),
                lambda peer: peer.batches(sizes.batch1000_calls, 100),
                lambda value, raw_value, peer_value: [
                    of_raw(value, raw_value, 0.70 if self.mysql else 0.50)
                ],
            )
        finally:
            raw.close()

    def _append_figure(
        self,
        name: str,
        what: str,
        raw: Any,
        ours: Any,
        peer: Any,
        checks: Any,
    ) -> None:
        """Interleaved rounds of the raw driver, run-ledger and the peer doing the same
        appends; the medians become one figure with ``checks(value, raw, peer)``."""
        self.log(what)
        samples = interleaved(self.sizes.rounds, self._measures(raw, ours, peer))
        value, raw_value, peer_value = self._medians(samples)
        self.add(
            name,
            value,
            "events/s",
            raw_value,
            peer_value,
            checks(value, raw_value, peer_value),
            samples,
        )

    # -------------------------------------------------------------- 3: concurrent writers

    def writers(self) -> None:
        """For each number of processes: that many raw writers, then that many run-ledger
        appenders, started together; the processes are started once, up front."""
        RawDatabase(self.raw_url, None).close()  # the raw table, created empty
        top = max(self.sizes.writers)
        self.log(f"starting {top} raw writer and {top} appender processes")
        pools: dict[str, list[subprocess.Popen[str]]] = {"raw": [], "run-ledger": []}
        try:
            pools["raw"] = self._spawn("raw-append", self.raw_url, top)
            pools["run-ledger"] = self._spawn("append", self.url, top)
            for processes in self.sizes.writers:
                self.log(f"{processes} writer process(es): raw insert + commit, then run-ledger")
                raw = self._go(pools["raw"][:processes])
                ours = self._go(pools["run-ledger"][:processes])
                point = {"processes": processes, "raw": raw, "run-ledger": ours}
                self.curves["writers"].append(point)
                errors = ours["errors"]
                self.add(
                    f"3. {processes} writer process{'es' if processes > 1 else ''}",
                    ours["events_per_s"],
                    "events/s",
                    raw["events_per_s"],
                    None,
                    [Check(f"no errors ({errors})", errors == 0)],
                )
                for kind, report in (("run-ledger", ours), ("raw", raw)):
                    if report["first_error"]:
                        self.notes.append(
                            f"{processes} {kind} writers: {report['errors']} errors, the "
                            f"first: {report['first_error']}"
                        )
        finally:
            for child in pools["raw"] + pools["run-ledger"]:
                if child.stdin is not None:
                    child.stdin.close()  # the end of stdin ends the writer
            for child in pools["raw"] + pools["run-ledger"]:
                try:
                    child.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()

    def _spawn(self, task: str, url: str, processes: int) -> list[subprocess.Popen[str]]:
        """``processes`` writer processes, each connected and ready."""
        count = str(self.sizes.appenders_each)
        children = [
            subprocess.Popen(
                [sys.executable, "-m", "benchmarks.child", task, url, count, str(worker)],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for worker in range(1, processes + 1)
        ]
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                for other in children:
                    other.kill()
                raise RuntimeError(f"a {task} writer process failed to start")
        return children

    def _go(self, children: list[subprocess.Popen[str]]) -> dict[str, Any]:
        """Let ``children`` write together; their reports summed up."""
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        reports = []
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            if not line:
                raise RuntimeError("a writer process ended without its report")
            reports.append(json.loads(line))
        latencies = sorted(x for r in reports for x in r["latencies"])
        errors = sum(r["errors"] for r in reports)
        wall = max(r["finished"] for r in reports) - min(r["started"] for r in reports)
        return {
            "events_per_s": (len(latencies) - errors) / wall if wall else 0.0,
            "p50_ms": _pct(latencies, 50) * 1000,
            "p99_ms": _pct(latencies, 99) * 1000,
            "errors": errors,
            "first_error": next((r["first_error"] for r in reports if r["first_error"]), None),
            "calls": len(latencies),
            "seconds": wall,
        }

    # -------------------------------------------------------------- 8: read and decode

    def read_decode(self) -> None:
        events = self.ledger.head().last_position
        if self.peer is not None:
            self.log(f"growing the peer's store to {events:,} events")
            self._peer_measure(lambda peer: peer.grow(events) or 0.0)()
        counts: dict[str, int] = {}

        def ours() -> float:
            counts["run-ledger"], rate = ledger_read_decode(self.ledger)
            return rate

        def peers(peer: Any) -> float:
            counts["peer"], rate = peer.read_decode()
            return rate

        self.log(f"read and decode of {events:,} events: {self.sizes.read_rounds} rounds")
        samples = interleaved(
            self.sizes.read_rounds,
            self._measures(lambda: raw_scan(self.url, self.sqlite_path), ours, peers),
        )
        value, raw_value, peer_value = self._medians(samples)
        if peer_value is not None and counts.get("peer") != counts["run-ledger"]:
            self.notes.append(
                f"read and decode: the peer read {counts.get('peer', 0):,} events, "
                f"run-ledger {counts['run-ledger']:,}"
            )
        self.add(
            f"8. read and decode ({counts['run-ledger']:,} events)",
            value,
            "events/s",
            raw_value,
            peer_value,
            [of_peer(value, peer_value)],
            samples,
        )

    # -------------------------------------------------------------- 4 and 7: history

    def rebuild_and_verify(self) -> None:
        measured = []
        for size in (self.sizes.history_small, self.sizes.history_large):
            self.log(f"growing history to {size:,} events")
            grow_history(self.ledger, size)
            if size == self.sizes.history_small:
                self.read_decode()
            self.log(f"rebuild of {size:,} events (separate process)")
            result = _child_figures("rebuild", self.url)
            measured.append(result)
            self.curves["rebuild"].append((result["events"], result["seconds"]))
        small, large = measured
        raw_read = raw_scan(self.url, self.sqlite_path)
        rate = large["events"] / large["seconds"]
        target = 40_000 if self.mysql else 100_000
        self.add(
            f"4. rebuild of {large['events']:,} events",
            rate,
            "events/s",
            raw_read,
            None,
            [Check(f">= {target:,}", rate >= target)],
        )
        self.add_flat_memory("4. rebuild peak RSS", "4. RSS", small, large, "events")
        rounds = self.sizes.read_rounds
        self.log(f"verify of the chain over {large['events']:,} events: {rounds} rounds")
        reports: list[Any] = []

        def verify() -> float:
            started = time.perf_counter()
            reports.append(verify_chain(self.ledger))
            return float(reports[-1].checked / (time.perf_counter() - started))

        samples = interleaved(
            rounds,
            {
                "raw": lambda: raw_scan(self.url, self.sqlite_path, hash_rows=True),
                "run-ledger": verify,
            },
        )
        report, ok = reports[-1], all(r.ok for r in reports)
        rate, raw_hash = statistics.median(samples["run-ledger"]), statistics.median(samples["raw"])
        if self.mysql:
            check = Check(">= 85% of raw", rate >= 0.85 * raw_hash and ok)
        else:
            check = Check(">= 200,000", rate >= 200_000 and ok)
        self.add(
            f"7. verify chain ({report.checked:,} events)",
            rate,
            "events/s",
            raw_hash,
            None,
            [check],
            samples,
        )

    # -------------------------------------------------------------- 5: follow lag

    def follow_lag(self) -> None:
        self.log(f"projector lag at 500 events/s for {self.sizes.lag_seconds:g}s")
        Projector(self.ledger).run_once()
        stop = threading.Event()
        projector = Projector(Ledger.from_url(self.url))
        follower = threading.Thread(target=projector.follow, args=(stop, 0.02), daemon=True)
        follower.start()
        appended: dict[int, float] = {}
        applied: dict[int, float] = {}
        watching = threading.Event()

        def watch() -> None:
            seen = projector.checkpoint().position
            while not watching.is_set():
                position = projector.checkpoint().position
                now = time.perf_counter()
                for p in range(seen + 1, position + 1):
                    applied[p] = now
                seen = position
                time.sleep(0.005)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        run_id = self.ledger.start_run(1, "bench-lag")
        count = int(500 * self.sizes.lag_seconds)
        started = time.perf_counter()
        for index in range(count):
            due = started + index / 500
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            position = self.ledger.append([RunProgressed(run_id=run_id)]).last_position
            assert position is not None
            appended[position] = time.perf_counter()
        deadline = time.perf_counter() + 30
        while len(applied) < len(appended) and time.perf_counter() < deadline:
            time.sleep(0.05)
        watching.set()
        stop.set()
        lags = sorted(applied.get(p, deadline) - t for p, t in appended.items())
        p99 = _pct(lags, 99)
        self.add(
            "5. follow lag p99 at 500 ev/s",
            p99 * 1000,
            "ms",
            None,
            None,
            [Check("<= 1,000", p99 <= 1.0)],
        )

    # -------------------------------------------------------------- 6: stuck query

    def stuck_query(self) -> None:
        timings = []
        for runs in (self.sizes.stuck_runs_small, self.sizes.stuck_runs_large):
            self.log(f"growing history to {runs:,} runs, 100 of them open")
            self._grow_runs(runs)
            calls = []
            for _ in range(30):
                started = time.perf_counter()
                found = stuck_runs(
                    self.ledger,
                    older_than=timedelta(minutes=60),
                    now=datetime.now(UTC) + timedelta(hours=2),
                )
                calls.append(time.perf_counter() - started)
            assert len(found) >= 100
            timings.append(statistics.median(calls))
            self.curves["stuck"].append((runs, timings[-1]))
        small, large = timings
        self.add(
            f"6. stuck query p50, {self.sizes.stuck_runs_large:,} runs",
            large * 1000,
            "ms",
            None,
            None,
            [Check("<= 10", large <= 0.010)],
        )
        self.add(
            "6. stuck query, large / small history",
            large / small,
            "x",
            None,
            None,
            [Check("<= 2", large / small <= 2)],
        )

    # -------------------------------------------------------------- 7: the web view

    def legacy_import_memory(self) -> None:
        """`ledger import-legacy` of ``legacy_small`` and then ``legacy_large`` legacy rows, each
        in a process of its own to read its peak RSS: the import reads the table in pages, so
        its memory is flat in the table's size (it held the whole table before: 409 MB at
        50,000 rows). SQLite files in a scratch folder, whatever the bench's database: what is
        measured is the importing process."""
        measured = []
        with tempfile.TemporaryDirectory() as scratch:
            for rows in (self.sizes.legacy_small, self.sizes.legacy_large):
                self.log(f"import-legacy of {rows:,} rows (separate process)")
                measured.append(_child_figures("import-legacy", scratch, str(rows)))
        small, large = measured
        self.add(
            f"10. import-legacy of {large['rows']:,} rows",
            large["rows"] / large["seconds"],
            "rows/s",
            None,
            None,
            [],
        )
        self.add_flat_memory(
            "10. import-legacy peak RSS", "10. import-legacy RSS", small, large, "rows"
        )

    def add_flat_memory(
        self,
        peak_label: str,
        growth_label: str,
        small: dict[str, Any],
        large: dict[str, Any],
        size_key: str,
    ) -> None:
        """The memory figures of a task measured at two sizes (``size_key``: what the size
        counts), each run in a process of its own: the larger's peak RSS (at most 250 MB) and
        its growth over the smaller's (at most 1.5x: memory flat in the size)."""
        peak = large["peak_rss_mb"]
        self.add(peak_label, peak, "MB", None, None, [Check("<= 250", peak <= 250)])
        growth = peak / small["peak_rss_mb"]
        self.add(
            f"{growth_label} at {large[size_key]:,} / at {small[size_key]:,}",
            growth,
            "x",
            None,
            None,
            [Check("<= 1.5", growth <= 1.5)],
        )

    def web_runs_page(self) -> None:
        """The runs page's first page (filters off, then a status filter), rendered by the web
        view over ``ingestion_runs`` holding ``web_runs`` rows spread over 30 days (the per-day
        bars are an image of their own, ``/web/runs/days.svg``, not part of this figure)."""
        from fastapi.testclient import TestClient

        from service.api import create_app
        from service.config import LedgerConfig

        target = self.sizes.web_runs
        self.log(f"filling ingestion_runs to {target:,} rows")
        _fill_ingestion_runs(self.ledger, target)
        with self.ledger.connect() as conn:
            top = conn.execute(select(func.max(ingestion_runs.c.id))).scalar() or 2
        halfway = top // 2
        config = LedgerConfig.model_validate(
            {
                "database_url": self.ledger.url,
                "web": {
                    "enabled": True,
                    "public_read": True,
                    "verify_interval": "0s",
                    "allowed_hosts": ["testserver"],  # the test client's host name
                },
            }
        )
        app = create_app(config)
        medians = {}
        try:
            with TestClient(app) as client:
                pages = (
                    ("first page", ""),
                    ("status filter", "?status=failed"),
                    # Its "Older runs" halfway down: the keyset page MariaDB once read and sorted
                    # every run of the status below the cursor for.
                    ("status filter, a page halfway", f"?status=failed&before={halfway}"),
                )
                for name, query in pages:
                    calls = []
                    for _ in range(10):
                        started = time.perf_counter()
                        response = client.get("/web/runs" + query)
                        calls.append(time.perf_counter() - started)
                        assert response.status_code == 200, response.text[:500]
                    medians[name] = statistics.median(calls)
        finally:
            app.state.web.close()
            app.state.api.close()
        for name, value in medians.items():
            self.add(
                f"7. web runs page ({name}) p50, {target:,} runs",
                value * 1000,
                "ms",
                None,
                None,
                [Check("<= 200", value <= 0.200)],
            )

    def _grow_runs(self, target_runs: int) -> None:
        with self.ledger.connect() as conn:
            have, open_now = count_runs(conn), count_runs(conn, OPEN)
        if open_now < 100:
            self.ledger.append(
                [
                    RunStarted(source_id=9, connector_name="bench-open")
                    for _ in range(100 - open_now)
                ]
            )
            have += 100 - open_now
        while have < target_runs:
            runs = min(500, target_runs - have)
            self.ledger.append(history_batch(0, runs, per_run=2))
            have += runs

    def close(self) -> None:
        self.ledger.close()
        if self.peer is not None:
            self.peer.close()


def _fill_ingestion_runs(ledger: Ledger, target: int) -> None:
    """Rows straight into the projection (its shape, not through the ledger): the runs page
    reads only the table, and a million runs through the ledger would take an hour."""
    from sqlalchemy import func, select

    from projections.schema import RUN_STATUSES, ingestion_runs

    with ledger.connect() as conn:
        have = conn.execute(select(func.count()).select_from(ingestion_runs)).scalar_one()
        top = conn.execute(select(func.max(ingestion_runs.c.id))).scalar() or 0
    now = datetime.now(UTC).replace(microsecond=0)
    next_id = max(top, ledger.head().last_run_id) + 1
    while have < target:
        chunk = min(10_000, target - have)
        rows = []
        for offset in range(chunk):
            run = next_id + offset
            started = now - timedelta(seconds=(target - have - offset) * 2_592_000 // target)
            rows.append(
                {
                    "id": run,
                    "sourceId": run % 50,
                    "connectorName": f"bench-{run % 20}",
                    "startedAt": started,
                    "completedAt": started + timedelta(seconds=30),
                    "duration": 30,
                    "status": RUN_STATUSES[1 + run % 3],
                    "recordsFetched": 10,
                    "createdAt": started,
                }
            )
        with ledger.engine.begin() as conn:
            conn.execute(ingestion_runs.insert(), rows)
        have += chunk
        next_id += chunk


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _pct(values: list[float], percent: float) -> float:
    if not values:
        return 0.0
    index = min(len(values) - 1, max(0, round(percent / 100 * len(values)) - 1))
    return sorted(values)[index]


def _mysql_scratch(server_url: str, kinds: list[str]) -> tuple[dict[str, str], list[str]]:
    """A scratch database for each of ``kinds`` (``ledger``, ``raw``, ``peer``): their URLs."""
    suffix = uuid.uuid4().hex[:8]
    base = make_url(server_url)
    prefix = base.database or "ledger"
    names = {
        kind: f"{prefix}_bench_{suffix}" if kind == "ledger" else f"{prefix}_bench_{kind}_{suffix}"
        for kind in kinds
    }
    admin = create_engine(base.set(database=None))
    with admin.begin() as conn:
        for name in names.values():
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    admin.dispose()
    urls = {
        kind: base.set(database=name).render_as_string(hide_password=False)
        for kind, name in names.items()
    }
    return urls, list(names.values())


def _drop(server_url: str, names: list[str]) -> None:
    admin = create_engine(make_url(server_url).set(database=None))
    with admin.begin() as conn:
        for name in names:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


def _server_durability(url: str) -> str:
    conn = mysql_connection(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@sync_binlog")
            server, flush, sync_binlog = cursor.fetchone()
    finally:
        conn.close()
    return (
        f"server {server}, innodb_flush_log_at_trx_commit={flush}, sync_binlog={sync_binlog} "
        "(the same for run-ledger, the raw driver and the peer)"
    )


def _start_peer(
    peer: str | None, sqlite_path: str | None, url: str | None
) -> tuple[Any, str | None]:
    """(the peer, None), or (None, why it is unavailable); (None, None) without ``--peer``."""
    if peer is None:
        return None, None
    try:
        from benchmarks.peer import Peer

        return Peer(sqlite_path=sqlite_path, url=url), None
    except Exception as exc:  # the peer cannot run here: say why, do not fake it
        return None, f"{type(exc).__name__}: {_one_line(exc)[:300]}"


def run_database(
    name: str,
    sizes: Sizes,
    console: Console,
    server_url: str | None,
    folder: Path,
    peer: str | None = None,
    api: bool = False,
    profile: Path | None = None,
) -> Bench:
    if api:
        return run_api_database(name, sizes, console, server_url, folder, profile)
    if server_url is None:
        path = folder / "ledger.db"
        peer_object, reason = _start_peer(peer, str(folder / "peer.db"), None)
        bench = Bench(
            name,
            f"sqlite:///{path}",
            str(path),
            "",
            str(folder / "raw.db"),
            sizes,
            console,
            peer_object,
            reason,
        )
        bench.notes.append("run-ledger and the raw driver: journal_mode=WAL, synchronous=FULL")
        cleanup: list[str] = []
    else:
        kinds = ["ledger", "raw", "peer"] if peer else ["ledger", "raw"]
        urls, cleanup = _mysql_scratch(server_url, kinds)
        try:
            peer_object, reason = _start_peer(peer, None, urls.get("peer"))
            bench = Bench(
                name, urls["ledger"], None, urls["raw"], None, sizes, console, peer_object, reason
            )
            bench.notes.append(_server_durability(urls["ledger"]))
        except BaseException:
            _drop(server_url, cleanup)
            raise
    if bench.peer is not None:
        bench.notes.append(f"peer: {bench.peer.versions}")
        bench.notes += [f"peer: {note}" for note in bench.peer.notes]
    elif bench.peer_reason:
        bench.log(f"the peer is unavailable: {bench.peer_reason}")
    try:
        bench.appends()
        if bench.mysql:
            bench.writers()
        bench.rebuild_and_verify()
        if bench.mysql:
            bench.follow_lag()
        bench.stuck_query()
        bench.web_runs_page()
        if not bench.mysql:
            bench.legacy_import_memory()
    finally:
        bench.close()
        if server_url is not None:
            _drop(server_url, cleanup)
    if bench.peer_reason:
        bench.notes.append(f"peer unavailable: {bench.peer_reason}")
    return bench


def run_api_database(
    name: str,
    sizes: Sizes,
    console: Console,
    server_url: str | None,
    folder: Path,
    profile: Path | None = None,
) -> Bench:
    """The API's figure group alone (``--api``), on a scratch ledger."""
    from benchmarks.api import api_figures

    cleanup: list[str] = []
    if server_url is None:
        path = folder / "ledger.db"
        bench = Bench(name, f"sqlite:///{path}", str(path), "", None, sizes, console)
        bench.notes.append("journal_mode=WAL, synchronous=FULL")
    else:
        urls, cleanup = _mysql_scratch(server_url, ["ledger"])
        try:
            bench = Bench(name, urls["ledger"], None, "", None, sizes, console)
            bench.notes.append(_server_durability(urls["ledger"]))
        except BaseException:
            _drop(server_url, cleanup)
            raise
    try:
        with tempfile.TemporaryDirectory() as scratch:
            api_figures(bench, Path(scratch), profile)
    finally:
        bench.close()
        if cleanup and server_url is not None:
            _drop(server_url, cleanup)
    return bench


def print_api_table(console: Console, benches: list[Bench]) -> None:
    table = Table(title="run-ledger HTTP API beside the library (same run, same database)")
    for column in ("database", "figure", "API", "library", "API ÷ library", "target", "met"):
        table.add_column(column, justify="left" if column in ("database", "figure") else "right")
    for bench in benches:
        for f in bench.figures:
            table.add_row(
                f.database,
                f.name,
                f"{f.value:,.1f} {f.unit}",
                f"{f.raw:,.1f} {f.unit}" if f.raw is not None else "—",
                "—" if f.ratio is None else f"{f.ratio:.2f}x",
                "; ".join(check.target for check in f.checks) or "-",
                " / ".join("yes" if check.met else "NO" for check in f.checks) or "—",
            )
    console.print(table)
    for bench in benches:
        for note in bench.notes:
            console.print(f"{bench.name}: {note}", highlight=False, soft_wrap=True)


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if unit == "events/s" else f"{value:,.1f}"


def print_table(console: Console, benches: list[Bench], peer: str | None) -> None:
    table = Table(title="run-ledger benchmarks" + (f" (peer: {peer})" if peer else ""))
    numeric = ("value", "peer", "raw", "÷ peer", "÷ raw")
    for column in ("database", "figure", *numeric, "target", "met"):
        table.add_column(column, justify="right" if column in numeric else "left")
    for bench in benches:
        for f in bench.figures:
            peer_cell = _number(f.peer, f.unit)
            if f.peer is None and bench.peer_reason and f.samples:
                peer_cell = "n/a"
            table.add_row(
                f.database,
                f.name,
                f"{f.value:,.1f} {f.unit}",
                peer_cell,
                _number(f.raw, f.unit),
                "—" if f.peer_ratio is None else f"{f.peer_ratio:.2f}x",
                "—" if f.ratio is None else f"{f.ratio:.0%}",
                "; ".join(check.target for check in f.checks) or "-",
                " / ".join(
                    "—" if check.met is None else ("yes" if check.met else "NO")
                    for check in f.checks
                )
                or "—",
            )
    console.print(table)
    for bench in benches:
        if bench.curves["writers"]:
            writers = Table(title=f"{bench.name}: concurrent writers (one event per call)")
            for column in (
                "processes",
                "run-ledger",
                "p50",
                "p99",
                "errors",
                "raw",
                "p50 ",
                "p99 ",
                "errors ",
                "÷ raw",
            ):
                writers.add_column(column, justify="right")
            for point in bench.curves["writers"]:
                ours, raw = point["run-ledger"], point["raw"]
                writers.add_row(
                    str(point["processes"]),
                    f"{ours['events_per_s']:,.0f}/s",
                    f"{ours['p50_ms']:.1f} ms",
                    f"{ours['p99_ms']:.1f} ms",
                    str(ours["errors"]),
                    f"{raw['events_per_s']:,.0f}/s",
                    f"{raw['p50_ms']:.1f} ms",
                    f"{raw['p99_ms']:.1f} ms",
                    str(raw["errors"]),
                    f"{ours['events_per_s'] / raw['events_per_s']:.0%}"
                    if raw["events_per_s"]
                    else "—",
                )
            console.print(writers)
    for bench in benches:
        for note in bench.notes:
            console.print(f"{bench.name}: {note}", highlight=False, soft_wrap=True)


WORKLOADS = {
    "1. live append": "live",
    "2. batch append (10/call": "batch 10",
    "2. batch append (1,000/call": "batch 1,000",
    "8. read and decode": "read + decode",
}


def plot(path: Path, benches: list[Bench]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(16, 9))
    writers, rebuild, stuck = axes[0]
    for bench in benches:
        if bench.curves["writers"]:
            xs = [point["processes"] for point in bench.curves["writers"]]
            for kind, style in (("run-ledger", "o-"), ("raw", "s--")):
                ys = [point[kind]["events_per_s"] for point in bench.curves["writers"]]
                writers.plot(xs, ys, style, label=f"{bench.name} {kind}")
            writers.set_xticks(xs)
        if bench.curves["rebuild"]:
            xs, ys = zip(*bench.curves["rebuild"], strict=True)
            rebuild.plot(xs, ys, marker="o", label=bench.name)
        if bench.curves["stuck"]:
            xs, ys = zip(*bench.curves["stuck"], strict=True)
            stuck.plot(xs, [y * 1000 for y in ys], marker="o", label=bench.name)
    writers.set(
        xlabel="writer processes",
        ylabel="events/s (all processes)",
        title="concurrent writers, one event per call",
    )
    rebuild.set(
        xscale="log", xlabel="events in history", ylabel="rebuild seconds", title="rebuild time"
    )
    stuck.set(
        xscale="log",
        xlabel="runs in history",
        ylabel="stuck query p50 (ms)",
        title="stuck query time",
    )
    if not writers.has_data():
        writers.text(0.5, 0.5, "MariaDB only (--db)", ha="center", transform=writers.transAxes)
    for axis in axes[0]:
        if axis.has_data():
            axis.legend()
        axis.grid(True, alpha=0.3)
    for axis, bench in zip(axes[1], [*benches, None, None, None], strict=False):
        if bench is None:
            axis.set_visible(False)
            continue
        _bars(axis, bench)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _bars(axis: Any, bench: Bench) -> None:
    """run-ledger, the peer and the raw driver, events/s, one group of bars per workload."""
    rows = []
    for prefix, label in WORKLOADS.items():
        found = next((f for f in bench.figures if f.name.startswith(prefix)), None)
        if found is not None:
            rows.append((label, found))
    width = 0.27
    systems = [
        ("run-ledger", lambda f: f.value),
        ("peer", lambda f: f.peer),
        ("raw", lambda f: f.raw),
    ]
    for index, (system, pick) in enumerate(systems):
        xs = [n + (index - 1) * width for n in range(len(rows))]
        ys = [pick(f) or 0.0 for _, f in rows]
        axis.bar(xs, ys, width, label=system)
    axis.set_xticks(range(len(rows)), [label for label, _ in rows])
    axis.set(yscale="log", ylabel="events/s", title=f"{bench.name}: run-ledger, peer, raw")
    axis.legend()
    axis.grid(True, axis="y", alpha=0.3)


def _check_peer(peer: str | None, server: str | None, parser: argparse.ArgumentParser) -> None:
    """Exit 2 (argparse's usage error) when the peer's extra is not installed."""
    if peer is None:
        return
    needs = [("eventsourcing", BENCH_EXTRA)]
    if server:
        needs.append(("eventsourcing_sqlalchemy", PEER_MYSQL))
    for module, install in needs:
        try:
            __import__(module)
        except ImportError as exc:
            parser.error(f"--peer {peer} needs {module} ({exc}): {install}")


DESCRIPTION = (
    "Measure run-ledger on a temporary SQLite file, and on MariaDB when --db names a server: "
    "appends, reads, concurrent writers, rebuild, follow lag, the stuck query and chain "
    "verification, each beside the raw driver's limit for the same work in the same run and, "
    "with --peer eventsourcing, beside that library doing the same work in the same process. "
    "The append figures are the median of interleaved rounds (the machine's fsync latency "
    "swings from one minute to the next). Its databases are scratch ones (temp files; "
    "<db>_bench_<random> on the server), dropped at the end. It exits 0 when it ran, whether "
    "or not the targets are met."
)


def _check_server(server: str | None, parser: argparse.ArgumentParser) -> None:
    """Refuse a ``--db`` the harness cannot use before anything runs, in one line, password
    masked: a URL that is not one, or not MariaDB/MySQL's, is exit 2 (argparse's usage error);
    a server that refuses or cannot be reached is exit 3, the environment's, as for ``ledger``.
    """
    if server is None:
        return
    try:
        url = make_url(server)
    except (ArgumentError, ValueError):
        parser.error(f"--db: {unparseable_url_message(server)}")
    if not is_mysql_backend(url.get_backend_name()):
        parser.error(
            f"--db: expected a MariaDB/MySQL server URL "
            f"(mysql+pymysql://USER:***@HOST:3306/NAME), got {mask_url(server)} "
            f"({url.get_backend_name()}); the SQLite half always runs on a temporary file"
        )
    if url.port is not None and (problem := tcp_port_problem(url.port)):
        parser.error(f"--db: {problem} in {mask_url(server)}")
    try:
        engine = create_engine(url.set(database=None), connect_args={"connect_timeout": 10})
    except (ArgumentError, ImportError) as exc:  # a driver that is not installed
        parser.error(f"--db: cannot use {mask_url(server)}: {exc}; write mysql+pymysql://")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (DBAPIError, OSError) as exc:
        reason = mask_secrets(str(getattr(exc, "orig", None) or exc))
        print(
            f"{parser.prog}: error: --db: cannot use the server at {mask_url(server)}: {reason}",
            file=sys.stderr,
        )
        sys.exit(3)
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=DESCRIPTION)
    parser.add_argument(
        "--db",
        help="a MariaDB/MySQL server URL (mysql+pymysql://...); the "
        "harness creates and drops its own scratch databases on it",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes (a few minutes for both databases)"
    )
    parser.add_argument(
        "--peer",
        choices=PEERS,
        help=f"run the same workloads on this library, in this process ({BENCH_EXTRA})",
    )
    parser.add_argument("--json", type=Path, help="write the figures and curves to this file")
    parser.add_argument(
        "--plot", type=Path, help="draw the writers, rebuild and stuck-query curves and bars"
    )
    parser.add_argument(
        "--api",
        action="store_true",
        help="only the HTTP API's figures: a real `ledger api` process beside Ledger.append",
    )
    parser.add_argument(
        "--api-profile",
        type=Path,
        metavar="DIR",
        help="with --api: run the server under cProfile, one DATABASE.prof per database in DIR",
    )
    # For the smoke test: tiny sizes, and MariaDB only (with --db).
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--skip-sqlite", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _check_peer(args.peer, args.db, parser)
    _check_server(args.db, parser)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:  # an optional extra: say so before the run, not after
            parser.error(f"--plot needs matplotlib ({exc}): {BENCH_EXTRA}")
    sizes = Sizes().tiny() if args.tiny else Sizes().quick() if args.quick else Sizes()
    console = Console(stderr=True)
    benches = []
    started = time.perf_counter()
    if not (args.skip_sqlite and args.db):
        with tempfile.TemporaryDirectory() as folder:
            benches.append(
                run_database(
                    "sqlite",
                    sizes,
                    console,
                    None,
                    Path(folder),
                    args.peer,
                    args.api,
                    _profile(args.api_profile, "sqlite"),
                )
            )
    if args.db:
        benches.append(
            run_database(
                "mariadb",
                sizes,
                console,
                args.db,
                Path("."),
                args.peer,
                args.api,
                _profile(args.api_profile, "mariadb"),
            )
        )
    figures = [f for bench in benches for f in bench.figures]
    if args.api:
        print_api_table(Console(width=180), benches)
    else:
        print_table(Console(width=180), benches, args.peer)
    console.log(f"the harness took {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "generated_at": datetime.now(UTC).isoformat(),
                    "quick": args.quick,
                    "api": args.api,
                    "peer": args.peer,
                    "machine": {
                        "platform": platform.platform(),
                        "python": platform.python_version(),
                        "cpus": os.cpu_count(),
                    },
                    "figures": [f.to_dict() for f in figures],
                    "curves": {b.name: b.curves for b in benches},
                    "notes": {b.name: b.notes for b in benches},
                    "peer_unavailable": {b.name: b.peer_reason for b in benches if b.peer_reason},
                },
                indent=2,
            )
        )
    if args.plot:
        plot(args.plot, benches)


def _profile(folder: Path | None, database: str) -> Path | None:
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve() / f"{database}.prof"
