"""The projector, the rebuild, the sweeper and serve's schedule claims with processes on
different nodes of a Galera cluster, where ``GET_LOCK`` and ``SELECT … FOR UPDATE`` hold on one
node only (issue 18). What excludes them across nodes is what the cluster certifies: every
projector batch writes the checkpoint row (a compare-and-set), every sweep appends through the
head row, every claim inserts one key; the loser of a race is rolled back and tries again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pymysql
import pytest
from sqlalchemy import update

from forensics.report import build_report
from forensics.verify import verify_all
from ledger import Ledger, RunFinished, RunStarted
from ledger.conflicts import retrying_conflicts
from ledger.dialects import causal_reads
from ledger.sweeper import sweep
from projections import ProjectionBusyError, Projector, rebuild
from projections.checkpoints import mark_swap
from projections.dialects import database_node
from projections.rebuild_claims import RebuildClaim
from projections.schema import PROJECTION_NAME, rebuild_claims
from service.claims import claim
from tests.cluster.conftest import ClusterLedger
from tests.cluster.galera import wait_until
from tests.cluster.support import node_state, reports, writers
from tests.projection_support import replayed_rows, table_rows, transition_rows


@contextmanager
def ledgers(cluster_ledger: ClusterLedger) -> Iterator[list[Ledger]]:
    opened = [Ledger.from_url(url) for url in cluster_ledger.urls]
    try:
        yield opened
    finally:
        for ledger in opened:
            ledger.close()


class Background(threading.Thread):
    """Runs ``work(stop)`` until stopped; an exception is kept for the test to raise."""

    def __init__(self, work: Callable[[threading.Event], None]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work(self.stop)
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=120)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error


def finish_all(threads: list[Background]) -> None:
    """Join every thread; raise the first error that is not a barrier another one broke."""
    for thread in threads:
        thread.join(timeout=120)
    errors = [t.error for t in threads if t.error is not None]
    errors.sort(key=lambda e: isinstance(e, threading.BrokenBarrierError))
    if errors:
        raise errors[0]
    for thread in threads:
        thread.finish()


@contextmanager
def running(*threads: Background) -> Iterator[None]:
    """Start ``threads``; stop and join them however the block ends (a failed test must not
    leave a projector following a database the fixture drops, logging into later tests)."""
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for thread in threads:
            thread.stop.set()
        for thread in threads:
            thread.join(timeout=120)


def wait_projected_everywhere(nodes: list[Ledger]) -> None:
    head = nodes[0].head().last_position
    for ledger in nodes:
        wait_until(
            lambda ledger=ledger: (
                Projector(ledger).checkpoint().position == head
                and ledger.head().last_position == head
            ),
            60,
            f"{ledger} projected to {head}",
        )


def assert_projection_is_a_replay(nodes: list[Ledger]) -> None:
    for ledger in nodes:  # each node has applied the last rebuild's RENAME before it is read
        caught_up(ledger)
    expected = replayed_rows(nodes[0])
    transitions = transition_rows(nodes[0])
    for ledger in nodes:
        assert table_rows(ledger) == expected, ledger
        assert transition_rows(ledger) == transitions, ledger
    assert len(expected) == 3


def caught_up(ledger: Ledger) -> None:
    """``ledger``'s node has applied everything the cluster committed: a read of the tables
    while its applier ran a rebuild's RENAME (DDL, in total order) was aborted by it (1213 at
    the read's ROLLBACK, CI on a loaded machine)."""
    with ledger.engine.connect() as conn, causal_reads(conn):
        conn.exec_driver_sql("SELECT COUNT(*) FROM ingestion_runs").one()


