"""Appends queued behind a metadata lock on MariaDB: a ``LOCK TABLES``, a ``FLUSH TABLES WITH
READ LOCK`` (a backup), DDL waiting on a table. Found by the hostile fault soak of review 28: a
global read lock held a few seconds while appends queued on the head lock answered the API's
appends 503 ``database-unreachable`` after 10.2 s with ``database_timeout = "5s"``, and logged an
outage, with the database up.

InnoDB's lock wait (``lock_wait_timeout`` in the URL, a second below the API's bound) covered row
locks only: a metadata lock is the server's ``lock_wait_timeout`` (a day), so the wait ran to the
driver's read timeout, which cut the connection; the append took that for a pooled connection
found dead and waited the whole read timeout again on a new one. A lock on ``ledger_head`` held
by a session of this test's own stands for them all (a global read lock would stall the shared
server of the other suites).

MariaDB only: SQLite has no metadata lock; a table there is locked only by its write lock, whose
wait is the busy timeout (``tests/service/test_api_frozen_database.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pymysql
import pytest
from sqlalchemy.engine import make_url

from forensics.chain import verify_chain
from ledger import DatabaseUnreachableError, Ledger, RunProgressed, StorageError
from ledger.driver_errors import lock_wait_exceeded
from tests.reliability.summary import Summary
from tests.service.conftest import api_client, auth

READ_TIMEOUT_S = 2
API_BOUND_S = 3


@pytest.fixture
def mysql_url(backend: str, db_url: str) -> str:
    if backend != "mysql":
        pytest.skip(
            "MariaDB only: SQLite has no metadata lock (its write lock's wait is the busy "
            "timeout, tests/service/test_api_frozen_database.py)"
        )
    return db_url


@contextmanager
def head_table_locked(db_url: str) -> Iterator[None]:
    """Another session holding ``LOCK TABLES ledger_head WRITE``: every statement on the table
    from any other session queues behind it on the metadata lock."""
    url = make_url(db_url)
    side = pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        database=url.database,
    )
    try:
        side.cursor().execute("LOCK TABLES ledger_head WRITE")
        yield
        side.cursor().execute("UNLOCK TABLES")
    finally:
        side.close()


def test_an_append_behind_a_table_lock_waits_one_read_timeout_not_two(
    mysql_url: str, reliability: Summary, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a lock wait in the URL the read timeout is what ends the wait: once. Before, the
    cut connection was taken for a pooled one found dead ("the database connection was gone
    before anything was written … retrying once on a new one"): twice the read timeout, and
    a connector's append 150 s before it spooled instead of the 75 s the README says."""
    ledger = Ledger.from_url(f"{mysql_url}?read_timeout={READ_TIMEOUT_S}")
    try:
        run_id = ledger.start_run(1, "SOURCE_1")  # the pool holds a connection used just now
        head = ledger.head()
        with caplog.at_level(logging.WARNING, logger="ledger"), head_table_locked(mysql_url):
            began = time.monotonic()
            with pytest.raises(DatabaseUnreachableError, match="timed out"):
                ledger.append([RunProgressed(run_id=run_id, records_fetched=1)])
            took = time.monotonic() - began
        assert took < 2 * READ_TIMEOUT_S, f"failed after {took:.1f} s"
        assert "retrying once on a new one" not in caplog.text
        assert ledger.head() == head  # the append that gave up wrote nothing
        ledger.append([RunProgressed(run_id=run_id, records_fetched=1)])
        assert [e.version for e in ledger.read_run(run_id)] == [1, 2]
        assert verify_chain(ledger).ok
    finally:
        ledger.close()
    reliability.record(
        "metadata lock",
        "mysql",
        f"an append behind LOCK TABLES ledger_head WRITE held by another session, "
        f"?read_timeout={READ_TIMEOUT_S}",
        f"DatabaseUnreachableError after {took:.1f}s (one read timeout, no retry on a new "
        "connection), nothing written; the next append stored, chain verified",
    )


def test_a_lock_wait_in_the_url_bounds_a_metadata_lock_too(mysql_url: str) -> None:
    """``?lock_wait_timeout=N`` bounds a metadata lock's wait as a row lock's: the server's 1205
    (busy, the statement refused) rather than the driver's cut connection (unreachable, an
    outcome in doubt)."""
    ledger = Ledger.from_url(f"{mysql_url}?lock_wait_timeout=1&read_timeout=30")
    try:
        run_id = ledger.start_run(1, "SOURCE_1")
        with head_table_locked(mysql_url):
            began = time.monotonic()
            with pytest.raises(StorageError) as refused:
                ledger.append([RunProgressed(run_id=run_id, records_fetched=1)])
            took = time.monotonic() - began
        assert lock_wait_exceeded(refused.value.__cause__), refused.value
        assert not isinstance(refused.value, DatabaseUnreachableError)
        # Three lock waits of a second (the appends's own bound on 1205), not the read timeout.
        assert took < 10, f"failed after {took:.1f} s"
    finally:
        ledger.close()


def test_an_api_append_behind_a_table_lock_is_busy_within_the_bound(
    mysql_url: str, reliability: Summary, caplog: pytest.LogCaptureFixture
) -> None:
    """The API's promise (README): another session's lock is a 503 ``database-busy`` within
    ``database_timeout``, not an outage. Before: ``database-unreachable`` after twice the bound
    (the read timeout, then again on a new connection) and a WARNING that API requests cannot
    proceed."""
    caplog.set_level(logging.INFO)
    event = {"type": "RunStarted", "source_id": 1, "connector_name": "locked"}
    with api_client(mysql_url, database_timeout=f"{API_BOUND_S}s") as client:
        first = client.post("/v1/events", json=[event], headers=auth("admin"))
        assert first.status_code == 200, first.text
        with head_table_locked(mysql_url):
            began = time.monotonic()
            answer = client.post("/v1/events", json=[event], headers=auth("admin"))
            took = time.monotonic() - began
            # Reads take no lock on ledger_head: they answer meanwhile.
            assert client.get("/v1/runs", headers=auth("reader")).status_code == 200
        assert answer.status_code == 503, answer.text
        assert answer.json()["type"] == "urn:run-ledger:problem:database-busy", answer.text
        assert int(answer.headers["retry-after"]) > 0
        assert took < 2 * API_BOUND_S, f"answered after {took:.1f} s"
        again = client.post("/v1/events", json=[event], headers=auth("admin"))
        assert again.status_code == 200, again.text
        client.app.state.api.close()  # type: ignore[attr-defined]
    outage = [r.getMessage() for r in caplog.records if "cannot proceed" in r.getMessage()]
    assert not outage, outage
    retried = [r.getMessage() for r in caplog.records if "on a new one" in r.getMessage()]
    assert not retried, retried
    reliability.record(
        "metadata lock",
        "mysql",
        f"`ledger api` (database_timeout {API_BOUND_S}s) append behind LOCK TABLES "
        "ledger_head WRITE held by another session",
        f"503 database-busy after {took:.1f}s, no outage logged; reads answered meanwhile; "
        "200 once the lock was gone",
    )
