"""The HTTP API's figures (``python -m benchmarks --api``): a real ``ledger api`` process on a
free port, reached through one persistent HTTP/1.1 connection (``http.client``), beside the
library's own ``Ledger.append`` doing the same appends in this process, on the same database,
in interleaved rounds (library, then API, each round).

* 9. one event per call: runs of RunStarted + 8 RunProgressed + RunFinished, each event one
  ``POST /v1/events`` (a JSON array of one, with its ``event_id``) or one ``Ledger.append``;
  the latency of every call, p50 and p99 over every round (target: API p99 <= 2x library p99).
* 10. 100 events a call: ten complete runs (with ``run_ref``) per ``POST /v1/events`` or per
  ``Ledger.append``; events/s, the median of the rounds (target: API >= 50% of the library).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger import Ledger, RunFinished, RunProgressed, RunStarted

if TYPE_CHECKING:
    from benchmarks.harness import Bench

TOKEN = "benchmark-api-token-0123456789abcdef"  # noqa: S105 (a scratch token)
TOKEN_VARIABLE = "LEDGER_BENCH_API_TOKEN"  # noqa: S105 (its name)
START_DEADLINE_S = 60.0
P99_TIMES = 2.0
BATCH_SHARE = 0.50
RUNS_PER_BATCH = 10  # 100 events a call


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApiProcess:
    """``ledger api`` on a free port over ``url``, and one keep-alive connection to it."""

    def __init__(self, url: str, folder: Path, profile: Path | None = None) -> None:
        self.port = free_port()
        config = folder / f"api-{self.port}.toml"
        config.write_text(
            f'[spool]\ndir = "{folder / "spool"}"\n'
            '[[api.tokens]]\nname = "bench"\nscopes = ["append", "read"]\n'
            f'env = "{TOKEN_VARIABLE}"\n',
            encoding="utf-8",
        )
        command = ["-m", "service.cli"]
        if profile is not None:  # the server under cProfile, written as it exits
            command = ["-m", "cProfile", "-o", str(profile), "-m", "service.cli"]
        self.process = subprocess.Popen(
            [
                sys.executable,
                *command,
                "api",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--config",
                str(config),
                "--db",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, TOKEN_VARIABLE: TOKEN},
        )
        try:
            self._wait_healthy()
        except BaseException:
            self.close()
            raise
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        self.headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if self.process.poll() is not None:
                _, stderr = self.process.communicate()
                raise RuntimeError(f"ledger api exited at start: {stderr[-2000:]}")
            try:
                probe = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                probe.request("GET", "/healthz")
                if probe.getresponse().status == 200:
                    probe.close()
                    return
                probe.close()
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("ledger api did not answer /healthz within the deadline")
            time.sleep(0.05)  # a polling interval, bounded by the deadline

    def append(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        self.conn.request("POST", "/v1/events", json.dumps(events), self.headers)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST /v1/events: {response.status} {body[:500]!r}")
        result: dict[str, Any] = json.loads(body)
        return result

    def close(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


# ---------------------------------------------------------------------- the workloads


def library_live(ledger: Ledger, runs: int, latencies: list[float]) -> None:
    """One event per ``Ledger.append``, each call's seconds (the event built in it)."""
    for _ in range(runs):
        started = time.perf_counter()
        result = ledger.append([RunStarted(source_id=1, connector_name="bench-api")])
        latencies.append(time.perf_counter() - started)
        run_id = result.events[0].run_id
        for _ in range(8):
            started = time.perf_counter()
            ledger.append([RunProgressed(run_id=run_id, records_fetched=3, records_created=2)])
            latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        ledger.append([RunFinished(run_id=run_id, status="success")])
        latencies.append(time.perf_counter() - started)


def _event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": str(uuid.uuid4()), **fields}


def api_live(api: ApiProcess, runs: int, latencies: list[float]) -> None:
    """One event per ``POST /v1/events``, each request's seconds (the JSON built in it)."""
    for _ in range(runs):
        started = time.perf_counter()
        result = api.append([_event("RunStarted", source_id=1, connector_name="bench-api")])
        latencies.append(time.perf_counter() - started)
        run_id = result["allocated_run_ids"][0]
        for _ in range(8):
            started = time.perf_counter()
            api.append(
                [_event("RunProgressed", run_id=run_id, records_fetched=3, records_created=2)]
            )
            latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        api.append([_event("RunFinished", run_id=run_id, status="success")])
        latencies.append(time.perf_counter() - started)


