"""Issue 14: a live append on MySQL/MariaDB is two round trips, as many as a raw insert and
commit (the head lock with the state read; the writes with the COMMIT), and what made it so
keeps its promises: a pooled connection that died is still never the caller's problem, a
connection comes back to the pool with nothing open, an error in any statement of a round trip
reaches the caller, and a write refused after the INSERT leaves nothing written.

Counting what PyMySQL sends observes the real server; nothing is mocked."""

from __future__ import annotations

import logging
from collections import Counter

import pymysql.connections
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ledger import Ledger, LedgerError, RunProgressed, RunStarted, mysql_engine
from ledger.driver import DriverCursor
from tests import support


@pytest.fixture
def mysql_ledger(ledger: Ledger) -> Ledger:
    if ledger.is_sqlite:
        pytest.skip("round trips and pooled server sessions are MySQL/MariaDB's; SQLite is local")
    return ledger


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """What each PyMySQL connection sends the server, by command (a query's first word)."""
    sent: Counter[str] = Counter()
    real_command = pymysql.connections.Connection._execute_command
    real_ping = pymysql.connections.Connection.ping

    def counting_command(self: object, command: int, sql: object) -> object:
        if isinstance(sql, bytes):
            sql = sql.decode()
        word = sql.split(None, 1)[0] if isinstance(sql, str) and sql else str(command)
        sent[word.upper()] += 1
        return real_command(self, command, sql)  # type: ignore[arg-type]

    def counting_ping(self: object, *args: object, **kwargs: object) -> object:
        sent["PING"] += 1
        return real_ping(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pymysql.connections.Connection, "_execute_command", counting_command)
    monkeypatch.setattr(pymysql.connections.Connection, "ping", counting_ping)
    return sent


def kill_pooled_session(ledger: Ledger) -> None:
    """End, from another session, the server session of the connection the pool holds."""
    with ledger.connect() as conn:
        session = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one()
    support.kill_session(ledger.url, session)


def test_a_live_append_is_two_round_trips(mysql_ledger: Ledger, commands: Counter[str]) -> None:
    run_id = mysql_ledger.start_run(1, "SOURCE_1")
    mysql_ledger.append([RunProgressed(run_id=run_id)])  # the pool now holds a used connection
    commands.clear()
    for _ in range(5):
        mysql_ledger.append([RunProgressed(run_id=run_id, records_fetched=1)])
    # Per append: SELECT … FOR UPDATE with the state read; INSERT with the UPDATE and the
    # COMMIT. No ping of a connection used a moment ago, no ROLLBACK when it comes back.
    assert commands == {"SELECT": 5, "INSERT": 5}
    assert mysql_ledger.run(run_id).version == 7  # type: ignore[union-attr]


