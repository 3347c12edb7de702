"""Helpers of the cluster tests: writer processes, one per node, and what every node holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from forensics.verify import verify_all
from ledger import Ledger

WRITER = Path(__file__).resolve().parent / "writer.py"
REPO = Path(__file__).resolve().parents[2]


@contextmanager
def writers(urls: list[str], events: int) -> Iterator[list[subprocess.Popen[str]]]:
    """One writer process per URL; every one still running when the block ends is killed."""
    processes = [
        subprocess.Popen(
            [sys.executable, str(WRITER), url, str(worker), str(events)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            start_new_session=True,
        )
        for worker, url in enumerate(urls, 1)
    ]
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()


def reports(processes: list[subprocess.Popen[str]], timeout: float) -> list[dict[str, Any]]:
    found = []
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        assert process.returncode == 0, err[-3000:]
        found.append(json.loads(out))
    return found


def node_state(url: str) -> dict[str, Any]:
    """What one node holds: head, event ids by position, ``ledger verify``'s verdict."""
    ledger = Ledger.from_url(url)
    try:
        head = ledger.head()
        events = list(ledger.read_all())
        verified = verify_all(ledger)
    finally:
        ledger.close()
    return {
        "head": (head.last_position, head.last_hash),
        "positions": [e.position for e in events],
        "event_ids": [e.event_id for e in events],
        "verified": verified.ok,
        "problems": [str(p) for p in verified.problems],
    }
