"""A node SIGKILLed while writers on the other nodes append (issue 18): they go on and lose
nothing; a connector of the lost node, given one address (a load balancer with the other
nodes as backups, as README's HAProxy setup), fails over by itself: what it reports while the
cluster settles is spooled and delivered, in order and exactly once, through the same address
(I9, idempotent by event_id); the node rejoins by IST and holds exactly what the others hold."""

from __future__ import annotations

import time
from pathlib import Path

from connectors.sdk import RunContext
from connectors.spool import Spool
from ledger import Ledger, RunFinished, RunProgressed
from tests.cluster.conftest import ClusterLedger
from tests.cluster.galera import wait_until
from tests.cluster.support import node_state, reports, writers
from tests.reliability.fault_proxy import FaultProxy

EVENTS = 400


def test_node_killed_under_load_rejoins_identical(
    cluster_ledger: ClusterLedger, tmp_path: Path
) -> None:
    cluster = cluster_ledger.cluster
    lost = cluster.node(3)
    node1 = Ledger.from_url(cluster_ledger.url(1))
    # The load balancer: node 3 first, nodes 1 and 2 behind it as backups.
    balancer = FaultProxy(*[("127.0.0.1", cluster.node(n).sql_port) for n in (3, 1, 2)])
    through_balancer = Ledger.from_url(
        cluster_ledger.url(3).replace(f":{lost.sql_port}/", f":{balancer.port}/")
        + "?connect_timeout=2&read_timeout=5"
    )
    connector = RunContext(
        through_balancer, 9, "on-node-3", spool=Spool(tmp_path / "spool"), progress_interval=0
    )
    try:
        run_id = connector.start()
        connector.progress(fetched=7)
        assert balancer.connected[("127.0.0.1", lost.sql_port)] >= 1
        with writers(cluster_ledger.urls[:2], EVENTS) as processes:
            wait_until(lambda: node1.head().last_position >= 100, 60, "writers under way")
            killed_at = node1.head().last_position
            lost.kill()
            # The balancer has not marked node 3 down yet (HAProxy: `fall` checks): no
            # connection gets through, and the connector's report is spooled ...
            balancer.outage()
            connector.progress(fetched=2)
            assert connector.spool.has_pending()
            balancer.restore()
            # ... then it goes on reporting through the one address: a report the cluster
            # cannot take yet (the others settling their new view, answering 1047 for a
            # moment) is spooled too, and the spool is delivered before the next that gets
            # through.
            reported = [7, 2]

            def caught_up() -> bool:
                connector.progress(fetched=1)
                reported.append(1)
                return not connector.spool.has_pending()

            wait_until(caught_up, 60, "the connector's reports delivered through the balancer")
            assert balancer.connected[("127.0.0.1", cluster.node(1).sql_port)] >= 1
            result = connector.finish()
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
        # The connector's run: every report once, in order, its total exact, and finished.
        events = [e.event for e in node1.read_run(run_id)]
        progressed = [e for e in events if isinstance(e, RunProgressed)]
        assert sum(e.records_fetched for e in progressed) == sum(reported)
        assert result.totals["records_fetched"] == sum(reported)
        assert result.spooled
        assert isinstance(events[-1], RunFinished)
        assert events[-1].status == "success"
        assert len(states[0]["event_ids"]) == len(delivered) + len(events)
        print(
            f"the connector behind the balancer: {len(reported) - 1} report(s) after the kill, "
            f"spooled: {result.spooled}"
        )
    finally:
        node1.close()
        through_balancer.close()
        balancer.close()
        if not lost.running:
            cluster.restart(3)
