"""Schedule claims (``service.claims``): a tick runs once across serve processes and restarts,
however long the connector's interval; pruning old claims never drops a tick still running."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import pytest
from freezegun import freeze_time

from connectors import SAMPLE_CSV
from ledger import Ledger
from ledger.clock import use_clock, utcnow
from service.claims import TICK_ORIGIN, claim, claim_key, interval_tick, prune_claims
from service.config import LedgerConfig
from service.connector_jobs import TickRetry
from service.schema import schedule_claims
from service.serve import LedgerService

LONG = timedelta(days=4)


def long_interval_config(db_url: str) -> LedgerConfig:
    return LedgerConfig.model_validate(
        {
            "database_url": db_url,
            "connectors": [
                {
                    "name": "weekly-ish",
                    "type": "csv",
                    "source_id": 1,
                    "schedule": {"interval": "4d"},
                    "options": {"path": str(SAMPLE_CSV), "key": "id"},
                }
            ],
        }
    )


def started_runs(ledger: Ledger) -> int:
    return sum(event.type == "RunStarted" for event in ledger.read_all())


def test_a_restart_within_a_tick_longer_than_the_prune_horizon_finds_it_claimed(
    ledger: Ledger, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A "4d" tick's claim was pruned by the sweep that follows every start (claims older than
    2 days, by tick_at, went): a restart 3 days into the tick ran it a second time."""
    config = long_interval_config(db_url)
    (connector,) = config.connectors
    # An hour into a 4-day tick on the grid every process shares, in the past of the database's
    # clock (the skew guard refuses events from its future).
    tick = interval_tick(utcnow() - timedelta(days=6), LONG, TICK_ORIGIN)
    with freeze_time(tick + timedelta(hours=1)) as clock:
        first = LedgerService(config)
        try:
            first.connector_jobs.tick(connector)
            first.sweeper_job()
        finally:
            first.ledger.close()
            first.scrape_ledger.close()
        assert started_runs(ledger) == 1

        clock.tick(timedelta(days=3))  # still the same tick, its claim 3 days old
        restarted = LedgerService(config)
        caplog.set_level(logging.INFO, logger="service.serve")
        try:
            restarted.sweeper_job()  # the at-start sweep, which prunes the claims
            restarted.connector_jobs.tick(connector)  # the at-start run
        finally:
            restarted.ledger.close()
            restarted.scrape_ledger.close()
    assert started_runs(ledger) == 1
    assert any("claimed already" in record.getMessage() for record in caplog.records)


def test_pruning_keeps_each_jobs_latest_claim_and_drops_the_older_ones(ledger: Ledger) -> None:
    with freeze_time(utcnow() - timedelta(days=30)) as clock:
        start = utcnow()
        for day in (0, 4, 8):  # a "4d" job: three ticks
            assert claim(ledger, "connector:slow:1", start + timedelta(days=day), "serve:a")
        for hour in (0, 1):  # a frequent job, both ticks long past
            assert claim(ledger, "sweeper", start + timedelta(hours=hour), "serve:a")
        clock.tick(timedelta(days=11))
        assert prune_claims(ledger) == 3
        with ledger.connect() as conn:
            kept = {
                (row.job_id, row.tick_at)
                for row in conn.execute(
                    schedule_claims.select().with_only_columns(
                        schedule_claims.c.job_id, schedule_claims.c.tick_at
                    )
                )
            }
        assert kept == {
            (claim_key("connector:slow:1"), start + timedelta(days=8)),
            (claim_key("sweeper"), start + timedelta(hours=1)),
        }
        # The kept claims still refuse their tick to a second process.
        assert not claim(ledger, "connector:slow:1", start + timedelta(days=8), "serve:b")
        assert not claim(ledger, "sweeper", start + timedelta(hours=1), "serve:b")


def test_a_claim_is_its_claimants_own_only_for_the_attempts_it_made(ledger: Ledger) -> None:
    """A claim retried after its reply was lost finds its own row (the same name and one of
    its attempts' times); another process, or a restart under the same name (a container's
    PID 1 on the same host), finds the tick claimed."""
    tick = interval_tick(utcnow(), timedelta(days=1), TICK_ORIGIN)
    tried: list[datetime] = []
    assert claim(ledger, "connector:daily:1", tick, "serve:h:1", tried)
    assert len(tried) == 1
    assert claim(ledger, "connector:daily:1", tick, "serve:h:1", tried)  # its own
    assert not claim(ledger, "connector:daily:1", tick, "serve:h:1", [])  # a restart
    assert not claim(ledger, "connector:daily:1", tick, "serve:h:1")
    assert not claim(ledger, "connector:daily:1", tick, "serve:h:2", list(tried))  # another


def test_a_tick_is_retried_only_while_the_next_one_is_not_due() -> None:
    tick = interval_tick(utcnow(), timedelta(minutes=1), TICK_ORIGIN)
    with freeze_time(tick + timedelta(seconds=5)) as clock:  # the tick met an outage at 5 s
        retry = TickRetry(tick, tick + timedelta(minutes=1))
        waits = []
        while (again := retry.later()) is not None:  # as serve schedules its retries
            waits.append(retry.delay)
            clock.tick(timedelta(seconds=retry.delay))
            retry = again
    # Tried at 6, 8, 12, 20 and 36 s; the next, 30 s later, would come after the next tick.
    assert waits == [1, 2, 4, 8, 16]


def test_a_serve_whose_clock_is_ahead_leaves_each_tick_to_the_others(
    ledger: Ledger, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two serve processes on one ledger, one on a host whose clock is 20 minutes ahead of the
    ledger's (the database server's): its scheduler fires each tick 20 minutes early and its
    claim won, then the connector's RunStarted, dated by that host, was refused by the skew
    guard. The other process, firing on time, found every tick claimed: the connector ran
    nowhere for as long as that host's clock stayed ahead (and, stepped back, the ticks it had
    claimed ahead were skipped again). The host ahead now leaves the tick unclaimed."""
    config = long_interval_config(db_url)
    (connector,) = config.connectors
    # A minute into a tick on the grid, in the past of the database's clock (the skew guard).
    tick = interval_tick(utcnow() - timedelta(days=6), LONG, TICK_ORIGIN)
    caplog.set_level(logging.INFO, logger="service.serve")
    previous = use_clock(lambda: tick + timedelta(minutes=1) - timedelta(minutes=20))
    try:
        early = LedgerService(config)  # its ledger's clock is the database's, 20 minutes behind
    finally:
        use_clock(previous)
    try:
        with freeze_time(tick + timedelta(minutes=1)):  # this host's clock, 20 minutes early
            early.connector_jobs.tick(connector)
    finally:
        early.close_ledgers()
    assert started_runs(ledger) == 0
    with ledger.connect() as conn:
        assert conn.execute(schedule_claims.select()).all() == []  # the tick left unclaimed
    assert any(
        "left to another serve process: this host's clock is 20m ahead of the ledger's"
        in record.getMessage()
        for record in caplog.records
    )

    with freeze_time(tick + timedelta(minutes=1)):  # 20 minutes on: the other host, on time
        on_time = LedgerService(config)
        try:
            on_time.connector_jobs.tick(connector)
        finally:
            on_time.close_ledgers()
    assert started_runs(ledger) == 1
    assert not any("claimed already" in record.getMessage() for record in caplog.records)
