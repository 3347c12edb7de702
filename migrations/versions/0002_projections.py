"""Projections: ingestion_runs (legacy shape), ingestion_run_transitions, checkpoints, skips.

A legacy ``ingestion_runs`` table found in the database is renamed to
``ingestion_runs_legacy`` (nothing is dropped), so the projection can take its name and
existing readers keep reading the same table name.

Revision ID: 0002_projections
Revises: 0001_event_store
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from migrations import resumable

revision: str = "0002_projections"
down_revision: str | None = "0001_event_store"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("running", "success", "partial", "failed")


def _timestamp() -> sa.types.TypeEngine[datetime]:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _legacy_timestamp() -> sa.types.TypeEngine[datetime]:
    return sa.DateTime().with_variant(mysql.TIMESTAMP(), "mysql", "mariadb")


def _position() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _counter(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), nullable=False, server_default=sa.text("0"))


def upgrade() -> None:
    if _legacy_table_to_move():
        op.rename_table("ingestion_runs", "ingestion_runs_legacy")
    resumable.create_table(
        "ingestion_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sourceId", sa.Integer(), nullable=False),
        sa.Column("connectorName", sa.String(100), nullable=False),
        sa.Column(
            "startedAt",
            _legacy_timestamp(),
            nullable=False,
            server_default=sa.text("CURRENT_TIMESTAMP"),
        ),
        sa.Column("completedAt", _legacy_timestamp(), nullable=True),
        sa.Column("duration", sa.Integer(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(*STATUSES, name="status", native_enum=True, create_constraint=True),
            nullable=False,
            server_default=sa.text("'running'"),
        ),
        _counter("recordsFetched"),
        _counter("recordsCreated"),
        _counter("recordsUpdated"),
        _counter("recordsSkipped"),
        _counter("claimsCreated"),
        sa.Column("errorMessage", sa.Text(), nullable=True),
        sa.Column("errorDetails", sa.JSON(), nullable=True),
        _counter("coverageCellsUpdated"),
        sa.Column(
            "createdAt",
            _legacy_timestamp(),
            nullable=False,
            server_default=sa.text("CURRENT_TIMESTAMP"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingestion_runs")),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    for column in ("sourceId", "connectorName", "startedAt", "status"):
        resumable.create_index(f"idx_ingestion_runs_{column}", "ingestion_runs", [column])
    resumable.create_table(
        "ingestion_run_transitions",
        sa.Column("position", _position(), autoincrement=False, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("at", _timestamp(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_ingestion_run_transitions")),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    resumable.create_index(
        op.f("ix_ingestion_run_transitions_run_id_position"),
        "ingestion_run_transitions",
        ["run_id", "position"],
    )
    checkpoints = resumable.create_table(
        "projection_checkpoints",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("error_position", sa.BigInteger(), nullable=True),
        sa.Column("error_type", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_at", _timestamp(), nullable=True),
        sa.Column("rebuild_position", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_projection_checkpoints")),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    resumable.insert_once(
        checkpoints,
        {"name": "ingestion_runs", "position": 0, "updated_at": datetime(1970, 1, 1)},
        key="name",
    )
    resumable.create_table(
        "projection_skips",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("skipped_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("name", "position", name=op.f("pk_projection_skips")),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def _legacy_table_to_move() -> bool:
    """Whether ``ingestion_runs`` is the legacy system's table, to be kept under another name.
    Once this revision has moved it (or made the projection's next to it), the table of that
    name is the projection's own: an attempt interrupted after the move, or after the
    projection's tables were made, must not move the projection's table aside (MySQL commits
    each DDL statement on its own; see :mod:`migrations.resumable`)."""
    if not resumable.has_table("ingestion_runs"):
        return False
    return not (
        resumable.has_table("ingestion_runs_legacy")
        or resumable.has_table("ingestion_run_transitions")
    )


def downgrade() -> None:
    op.drop_table("projection_skips")
    op.drop_table("projection_checkpoints")
    op.drop_index(
        op.f("ix_ingestion_run_transitions_run_id_position"), table_name="ingestion_run_transitions"
    )
    op.drop_table("ingestion_run_transitions")
    for column in ("sourceId", "connectorName", "startedAt", "status"):
        op.drop_index(f"idx_ingestion_runs_{column}", table_name="ingestion_runs")
    op.drop_table("ingestion_runs")
    if sa.inspect(op.get_bind()).has_table("ingestion_runs_legacy"):
        op.rename_table("ingestion_runs_legacy", "ingestion_runs")