def test_an_append_on_a_pooled_connection_that_died_retries_on_a_new_one(
    mysql_ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = mysql_ledger.start_run(1, "SOURCE_1")
    kill_pooled_session(mysql_ledger)  # used a moment ago: not pinged on checkout
    with caplog.at_level(logging.WARNING, logger="ledger.store"):
        result = mysql_ledger.append([RunProgressed(run_id=run_id, records_fetched=1)])
    assert result.appended == 1
    assert "gone before anything was written" in caplog.text
    assert [e.version for e in mysql_ledger.read_run(run_id)] == [1, 2]


def test_a_connection_idle_past_the_threshold_is_pinged_and_replaced(
    mysql_ledger: Ledger, commands: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mysql_ledger.start_run(1, "SOURCE_1")
    kill_pooled_session(mysql_ledger)
    monkeypatch.setattr(mysql_engine, "PING_AFTER_IDLE_S", 0.0)  # every connection has sat "long"
    commands.clear()
    assert mysql_ledger.head().last_position == 1  # a read: no retry of its own
    assert commands["PING"] >= 1


def test_a_connection_returned_with_a_transaction_open_is_rolled_back(
    mysql_ledger: Ledger, commands: Counter[str]
) -> None:
    raw = mysql_ledger.engine.raw_connection()
    cursor = raw.cursor()
    cursor.execute("SELECT CONNECTION_ID()")
    session = cursor.fetchone()[0]
    cursor.execute("SELECT last_position FROM ledger_head FOR UPDATE")  # opens a transaction
    cursor.close()
    commands.clear()
    raw.close()  # back to the pool
    assert commands["ROLLBACK"] == 1
    with mysql_ledger.connect() as conn:
        open_transactions = conn.execute(
            text(
                "SELECT COUNT(*) FROM information_schema.innodb_trx "
                "WHERE trx_mysql_thread_id = :session"
            ),
            {"session": session},
        ).scalar_one()
    assert open_transactions == 0


def test_an_error_in_the_second_statement_of_a_round_trip_reaches_the_caller(
    mysql_ledger: Ledger,
) -> None:
    with mysql_ledger.connect() as conn, conn.begin():
        cursor = DriverCursor.on(conn)
        with pytest.raises(DBAPIError, match="no_such_table"):
            cursor.execute_together([("SELECT 1", ()), ("SELECT * FROM no_such_table", ())])
        cursor.close()
        # The connection is still in step with the server: the next statement is answered.
        assert conn.exec_driver_sql("SELECT 2").scalar_one() == 2


def test_a_write_refused_after_the_insert_leaves_nothing_written(ledger: Ledger) -> None:
    """The event INSERT succeeds, the registry UPDATE after it is refused (an operator's
    trigger): on MySQL/MariaDB the COMMIT in the same round trip never runs, and on both the
    append is rolled back whole."""
    run_id = ledger.start_run(1, "SOURCE_1")
    before = (ledger.head(), [e.position for e in ledger.read_all()])
    if ledger.is_sqlite:
        create = (
            "CREATE TRIGGER refuse_run_update BEFORE UPDATE ON ledger_runs "
            "BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
        )
    else:
        create = (
            "CREATE TRIGGER refuse_run_update BEFORE UPDATE ON ledger_runs FOR EACH ROW "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by test'"
        )
    with ledger.connect() as conn, conn.begin():
        conn.exec_driver_sql(create)
    try:
        with pytest.raises(LedgerError, match="refused by test"):
            ledger.append([RunProgressed(run_id=run_id, records_fetched=1)])
    finally:
        with ledger.connect() as conn, conn.begin():
            conn.exec_driver_sql("DROP TRIGGER refuse_run_update")
    assert (ledger.head(), [e.position for e in ledger.read_all()]) == before
    assert ledger.append([RunProgressed(run_id=run_id)]).last_position == 2


def test_an_append_interrupted_mid_reply_leaves_no_connection_out_of_step(
    mysql_ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt while the reply to the head's UPDATE is being read (an append too
    large for one round trip sends its writes one by one): the connection is discarded, since
    a reply is left unread that the next command would take for its own; so the next append,
    on a connection from the same one-connection pool, gets its own replies."""
    ledger = Ledger.from_url(mysql_ledger.url, pool_size=1, max_overflow=0)  # one connection
    try:
        interrupt_then_append(ledger, monkeypatch)
    finally:
        ledger.close()


def interrupt_then_append(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    real_read = pymysql.connections.Connection._read_query_result
    interrupted: list[bool] = []

    def interrupt_the_writes(self: object, unbuffered: bool = False) -> object:
        last = getattr(self, "_ledger_last_sql", "")
        if not interrupted and last.startswith("UPDATE ledger_head"):
            interrupted.append(True)
            raise KeyboardInterrupt
        return real_read(self, unbuffered=unbuffered)  # type: ignore[arg-type]

    real_command = pymysql.connections.Connection._execute_command

    def remember(self: object, command: int, sql: object) -> object:
        text_sent = sql.decode() if isinstance(sql, bytes) else str(sql)
        self._ledger_last_sql = text_sent  # type: ignore[attr-defined]
        return real_command(self, command, sql)  # type: ignore[arg-type]

    monkeypatch.setattr(pymysql.connections.Connection, "_execute_command", remember)
    monkeypatch.setattr(pymysql.connections.Connection, "_read_query_result", interrupt_the_writes)
    large = RunStarted(source_id=2, connector_name="LARGE", metadata={"note": "x" * 200_000})
    with pytest.raises(KeyboardInterrupt):
        ledger.append([large])
    assert interrupted
    head = ledger.head().last_position
    result = ledger.append([RunProgressed(run_id=run_id, records_fetched=2)])
    assert result.last_position == head + 1
    assert [e.position for e in ledger.read_all()] == list(range(1, head + 2))
