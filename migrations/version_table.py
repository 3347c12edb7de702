"""Where run-ledger keeps its schema's revision: :data:`ledger.schema.VERSION_TABLE`, a table of
its own. Releases before 2026-12-07 kept it in Alembic's default table, ``alembic_version``,
which an application migrated by Alembic in the same database uses too (the application whose
``ingestion_runs`` the projection replaces): each saw the other's revision as its own, and
``ledger migrate`` refused such a database with "Can't locate revision" (or, the other way
round, the application's migrations refused run-ledger's revision).
"""

from __future__ import annotations

import logging

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    delete,
    func,
    insert,
    inspect,
    select,
)

from ledger.database import shared_revisions
from ledger.errors import SchemaError
from ledger.schema import SHARED_VERSION_TABLE, VERSION_TABLE

log = logging.getLogger(__name__)


def _alembic_version_table(name: str) -> Table:
    """A version table as Alembic makes one (its MigrationContext), on a MetaData of its own:
    not the ledger's, whose tables ``alembic check`` compares with the code."""
    return Table(
        name,
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name=f"{name}_pkc"),
    )


def revision_in_shared_table(connection: Connection) -> bool:
    """Whether run-ledger's revision is still in the shared ``alembic_version`` (a database
    last migrated by a release before 2026-12-07): ``ledger migrate`` moves it."""
    return bool(shared_revisions(connection))


def move_from_shared_table(connection: Connection) -> str | None:
    """Move run-ledger's revision from the shared ``alembic_version`` to its own table, before
    Alembic reads it; the revision moved, or None (nothing of run-ledger's there: another
    application's revisions are left as they are).

    Each step can be cut short and run again: on MySQL/MariaDB each CREATE and DROP commits
    on its own. Its own table made if missing, the revision written into it if it holds none,
    then taken out of ``alembic_version``, which is dropped once empty: it was run-ledger's
    alone (another application's revision beside it would have been refused by both)."""
    ours = shared_revisions(connection)
    if not ours:
        return None
    if len(ours) > 1:
        raise SchemaError(
            f"the database's {SHARED_VERSION_TABLE} table holds {len(ours)} revisions of "
            f"run-ledger ({', '.join(sorted(ours))}); its migrations have one head"
        )
    shared = _alembic_version_table(SHARED_VERSION_TABLE)
    own = _alembic_version_table(VERSION_TABLE)
    if not inspect(connection).has_table(VERSION_TABLE):
        own.create(connection)
    kept = connection.execute(select(own.c.version_num)).scalars().all()
    if not kept:
        connection.execute(insert(own).values(version_num=ours[0]))
    connection.execute(delete(shared).where(shared.c.version_num.in_(ours)))
    left = connection.execute(select(func.count()).select_from(shared)).scalar_one()
    if not left:
        shared.drop(connection)
    log.info(
        "moved the schema's revision %s from the shared table %s to %s",
        ours[0],
        SHARED_VERSION_TABLE,
        VERSION_TABLE,
    )
    return ours[0]


__all__ = ["move_from_shared_table", "revision_in_shared_table"]
