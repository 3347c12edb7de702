"""Alembic environment shared by ``ledger migrate``, the tests and the ``alembic`` command.

The target metadata is the package's own ``MetaData`` (with its naming convention), so
``alembic check`` compares the database with the code. A caller may inject a live connection
through ``config.attributes["connection"]``; otherwise the URL comes from ``-x db=URL``,
``$LEDGER_DATABASE_URL`` or the ``sqlalchemy.url`` option, and the ledger's engine factory
connects (so MySQL sessions get the same UTC/utf8mb4 settings as the application).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import projections  # noqa: F401  (registers read-model tables on the shared MetaData)
from ledger.database import create_ledger_engine
from ledger.schema import metadata
from ledger.urls import resolve_database_url

config = context.config


def _run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


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
            _run_with(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("run-ledger migrations run online only: give a database URL")
run_migrations_online()
