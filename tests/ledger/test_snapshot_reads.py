"""Reads in a snapshot (:meth:`Ledger.read_in_snapshot`) run again when they lose to another
transaction (issue 18's audit, item 1). On a Galera cluster a rebuild's ``RENAME TABLE`` through
one node aborts, with 1213, every read of ``ingestion_runs`` in flight on the others; ``ledger
verify`` and ``ledger report`` then exited 1, a false tamper alarm (tests/cluster proves them
there). On one server a read in a snapshot loses with the same 1213 when it is the lighter
party of a real InnoDB deadlock: that is what is made here, between two sessions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, select
from sqlalchemy.exc import DBAPIError

from ledger import Ledger, RunProgressed, StorageError, conflicts
from ledger.driver_errors import is_transaction_conflict
from ledger.schema import ledger_head
from service.cli.errors import EXIT_ENVIRONMENT, exit_code_for

PROBE = "snapshot_read_probe"
WAIT_S = 30.0


def head_position(conn: Connection) -> int:
    return int(conn.execute(select(ledger_head.c.last_position)).scalar_one())


def test_a_read_in_a_snapshot_sees_the_ledger_and_runs_once(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id, records_fetched=3)])
    calls: list[int] = []

    def read(conn: Connection) -> int:
        calls.append(1)
        return head_position(conn)

    assert ledger.read_in_snapshot("read", read) == 2
    assert calls == [1]


@pytest.fixture
def mysql_ledger(ledger: Ledger) -> Iterator[Ledger]:
    """A MariaDB ledger with a two-row table for the two sessions to lock."""
    if ledger.is_sqlite:
        pytest.skip("a read transaction never loses to a writer on SQLite: deadlocks are InnoDB's")
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {PROBE}")
        conn.exec_driver_sql(f"CREATE TABLE {PROBE} (id INT PRIMARY KEY, n INT NOT NULL)")
        conn.exec_driver_sql(f"INSERT INTO {PROBE} VALUES (1, 0), (2, 0)")
    try:
        yield ledger
    finally:
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {PROBE}")


class Writer(threading.Thread):
    """Another session: it updates row 2 and many new rows (its undo log makes it the heavier
    transaction, so InnoDB rolls the reader back, never it), then row 1, which the reader
    holds: with the reader then asking for row 2, a cycle."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__(daemon=True)
        self.ledger = ledger
        self.holds_row_2 = threading.Event()
        self.reader_holds_row_1 = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.ledger.engine.connect() as conn, conn.begin():
                conn.exec_driver_sql(f"UPDATE {PROBE} SET n = n + 1 WHERE id = 2")
                conn.exec_driver_sql(
                    f"INSERT INTO {PROBE} (id, n) VALUES (%s, 0)",
                    [(10 + i,) for i in range(100)],
                )
                self.holds_row_2.set()
                assert self.reader_holds_row_1.wait(WAIT_S)
                conn.exec_driver_sql(f"UPDATE {PROBE} SET n = n + 1 WHERE id = 1")
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self.join(WAIT_S)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error


def lose_a_deadlock(conn: Connection, writer: Writer) -> None:
    """In the reader's snapshot: a shared lock on row 1, then (the writer holding row 2 and
    asking for row 1) one on row 2. InnoDB breaks the cycle by rolling the reader back."""
    conn.exec_driver_sql(f"SELECT n FROM {PROBE} WHERE id = 1 LOCK IN SHARE MODE").all()
    writer.reader_holds_row_1.set()
    assert writer.holds_row_2.wait(WAIT_S)
    conn.exec_driver_sql(f"SELECT n FROM {PROBE} WHERE id = 2 LOCK IN SHARE MODE").all()
    raise AssertionError("the reader was not rolled back: no deadlock")


def test_a_read_that_loses_a_deadlock_is_read_again(mysql_ledger: Ledger) -> None:
    ledger = mysql_ledger
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id, records_fetched=3)])
    writer = Writer(ledger)
    lost: list[bool] = []

    def read(conn: Connection) -> int:
        if not lost:
            writer.start()
            try:
                lose_a_deadlock(conn, writer)
            except DBAPIError as exc:
                lost.append(is_transaction_conflict(exc))
                raise
        return head_position(conn)

    assert ledger.read_in_snapshot("read", read) == 2
    writer.finish()
    assert lost == [True]  # the first attempt was rolled back with 1213, and read again
    with ledger.engine.connect() as conn:  # the writer's transaction committed whole
        rows: dict[int, int] = dict(
            conn.exec_driver_sql(f"SELECT id, n FROM {PROBE} WHERE id < 3").all()
        )
    assert rows == {1: 1, 2: 1}


def test_a_conflict_that_outlasts_the_retries_is_the_environment(
    mysql_ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raised as a StorageError whose exit code is 3 (the environment), never 1 (a check
    found a problem in the ledger)."""
    monkeypatch.setattr(conflicts, "MAX_CONFLICT_ATTEMPTS", 1)
    writer = Writer(mysql_ledger)

    def read(conn: Connection) -> int:
        writer.start()
        lose_a_deadlock(conn, writer)
        return head_position(conn)

    with pytest.raises(StorageError) as raised:
        mysql_ledger.read_in_snapshot("verify", read)
    writer.finish()
    assert is_transaction_conflict(raised.value)
    assert "verify failed on" in str(raised.value)
    assert "Deadlock found" in str(raised.value)
    assert exit_code_for(raised.value) == EXIT_ENVIRONMENT