def test_two_projectors_on_two_nodes_never_double_count(cluster_ledger: ClusterLedger) -> None:
    with ledgers(cluster_ledger) as nodes:
        followers = [
            Background(
                lambda stop, ledger=ledger: Projector(ledger, batch_size=7).follow(
                    stop, interval=0.02
                )
            )
            for ledger in nodes[:2]
        ]
        with running(*followers):
            with writers(cluster_ledger.urls, 150) as processes:
                reports(processes, timeout=240)
            wait_projected_everywhere(nodes)
            for follower in followers:
                follower.finish()
        assert_projection_is_a_replay(nodes)
        assert all(node_state(url)["verified"] for url in cluster_ledger.urls)


def test_rebuild_on_node_1_while_a_projector_follows_on_node_2(
    cluster_ledger: ClusterLedger,
) -> None:
    with ledgers(cluster_ledger) as nodes:
        follower = Background(
            lambda stop: Projector(nodes[1], batch_size=5).follow(stop, interval=0.02)
        )
        rebuilds = 0
        with running(follower):
            with writers(cluster_ledger.urls, 150) as processes:
                while any(process.poll() is None for process in processes):
                    rebuild(nodes[0], batch_size=50)
                    rebuilds += 1
                reports(processes, timeout=240)
            rebuild(nodes[0], batch_size=50)
            wait_projected_everywhere(nodes)
            follower.finish()
        assert rebuilds >= 1
        assert_projection_is_a_replay(nodes)


def fill_runs(ledger: Ledger, runs: int, batch: int = 500) -> None:
    """``runs`` finished runs, appended a batch at a time: a projection worth reading, fast."""
    for first in range(1, runs + 1, batch):
        ids = range(first, min(first + batch, runs + 1))
        ledger.append([RunStarted(run_id=i, source_id=1, connector_name="SOURCE_1") for i in ids])
        ledger.append([RunFinished(run_id=i, status="success", records_fetched=1) for i in ids])


def test_verify_and_report_on_other_nodes_stay_clean_while_node_1_rebuilds(
    cluster_ledger: ClusterLedger, caplog: pytest.LogCaptureFixture
) -> None:
    """A rebuild's RENAME TABLE is total-order DDL: every other node aborts (1213) each local
    transaction that holds ``ingestion_runs``, a verify's or a report's read-only snapshot
    included. They read again: every verify on node 2 is clean and every report on node 3 is
    built (before, `ledger verify` exited 1 with "Deadlock found", a false tamper alarm). The
    rebuilds go on until a read has met a swap (it is logged as a retry), or the test proved
    nothing."""
    caplog.set_level(logging.DEBUG, logger="ledger.conflicts")

    def met_a_swap() -> int:
        return sum(
            "lost to another transaction" in r.getMessage()
            for r in caplog.records
            if r.getMessage().startswith(("verify", "report", "read"))
        )

    with ledgers(cluster_ledger) as nodes:
        fill_runs(nodes[0], 3000)
        Projector(nodes[0]).run_once()
        wait_projected_everywhere(nodes)

        def rebuilds(stop: threading.Event) -> None:
            deadline = time.monotonic() + 240
            done = 0
            # Until a read met a swap, or a reader failed (its error is the test's verdict).
            while (
                not stop.is_set()
                and (done < 6 or not met_a_swap())
                and all(reader.is_alive() for reader in readers)
            ):
                assert time.monotonic() < deadline, f"no read met a swap in {done} rebuilds"
                rebuild(nodes[0], batch_size=1000)
                done += 1

        def reads(index: int, read: Callable[[Ledger], None]) -> Callable[[threading.Event], None]:
            def work(stop: threading.Event) -> None:
                while not stop.is_set():
                    read(nodes[index])

            return work

        verdicts: list[list[str]] = []
        reports_built: list[int] = []

        def verify(ledger: Ledger) -> None:
            verdicts.append([str(p) for p in verify_all(ledger).problems])

        def report(ledger: Ledger) -> None:
            reports_built.append(len(build_report(ledger)["conditions"]))

        rebuilder = Background(rebuilds)
        readers = [Background(reads(1, verify)), Background(reads(2, report))]
        with running(*readers, rebuilder):  # the readers first: the rebuilder watches them
            rebuilder.join(timeout=300)
            for reader in readers:
                reader.finish()
            rebuilder.finish()
        assert met_a_swap() >= 1
        assert len(verdicts) >= 3
        assert [problems for problems in verdicts if problems] == []  # every verify clean
        assert len(reports_built) >= 1
        assert_projection_is_a_replay_of(nodes, runs=3000)


