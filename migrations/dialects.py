"""Where migrating SQLite and MySQL/MariaDB differs, one function per difference: how one
migrate at a time is kept, and how Alembic alters a table.

What differs in reading the catalogue (a trigger made by an interrupted migrate) is the
ledger's own (:func:`ledger.dialects.catalogued_triggers`, which ``ledger verify`` reads too).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection

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
