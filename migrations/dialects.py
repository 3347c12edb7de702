"""Where migrating SQLite and MySQL/MariaDB differs, one function per difference: how one
migrate at a time is kept, which privileges a MySQL user lacks to migrate, and how Alembic
alters a table.

What differs in reading the catalogue (a trigger made by an interrupted migrate) is the
ledger's own (:func:`ledger.dialects.catalogued_triggers`, which ``ledger verify`` reads too).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from ledger import Ledger
from ledger.dialects import is_sqlite, named_lock
from ledger.errors import SchemaError
from ledger.urls import mask_url

# How long a `ledger migrate` waits for another one running on the same database.
MIGRATE_LOCK_WAIT_S = 120


@contextmanager
def one_migrate_at_a_time(ledger: Ledger) -> Iterator[None]:
    """Every replica of a deployment may run `ledger migrate` as it starts: the second waits
    for the first, then finds the schema at the newest revision, rather than fail on a table
    the first just created (MySQL's DDL commits statement by statement). MySQL: a named lock,
    on its own session. SQLite: the upgrade's own transaction takes the write lock first
    (``BEGIN IMMEDIATE``), so the second waits out the busy timeout instead of meeting the
    first half-way. On a Galera cluster the named lock holds on one node: migrate through one
    node at a time (README)."""
    if ledger.is_sqlite:
        yield
        return
    busy = SchemaError(
        f"another `ledger migrate` of {mask_url(ledger.url)} has held the migration lock for "
        f"over {MIGRATE_LOCK_WAIT_S} s; nothing was changed"
    )
    with (
        ledger.connect("migrate") as session,
        named_lock(session, "migrate", MIGRATE_LOCK_WAIT_S, lambda: busy),
    ):
        yield


def alters_by_copy(connection: Connection) -> bool:
    """Whether Alembic alters a table by copying it (its batch mode): SQLite's ALTER TABLE
    cannot change or drop most of a column; MySQL alters in place."""
    return is_sqlite(connection)


# What `ledger migrate` needs on MySQL/MariaDB (README "Grants on MySQL/MariaDB": the schema
# owner's DDL rights and its rights on the tables), each with a statement that needs it, on a
# table that does not exist. The server checks the privilege first (1142 when it is missing)
# and only then finds no table (1146; 1051 for DROP): a probe makes nothing, and learns what a
# migrate would otherwise learn half-way, after DDL it cannot take back (MySQL commits each
# DDL statement), such as event tables without their append-only triggers.
MIGRATE_PRIVILEGE_PROBES = {
    "SELECT": "SELECT 1 FROM {table}",
    "INSERT": "INSERT INTO {table} VALUES (1)",
    "UPDATE": "UPDATE {table} SET x = 1",
    "DELETE": "DELETE FROM {table}",  # the revision taken out of alembic_version (its move)
    "CREATE": "CREATE TABLE {table}_copy LIKE {table}",
    "ALTER": "ALTER TABLE {table} ADD COLUMN y INTEGER",
    "INDEX": "CREATE INDEX {table}_ix ON {table} (x)",
    "DROP": "DROP TABLE {table}",
    "TRIGGER": "CREATE TRIGGER {table}_tr BEFORE UPDATE ON {table} FOR EACH ROW SET @x = 1",
}
_PRIVILEGE_DENIED = frozenset({1142, 1044})  # table access denied, database access denied


def missing_migrate_privileges(conn: Connection) -> list[str]:
    """The privileges of :data:`MIGRATE_PRIVILEGE_PROBES` the session's user lacks on its
    database (MySQL/MariaDB; SQLite has none to lack)."""
    if is_sqlite(conn):
        return []
    table = f"ledger_grant_probe_{uuid.uuid4().hex[:12]}"
    missing = []
    for privilege, probe in MIGRATE_PRIVILEGE_PROBES.items():
        try:
            conn.exec_driver_sql(probe.format(table=table))
        except DBAPIError as exc:
            code = getattr(exc.orig, "args", (None,))[0]
            if code in _PRIVILEGE_DENIED:
                missing.append(privilege)
            elif code not in (1146, 1051):  # no such table: the privilege is there
                raise
    return missing


# The binary NO PAD collation of utf8mb4 (compares code points, trailing spaces included, as
# SQLite compares bytes), in order of preference: MariaDB 10.2 and later, MySQL 8.0 and later.
# MySQL 5.7 has neither. Source record keys use it (revision 0006).
NO_PAD_COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin")
# The PAD SPACE binary collation record keys had before revision 0006, and keep on a server
# without a NO PAD one.
PAD_SPACE_COLLATION = "utf8mb4_bin"


def no_pad_collation(conn: Connection) -> str | None:
    """The first of :data:`NO_PAD_COLLATIONS` this MySQL/MariaDB server has; None if none."""
    names = ", ".join(f"'{name}'" for name in NO_PAD_COLLATIONS)
    available = set(
        conn.exec_driver_sql(
            "SELECT COLLATION_NAME FROM information_schema.COLLATIONS "
            f"WHERE COLLATION_NAME IN ({names})"
        ).scalars()
    )
    return next((name for name in NO_PAD_COLLATIONS if name in available), None)
