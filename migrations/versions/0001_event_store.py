"""Event store: ledger_events, ledger_runs, ledger_head and the append-only triggers.

Revision ID: 0001_event_store
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from migrations import resumable

revision: str = "0001_event_store"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS_HASH = "0" * 64
IMMUTABLE_MESSAGE = "ledger_events is append-only: {verb} is not allowed (run-ledger I1)"


def _timestamp() -> sa.types.TypeEngine[datetime]:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    resumable.create_table(
        "ledger_events",
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column(
            "payload", sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb"), nullable=False
        ),
        sa.Column("occurred_at", _timestamp(), nullable=False),
        sa.Column("recorded_at", _timestamp(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_ledger_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_ledger_events_event_id")),
        sa.UniqueConstraint("run_id", "version", name=op.f("uq_ledger_events_run_id_version")),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    resumable.create_table(
        "ledger_runs",
        sa.Column("run_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("connector_name", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", _timestamp(), nullable=False),
        sa.Column("last_event_at", _timestamp(), nullable=False),
        sa.Column("opened_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_ledger_runs")),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    resumable.create_index(
        op.f("ix_ledger_runs_state_last_event_at"), "ledger_runs", ["state", "last_event_at"]
    )
    resumable.create_index(
        op.f("ix_ledger_runs_state_started_at"), "ledger_runs", ["state", "started_at"]
    )
    resumable.create_index(
        op.f("ix_ledger_runs_connector_name_source_id_state"),
        "ledger_runs",
        ["connector_name", "source_id", "state"],
    )
    head = resumable.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("last_run_id", sa.Integer(), nullable=False),
        sa.Column("last_recorded_at", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_head")),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    resumable.insert_once(
        head,
        {
            "id": 1,
            "last_position": 0,
            "last_hash": GENESIS_HASH,
            "last_run_id": _highest_legacy_run_id(),
        },
        key="id",
    )
    _create_immutability_triggers()


def _highest_legacy_run_id() -> int:
    """Allocate run ids after the legacy table's: the projection writes ingestion_runs.id =
    run_id, so a ledger installed beside an existing ingestion_runs must not reuse its ids."""
    bind = op.get_bind()
    if not sa.inspect(bind).has_table("ingestion_runs"):
        return 0
    return int(
        bind.execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM ingestion_runs")).scalar_one()
    )


def _create_immutability_triggers() -> None:
    dialect = op.get_bind().dialect.name
    for verb in ("UPDATE", "DELETE"):
        name = f"ledger_events_no_{verb.lower()}"
        message = IMMUTABLE_MESSAGE.format(verb=verb)
        if dialect == "sqlite":
            resumable.create_trigger(
                name,
                f"CREATE TRIGGER {name} BEFORE {verb} ON ledger_events "
                f"BEGIN SELECT RAISE(ABORT, '{message}'); END",
            )
            if verb == "DELETE":
                # INSERT OR REPLACE deletes the conflicting row without firing DELETE triggers
                # (unless recursive_triggers is on): refuse any insert that would collide.
                resumable.create_trigger(
                    "ledger_events_no_replace",
                    "CREATE TRIGGER ledger_events_no_replace BEFORE INSERT ON ledger_events "
                    "WHEN EXISTS (SELECT 1 FROM ledger_events WHERE position = NEW.position) "
                    "OR EXISTS (SELECT 1 FROM ledger_events WHERE event_id = NEW.event_id) "
                    "OR EXISTS (SELECT 1 FROM ledger_events "
                    "WHERE run_id = NEW.run_id AND version = NEW.version) "
                    f"BEGIN SELECT RAISE(ABORT, '{IMMUTABLE_MESSAGE.format(verb='REPLACE')}'); END",
                )
        elif dialect in ("mysql", "mariadb"):
            resumable.create_trigger(
                name,
                f"CREATE TRIGGER {name} BEFORE {verb} ON ledger_events FOR EACH ROW "
                f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{message}'",
            )
        else:  # pragma: no cover - only SQLite and MySQL/MariaDB are supported
            raise NotImplementedError(f"no immutability trigger for {dialect}")


def downgrade() -> None:
    for verb in ("update", "delete", "replace"):
        op.execute(f"DROP TRIGGER IF EXISTS ledger_events_no_{verb}")
    op.drop_table("ledger_head")
    op.drop_index(op.f("ix_ledger_runs_connector_name_source_id_state"), table_name="ledger_runs")
    op.drop_index(op.f("ix_ledger_runs_state_started_at"), table_name="ledger_runs")
    op.drop_index(op.f("ix_ledger_runs_state_last_event_at"), table_name="ledger_runs")
    op.drop_table("ledger_runs")
    op.drop_table("ledger_events")
