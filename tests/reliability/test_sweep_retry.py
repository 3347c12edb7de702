"""Issue 12, item 10: the sweeper's RunTimedOut has an id derived from (run, version), so a sweep
whose COMMIT reply is lost on a real socket retries the same fact and stores it once."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from forensics.chain import verify_chain
from ledger import Ledger, StorageError, appender, sweep
from tests.reliability.fault_proxy import FaultProxy
from tests.reliability.summary import Summary

DAY1 = datetime(2026, 1, 28, 1, 12, 44, tzinfo=UTC)
DAY5 = datetime(2026, 2, 1, 23, 33, 44, tzinfo=UTC)
STUCK = 6


def test_a_sweep_whose_commit_replies_are_lost_times_each_run_out_once(
    ledger: Ledger,
    db_url: str,
    proxy: FaultProxy,
    reliability: Summary,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxied = Ledger.from_url(
        make_url(db_url)
        .set(host="127.0.0.1", port=proxy.port)
        .render_as_string(hide_password=False)
    )
    runs: list[int] = []
    aim = threading.Event()

    # The sweep reads (and commits) before it appends: the fault is armed as the append takes
    # the head lock, so the COMMIT whose reply is lost is the RunTimedOut's.
    lock_head = appender.Appender.lock_head

    def arm_at_the_append(appender: Any) -> Any:
        if aim.is_set():
            aim.clear()
            proxy.arm("lose-commit-reply")
        return lock_head(appender)

    monkeypatch.setattr(appender.Appender, "lock_head", arm_at_the_append)

    try:
        for i in range(STUCK):  # one stuck run per sweep, whose COMMIT reply is lost
            with freeze_time(DAY1):
                runs.append(ledger.start_run(3, f"STUCK_{i}", occurred_at=DAY1))
            aim.set()
            with freeze_time(DAY5):
                result = sweep(proxied)
            assert proxy.armed is None, "the fault did not fire"
            assert [run.run_id for run in result.timed_out] == [runs[-1]]
    finally:
        proxied.close()
    lost = proxy.fired["lose-commit-reply"]
    timeouts = Counter(e.run_id for e in ledger.read_all() if e.type == "RunTimedOut")
    assert timeouts == dict.fromkeys(runs, 1)
    with freeze_time(DAY5 + timedelta(hours=1)):
        assert sweep(ledger).timed_out == []
    assert verify_chain(ledger).ok
    reliability.record(
        "12.10 sweeper retry",
        "mysql",
        f"{STUCK} stuck runs swept through a proxy that swallowed the COMMIT reply of "
        f"{lost} RunTimedOut appends (the COMMIT had reached the server)",
        "each sweep retried its append once with the same derived event id and found it "
        "stored: every run has exactly one RunTimedOut, no sweep failed, chain verified",
    )


def _bounded(db_url: str) -> Ledger:
    """The ledger with a one-second row lock wait (three waits an append, then its error)."""
    url = make_url(db_url).update_query_dict({"lock_wait_timeout": "1"})
    return Ledger.from_url(url.render_as_string(hide_password=False))


def _stuck_runs(ledger: Ledger, count: int) -> list[int]:
    with freeze_time(DAY1):
        return [ledger.start_run(3, f"STUCK_{i}", occurred_at=DAY1) for i in range(count)]


def test_a_run_whose_timeout_fails_is_left_and_the_sweep_goes_on(
    backend: str, ledger: Ledger, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Another session holds one stuck run's ``ledger_runs`` row: its timeout failed twice
    (a lock wait each) and the sweep raised, every later stuck run left running, and so at
    every sweep while the lock was held. Now that run is recorded as failed and the others
    are timed out. (MariaDB: SQLite's locks are the whole database's, no failure is one
    run's.)"""
    if backend != "mysql":
        pytest.skip("a row lock of one run: SQLite locks the whole database")
    runs = _stuck_runs(ledger, 4)
    bounded = _bounded(db_url)
    holder = create_engine(db_url)
    try:
        with holder.connect() as conn:
            conn.execute(text(f"SELECT * FROM ledger_runs WHERE run_id = {runs[1]} FOR UPDATE"))
            with freeze_time(DAY5):
                result = sweep(bounded)
            conn.rollback()
    finally:
        bounded.close()
        holder.dispose()
    assert [run.run_id for run in result.timed_out] == [runs[0], *runs[2:]]
    assert [run.run_id for run, _exc in result.failed] == [runs[1]]
    assert "Lock wait timeout" in str(result.failed[0][1])
    assert result.to_dict()["failed"][0]["run_id"] == runs[1]
    assert [run.run_id for run in ledger.runs(state="open")] == [runs[1]]
    assert f"run {runs[1]} not timed out, left for the next sweep" in caplog.text
    with freeze_time(DAY5):
        assert [run.run_id for run in sweep(ledger).timed_out] == [runs[1]]  # the next sweep


def test_a_sweep_behind_a_lock_on_the_whole_ledger_stops_after_two_runs(
    backend: str, ledger: Ledger, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure that is not one run's (``ledger_head`` locked: every append waits) stops the
    sweep at the second run in a row, not after trying every stuck run twice."""
    if backend != "mysql":
        pytest.skip("a row lock held by another session: a MariaDB lock wait")
    runs = _stuck_runs(ledger, 5)
    bounded = _bounded(db_url)
    holder = create_engine(db_url)
    caplog.set_level(logging.WARNING, logger="ledger.sweeper")
    try:
        with holder.connect() as conn:
            conn.execute(text("SELECT * FROM ledger_head FOR UPDATE"))
            with freeze_time(DAY5), pytest.raises(StorageError, match="Lock wait timeout"):
                sweep(bounded)
            conn.rollback()
    finally:
        bounded.close()
        holder.dispose()
    tried = [r.getMessage() for r in caplog.records if "retrying once" in r.getMessage()]
    assert [line.split()[3] for line in tried] == [str(runs[0]), str(runs[1])], tried
    assert len(ledger.runs(state="open")) == 5
