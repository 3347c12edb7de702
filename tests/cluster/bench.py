"""Append throughput on one MariaDB server and on a three-node Galera cluster.

usage: python -m tests.cluster.bench [--events N] [--rounds R] [--single URL] [--json FILE]

Every figure is writer processes (``tests/cluster/writer.py``) appending one event per
transaction (the connector path: RunStarted, N RunProgressed, RunFinished), each on its own
scratch database:

* single: one writer on the single server at ``--single`` (the machine's MariaDB), and
  single-3: three writers on it at once;
* cluster-1: one writer on node 1 of a fresh three-node cluster (``tests.cluster.galera``);
* cluster-3: three writers at once, one per node: aggregate events/s (all events over the
  wall time of the slowest) and the conflict retry rate (``Ledger.conflict_retries`` per
  append).

Each round measures every configuration once, interleaved; the figures are the medians.

The cluster runs with ``innodb_flush_log_at_trx_commit`` as each figure says: 1 (an fsync per
commit, as the single server) and 2 (the usual Galera setting: the other nodes' copies are the
durability), set with SET GLOBAL on every node. Lives beside the cluster fixture because it
starts the cluster the same way (the benchmarks package may not import the tests).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from contextlib import closing
from typing import Any

from tests import support
from tests.cluster.galera import Cluster, running_cluster
from tests.cluster.support import reports, writers


def scratch(base_url: str) -> str:
    url = support.create_mysql_database(base_url, f"ledger_bench_{uuid.uuid4().hex[:8]}")
    support.migrate(url)
    return url


def measure(urls: list[str], events: int) -> dict[str, Any]:
    started = time.monotonic()
    with writers(urls, events) as processes:
        found = reports(processes, timeout=600 + events)
    wall = time.monotonic() - started
    appends = sum(len(r["event_ids"]) for r in found)
    retries = sum(r["conflict_retries"] for r in found)
    return {
        "writers": len(urls),
        "appends": appends,
        "seconds": round(max(r["seconds"] for r in found), 2),
        "wall_seconds": round(wall, 2),
        "events_per_s": round(appends / max(r["seconds"] for r in found), 1),
        "conflict_retries": retries,
        "retry_rate": round(retries / appends, 3),
        "failures": [r["failures"] for r in found],
    }


def set_flush(cluster: Cluster, value: int) -> None:
    for node in cluster.nodes:
        with closing(node.connect(as_root=True)) as conn, conn.cursor() as cursor:
            cursor.execute(f"SET GLOBAL innodb_flush_log_at_trx_commit = {int(value)}")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500, help="RunProgressed per writer")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument(
        "--single",
        default="mysql+pymysql://root@127.0.0.1:3306/test",
        help="the single MariaDB server to compare with (a database URL; default: %(default)s)",
    )
    parser.add_argument("--json", help="write the figures to this file too")
    args = parser.parse_args()
    rounds: dict[str, list[dict[str, Any]]] = {}
    with running_cluster() as cluster:
        cluster_start_s = round(cluster.started_in_s, 1)
        # Interleaved, so that the shared machine's load falls on every configuration alike.
        for round_number in range(1, args.rounds + 1):
            for name, count in (("single", 1), ("single-3", 3)):
                single = scratch(args.single)
                try:
                    rounds.setdefault(name, []).append(measure([single] * count, args.events))
                finally:
                    support.drop_mysql_database(single)
            for flush in (1, 2):
                set_flush(cluster, flush)
                for nodes in ([1], [1, 2, 3]):
                    name = f"cluster-{len(nodes)} flush={flush}"
                    base = scratch(cluster.url(1, "mysql"))
                    database = base.rsplit("/", 1)[1]
                    try:
                        urls = [cluster.url(n, database) for n in nodes]
                        rounds.setdefault(name, []).append(measure(urls, args.events))
                    finally:
                        support.drop_mysql_database(base)
            print(f"round {round_number}:", {k: v[-1]["events_per_s"] for k, v in rounds.items()})
    results: dict[str, Any] = {
        "events_per_writer": args.events,
        "rounds": args.rounds,
        "cluster_start_s": cluster_start_s,
    }
    for name, runs in rounds.items():
        results[name] = {
            "writers": runs[0]["writers"],
            "events_per_s_median": median([r["events_per_s"] for r in runs]),
            "events_per_s_rounds": [r["events_per_s"] for r in runs],
            "retry_rate_median": median([r["retry_rate"] for r in runs]),
            "failures": [f for r in runs for f in r["failures"] if f],
        }
        print(f"{name:20} {results[name]}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
