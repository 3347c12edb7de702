"""Alembic environment shared by ``ledger migrate``, the tests and the ``alembic`` command.

The target metadata is the package's own ``MetaData`` (with its naming convention), so
``alembic check`` compares the database with the code. A caller may inject a live connection
through ``config.attributes["connection"]``; otherwise the URL comes from ``-x db=URL``,
``$LEDGER_DATABASE_URL`` or the ``sqlalchemy.url`` option, and the ledger's engine factory
connects (so MySQL sessions get the same UTC/utf8mb4 settings as the application).
"""

from __future__ import annotations

from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext
from alembic.util.exc import CommandError
from sqlalchemy import JSON, Column, Connection
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine

import connectors.schema  # noqa: F401  (registers tables on the shared MetaData)
import projections.schema  # noqa: F401
import service.schema  # noqa: F401
from ledger.database import create_ledger_engine
from ledger.schema import SHARED_VERSION_TABLE, VERSION_TABLE, metadata
from ledger.urls import resolve_database_url
from migrations.dialects import (
    NO_PAD_COLLATIONS,
    PAD_SPACE_COLLATION,
    alters_by_copy,
    no_pad_collation,
)
from migrations.version_table import revision_in_shared_table

config = context.config


def _include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # The ledger may share a database with other tables (the renamed legacy table, the
    # connectors' tables, a rebuild's leftovers): only tables of our MetaData are compared.
    return not (type_ == "table" and reflected and compare_to is None)


def _compare_type(
    context: MigrationContext,
    inspected: Column[Any],
    metadata_column: Column[Any],
    inspected_type: TypeEngine[Any],
    metadata_type: TypeEngine[Any],
) -> bool | None:
    # MariaDB stores JSON as LONGTEXT with a json_valid() CHECK and reflects it as LONGTEXT.
    if isinstance(metadata_type, JSON) and isinstance(inspected_type, mysql.LONGTEXT):
        return False
    # The MetaData names MariaDB's NO PAD collation; revision 0006 gives MySQL 8 its own, and a
    # server with neither keeps the PAD SPACE one: each is the column as migrated.
    wanted = getattr(metadata_type.dialect_impl(context.dialect), "collation", None)
    found = getattr(inspected_type, "collation", None)
    if wanted == NO_PAD_COLLATIONS[0] and found != wanted and context.connection is not None:
        migrated_to = no_pad_collation(context.connection) or PAD_SPACE_COLLATION
        same_length = getattr(inspected_type, "length", None) == getattr(metadata_type, "length", 0)
        if found == migrated_to and same_length:
            return False
    return None  # default comparison


def _run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=_compare_type,
        include_object=_include_object,
        render_as_batch=alters_by_copy(connection),
        version_table=VERSION_TABLE,  # not alembic_version: see migrations.version_table
    )
    with context.begin_transaction():
        context.run_migrations()


def _refuse_a_revision_not_moved(connection: Connection) -> None:
    """The ``alembic`` command on a ledger of a release before 2026-12-07: Alembic reads
    VERSION_TABLE only, so it took the ledger for an empty database (``current`` said nothing,
    ``upgrade`` ran every revision again over the tables there). ``ledger migrate`` moves the
    revision (``ledger migrate`` itself injects its connection, the revision moved already)."""
    if revision_in_shared_table(connection):
        connection.rollback()
        raise CommandError(
            f"run-ledger's revision is still in {SHARED_VERSION_TABLE}, where releases before "
            f"2026-12-07 kept it; Alembic reads {VERSION_TABLE}: run `ledger migrate` first, "
            "which moves it"
        )


def run_migrations_online() -> None:
    injected = config.attributes.get("connection")
    if injected is not None:
        _run_with(injected)
        return
    url = context.get_x_argument(as_dictionary=True).get("db") or resolve_database_url(
        config.get_main_option("sqlalchemy.url") or None
    )
    engine = create_ledger_engine(url)
    try:
        with engine.connect() as connection:
            _refuse_a_revision_not_moved(connection)
            _run_with(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("run-ledger migrations run online only: give a database URL")
run_migrations_online()
