"""Claiming a scheduled tick through the database, so it runs once across serve processes."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import delete, insert

from ledger import ConstraintError, Ledger
from ledger.clock import utcnow
from service.schema import schedule_claims


def interval_tick(now: datetime, interval: timedelta, origin: datetime) -> datetime:
    """The scheduled time of the interval tick now running (ticks are aligned to ``origin``,
    so every process computes the same one)."""
    elapsed = (now - origin) // interval
    return origin + elapsed * interval


def claim(ledger: Ledger, job_id: str, tick_at: datetime, claimed_by: str) -> bool:
    """True for the one process whose INSERT of (job, tick) wins."""
    try:
        with ledger.transaction("claim") as conn:
            conn.execute(
                insert(schedule_claims).values(
                    job_id=claim_key(job_id),
                    tick_at=tick_at,
                    claimed_by=claimed_by,
                    claimed_at=utcnow(),
                )
            )
    except ConstraintError:  # another process's INSERT of this (job, tick) won
        return False
    return True


def claim_key(job_id: str) -> str:
    """The job id as the claim stores it. MySQL's collation would take the jobs of connectors
    "Stations" and "stations" for one (only one would run each tick); a digest of the exact id
    keeps them apart, and the id stays readable."""
    return f"{job_id}#{hashlib.sha256(job_id.encode('utf-8')).hexdigest()[:16]}"


def prune_claims(ledger: Ledger, older_than: timedelta = timedelta(days=2)) -> int:
    with ledger.transaction("prune claims") as conn:
        result = conn.execute(
            delete(schedule_claims).where(schedule_claims.c.tick_at < utcnow() - older_than)
        )
    return int(result.rowcount or 0)
