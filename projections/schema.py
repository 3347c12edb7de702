"""Read-model tables, on the event store's one ``MetaData`` (so Alembic owns them too).

``ingestion_runs`` keeps the exact legacy shape (``ingestion_runs.mysql.sql`` beside this file)
so that every existing reader keeps working; it is derived from the ledger and can be rebuilt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Enum,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from ledger.events import ACTOR_NAME_MAX, CONNECTOR_NAME_MAX, COUNTER_FIELDS, TERMINAL_STATUSES
from ledger.schema import LegacyTimestamp, UTCDateTime, metadata, position_key

# The one projection so far: its name in projection_checkpoints, locks and skips.
PROJECTION_NAME = "ingestion_runs"
RUN_STATUSES = ("running", *TERMINAL_STATUSES)
INGESTION_RUNS = "ingestion_runs"
TRANSITIONS = "ingestion_run_transitions"
# A rebuild replays into tables named with SHADOW and swaps them in; on MySQL the live ones
# leave as OLD (projections.rebuilder).
SHADOW = "__rebuild"
OLD = "__old"
# The counters of the legacy table, keyed by the event field that feeds each: the legacy
# column is the field's name in camelCase (records_fetched: recordsFetched).
COUNTER_COLUMNS: dict[str, str] = {
    name: re.sub(r"_([a-z])", lambda letter: letter[1].upper(), name) for name in COUNTER_FIELDS
}
# The four record counters (fetched, created, updated, skipped), in that order: what tables
# show as one "f/c/u/s" cell and what makes a run count as having moved data.
RECORD_COUNTER_COLUMNS: tuple[str, ...] = tuple(
    column for name, column in COUNTER_COLUMNS.items() if name.startswith("records_")
)


def record_counts(row: Mapping[str, Any]) -> str:
    """``fetched/created/updated/skipped`` of a legacy row, as tables show them."""
    return "/".join(str(row[column]) for column in RECORD_COUNTER_COLUMNS)


def _counter(name: str) -> Column[int]:
    return Column(name, Integer, nullable=False, server_default=text("0"))


_COUNTERS = tuple(COUNTER_COLUMNS.values())


def _ingestion_runs(meta: MetaData, name: str, with_indexes: bool = True) -> Table:
    indexes = (
        [
            Index(f"idx_{INGESTION_RUNS}_sourceId", "sourceId"),
            Index(f"idx_{INGESTION_RUNS}_connectorName", "connectorName"),
            Index(f"idx_{INGESTION_RUNS}_startedAt", "startedAt"),
            Index(f"idx_{INGESTION_RUNS}_status", "status"),
        ]
        if with_indexes
        else []
    )
    return Table(
        name,
        meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("sourceId", Integer, nullable=False),
        Column("connectorName", String(CONNECTOR_NAME_MAX), nullable=False),
        Column(
            "startedAt", LegacyTimestamp(), nullable=False, server_default=text("CURRENT_TIMESTAMP")
        ),
        Column("completedAt", LegacyTimestamp(), nullable=True),
        Column("duration", Integer, nullable=True),
        Column(
            "status",
            # Native ENUM on MySQL; a CHECK constraint on SQLite.
            Enum(*RUN_STATUSES, name="status", native_enum=True, create_constraint=True),
            nullable=False,
            server_default=text("'running'"),
        ),
        # The counters in COUNTER_FIELDS order, but for the legacy table's last one, which
        # stands after the error columns.
        *(_counter(column) for column in _COUNTERS[:-1]),
        Column("errorMessage", Text, nullable=True),
        Column("errorDetails", JSON(none_as_null=True), nullable=True),
        _counter(_COUNTERS[-1]),
        Column(
            "createdAt", LegacyTimestamp(), nullable=False, server_default=text("CURRENT_TIMESTAMP")
        ),
        *indexes,
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def _transitions(meta: MetaData, name: str, with_indexes: bool = True) -> Table:
    indexes = [Index(f"ix_{TRANSITIONS}_run_id_position", "run_id", "position")]
    return Table(
        name,
        meta,
        # The ledger position of the event that caused the change: one change per event at most.
        position_key(),
        Column("run_id", Integer, nullable=False),
        Column("from_status", String(16), nullable=True),  # None for the run's first status
        Column("to_status", String(16), nullable=False),
        Column("at", UTCDateTime(), nullable=False),  # occurred_at of that event
        Column("actor", String(ACTOR_NAME_MAX), nullable=True),
        *(indexes if with_indexes else []),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


ingestion_runs = _ingestion_runs(metadata, INGESTION_RUNS)
ingestion_run_transitions = _transitions(metadata, TRANSITIONS)

projection_checkpoints = Table(
    "projection_checkpoints",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),  # last ledger position applied
    Column("updated_at", UTCDateTime(), nullable=False),
    # A poison event stops the projection: where, what, and why (cleared once it moves on).
    Column("error_position", BigInteger, nullable=True),
    Column("error_type", String(64), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("error_at", UTCDateTime(), nullable=True),
    # A rebuild about to swap tables records the position they hold; see projections.rebuilder.
    Column("rebuild_position", BigInteger, nullable=True),
)

projection_skips = Table(
    "projection_skips",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("event_type", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", String(ACTOR_NAME_MAX), nullable=False),
    Column("skipped_at", UTCDateTime(), nullable=False),
)


# The rebuild running now, if any, per projection: a row the whole cluster agrees on (a
# Galera node certifies it), where the named lock holds on one node only. Its holder renews
# heartbeat_at while it works; see projections.rebuild_claims.
rebuild_claims = Table(
    "rebuild_claims",
    metadata,
    Column("projection", String(64), primary_key=True),
    Column("claimed_by", String(200), nullable=False),  # host:pid:token of the process
    Column("node", String(200), nullable=False),  # the database node its lock is held on
    Column("claimed_at", UTCDateTime(), nullable=False),
    Column("heartbeat_at", UTCDateTime(), nullable=False),
)


def shadow_tables(suffix: str, with_indexes: bool) -> tuple[Table, Table]:
    """Copies of the two read-model tables under another name, for rebuilds."""
    meta = MetaData(naming_convention=metadata.naming_convention)
    return (
        _ingestion_runs(meta, f"{INGESTION_RUNS}{suffix}", with_indexes),
        _transitions(meta, f"{TRANSITIONS}{suffix}", with_indexes),
    )
