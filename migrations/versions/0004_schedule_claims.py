"""Serve: schedule_claims, so several ``ledger serve`` processes run each tick once.

Revision ID: 0004_schedule_claims
Revises: 0003_source_records
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from migrations import resumable

revision: str = "0004_schedule_claims"
down_revision: str | None = "0003_source_records"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp() -> sa.types.TypeEngine[datetime]:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    resumable.create_table(
        "schedule_claims",
        sa.Column("job_id", sa.String(200), nullable=False),
        sa.Column("tick_at", _timestamp(), nullable=False),
        sa.Column("claimed_by", sa.String(200), nullable=False),
        sa.Column("claimed_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "tick_at", name=op.f("pk_schedule_claims")),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def downgrade() -> None:
    op.drop_table("schedule_claims")
