"""Tables of the ``ledger serve`` process, on the event store's one ``MetaData``."""

from __future__ import annotations

from sqlalchemy import Column, PrimaryKeyConstraint, String, Table

from ledger.schema import UTCDateTime, metadata

# One row per (job, tick) that some serve process claimed: with several processes against one
# database, the INSERT that wins the primary key runs the tick; the others skip it.
schedule_claims = Table(
    "schedule_claims",
    metadata,
    Column("job_id", String(200), nullable=False),
    Column("tick_at", UTCDateTime(), nullable=False),
    Column("claimed_by", String(200), nullable=False),
    Column("claimed_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("job_id", "tick_at"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)
