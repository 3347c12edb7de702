"""What the connector tests share: a run's events, its RunFinished payload and its counter
totals read back from the ledger, and a text file written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ledger import Ledger, RecordedEvent
from tests.support import counter_deltas


def run_events(ledger: Ledger, run_id: int) -> list[RecordedEvent]:
    return ledger.read_run(run_id)


def finished(ledger: Ledger, run_id: int) -> dict[str, Any]:
    last = run_events(ledger, run_id)[-1]
    assert last.type == "RunFinished"
    return last.payload_data


def totals(ledger: Ledger, run_id: int) -> dict[str, int]:
    sums: dict[str, int] = {}
    for event in run_events(ledger, run_id):
        for name, value in counter_deltas(event.event).items():
            sums[name] = sums.get(name, 0) + value
    return sums


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
