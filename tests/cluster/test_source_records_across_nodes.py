"""Source records upserted through two nodes at once (issue 18's audit, item 2). On one server
a run that inserts a key another run inserted first meets the unique key (a ConstraintError)
and upserts again; on a Galera cluster the loser's transaction fails its certification at
COMMIT with 1213 instead, which ended the connector's run ``failed`` (30 of 60 upserts in the
audit). Both are now run again, bounded."""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import select

from connectors.records import RecordStore, UpsertCounts, content_hash
from connectors.schema import source_records
from ledger import Ledger
from tests.cluster.conftest import ClusterLedger
from tests.cluster.galera import wait_until
from tests.cluster.test_read_side_across_nodes import Background, finish_all, ledgers

KEYS = [f"rec-{i:02d}" for i in range(20)]
ROUNDS = 30


def stored_records(ledger: Ledger) -> dict[str, str]:
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            select(source_records.c.external_id, source_records.c.content_hash).where(
                source_records.c.source_id == 7
            )
        ).all()
    return {external_id: digest for external_id, digest in rows}


def test_two_nodes_upserting_the_same_keys_in_lockstep_never_fail(
    cluster_ledger: ClusterLedger,
) -> None:
    counted: dict[int, list[UpsertCounts]] = {0: [], 1: []}
    with ledgers(cluster_ledger) as nodes:
        barrier = threading.Barrier(2)

        def upserter(index: int) -> Callable[[threading.Event], None]:
            store = RecordStore(nodes[index])

            def work(_stop: threading.Event) -> None:
                for round_ in range(ROUNDS):
                    barrier.wait(timeout=60)
                    records = [(key, {"key": key, "round": round_}) for key in KEYS]
                    counted[index].append(store.upsert(7, records))

            return work

        threads = [Background(upserter(0)), Background(upserter(1))]
        for thread in threads:
            thread.start()
        finish_all(threads)  # raises the first upsert that failed

        assert [len(counted[0]), len(counted[1])] == [ROUNDS, ROUNDS]
        created = sum(c.created for c in counted[0] + counted[1])
        assert created == len(KEYS)  # each key created once, by one of the two
        for round_ in range(ROUNDS):
            both = (counted[0][round_], counted[1][round_])
            assert sum(c.created + c.updated + c.skipped for c in both) == 2 * len(KEYS)
        last = {key: content_hash({"key": key, "round": ROUNDS - 1}) for key in KEYS}
        for ledger in nodes:
            wait_until(
                lambda ledger=ledger: stored_records(ledger) == last,  # type: ignore[misc]
                30,
                f"{ledger} holds every record of the last round",
            )
