"""A separate appender process for the concurrency tests (I2, I3).

usage: append_worker.py URL WORKER_ID RUNS EVENTS_PER_RUN [SHARED_SEED]

Starts RUNS runs and appends EVENTS_PER_RUN progress events to each, one event per transaction
(the connector path), interleaving runs. With SHARED_SEED, event ids are derived from the seed
only, so several workers append the very same facts (an idempotency race). Prints one JSON line
with what it appended.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime

from ledger import Ledger, RunFinished, RunProgressed, RunStarted


def main() -> None:
    url, worker, runs, per_run = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    shared = len(sys.argv) > 5
    seed = sys.argv[5] if shared else f"worker-{worker}-{uuid.uuid4()}"
    # Workers racing to append the same facts must send identical facts: same content and time.
    source_id, name = (0, "shared") if shared else (worker, f"worker-{worker}")
    at = {"occurred_at": datetime(2026, 1, 1, tzinfo=UTC)} if shared else {}
    ledger = Ledger.from_url(url)

    def event_id(*parts: object) -> uuid.UUID:
        return uuid.uuid5(uuid.NAMESPACE_URL, "/".join(str(p) for p in (seed, *parts)))

    run_ids = []
    appended = 0
    for r in range(runs):
        result = ledger.append(
            [
                RunStarted(
                    event_id=event_id("start", r),
                    source_id=source_id,
                    connector_name=name,
                    **at,
                )
            ]
        )
        run_ids.append(result.events[0].run_id)
        appended += result.appended
    for i in range(per_run):
        for r, run_id in enumerate(run_ids):
            result = ledger.append(
                [
                    RunProgressed(
                        event_id=event_id("progress", r, i), run_id=run_id, records_fetched=1, **at
                    )
                ]
            )
            appended += result.appended
    for r, run_id in enumerate(run_ids):
        result = ledger.append(
            [RunFinished(event_id=event_id("finish", r), run_id=run_id, status="success", **at)]
        )
        appended += result.appended
    ledger.close()
    print(json.dumps({"worker": worker, "run_ids": run_ids, "appended": appended}))


if __name__ == "__main__":
    main()