def assert_projection_is_a_replay_of(nodes: list[Ledger], runs: int) -> None:
    wait_projected_everywhere(nodes)
    expected = replayed_rows(nodes[0])
    assert len(expected) == runs
    for ledger in nodes:
        assert table_rows(ledger) == expected, ledger


def test_two_sweepers_on_two_nodes_time_each_run_out_once(
    cluster_ledger: ClusterLedger,
) -> None:
    with ledgers(cluster_ledger) as nodes:
        long_ago = datetime.now(UTC) - timedelta(hours=2)
        run_ids = [nodes[i % 3].start_run(1, "stalled", occurred_at=long_ago) for i in range(30)]
        wait_until(
            lambda: all(len(ledger.runs(state="open")) == 30 for ledger in nodes),
            30,
            "every node sees the 30 open runs",
        )
        start = threading.Barrier(2)
        results = {}

        def sweeper(index: int) -> Callable[[threading.Event], None]:
            def work(_stop: threading.Event) -> None:
                start.wait(timeout=30)
                results[index] = sweep(nodes[index])

            return work

        sweepers = [Background(sweeper(0)), Background(sweeper(1))]
        for thread in sweepers:
            thread.start()
        finish_all(sweepers)
        timed_out = Counter(run.run_id for r in results.values() for run in r.timed_out)
        assert sorted(timed_out) == sorted(run_ids)  # every run timed out ...
        assert set(timed_out.values()) == {1}  # ... by exactly one of the two sweepers
        head = nodes[0].head()
        for ledger in nodes:
            wait_until(lambda ledger=ledger: ledger.head() == head, 30, "node caught up")
            stored = Counter(e.run_id for e in ledger.read_all() if e.type == "RunTimedOut")
            assert stored == Counter(run_ids)  # one RunTimedOut per run on every node
        assert all(node_state(url)["verified"] for url in cluster_ledger.urls)


def test_claims_on_two_nodes_run_each_tick_once(cluster_ledger: ClusterLedger) -> None:
    with ledgers(cluster_ledger) as nodes:
        ticks = [datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(40)]
        won: dict[int, list[datetime]] = {0: [], 1: []}
        barrier = threading.Barrier(2)

        def claimer(index: int) -> Callable[[threading.Event], None]:
            def work(_stop: threading.Event) -> None:
                for tick in ticks:
                    barrier.wait(timeout=30)
                    if claim(nodes[index], "sweep", tick, f"serve-{index}"):
                        won[index].append(tick)

            return work

        threads = [Background(claimer(0)), Background(claimer(1))]
        for thread in threads:
            thread.start()
        finish_all(threads)
        assert sorted(won[0] + won[1]) == ticks  # each tick claimed once, by one of them


