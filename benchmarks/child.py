"""Work the harness runs in a separate process: a rebuild (to read its own peak RSS) and an
appender (for the four-process figure). Prints one JSON line."""

from __future__ import annotations

import json
import resource
import sys
import time

from ledger import Ledger, LedgerError, RunProgressed


def rebuild(url: str) -> None:
    from projections import rebuild as rebuild_projection

    ledger = Ledger.from_url(url)
    started = time.perf_counter()
    result = rebuild_projection(ledger, batch_size=1000)
    elapsed = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"events": result.events, "seconds": elapsed, "peak_rss_mb": peak_kb / 1024}))


def appender(url: str, count: int, worker: int) -> None:
    ledger = Ledger.from_url(url)
    run_id = ledger.start_run(worker, f"bench-{worker}")
    latencies, errors = [], 0
    started = time.perf_counter()
    for _ in range(count):
        began = time.perf_counter()
        try:
            ledger.append([RunProgressed(run_id=run_id, records_fetched=1)])
        except LedgerError:
            errors += 1
        latencies.append(time.perf_counter() - began)
    print(
        json.dumps(
            {"seconds": time.perf_counter() - started, "latencies": latencies, "errors": errors}
        )
    )


if __name__ == "__main__":
    task, url, *rest = sys.argv[1:]
    if task == "rebuild":
        rebuild(url)
    else:
        appender(url, int(rest[0]), int(rest[1]))
