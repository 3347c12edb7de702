"""The reload of a ``ledger_events`` table object whose triggers failed to load (``FLUSH LOCAL
TABLES ledger_events``, issue 18's Galera finding) on one server: it must neither stall the
ledger behind a long reader nor hide, from the caller, the statement a DBA has to run.

The 1064 error is built as the driver reports it (a broken trigger cannot be made on purpose
through SQL); the FLUSH, the reader and the appends run on the real server."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pymysql
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from ledger import Ledger, RunProgressed, StorageError
from ledger.driver_errors import is_broken_trigger_load
from ledger.store import FLUSH_LOCK_WAIT_S

# A FLUSH LOCAL TABLES of this test's database: the server's process list is every session's,
# and another suite on the server (the CI's other session) may be flushing its own ledger.
OUR_FLUSH = "INFO LIKE 'FLUSH LOCAL%%' AND DB = DATABASE()"


@pytest.fixture
def mysql_ledger(ledger: Ledger) -> Ledger:
    if ledger.is_sqlite:
        pytest.skip("FLUSH LOCAL TABLES and cached trigger definitions are MariaDB's")
    return ledger


def broken_trigger_error() -> ProgrammingError:
    error = ProgrammingError(
        "INSERT INTO ledger_events ...",
        (),
        pymysql.err.ProgrammingError(1064, "Unknown trigger has an error in its body: 'x'"),
    )
    assert is_broken_trigger_load(error)
    return error


@pytest.fixture
def open_reader(mysql_ledger: Ledger) -> Iterator[None]:
    """Another session in the middle of a long read transaction over ledger_events (a verify
    of a large ledger, a rebuild's replay)."""
    reader = Ledger.from_url(mysql_ledger.url)
    conn = reader.engine.connect()
    conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    conn.exec_driver_sql("START TRANSACTION")
    conn.exec_driver_sql("SELECT COUNT(*) FROM ledger_events").scalar_one()
    try:
        yield
    finally:
        conn.rollback()
        conn.close()
        reader.close()


def wait_until_a_flush_waits(ledger: Ledger) -> None:
    """Until this test's FLUSH LOCAL TABLES runs (waiting for the reader), at most 30 s."""
    deadline = time.monotonic() + 30
    query = f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE {OUR_FLUSH}"
    with ledger.connect() as conn:
        while not conn.exec_driver_sql(query).scalar_one():
            assert time.monotonic() < deadline, "no FLUSH LOCAL TABLES ever ran"
            time.sleep(0.01)


def test_a_reload_waits_a_bounded_time_for_readers_and_appends_go_on(
    mysql_ledger: Ledger, open_reader: None
) -> None:
    run_id = mysql_ledger.start_run(1, "reload")
    appended: dict[str, float] = {}

    def append_meanwhile() -> None:
        wait_until_a_flush_waits(mysql_ledger)
        started = time.monotonic()
        mysql_ledger.append([RunProgressed(run_id=run_id, records_fetched=1)])
        appended["seconds"] = time.monotonic() - started

    other = threading.Thread(target=append_meanwhile)
    started = time.monotonic()
    other.start()
    try:
        with pytest.raises(StorageError) as raised:
            mysql_ledger._reload_table_triggers(broken_trigger_error())
    finally:
        other.join(timeout=FLUSH_LOCK_WAIT_S + 60)
    took = time.monotonic() - started
    # Before the fix the FLUSH waited for the reader for lock_wait_timeout (a day), and every
    # append queued behind it.
    assert took < FLUSH_LOCK_WAIT_S + 5
    assert appended["seconds"] < FLUSH_LOCK_WAIT_S + 5
    assert "FLUSH LOCAL TABLES ledger_events" in str(raised.value)
    with mysql_ledger.connect() as conn:
        assert conn.exec_driver_sql("SELECT @@SESSION.lock_wait_timeout").scalar_one() > (
            FLUSH_LOCK_WAIT_S
        )


def test_a_reload_without_the_reload_privilege_names_the_statement(mysql_ledger: Ledger) -> None:
    user = f"noreload_{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    database = make_url(mysql_ledger.url).database
    with mysql_ledger.connect() as conn:
        conn.exec_driver_sql(f"CREATE USER '{user}'@'%%' IDENTIFIED BY '{password}'")
        conn.exec_driver_sql(f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'%%'")
    url = make_url(mysql_ledger.url).set(username=user, password=password)
    limited = Ledger.from_url(url.render_as_string(hide_password=False))
    try:
        with pytest.raises(StorageError) as raised:
            limited._reload_table_triggers(broken_trigger_error())
        message = str(raised.value)
        assert "FLUSH LOCAL TABLES ledger_events" in message
        assert "RELOAD" in message
        assert password not in message
        assert limited.trigger_reloads == 1
    finally:
        limited.close()
        with mysql_ledger.connect() as conn:
            conn.exec_driver_sql(f"DROP USER '{user}'@'%%'")


def test_a_reload_that_succeeds_lets_the_append_go_on(mysql_ledger: Ledger) -> None:
    mysql_ledger._reload_table_triggers(broken_trigger_error())
    run_id = mysql_ledger.start_run(1, "after the reload")
    assert mysql_ledger.append([RunProgressed(run_id=run_id, records_fetched=1)]).appended == 1


def test_a_flush_interrupted_once_is_run_again(mysql_ledger: Ledger) -> None:
    """On Galera a replicated write aborts a local FLUSH holding what it needs: 1317 "Query
    execution was interrupted" (seen once in the cluster suite, an append of 6,000 failed).
    Here a KILL QUERY interrupts the first FLUSH, waiting for a reader; the reader ends, and
    the FLUSH run again passes: no error, the append can go on."""
    reader = Ledger.from_url(mysql_ledger.url)
    conn = reader.engine.connect()
    conn.exec_driver_sql("START TRANSACTION")
    conn.exec_driver_sql("SELECT COUNT(*) FROM ledger_events").scalar_one()
    query = f"SELECT ID FROM information_schema.PROCESSLIST WHERE {OUR_FLUSH} LIMIT 1"

    def interrupt_the_first_flush() -> None:
        deadline = time.monotonic() + 30
        with mysql_ledger.connect() as watcher:
            while (flushing := watcher.exec_driver_sql(query).scalar()) is None:
                assert time.monotonic() < deadline, "no FLUSH LOCAL TABLES ever ran"
                time.sleep(0.01)
            watcher.exec_driver_sql(f"KILL QUERY {int(flushing)}")
        conn.rollback()  # the reader ends: the FLUSH run again does not wait

    other = threading.Thread(target=interrupt_the_first_flush)
    other.start()
    try:
        mysql_ledger._reload_table_triggers(broken_trigger_error())
    finally:
        other.join(timeout=60)
        conn.close()
        reader.close()
    run_id = mysql_ledger.start_run(1, "after an interrupted reload")
    assert mysql_ledger.append([RunProgressed(run_id=run_id, records_fetched=1)]).appended == 1