def library_batches(ledger: Ledger, calls: int) -> float:
    """Events/s, 100 events (ten runs) per ``Ledger.append``, built in the timed loop."""
    started = time.perf_counter()
    for _ in range(calls):
        events: list[Any] = []
        for _ in range(RUNS_PER_BATCH):
            ref = uuid.uuid4().hex
            events.append(RunStarted(run_ref=ref, source_id=1, connector_name="bench-api"))
            events += [
                RunProgressed(run_ref=ref, records_fetched=3, records_created=2) for _ in range(8)
            ]
            events.append(RunFinished(run_ref=ref, status="success"))
        ledger.append(events)
    return calls * RUNS_PER_BATCH * 10 / (time.perf_counter() - started)


def api_batches(api: ApiProcess, calls: int) -> float:
    """Events/s, 100 events (ten runs) per ``POST /v1/events``, built in the timed loop."""
    started = time.perf_counter()
    for _ in range(calls):
        events: list[dict[str, Any]] = []
        for _ in range(RUNS_PER_BATCH):
            ref = uuid.uuid4().hex
            events.append(
                _event("RunStarted", run_ref=ref, source_id=1, connector_name="bench-api")
            )
            events += [
                _event("RunProgressed", run_ref=ref, records_fetched=3, records_created=2)
                for _ in range(8)
            ]
            events.append(_event("RunFinished", run_ref=ref, status="success"))
        api.append(events)
    return calls * RUNS_PER_BATCH * 10 / (time.perf_counter() - started)


def _pct(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered)) - 1))
    return ordered[index]


def api_figures(bench: Bench, folder: Path, profile: Path | None = None) -> None:
    """Figures 9 and 10 of ``bench``'s database: the API beside the library."""
    from benchmarks.harness import Check

    sizes = bench.sizes
    bench.log(
        f"API: starting ledger api; {sizes.rounds} interleaved rounds of "
        f"{sizes.api_runs * 10} single-event calls and {sizes.api_batch_calls} 100-event calls"
    )
    api = ApiProcess(bench.url, folder, profile)
    try:
        # Warm both paths (connection pools, imports, the first request's schema work).
        library_live(bench.ledger, 1, [])
        api_live(api, 1, [])
        latency: dict[str, list[float]] = {"library": [], "api": []}
        batches: dict[str, list[float]] = {"library": [], "api": []}
        measures: list[tuple[str, Callable[[], None]]] = [
            ("library", lambda: library_live(bench.ledger, sizes.api_runs, latency["library"])),
            ("api", lambda: api_live(api, sizes.api_runs, latency["api"])),
            (
                "library",
                lambda: batches["library"].append(
                    library_batches(bench.ledger, sizes.api_batch_calls)
                ),
            ),
            ("api", lambda: batches["api"].append(api_batches(api, sizes.api_batch_calls))),
        ]
        for _ in range(sizes.rounds):
            for _, measure in measures:
                measure()
    finally:
        api.close()
    ms = {side: [x * 1000 for x in values] for side, values in latency.items()}
    for label, percent in (("p50", 50.0), ("p99", 99.0)):
        ours, library = _pct(ms["api"], percent), _pct(ms["library"], percent)
        checks = (
            [Check(f"<= {P99_TIMES:g}x library", ours <= P99_TIMES * library)]
            if label == "p99"
            else []
        )
        bench.add(f"9. API append {label} (1 event/request)", ours, "ms", library, None, checks)
    ours_rate = statistics.median(batches["api"])
    library_rate = statistics.median(batches["library"])
    bench.add(
        "10. API batch (100 events/request)",
        ours_rate,
        "events/s",
        library_rate,
        None,
        [Check(f">= {BATCH_SHARE:.0%} of library", ours_rate >= BATCH_SHARE * library_rate)],
        dict(batches),
    )
    bench.notes.append(
        f"API: {len(ms['api'])} single-event requests and as many library calls "
        f"({sizes.rounds} interleaved rounds); the 'library' column of figures 9-10 is "
        "Ledger.append in the harness's process on the same database"
    )
