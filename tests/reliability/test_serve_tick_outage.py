"""A connector's tick that meets a database outage: the claim of the tick (and the open-run
check after it) failed with the database unreachable, and the job gave up, so the tick ran
nowhere: a daily connector whose 02:00 tick met a 20-second failover did not run that day, and
a claim whose COMMIT reply was lost (the row committed, the client not told) left the tick
claimed by a process that never ran it. The tick is now tried again, with growing pauses,
until the database answers or the next tick is due; the process's own earlier claim of the tick
is recognised as its own."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import select

from connectors import SAMPLE_CSV
from ledger import Ledger
from service.claims import claim_key
from service.config import LedgerConfig
from service.schema import schedule_claims
from service.serve import LedgerService
from tests.reliability.fault_proxy import FaultProxy
from tests.reliability.summary import Summary
from tests.reliability.support import through

WAIT_S = 60.0


def daily_service(db_url: str) -> LedgerService:
    return LedgerService(
        LedgerConfig.model_validate(
            {
                "database_url": db_url,
                "connectors": [
                    {
                        "name": "daily",
                        "type": "csv",
                        "source_id": 1,
                        "schedule": {"interval": "1d"},
                        "options": {"path": str(SAMPLE_CSV)},
                    }
                ],
            }
        )
    )


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        threading.Event().wait(0.05)


def outcomes(ledger: Ledger) -> list[str]:
    return [e.payload_data["status"] for e in ledger.read_all() if e.type == "RunFinished"]


def test_a_tick_that_meets_an_outage_runs_once_the_database_is_back(
    ledger: Ledger, db_url: str, proxy: FaultProxy, reliability: Summary
) -> None:
    service = daily_service(through(proxy, db_url))
    (connector,) = service.config.connectors
    proxy.outage()
    service.scheduler.start()  # where the tick's retries are scheduled
    try:
        service.connector_jobs.tick(connector)
        wait_for(lambda: proxy.refused >= 3, "the tick's claim to be refused three times")
        assert outcomes(ledger) == []
        proxy.restore()
        wait_for(lambda: outcomes(ledger), "the tick to run once the database is back")
        service.stop.set()
        service.scheduler.shutdown(wait=True)
    finally:
        proxy.restore()
        service.stop.set()
        if service.scheduler.running:
            service.scheduler.shutdown(wait=False)
        service.close_ledgers()
    assert outcomes(ledger) == ["success"]
    reliability.record(
        "serve: a tick in an outage",
        "mysql",
        f"a daily connector's tick while the proxy refused {proxy.refused} connections",
        "the tick waited with growing pauses and ran once the database was back: one run, success",
    )


def test_a_claim_whose_commit_reply_was_lost_is_run_by_its_claimant(
    ledger: Ledger, db_url: str, proxy: FaultProxy, reliability: Summary
) -> None:
    service = daily_service(through(proxy, db_url))
    (connector,) = service.config.connectors
    # The first COMMIT of the tick is its claim's: committed, the reply never comes.
    proxy.arm("lose-commit-reply")
    service.scheduler.start()  # where the tick's retry is scheduled
    try:
        service.connector_jobs.tick(connector)
        assert proxy.armed is None, "the fault did not fire"
        wait_for(lambda: outcomes(ledger), "the tick to run")
        service.stop.set()
        service.scheduler.shutdown(wait=True)
    finally:
        service.stop.set()
        if service.scheduler.running:
            service.scheduler.shutdown(wait=False)
        service.close_ledgers()
    assert outcomes(ledger) == ["success"]
    with ledger.engine.connect() as conn:
        claimants = conn.execute(
            select(schedule_claims.c.claimed_by).where(
                schedule_claims.c.job_id == claim_key("connector:daily:1")
            )
        ).scalars()
        assert list(claimants) == [service.identity]
    # A second process (or a restart) in the same tick still finds it claimed.
    other = daily_service(db_url)
    try:
        other.connector_jobs.tick(connector)
    finally:
        other.close_ledgers()
    assert outcomes(ledger) == ["success"]
    reliability.record(
        "serve: a claim's lost COMMIT reply",
        "mysql",
        "a daily connector's claim committed, its reply lost; then a second service in the tick",
        "the claimant recognised its own claim and ran the tick once; the second skipped it",
    )
