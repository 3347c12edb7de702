"""Issue 12, item 10: the sweeper's RunTimedOut has an id derived from (run, version), so a sweep
whose COMMIT reply is lost on a real socket retries the same fact and stores it once."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy.engine import make_url

from forensics.chain import verify_chain
from ledger import Ledger, appender, sweep
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
