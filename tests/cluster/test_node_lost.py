"""A node SIGKILLed while writers on the other nodes append (issue 18): they go on and lose
nothing; a writer of the lost node fails over through its spool (delivered to another node,
idempotent by event_id); the node rejoins by IST and holds exactly what the others hold."""

from __future__ import annotations

import time
from pathlib import Path

from connectors.spool import Spool
from ledger import Ledger, RunProgressed, StorageError
from ledger.driver_errors import database_unreachable
from tests.cluster.conftest import ClusterLedger
from tests.cluster.galera import wait_until
from tests.cluster.support import node_state, reports, writers

EVENTS = 400


def test_node_killed_under_load_rejoins_identical(
    cluster_ledger: ClusterLedger, tmp_path: Path
) -> None:
    cluster = cluster_ledger.cluster
    lost = cluster.node(3)
    node1 = Ledger.from_url(cluster_ledger.url(1))
    node3 = Ledger.from_url(cluster_ledger.url(3) + "?connect_timeout=2&read_timeout=5")
    spool = Spool(tmp_path / "spool")
    try:
        run_id = node3.start_run(9, "on-node-3")
        with writers(cluster_ledger.urls[:2], EVENTS) as processes:
            wait_until(lambda: node1.head().last_position >= 100, 60, "writers under way")
            killed_at = node1.head().last_position
            lost.kill()
            # The node-3 connector's next report cannot reach its node: it is spooled ...
            event = RunProgressed(run_id=run_id, records_fetched=7)
            try:
                node3.append([event])
                raise AssertionError("node 3 was killed, yet the append went through")
            except StorageError:
                spool.put([event])
            # ... and delivered to a node that answers (what a second URL or a load balancer
            # in front of the cluster gives the SDK), once it takes clients again: while the
            # cluster settles its new view it may answer 1047 for a moment, and the event
            # stays spooled, as in any outage.
            delivered: list[int] = []

            def flushed() -> bool:
                try:
                    delivered.append(spool.flush(node1).delivered)
                except StorageError as exc:
                    if not database_unreachable(exc):  # waiting helps; nothing else would
                        raise
                    return False
                return sum(delivered) == 1

            wait_until(flushed, 60, "the spooled event delivered to node 1")
            assert spool.flush(node1).delivered == 0  # nothing spooled twice
            found = reports(processes, timeout=300)
        assert all(not r["failures"] for r in found), [r["failures"] for r in found]
        assert node1.head().last_position > killed_at
        # The node's first join logged an SST and maybe an IST: only what it logs from here
        # on tells how it rejoins.
        logged_before = len(lost.error_log.read_text(errors="replace"))
        started = time.monotonic()
        cluster.restart(3)
        rejoined_in = time.monotonic() - started
        rejoin_log = lost.error_log.read_text(errors="replace")[logged_before:]
        assert "IST received" in rejoin_log, rejoin_log[-2000:]  # not a full SST
        print(f"node 3 rejoined by IST in {rejoined_in:.1f}s")
        delivered = [e for r in found for e in r["event_ids"]]
        states = [node_state(url) for url in cluster_ledger.urls]
        problems = {n: s["problems"][:3] for n, s in enumerate(states, 1) if not s["verified"]}
        assert not problems, (killed_at, problems)
        for state in states:
            assert state["head"] == states[0]["head"]
            assert state["event_ids"] == states[0]["event_ids"]
        stored = set(states[0]["event_ids"])
        assert set(delivered) <= stored
        assert str(event.event_id) in stored
        assert len(states[0]["event_ids"]) == len(delivered) + 2  # + node 3's start, progress
    finally:
        node1.close()
        node3.close()
        if not lost.running:
            cluster.restart(3)
