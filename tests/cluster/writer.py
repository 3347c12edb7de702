"""A writer process for the cluster tests: one connector-like run on one node.

usage: writer.py URL WORKER EVENTS

Starts a run, appends EVENTS RunProgressed one per transaction (the connector path), finishes
the run. An append that fails is counted (by MySQL error number) and tried again with the same
event (as the SDK's spool would deliver it: same event_id), up to 50 times, so that the report
says what the caller saw without losing the fact. Prints one JSON line: the run id, the event
ids it delivered, the failures it saw by code, and the conflict retries the ledger made
itself (``Ledger.conflict_retries``).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from ledger import Ledger, LedgerError, RunFinished, RunProgressed, RunStarted
from ledger.recorded import AppendResult


def error_code(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        args = getattr(cause, "args", ())
        if type(cause).__module__.startswith("pymysql") and args and isinstance(args[0], int):
            return str(args[0])
        cause = cause.__cause__
    return type(exc).__name__


def main() -> None:
    url, worker, events = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ledger = Ledger.from_url(url)
    failures: Counter[str] = Counter()
    messages: dict[str, str] = {}
    seed = uuid.uuid4()
    delivered: list[str] = []

    def deliver(append: Callable[[], AppendResult]) -> AppendResult:
        for _ in range(50):
            try:
                return append()
            except LedgerError as exc:
                code = error_code(exc)
                failures[code] += 1
                messages.setdefault(code, str(exc)[:300])
                time.sleep(0.01)
        raise SystemExit(f"gave up: {dict(failures)} {messages}")

    def event_id(*parts: object) -> uuid.UUID:
        return uuid.uuid5(seed, "/".join(map(str, parts)))

    started = time.monotonic()
    start = RunStarted(event_id=event_id("start"), source_id=worker, connector_name=f"w{worker}")
    run_id = deliver(lambda: ledger.append([start])).events[0].run_id
    delivered.append(str(start.event_id))
    for index in range(events):
        progress = RunProgressed(event_id=event_id(index), run_id=run_id, records_fetched=1)
        deliver(lambda e=progress: ledger.append([e]))  # type: ignore[misc]
        delivered.append(str(progress.event_id))
    finish = RunFinished(event_id=event_id("finish"), run_id=run_id, status="success")
    deliver(lambda: ledger.append([finish]))
    delivered.append(str(finish.event_id))
    elapsed = time.monotonic() - started
    conflict_retries = ledger.conflict_retries
    trigger_reloads = ledger.trigger_reloads
    ledger.close()
    report: dict[str, Any] = {
        "worker": worker,
        "run_id": run_id,
        "event_ids": delivered,
        "failures": dict(failures),
        "messages": messages,
        "conflict_retries": conflict_retries,
        "trigger_reloads": trigger_reloads,
        "seconds": elapsed,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
