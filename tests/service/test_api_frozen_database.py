"""A database that stops answering holds no API request for long: within ``[api]
database_timeout`` the API answers 503 with Retry-After (a MariaDB server frozen behind a
proxy; a SQLite file whose write lock another process holds), and 200 again once it answers.
Before, a request waited on the driver's 75 s read timeout (SQLite: the 30 s busy timeout)."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from service.config import ApiConfig
from tests.reliability.fault_proxy import FaultProxy
from tests.service import support
from tests.service.conftest import api_client, auth
from tests.service.support import head_lock_held

TIMEOUT_S = 2
# The bound is the product's promise (README: "a 503 within database_timeout"), so it is timed:
# with a generous margin, for a request that may spend the bound more than once (a pooled
# connection's read, then a new connection's handshake) on a loaded machine; still far below
# the 75 s (SQLite: 30 s) a request waited before.
ANSWERED_WITHIN_S = 15
# The API's requests that are expected to succeed share the tight bound with those that meet
# the frozen database (one app, one pool): on a busy shared server a healthy one may take
# longer than 2 s and be a 503. They are asked again until they answer 200, within this.
HEALTHY_WITHIN_S = 60


def started(client: TestClient) -> httpx.Response:
    event = {"type": "RunStarted", "source_id": 1, "connector_name": "frozen"}
    return client.post("/v1/events", json=[event], headers=auth("admin"))


def listed(client: TestClient) -> httpx.Response:
    return client.get("/v1/runs", headers=auth("reader"))


def timed(request: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    begun = time.monotonic()
    answer = request()
    return answer, time.monotonic() - begun


def assert_503_in_time(request: Callable[[], httpx.Response]) -> None:
    answer, took = timed(request)
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert int(answer.headers["retry-after"]) > 0
    assert took < ANSWERED_WITHIN_S, f"answered after {took:.1f} s"
    assert "Traceback" not in answer.text


def until_ok(request: Callable[[], httpx.Response]) -> None:
    """``request`` answers 200: at once where the database is healthy and the machine not
    loaded; asked again while it is a 503 (a healthy request past the tight bound, or the
    database not back yet)."""
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while True:
        answer = request()
        if answer.status_code == 200:
            return
        assert answer.status_code == 503, answer.text  # only a bound met is worth a retry
        assert time.monotonic() < deadline, answer.text


def test_the_default_bound_is_a_few_seconds() -> None:
    assert ApiConfig().database_timeout <= timedelta(seconds=5)


def test_a_frozen_database_is_503_within_the_timeout(backend: str, db_url: str) -> None:
    if backend == "mysql":
        frozen_mysql(db_url)
    else:
        locked_sqlite(db_url)


def frozen_mysql(db_url: str) -> None:
    url = make_url(db_url)
    proxy = FaultProxy((url.host or "127.0.0.1", url.port or 3306))
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        with api_client(proxied, database_timeout=f"{TIMEOUT_S}s") as client:
            until_ok(lambda: started(client))
            until_ok(lambda: listed(client))  # a connection in the pool, frozen below
            proxy.freeze()
            assert_503_in_time(lambda: listed(client))  # a pooled connection's read
            assert_503_in_time(lambda: started(client))  # a new connection's handshake
            assert_503_in_time(lambda: client.get("/readyz", headers=auth("reader")))
            assert client.get("/healthz").status_code == 200
            proxy.thaw()
            until_ok(lambda: started(client))
            until_ok(lambda: listed(client))
            client.app.state.api.close()  # type: ignore[attr-defined]
    finally:
        proxy.close()


def locked_sqlite(db_url: str) -> None:
    path = make_url(db_url).database
    assert path is not None
    with api_client(db_url, database_timeout=f"{TIMEOUT_S}s") as client:
        until_ok(lambda: started(client))
        holder = sqlite3.connect(path, isolation_level=None, timeout=0)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process's writer that stopped
            assert_503_in_time(lambda: started(client))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        until_ok(lambda: started(client))
        client.app.state.api.close()  # type: ignore[attr-defined]


def test_a_head_lock_held_elsewhere_is_busy_not_unreachable(
    backend: str, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Another writer holding the ledger's head lock past the bound (a huge batch, a stuck
    process): the server's own answer, 503 database-busy, before the driver gives up on the
    connection. It was "database unreachable", logged as an outage, with the database up
    (on MariaDB the read timeout cut the connection; on SQLite a "database error")."""
    caplog.set_level(logging.INFO, logger="service.api")
    with api_client(db_url, database_timeout=f"{TIMEOUT_S}s") as client:
        until_ok(lambda: started(client))
        with head_lock_held(backend, db_url):
            answer, took = timed(lambda: started(client))
            assert answer.status_code == 503, answer.text
            assert answer.json()["type"] == "urn:run-ledger:problem:database-busy"
            assert int(answer.headers["retry-after"]) > 0
            assert took < ANSWERED_WITHIN_S, f"answered after {took:.1f} s"
            assert "unreachable" not in answer.text
            # Reads take no lock: they answer while it is held (the lock is held throughout,
            # so a read it blocked would be a 503 every time it is asked).
            until_ok(lambda: client.get("/readyz", headers=auth("reader")))
            until_ok(lambda: listed(client))
        until_ok(lambda: started(client))
        client.app.state.api.close()  # type: ignore[attr-defined]
    outage = [r for r in caplog.records if "cannot proceed" in r.getMessage()]
    assert not outage, "a busy database is not an outage"


