"""The cluster tests' fixtures: one three-node Galera cluster for the whole session
(:mod:`tests.cluster.galera`), and a fresh ledger database on it for each test.

Without galera-4 (or rsync, or mariadbd) on this machine the cluster tests are skipped with the
reason; with ``LEDGER_TEST_CLUSTER=required`` (set by ``.ci/run``, which installs galera-4 and
rsync when missing) anything missing, or a cluster that does not come up, is a failure, never a
skip: how ``LEDGER_TEST_MYSQL_URL`` makes the MariaDB half required.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import support
from tests.cluster.galera import Cluster, missing_requirements, running_cluster

CLUSTER_ENV = "LEDGER_TEST_CLUSTER"
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.cluster)


def cluster_required() -> bool:
    return os.environ.get(CLUSTER_ENV, "").strip().lower() == "required"


@pytest.fixture(scope="session")
def galera_cluster() -> Iterator[Cluster]:
    missing = missing_requirements()
    if missing:
        reason = f"cluster tests skipped: {', '.join(missing)} not installed"
        if cluster_required():
            pytest.fail(f"{reason}, and {CLUSTER_ENV}=required", pytrace=False)
        pytest.skip(f"{reason} (apt-get install galera-4 rsync; .ci/run does)")
    with running_cluster() as cluster:
        print(f"\nGalera cluster of 3 up in {cluster.started_in_s:.1f}s at {cluster.folder}")
        yield cluster


@dataclass
class ClusterLedger:
    """One ledger database on the cluster, migrated through node 1."""

    cluster: Cluster
    database: str

    def url(self, node: int) -> str:
        return self.cluster.url(node, self.database)

    @property
    def urls(self) -> list[str]:
        return [self.url(node.index) for node in self.cluster.nodes]


@pytest.fixture
def no_process_outlives_its_test() -> None:
    """Off here (tests/conftest.py's is autouse everywhere else): the session's Galera nodes
    are children of pytest that outlive every test by design, and a test that stops a node
    starts it again; the cluster fixture and ``support.writers`` stop their own processes."""


def caught_up_with_the_migration(
    cluster: Cluster, database: str, table: str = "rebuild_claims"
) -> None:
    """Each node has applied the migration made through node 1. Galera orders DDL on every
    node (TOI) but node 1 does not wait for the others to apply it: on a busy machine a test's
    first statement through node 2 found no ``rebuild_claims`` table (CI, 2026-12-06). A read
    with ``wsrep_sync_wait`` waits until its node has applied everything committed before it."""
    for node in cluster.nodes:
        conn = node.connect(database=database)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SET SESSION wsrep_sync_wait = 1")
                cursor.execute(f"SELECT COUNT(*) FROM {table}")
        finally:
            conn.close()


@pytest.fixture
def cluster_ledger(galera_cluster: Cluster) -> Iterator[ClusterLedger]:
    database = f"ledger_cluster_{uuid.uuid4().hex[:10]}"
    url = support.create_mysql_database(galera_cluster.url(1, "mysql"), database)
    support.migrate(url)
    caught_up_with_the_migration(galera_cluster, database)
    try:
        yield ClusterLedger(galera_cluster, database)
    finally:
        with contextlib.suppress(Exception):  # a test may leave a node down: drop where it can
            live = next(n for n in galera_cluster.nodes if n.running)
            support.drop_mysql_database(live.url(database))
