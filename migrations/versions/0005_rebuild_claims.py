"""Projections: rebuild_claims, so one rebuild at a time runs across the nodes of a cluster.

Revision ID: 0005_rebuild_claims
Revises: 0004_schedule_claims
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from migrations import resumable

revision: str = "0005_rebuild_claims"
down_revision: str | None = "0004_schedule_claims"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp() -> sa.types.TypeEngine[datetime]:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    resumable.create_table(
        "rebuild_claims",
        sa.Column("projection", sa.String(64), nullable=False),
        sa.Column("claimed_by", sa.String(200), nullable=False),
        sa.Column("node", sa.String(200), nullable=False),
        sa.Column("claimed_at", _timestamp(), nullable=False),
        sa.Column("heartbeat_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("projection", name=op.f("pk_rebuild_claims")),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def downgrade() -> None:
    op.drop_table("rebuild_claims")
