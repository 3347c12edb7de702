"""Claiming a scheduled tick through the database, so it runs once across serve processes."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, insert, select

from ledger import ConstraintError, Ledger
from ledger.clock import isoformat_utc, utcnow
from ledger.conflicts import retrying_conflicts
from service.schema import schedule_claims

# Interval ticks are aligned to this instant, so every serve process computes the same ticks.
TICK_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)


def interval_tick(now: datetime, interval: timedelta, origin: datetime) -> datetime:
    """The scheduled time of the interval tick now running (ticks are aligned to ``origin``,
    so every process computes the same one)."""
    elapsed = (now - origin) // interval
    return origin + elapsed * interval


def claim(
    ledger: Ledger,
    job_id: str,
    tick_at: datetime,
    claimed_by: str,
    tried: list[datetime] | None = None,
) -> bool:
    """True for the one process whose INSERT of (job, tick) wins.

    ``tried`` keeps the ``claimed_at`` of each INSERT a caller sent for this tick: an attempt
    that failed with the database unreachable may have committed (its COMMIT's reply lost), and
    the row found by a later attempt is then the caller's own (the same ``claimed_by`` and one
    of its ``claimed_at``), not another process's; without it the tick ran nowhere.

    On a Galera cluster two processes on two nodes inserting the same (job, tick) at once do
    not meet at the unique key on either node: the second to commit gets a certification
    conflict (1213) instead. The INSERT is then tried again (bounded, jittered): by then the
    winner's row has arrived, and the key refuses it, or (the winner's transaction lost in its
    turn) this one wins."""

    attempts = [] if tried is None else tried

    def insert_claim() -> None:
        claimed_at = utcnow()
        attempts.append(claimed_at)
        with ledger.transaction("claim") as conn:
            conn.execute(
                insert(schedule_claims).values(
                    job_id=claim_key(job_id),
                    tick_at=tick_at,
                    claimed_by=claimed_by,
                    claimed_at=claimed_at,
                )
            )

    earlier = list(attempts)
    try:
        retrying_conflicts(insert_claim, f"claim of {job_id} at {isoformat_utc(tick_at)}")
    except ConstraintError:  # another process's INSERT of this (job, tick) won, or ours did
        return bool(earlier) and _claimed_by(ledger, job_id, tick_at) in {
            (claimed_by, at) for at in earlier
        }
    return True


def _claimed_by(ledger: Ledger, job_id: str, tick_at: datetime) -> tuple[str, datetime] | None:
    with ledger.transaction("read claim") as conn:
        row = conn.execute(
            select(schedule_claims.c.claimed_by, schedule_claims.c.claimed_at).where(
                schedule_claims.c.job_id == claim_key(job_id), schedule_claims.c.tick_at == tick_at
            )
        ).one_or_none()
    return None if row is None else (row.claimed_by, row.claimed_at)


def claim_key(job_id: str) -> str:
    """The job id as the claim stores it. MySQL's collation would take the jobs of connectors
    "Stations" and "stations" for one (only one would run each tick); a digest of the exact id
    keeps them apart, and the id stays readable."""
    return f"{job_id}#{hashlib.sha256(job_id.encode('utf-8')).hexdigest()[:16]}"


def prune_claims(ledger: Ledger, older_than: timedelta = timedelta(days=2)) -> int:
    """Delete the claims of ticks older than ``older_than``, except each job's latest.

    The latest claim may be the tick now running: an interval tick began up to one interval
    ago (4 days for a "4d" connector), and a restart (or another serve process) within it must
    find it claimed, not run it again. The pruning needs no job's interval, so a process whose
    config lacks a job never drops that job's current claim. A later tick's claim makes the
    earlier one prunable."""
    cutoff = utcnow() - older_than
    deleted = 0
    with ledger.transaction("prune claims") as conn:
        latest = conn.execute(
            select(schedule_claims.c.job_id, func.max(schedule_claims.c.tick_at))
            .group_by(schedule_claims.c.job_id)
            .having(func.min(schedule_claims.c.tick_at) < cutoff)
        ).all()
        for job, last_tick in latest:
            result = conn.execute(
                delete(schedule_claims).where(
                    schedule_claims.c.job_id == job,
                    schedule_claims.c.tick_at < min(cutoff, last_tick),
                )
            )
            deleted += int(result.rowcount or 0)
    return deleted
