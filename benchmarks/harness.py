"""``python -m benchmarks [--db URL] [--quick] [--json FILE] [--plot FILE.png]``

For a SQLite file (always) and MariaDB (when ``--db`` names a server), measure each figure of
issue 7 and the raw driver limit for the same work, in the same run, and print a table:
figure, value, raw limit, ratio, target, met. History is generated through the library's own
batch append. The databases are scratch ones (a temp file; ``<db>_bench_<random>`` on the
server), dropped at the end.
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
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from benchmarks.raw import RawDatabase, raw_scan
from forensics.chain import verify_chain
from ledger import Ledger, RunFinished, RunProgressed, RunStarted, stuck_runs
from ledger.reads import count_runs
from ledger.rules import OPEN
from migrations.runner import upgrade
from projections import Projector

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Figure:
    database: str
    name: str
    value: float
    unit: str
    raw: float | None  # the raw limit for the same work, same unit
    target: str
    met: bool | None  # None: no target on this database

    @property
    def ratio(self) -> float | None:
        return None if not self.raw else self.value / self.raw


@dataclass
class Sizes:
    single: int = 2000
    batches: int = 100
    history_small: int = 100_000
    history_large: int = 1_000_000
    stuck_runs_small: int = 10_000
    stuck_runs_large: int = 1_000_000
    appenders_each: int = 500
    lag_seconds: float = 20.0

    def quick(self) -> Sizes:
        return Sizes(200, 10, 10_000, 100_000, 1_000, 100_000, 50, 4.0)


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
    ) -> None:
        self.name, self.url, self.sqlite_path = name, url, sqlite_path
        self.raw_url, self.raw_sqlite = raw_url, raw_sqlite
        self.sizes, self.console = sizes, console
        self.ledger = Ledger.from_url(url)
        upgrade(self.ledger)
        self.figures: list[Figure] = []
        self.curves: dict[str, list[tuple[int, float]]] = {"rebuild": [], "stuck": []}

    def log(self, text: str) -> None:
        self.console.log(f"[{self.name}] {text}")

    def add(self, *args: Any) -> None:
        self.figures.append(Figure(self.name, *args))

    @property
    def mysql(self) -> bool:
        return self.sqlite_path is None

    # -------------------------------------------------------------- 1 and 2: appends

    def appends(self) -> None:
        raw = RawDatabase(self.raw_url, self.raw_sqlite)
        try:
            self.log("single durable appends")
            raw_single = raw.single_inserts(self.sizes.single)
            run_id = self.ledger.start_run(1, "bench-single")
            events = [
                RunProgressed(run_id=run_id, records_fetched=1) for _ in range(self.sizes.single)
            ]
            started = time.perf_counter()
            for event in events:
                self.ledger.append([event])
            value = self.sizes.single / (time.perf_counter() - started)
            share = 0.70 if self.mysql else 0.15
            self.add(
                "1. single durable append",
                value,
                "events/s",
                raw_single,
                f">= {share:.0%} of raw",
                value >= share * raw_single,
            )
            self.log("batch appends of 1,000")
            raw_batch = raw.batch_inserts(self.sizes.batches)
            batches = [history_batch(0, 100) for _ in range(self.sizes.batches)]
            started = time.perf_counter()
            for batch in batches:
                self.ledger.append(batch)
            value = len(batches) * 1000 / (time.perf_counter() - started)
            share = 0.50 if self.mysql else 0.20
            self.add(
                "2. batch append (1,000/call)",
                value,
                "events/s",
                raw_batch,
                f">= {share:.0%} of raw",
                value >= share * raw_batch,
            )
        finally:
            raw.close()

    # -------------------------------------------------------------- 3: four appenders

    def four_appenders(self) -> None:
        self.log("four appender processes")
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.child",
                    "append",
                    self.url,
                    str(self.sizes.appenders_each),
                    str(worker),
                ],
                cwd=REPO,
                stdout=subprocess.PIPE,
                text=True,
            )
            for worker in range(1, 5)
        ]
        started = time.perf_counter()
        reports = [json.loads(child.communicate()[0]) for child in children]
        wall = time.perf_counter() - started
        latencies = sorted(x for r in reports for x in r["latencies"])
        errors = sum(r["errors"] for r in reports)
        total = len(latencies)
        self.add(
            "3. four appender processes",
            total / wall,
            "events/s",
            None,
            f"no errors ({errors})",
            errors == 0,
        )
        self.add("3. append latency p50", _pct(latencies, 50) * 1000, "ms", None, "-", None)
        self.add("3. append latency p99", _pct(latencies, 99) * 1000, "ms", None, "-", None)

    # -------------------------------------------------------------- 4 and 7: history

    def rebuild_and_verify(self) -> None:
        measured = []
        for size in (self.sizes.history_small, self.sizes.history_large):
            self.log(f"growing history to {size:,} events")
            grow_history(self.ledger, size)
            self.log(f"rebuild of {size:,} events (separate process)")
            child = subprocess.run(
                [sys.executable, "-m", "benchmarks.child", "rebuild", self.url],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(child.stdout)
            measured.append(result)
            self.curves["rebuild"].append((result["events"], result["seconds"]))
        small, large = measured
        raw_read = raw_scan(self.url, self.sqlite_path)
        rate = large["events"] / large["seconds"]
        target = 30_000 if self.mysql else 100_000
        self.add(
            f"4. rebuild of {large['events']:,} events",
            rate,
            "events/s",
            raw_read,
            f">= {target:,}",
            rate >= target,
        )
        self.add(
            "4. rebuild peak RSS",
            large["peak_rss_mb"],
            "MB",
            None,
            "<= 250",
            large["peak_rss_mb"] <= 250,
        )
        growth = large["peak_rss_mb"] / small["peak_rss_mb"]
        self.add(
            f"4. RSS at {large['events']:,} / at {small['events']:,}",
            growth,
            "x",
            None,
            "<= 1.5",
            growth <= 1.5,
        )
        self.log(f"read and decode of {large['events']:,} events")
        started = time.perf_counter()
        decoded = sum(1 for recorded in self.ledger.read_all() if recorded.event)
        rate = decoded / (time.perf_counter() - started)
        self.add(
            f"8. read and decode ({decoded:,} events)",
            rate,
            "events/s",
            raw_read,
            "-",
            None,
        )
        self.log(f"verify of the chain over {large['events']:,} events")
        started = time.perf_counter()
        report = verify_chain(self.ledger)
        rate = report.checked / (time.perf_counter() - started)
        raw_hash = raw_scan(self.url, self.sqlite_path, hash_rows=True)
        self.add(
            f"7. verify chain ({report.checked:,} events)",
            rate,
            "events/s",
            raw_hash,
            ">= 200,000",
            rate >= 200_000 and report.ok,
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
        self.add("5. follow lag p99 at 500 ev/s", p99 * 1000, "ms", None, "<= 1,000", p99 <= 1.0)

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
            "<= 10",
            large <= 0.010,
        )
        self.add(
            "6. stuck query, large / small history",
            large / small,
            "x",
            None,
            "<= 2",
            large / small <= 2,
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


def _pct(values: list[float], percent: float) -> float:
    if not values:
        return 0.0
    index = min(len(values) - 1, max(0, round(percent / 100 * len(values)) - 1))
    return sorted(values)[index]


def _mysql_scratch(server_url: str) -> tuple[str, str, list[str]]:
    suffix = uuid.uuid4().hex[:8]
    base = make_url(server_url)
    names = [
        f"{base.database or 'ledger'}_bench_{suffix}",
        f"{base.database or 'ledger'}_bench_raw_{suffix}",
    ]
    admin = create_engine(base.set(database=None))
    with admin.begin() as conn:
        for name in names:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    admin.dispose()
    urls = [base.set(database=name).render_as_string(hide_password=False) for name in names]
    return urls[0], urls[1], names


def _drop(server_url: str, names: list[str]) -> None:
    admin = create_engine(make_url(server_url).set(database=None))
    with admin.begin() as conn:
        for name in names:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


def run_database(
    name: str, sizes: Sizes, console: Console, server_url: str | None, folder: Path
) -> Bench:
    if server_url is None:
        path = folder / "ledger.db"
        bench = Bench(
            name, f"sqlite:///{path}", str(path), "", str(folder / "raw.db"), sizes, console
        )
        cleanup: list[str] = []
    else:
        url, raw_url, cleanup = _mysql_scratch(server_url)
        bench = Bench(name, url, None, raw_url, None, sizes, console)
    try:
        bench.appends()
        if bench.mysql:
            bench.four_appenders()
        bench.rebuild_and_verify()
        if bench.mysql:
            bench.follow_lag()
        bench.stuck_query()
    finally:
        bench.close()
        if server_url is not None:
            _drop(server_url, cleanup)
    return bench


def print_table(console: Console, figures: list[Figure]) -> None:
    table = Table(title="run-ledger benchmarks")
    for column in ("database", "figure", "value", "raw limit", "ratio", "target", "met"):
        table.add_column(
            column, justify="right" if column in ("value", "raw limit", "ratio") else "left"
        )
    for f in figures:
        table.add_row(
            f.database,
            f.name,
            f"{f.value:,.1f} {f.unit}",
            "—" if f.raw is None else f"{f.raw:,.0f} {f.unit}",
            "—" if f.ratio is None else f"{f.ratio:.0%}",
            f.target,
            "—" if f.met is None else ("yes" if f.met else "NO"),
        )
    console.print(table)


def plot(path: Path, benches: list[Bench]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # an optional extra
        raise SystemExit("--plot needs matplotlib: pip install -e '.[bench]'") from exc
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for bench in benches:
        if bench.curves["rebuild"]:
            xs, ys = zip(*bench.curves["rebuild"], strict=True)
            left.plot(xs, ys, marker="o", label=bench.name)
        if bench.curves["stuck"]:
            xs, ys = zip(*bench.curves["stuck"], strict=True)
            right.plot(xs, [y * 1000 for y in ys], marker="o", label=bench.name)
    left.set(
        xscale="log", xlabel="events in history", ylabel="rebuild seconds", title="rebuild time"
    )
    right.set(
        xscale="log",
        xlabel="runs in history",
        ylabel="stuck query p50 (ms)",
        title="stuck query time",
    )
    for axis in (left, right):
        axis.legend()
        axis.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--db",
        help="a MariaDB/MySQL server URL (mysql+pymysql://...); the "
        "harness creates and drops its own scratch databases on it",
    )
    parser.add_argument("--quick", action="store_true", help="10x smaller sizes (< 1 minute)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--plot", type=Path, help="draw rebuild and stuck-query curves")
    args = parser.parse_args(argv)
    sizes = Sizes().quick() if args.quick else Sizes()
    console = Console(stderr=True)
    benches = []
    with tempfile.TemporaryDirectory() as folder:
        benches.append(run_database("sqlite", sizes, console, None, Path(folder)))
    if args.db:
        benches.append(run_database("mariadb", sizes, console, args.db, Path(".")))
    figures = [f for bench in benches for f in bench.figures]
    print_table(Console(width=160), figures)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "generated_at": datetime.now(UTC).isoformat(),
                    "quick": args.quick,
                    "machine": {
                        "platform": platform.platform(),
                        "python": platform.python_version(),
                        "cpus": os.cpu_count(),
                    },
                    "figures": [asdict(f) | {"ratio": f.ratio} for f in figures],
                    "curves": {b.name: b.curves for b in benches},
                },
                indent=2,
            )
        )
    if args.plot:
        plot(args.plot, benches)
