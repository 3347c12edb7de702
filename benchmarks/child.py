"""Work the harness runs in a separate process: a rebuild (to read its own peak RSS) and the
writers of the concurrent-writers curve. Prints one JSON line.

``python -m benchmarks.child rebuild URL``
``python -m benchmarks.child import-legacy FOLDER ROWS``: ``ledger import-legacy`` of a SQLite
legacy table of ``ROWS`` rows into a new SQLite ledger, both made in ``FOLDER``.
``python -m benchmarks.child append URL COUNT WORKER``: ``COUNT`` durable appends of one event
each, on its own run, through :meth:`ledger.Ledger.append`.
``python -m benchmarks.child raw-append URL COUNT WORKER``: ``COUNT`` raw INSERT + COMMIT of
one row each into the raw table (MariaDB, PyMySQL), rows of its own.

A writer prints ``ready`` once it is connected and set up, then makes its ``COUNT`` calls each
time it reads ``go`` on stdin (so the harness starts the writers' clocks together and reuses
them from one number of processes to the next), until stdin ends. Each report, one JSON line,
has its first and last ``time.monotonic()`` (one clock for every process of the machine),
each call's latency and the number of calls that raised.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any


def rebuild(url: str) -> None:
    from ledger import Ledger
    from projections import rebuild as rebuild_projection

    ledger = Ledger.from_url(url)
    started = time.perf_counter()
    result = rebuild_projection(ledger, batch_size=1000)
    elapsed = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"events": result.events, "seconds": elapsed, "peak_rss_mb": peak_kb / 1024}))


# The legacy ingestion_runs table, as a SQLite database of the legacy system held it.
LEGACY_DDL = """
CREATE TABLE ingestion_runs (
  id INTEGER PRIMARY KEY, sourceId INTEGER NOT NULL, connectorName VARCHAR(100) NOT NULL,
  startedAt TIMESTAMP NOT NULL, completedAt TIMESTAMP NULL, duration INTEGER NULL,
  status VARCHAR(7) NOT NULL DEFAULT 'running', recordsFetched INTEGER NOT NULL DEFAULT 0,
  recordsCreated INTEGER NOT NULL DEFAULT 0, recordsUpdated INTEGER NOT NULL DEFAULT 0,
  recordsSkipped INTEGER NOT NULL DEFAULT 0, claimsCreated INTEGER NOT NULL DEFAULT 0,
  errorMessage TEXT NULL, errorDetails JSON NULL,
  coverageCellsUpdated INTEGER NOT NULL DEFAULT 0, createdAt TIMESTAMP NOT NULL
)
"""
LEGACY_INSERT = (
    "INSERT INTO ingestion_runs (id, sourceId, connectorName, startedAt, completedAt, duration, "
    "status, recordsFetched, recordsCreated, recordsUpdated, recordsSkipped, errorMessage, "
    "errorDetails, createdAt) VALUES (?, ?, ?, '2026-01-28 01:12:00', '2026-01-28 01:13:00', "
    "60, 'success', 10, 5, 3, 2, NULL, ?, '2026-01-28 01:12:00')"
)


def import_legacy(folder: str, rows: int) -> None:
    """A legacy table of ``rows`` successes (100 connectors; inserted 1,000 rows at a time, so
    that the peak RSS is the import's), then ``import_legacy`` of it into a new ledger."""
    import sqlite3
    from pathlib import Path

    from forensics.legacy_import import import_legacy as run_import
    from ledger import Ledger
    from migrations.runner import upgrade

    legacy = Path(folder) / f"legacy-{rows}.db"
    with sqlite3.connect(legacy) as conn:
        conn.executescript(LEGACY_DDL)
        for start in range(1, rows + 1, 1000):
            conn.executemany(
                LEGACY_INSERT,
                (
                    (i, i % 100 + 1, f"SOURCE_{i % 100 + 1}", '{"pages": 3}')
                    for i in range(start, min(start + 1000, rows + 1))
                ),
            )
            conn.commit()
    ledger = Ledger.from_url(f"sqlite:///{Path(folder) / f'ledger-{rows}.db'}")
    upgrade(ledger.engine, ledger.url)
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = run_import(ledger, f"sqlite:///{legacy}")
    elapsed = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    if result.imported != rows or result.mismatches:
        raise SystemExit(f"the import did not adopt every row as it was: {result}")
    print(
        json.dumps(
            {
                "rows": rows,
                "seconds": elapsed,
                "rss_before_mb": before_kb / 1024,
                "peak_rss_mb": peak_kb / 1024,
            }
        )
    )


def _write(count: int, call: Callable[[int], None], prepare: Callable[[], None]) -> None:
    """Each time the harness says ``go``, make ``count`` calls, timing each, and print the
    report; until stdin ends. ``prepare`` runs before each ``go`` (off the clock)."""
    index = 0
    prepare()
    print("ready", flush=True)
    while sys.stdin.readline().strip() == "go":
        latencies, errors, first_error = [], 0, None
        started = time.monotonic()
        for _ in range(count):
            began = time.monotonic()
            try:
                call(index)
            except Exception as exc:  # counted and reported: the target is no errors
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
            latencies.append(time.monotonic() - began)
            index += 1
        finished = time.monotonic()
        report = {
            "started": started,
            "finished": finished,
            "latencies": latencies,
            "errors": errors,
            "first_error": first_error,
        }
        prepare()
        print(json.dumps(report), flush=True)


def appender(url: str, count: int, worker: int) -> None:
    from ledger import Ledger, RunProgressed

    ledger = Ledger.from_url(url)
    run_id = ledger.start_run(worker, f"bench-{worker}")
    _write(
        count,
        lambda _: ledger.append([RunProgressed(run_id=run_id, records_fetched=1)]),
        lambda: None,
    )


def raw_appender(url: str, count: int, worker: int) -> None:
    from benchmarks.raw import insert_sql, mysql_connection, rows

    conn = mysql_connection(url, autocommit=False)
    insert = insert_sql(sqlite=False)
    prepared: list[tuple[Any, ...]] = []

    def prepare() -> None:  # the rows of the next round: positions of this worker's own
        prepared.extend(rows(worker * 10_000_000 + len(prepared) + 1, count, sqlite=False))

    def call(index: int) -> None:
        try:
            with conn.cursor() as cursor:
                cursor.execute(insert, prepared[index])
            conn.commit()
        except Exception:
            conn.rollback()
            raise

    _write(count, call, prepare)


if __name__ == "__main__":
    task, url, *rest = sys.argv[1:]
    if task == "rebuild":
        rebuild(url)
    elif task == "import-legacy":
        import_legacy(url, int(rest[0]))
    elif task == "append":
        appender(url, int(rest[0]), int(rest[1]))
    elif task == "raw-append":
        raw_appender(url, int(rest[0]), int(rest[1]))
    else:
        raise SystemExit(f"unknown task {task!r}")
