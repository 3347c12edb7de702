"""Item 1 of the reliability suite: eight appender processes and a following projector.

Eight processes each store 2,000 events (single appends, batches, finish-and-restart, retries of
a batch already stored, optimistic writes with ``expected_version`` to runs all of them share)
while ``ledger project --follow`` runs beside them. Afterwards, from the workers' own reports and
from the database independently:

* every event a worker was told it stored is in the ledger exactly once, and nothing else is;
* positions are 1..N without a gap, and the hash chain verifies;
* every retry stored nothing and got the positions of the first attempt;
* every expected_version conflict surfaced as ConcurrencyError, and the event it refused was
  stored exactly once on a later attempt: none lost, none duplicated;
* the followed projection equals a fresh rebuild, and each run's recordsFetched equals the sum
  the workers stored for it (nothing double-counted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from sqlalchemy import select

from forensics.chain import verify_chain
from ledger import Ledger, RunStarted
from ledger.schema import ledger_events
from projections import Projector, rebuild
from tests.projection_support import replayed_rows, table_rows, transition_rows
from tests.reliability.summary import Summary
from tests.reliability.support import REPO, WORKER
from tests.support import stop_process

PROCESSES = int(os.environ.get("LEDGER_RELIABILITY_PROCESSES", "8"))
EVENTS_PER_PROCESS = int(os.environ.get("LEDGER_RELIABILITY_EVENTS", "2000"))
SHARED_RUNS = 3
LEDGER = (sys.executable, "-c", "from service.cli import main; main()")
CATCH_UP_TIMEOUT = 300.0
REAP_TIMEOUT = 10.0


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}  # the checkout, not an install


def spawn_workers(
    url: str, shared: list[int], seed: str, workers: list[subprocess.Popen[str]]
) -> None:
    """Start the workers into ``workers`` one by one, so that an interrupt between two starts
    still leaves every started one where :func:`reap` finds it."""
    ids = ",".join(map(str, shared))
    for n in range(1, PROCESSES + 1):
        workers.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), url, str(n), seed, str(EVENTS_PER_PROCESS), ids],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=REPO,
                env=child_env(),
            )
        )


def reap(workers: list[subprocess.Popen[str]]) -> None:
    """Kill the workers still running and wait for each: after Ctrl-C (or a failed assertion)
    no ``load_worker.py`` outlives the test, appending to a database nobody reads."""
    for process in workers:
        if process.poll() is None:
            process.kill()
    for process in workers:
        try:
            process.wait(timeout=REAP_TIMEOUT)
        except subprocess.TimeoutExpired:  # unkillable (stuck in the kernel): say which
            print(f"load worker {process.pid} did not exit after SIGKILL", file=sys.stderr)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def spawn_follower(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*LEDGER, "project", "--follow", "--interval", "0.05", "--batch-size", "500", "--db", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=child_env(),
    )


def collect(workers: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    reports = []
    for process in workers:
        out, err = process.communicate(timeout=1200)
        assert process.returncode == 0, err
        reports.append(json.loads(out))
    return reports


def wait_for_catch_up(ledger: Ledger, follower: subprocess.Popen[str]) -> None:
    """Poll the checkpoint (the follower's own progress, not a clock) until it meets the head."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    head = ledger.head().last_position
    while Projector(ledger).checkpoint().position < head:
        assert follower.poll() is None, follower.communicate()[1]
        assert time.monotonic() < deadline, "the follower did not catch up"
        time.sleep(0.05)


def stored_rows(ledger: Ledger) -> list[tuple[int, str, int, str, str]]:
    columns = (ledger_events.c.position, ledger_events.c.event_id, ledger_events.c.run_id)
    query = select(*columns, ledger_events.c.type, ledger_events.c.payload)
    with ledger.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query.order_by(ledger_events.c.position))]


def test_eight_appender_processes_with_a_following_projector(
    ledger: Ledger, db_url: str, backend: str, reliability: Summary
) -> None:
    started = time.monotonic()
    setup = ledger.append(
        [RunStarted(source_id=0, connector_name="SHARED") for _ in range(SHARED_RUNS)]
    )
    shared = [event.run_id for event in setup.events]
    follower = spawn_follower(db_url)
    workers: list[subprocess.Popen[str]] = []
    try:
        spawn_workers(db_url, shared, f"load-{os.getpid()}", workers)
        reports = collect(workers)
        wait_for_catch_up(ledger, follower)
    finally:
        reap(workers)
        _out, follower_log = stop_process(follower)
    assert follower.returncode == 0, follower_log
    elapsed = time.monotonic() - started

    rows = stored_rows(ledger)
    positions = [row[0] for row in rows]
    stored_ids = Counter(row[1] for row in rows)
    reported_ids = Counter(e for r in reports for e in r["stored"])
    reported_ids.update(str(e.event_id) for e in setup.events)
    counts: Counter[str] = Counter()
    for report in reports:
        counts.update(report["counts"])

    # Exactly once, nothing missing, nothing extra, no gap.
    assert all(n == 1 for n in reported_ids.values()), "a worker was told twice it stored one id"
    assert stored_ids == reported_ids
    assert positions == list(range(1, len(rows) + 1))
    assert len(rows) == PROCESSES * EVENTS_PER_PROCESS + SHARED_RUNS + _overshoot(reports)
    chain = verify_chain(ledger)
    assert chain.ok, chain.problem

    # Conflicts happened, and each refused event was stored once by a later attempt.
    assert counts["conflicts"] > 0, "the load produced no expected_version conflict"
    shared_progress = sum(1 for row in rows if row[2] in shared and row[3] == "RunProgressed")
    assert shared_progress == counts["contended_appends"]
    assert counts["retries"] > 0

    # The followed projection: equal to a replay and to a fresh rebuild; nothing double-counted.
    followed, transitions = table_rows(ledger), transition_rows(ledger)
    assert followed == replayed_rows(ledger)
    expected_fetched: Counter[int] = Counter()
    for report in reports:
        expected_fetched.update({int(k): v for k, v in report["fetched"].items()})
    assert {run_id: row["recordsFetched"] for run_id, row in followed.items()} == {
        run_id: expected_fetched.get(run_id, 0) for run_id in followed
    }
    rebuild(ledger)
    assert table_rows(ledger) == followed
    assert transition_rows(ledger) == transitions

    reliability.record(
        "1 concurrency",
        backend,
        f"{PROCESSES} processes × {EVENTS_PER_PROCESS:,} events + a following projector: "
        f"{counts['single_appends']:,} single appends, {counts['batch_appends']:,} batches, "
        f"{counts['retries']:,} retries ({counts['retried_events']:,} events re-sent), "
        f"{counts['contended_appends']:,} expected_version writes to {SHARED_RUNS} shared runs, "
        f"{counts['storage_retries']:,} storage errors retried; {elapsed:.0f}s",
        f"{len(rows):,} events stored exactly once, positions 1..{len(rows):,} contiguous, "
        f"chain verified; {counts['conflicts']:,} conflicts all ConcurrencyError, each refused "
        f"event stored once later; projection = rebuild, {len(followed):,} runs' counters exact",
    )


def _overshoot(reports: list[dict[str, Any]]) -> int:
    """A worker stops once it has stored at least its target; a batch may take it past."""
    return sum(len(r["stored"]) - EVENTS_PER_PROCESS for r in reports)