def test_an_append_behind_a_held_lock_waits_once_not_three_times(
    backend: str, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The API's append behind a head lock held elsewhere is a 503 within ``database_timeout``
    on both databases. On MariaDB it waited InnoDB's lock wait (a second below the bound)
    three times, as the library's unbounded append does for a lost host's session: 12 s for
    the default 5 s, with two WARNINGs "waiting again (2 of 3)"."""
    bound_s = 3
    caplog.set_level(logging.INFO)
    with api_client(db_url, database_timeout=f"{bound_s}s") as client:
        until_ok(lambda: started(client))
        with head_lock_held(backend, db_url):
            answer, took = timed(lambda: started(client))
        assert answer.status_code == 503, answer.text
        assert answer.json()["type"] == "urn:run-ledger:problem:database-busy"
        # One wait of the bound (a second less on MariaDB) and the request's own work; three
        # waits were 6 s (MariaDB's lock wait is 2 s here).
        assert took < 2 * bound_s, f"answered after {took:.1f} s"
        client.app.state.api.close()  # type: ignore[attr-defined]
    again = [r.getMessage() for r in caplog.records if "waiting again" in r.getMessage()]
    assert not again, again


def test_every_pooled_connection_in_use_is_busy_not_a_database_error(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every connection of the API's pool held (by other requests, here by the test) past the
    bound: the database answered, the server was busy: 503 database-busy and a WARNING, as a
    lock wait. It was 503 database-error, "the database failed to answer", and an ERROR line
    per request ("QueuePool limit of size 5 overflow 10 reached, connection timed out")."""
    caplog.set_level(logging.INFO, logger="service.api")
    with api_client(db_url, database_timeout=f"{TIMEOUT_S}s") as client:
        until_ok(lambda: client.get("/readyz", headers=auth("reader")))
        engine = client.app.state.api.ledger.engine  # type: ignore[attr-defined]
        held = []
        try:
            while engine.pool.checkedout() < engine.pool.size() + engine.pool._max_overflow:
                held.append(engine.connect())
            answer, took = timed(lambda: client.get("/readyz", headers=auth("reader")))
        finally:
            for conn in held:
                conn.close()
        assert answer.status_code == 503, answer.text
        assert answer.json()["type"] == "urn:run-ledger:problem:database-busy"
        assert "connection" in answer.json()["detail"]
        assert int(answer.headers["retry-after"]) > 0
        assert took < ANSWERED_WITHIN_S, f"answered after {took:.1f} s"
        until_ok(lambda: client.get("/readyz", headers=auth("reader")))
        client.app.state.api.close()  # type: ignore[attr-defined]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors
    assert any(
        "QueuePool limit" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
    )


def test_appends_behind_a_held_lock_leave_reads_their_threads(backend: str, db_url: str) -> None:
    """Many appends while another session holds the head lock: at most the write slots wait
    on the database, the rest wait for a slot (holding no worker thread) and are answered
    503 database-busy within ``database_timeout``, while /v1/status, /readyz and /metrics
    answer at once. Every append took a worker thread, so reads queued behind them: with 150
    appends, GET /v1/status took 28 s, and appends up to 30 s with a 5 s bound."""
    bound_s = 6
    with api_client(db_url, database_timeout=f"{bound_s}s") as client:
        until_ok(lambda: started(client))
        slots = client.app.state.api.write_slots  # type: ignore[attr-defined]
        total = int(slots.total_tokens)
        appends = 45 + total  # more than anyio's 40 worker threads besides the slots
        with head_lock_held(backend, db_url), ThreadPoolExecutor(appends) as pool:
            answers = [pool.submit(started, client) for _ in range(appends)]
            # Every append in the server: the slots taken, the rest waiting for one.
            support.wait_for(
                lambda: (
                    slots.statistics().borrowed_tokens == total
                    and slots.statistics().tasks_waiting == appends - total
                ),
                timeout=30,
            )
            for path in ("/v1/status", "/readyz", "/metrics", "/v1/runs"):
                answer, took = timed(lambda p=path: client.get(p, headers=auth("reader")))
                assert answer.status_code == 200, (path, answer.text)
                assert took < bound_s / 2, f"{path} answered after {took:.1f} s"
            refused = [future.result(timeout=60) for future in answers]
        kinds = Counter((r.status_code, r.json().get("type", "")[-13:]) for r in refused)
        assert kinds == {(503, "database-busy"): appends}, kinds
        assert all(int(r.headers["retry-after"]) > 0 for r in refused)
        # The ones that got no slot within the bound say so; the rest met the lock itself.
        no_slot = [r for r in refused if "writes this server runs at once" in r.json()["detail"]]
        assert len(no_slot) >= appends - 2 * total, len(no_slot)
        until_ok(lambda: started(client))
        client.app.state.api.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("text", ["0s", "-1s", "2h"])
def test_the_bound_is_checked(text: str) -> None:
    with pytest.raises(ValueError, match="database_timeout"):
        ApiConfig.model_validate({"database_timeout": text})


def test_status_names_the_database_by_its_kind_only(db_url: str, backend: str) -> None:
    """/v1/status names the kind of database, never its URL (and so neither the operator's
    nor the timeouts the API adds to its own connections)."""
    with api_client(db_url, database_timeout="30s") as client:  # healthy: not tightly bound
        shown = client.get("/v1/status", headers=auth("reader")).json()["database"]
    client.app.state.api.close()  # type: ignore[attr-defined]
    assert shown == ("sqlite" if backend == "sqlite" else "mariadb")