def test_two_rebuilds_on_two_nodes_never_run_at_once(cluster_ledger: ClusterLedger) -> None:
    """Each node grants its own rebuild lock: the claim row is what keeps the second rebuild
    from dropping the first one's shadow tables. Every attempt either rebuilds or is refused."""
    with ledgers(cluster_ledger) as nodes:
        with writers(cluster_ledger.urls, 60) as processes:
            reports(processes, timeout=240)
        outcomes: dict[int, list[str]] = {0: [], 1: []}
        barrier = threading.Barrier(2)

        def rebuilder(index: int) -> Callable[[threading.Event], None]:
            def work(_stop: threading.Event) -> None:
                for _ in range(6):
                    barrier.wait(timeout=120)
                    try:
                        rebuild(nodes[index], batch_size=20)
                        outcomes[index].append("rebuilt")
                    except ProjectionBusyError as refused:
                        outcomes[index].append(str(refused)[:22])  # "another rebuild of ..."

            return work

        threads = [Background(rebuilder(0)), Background(rebuilder(1))]
        for thread in threads:
            thread.start()
        finish_all(threads)
        rounds = list(zip(outcomes[0], outcomes[1], strict=True))
        assert set(outcomes[0] + outcomes[1]) <= {"rebuilt", "another rebuild of ing"}, rounds
        assert all("rebuilt" in both for both in rounds), rounds  # never both refused
        assert any(set(both) != {"rebuilt"} for both in rounds), rounds  # they did meet
        wait_projected_everywhere(nodes)
        assert_projection_is_a_replay(nodes)


def waiting_for_backup_lock(conn: pymysql.Connection) -> bool:
    with contextlib.closing(conn), conn.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE = %s",
            ("Waiting for backup lock",),
        )
        row = cursor.fetchone()
    return row is not None and row[0] > 0


def test_the_check_before_the_swap_is_certified_not_read_from_a_lagging_node(
    cluster_ledger: ClusterLedger,
) -> None:
    """A rebuild through node 1 lost its claim to one through node 2; node 1 has not applied
    that yet (it is paused, as a backup pauses it: desynced under a global read lock). The
    check before the swap must not trust node 1's copy of the claim row: the swap's
    transaction must lose the certification and find the claim gone."""
    cluster = cluster_ledger.cluster
    with ledgers(cluster_ledger) as nodes:
        claim = RebuildClaim(nodes[0], PROJECTION_NAME, "node1")
        claim.take()
        outcome: list[BaseException | None] = []

        def swap_transaction() -> None:  # the catch-up's check, then the swap's mark
            def attempt() -> None:
                with nodes[0].transaction("rebuild") as conn:
                    claim.check(conn)
                    mark_swap(conn, PROJECTION_NAME, 1)

            try:
                retrying_conflicts(attempt, "rebuild swap")
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        paused = cluster.node(1).connect(as_root=True)
        try:
            with paused.cursor() as cursor:
                cursor.execute("SET SESSION wsrep_sync_wait = 0")
                cursor.execute("SET GLOBAL wsrep_desync = ON")
                cursor.execute("FLUSH TABLES WITH READ LOCK")
            with nodes[1].transaction("rebuild") as conn:  # node 2's rebuild takes it over
                conn.execute(update(rebuild_claims).values(claimed_by="node-2:77:cafe"))
            swapper = threading.Thread(target=swap_transaction, daemon=True)
            swapper.start()
            wait_until(
                lambda: waiting_for_backup_lock(cluster.node(1).connect(as_root=True)),
                30,
                "the swap's transaction to wait for node 1's lock",
            )
        finally:
            with paused.cursor() as cursor:
                cursor.execute("UNLOCK TABLES")
                cursor.execute("SET GLOBAL wsrep_desync = OFF")
            paused.close()
        swapper.join(timeout=120)
        claim.release()
        assert len(outcome) == 1
        assert isinstance(outcome[0], ProjectionBusyError), outcome
        assert "node-2:77:cafe holds it now" in str(outcome[0])


def test_each_node_names_itself_by_its_cluster_member_id(cluster_ledger: ClusterLedger) -> None:
    """Claims tell "through this node" from "through another" by the node's name: with
    containers that share a hostname and a port it was the same name on every node."""
    names = []
    with ledgers(cluster_ledger) as nodes:
        for ledger in nodes:
            with ledger.engine.connect() as conn:
                member = conn.exec_driver_sql("SHOW STATUS LIKE 'wsrep_gcomm_uuid'").one()[1]
                name = database_node(conn)
            assert name.endswith(f"/{member}"), name
            names.append(name)
    assert len(set(names)) == 3, names
