"""Tables the shipped connectors write to, on the event store's one ``MetaData``."""

from __future__ import annotations

from sqlalchemy import Column, Integer, String, Table, UniqueConstraint
from sqlalchemy.dialects import mysql

from ledger.schema import PayloadText, UTCDateTime, metadata

# The records a connector ingested, one row per (source, external id): the upsert target that
# decides whether a record is created, updated or skipped.
source_records = Table(
    "source_records",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source_id", Integer, nullable=False),
    # Compared exactly, as SQLite compares bytes: "abc", "ABC" and "abc " are three records.
    # On MySQL/MariaDB a binary NO PAD collation (revision 0006; MySQL 8 gets its own,
    # utf8mb4_0900_bin): utf8mb4_bin ignores trailing spaces (PAD SPACE).
    Column(
        "external_id",
        String(255).with_variant(
            mysql.VARCHAR(255, collation="utf8mb4_nopad_bin"), "mysql", "mariadb"
        ),
        nullable=False,
    ),
    Column("content_hash", String(64), nullable=False),
    Column("payload", PayloadText, nullable=False),  # canonical JSON of the record
    Column("first_seen_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("source_id", "external_id"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)
