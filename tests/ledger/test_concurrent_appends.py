"""Appenders in separate processes against one database (I2 ordered, I3 idempotent).

A reader tails the ledger by position while the writers append: it must see every event exactly
once, positions 1..N in order, never a position appearing after a higher one was read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from forensics.chain import verify_chain
from ledger import Ledger
from tests.support import stop_process, wait_for_exit

WORKER = Path(__file__).resolve().parents[1] / "workers" / "append_worker.py"
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def start_workers(
    url: str, count: int, runs: int, per_run: int, shared_seed: str | None = None
) -> list[subprocess.Popen[str]]:
    extra = [shared_seed] if shared_seed else []
    return [
        subprocess.Popen(
            [sys.executable, str(WORKER), url, str(worker), str(runs), str(per_run), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},  # the checkout, not an install
        )
        for worker in range(1, count + 1)
    ]


def finish(workers: list[subprocess.Popen[str]]) -> list[dict[str, object]]:
    """Each worker's report once it exited; when one fails or hangs (killed after 300 s), the
    others are stopped too, not left appending to the next test's database."""
    reports = []
    try:
        for process in workers:
            out, err = wait_for_exit(process, timeout=300)
            assert process.returncode == 0, err
            reports.append(json.loads(out))
    finally:
        for process in workers:
            stop_process(process)
    return reports


class Tailer(threading.Thread):
    """Polls ``read_page`` after the last position seen, like a projector would."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__(daemon=True)
        self.ledger = ledger
        self.seen: list[int] = []
        self.out_of_order: list[tuple[int, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        last = 0
        while True:
            stopping = self.stop.is_set()
            page = self.ledger.read_page(last, 200)
            for event in page:
                if event.position != last + 1:
                    self.out_of_order.append((last, event.position))
                self.seen.append(event.position)
                last = event.position
            if stopping and not page:
                return


def test_i2_concurrent_appenders_and_a_tailing_reader(ledger: Ledger, db_url: str) -> None:
    tailer = Tailer(ledger)
    tailer.start()
    workers = start_workers(db_url, count=4, runs=3, per_run=25)
    try:
        reports = finish(workers)
    finally:  # a failed worker: the tailer stops reading the ledger the fixture closes
        tailer.stop.set()
        tailer.join(timeout=60)
    total = sum(int(report["appended"]) for report in reports)  # type: ignore[call-overload]
    assert total == 4 * 3 * (25 + 2)
    assert tailer.out_of_order == []  # the reader never had to skip a position
    assert tailer.seen == list(range(1, total + 1))
    assert ledger.head().last_position == total
    for report in reports:
        for run_id in report["run_ids"]:  # type: ignore[attr-defined]
            versions = [event.version for event in ledger.read_run(run_id)]
            assert versions == list(range(1, 25 + 3))
    assert verify_chain(ledger).ok


def test_i3_racing_retries_of_the_same_facts_are_stored_once(ledger: Ledger, db_url: str) -> None:
    workers = start_workers(db_url, count=3, runs=2, per_run=20, shared_seed="the-same-facts")
    reports = finish(workers)
    assert sum(int(r["appended"]) for r in reports) == 2 * (20 + 2)  # type: ignore[call-overload]
    events = list(ledger.read_all())
    assert len(events) == 2 * (20 + 2)
    assert max(Counter(e.event_id for e in events).values()) == 1
    assert {tuple(r["run_ids"]) for r in reports} == {(1, 2)}  # type: ignore[arg-type]
    assert verify_chain(ledger).ok
