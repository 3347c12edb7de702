"""Tables of the event store, on one ``MetaData`` shared with Alembic (``migrations/env.py``).

Alembic owns the schema: these definitions are what ``alembic check`` compares the database to,
and the migrations under ``migrations/versions`` must produce exactly them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql

from ledger.clock import ensure_utc
from ledger.dialects import is_mysql_backend
from ledger.events import ACTOR_NAME_MAX, CONNECTOR_NAME_MAX

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

GENESIS_HASH = "0" * 64
# Where `ledger migrate` moves a legacy ingestion_runs table it finds, so that the projection
# can take its name (and where `ledger import-legacy` reads it by default). Here, below every
# package that names it, migrations included.
LEGACY_TABLE = "ingestion_runs_legacy"
HEAD_ROW_ID = 1
# Every Alembic revision of run-ledger, oldest first: how a revision in a shared
# ``alembic_version`` table (where releases before 2026-12-07 kept it) is told from another
# application's. The last is the revision the tables of this code (every package's, on the one
# MetaData) are at: what :meth:`ledger.Ledger.check_schema` requires of a database. A new
# migration is added here; a test holds the list to the revisions under ``migrations/versions``.
REVISIONS = (
    "0001_event_store",
    "0002_projections",
    "0003_source_records",
    "0004_schedule_claims",
    "0005_rebuild_claims",
    "0006_record_keys_no_pad",
)
SCHEMA_REVISION = REVISIONS[-1]
# Alembic's version table of run-ledger's migrations: a name of its own, so that the ledger can
# share a database with an application migrated by Alembic too (the one whose legacy
# ingestion_runs the projection replaces), whose version is kept in ``alembic_version``.
VERSION_TABLE = "ledger_alembic_version"
# Where releases before 2026-12-07 kept the revision (Alembic's default name): read when
# VERSION_TABLE is not there yet, and moved to it by ``ledger migrate``.
SHARED_VERSION_TABLE = "alembic_version"


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC with microseconds; refuses naive datetimes on the way in.

    MySQL gets ``DATETIME(6)`` (not TIMESTAMP: no session-zone conversion, no 2038 limit);
    SQLite stores ISO text. Values come back as aware UTC datetimes on both.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if is_mysql_backend(dialect.name):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return ensure_utc(value).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class LegacyTimestamp(UTCDateTime):
    """``TIMESTAMP`` (whole seconds) on MySQL, as the legacy ``ingestion_runs`` has it.

    Sessions run in UTC, so MySQL's TIMESTAMP zone conversion is the identity. Values are
    truncated to whole seconds here, not rounded by the server.
    """

    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if is_mysql_backend(dialect.name):
            return dialect.type_descriptor(mysql.TIMESTAMP())
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        stored = super().process_bind_param(value, dialect)
        return None if stored is None else stored.replace(microsecond=0)


def position_key() -> Column[int]:
    """A ``position`` primary key, as ledger positions are stored (BIGINT; SQLite's INTEGER),
    never filled in by the database."""
    return Column(
        "position",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=False,
    )


# Payloads can be large (error details, tracebacks): LONGTEXT on MySQL, TEXT elsewhere.
PayloadText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

MAX_POSITION = 2**63 - 1  # positions are BIGINT: the highest one a caller can name

ledger_events = Table(
    "ledger_events",
    metadata,
    # Assigned under the ledger_head lock, not by AUTO_INCREMENT: gapless and in commit order (I2).
    position_key(),
    Column("event_id", String(36), nullable=False),
    Column("run_id", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", String(64), nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("payload", PayloadText, nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Column("actor", String(ACTOR_NAME_MAX), nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("event_id"),  # I3: the backstop for idempotent appends
    UniqueConstraint("run_id", "version"),  # one run read in version order; I4 backstop
)

ledger_runs = Table(
    "ledger_runs",
    metadata,
    Column("run_id", Integer, primary_key=True, autoincrement=False),
    Column("source_id", Integer, nullable=False),
    Column("connector_name", String(CONNECTOR_NAME_MAX), nullable=False),
    Column("version", Integer, nullable=False),
    # ledger.rules.RUN_STATES: the write-side state the stream rules (I5) are checked against.
    Column("state", String(16), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    # Latest occurred_at of any event of the run: when the run was last alive (I10).
    Column("last_event_at", UTCDateTime(), nullable=False),
    Column("opened_at", UTCDateTime(), nullable=False),  # recorded_at of RunStarted
    Column("updated_at", UTCDateTime(), nullable=False),  # recorded_at of the latest event
    # Stuck detection scans open runs only: its cost follows open runs, not history (I10).
    Index(None, "state", "last_event_at"),
    Index(None, "state", "started_at"),
    Index(None, "connector_name", "source_id", "state"),
)

ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_position", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("last_run_id", Integer, nullable=False),
    # recorded_at of the last append: the next one is never earlier (recorded_at follows position).
    Column("last_recorded_at", UTCDateTime(), nullable=True),
)
