"""Schema upgrades through Alembic, the only owner of the schema."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine

from ledger.database import translate_errors
from ledger.errors import SchemaError
from ledger.urls import mask_url
from migrations import SCRIPT_LOCATION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MigrationResult:
    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        return self.before != self.after


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the shipped migrations, optionally bound to a live connection."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, url: str) -> MigrationResult:
    """Upgrade the database to the newest revision; a no-op when already there."""
    with translate_errors(url, "migrate"), engine.begin() as connection:
        before = current_revision(connection)
        try:
            command.upgrade(alembic_config(connection), "head")
        except CommandError as exc:
            raise SchemaError(
                f"cannot migrate {mask_url(url)} from revision {before}: {exc} "
                "(was it migrated by a newer run-ledger?)"
            ) from exc
        after = current_revision(connection)
    log.info("schema at %s (was %s)", after, before)
    return MigrationResult(before, after)


def check_schema(engine: Engine, url: str) -> None:
    """Raise :class:`SchemaError` unless the database is at the newest revision."""
    with translate_errors(url, "schema check"), engine.connect() as connection:
        current = current_revision(connection)
    expected = head_revision()
    if current != expected:
        raise SchemaError(
            f"database schema is at {current or 'nothing (empty database)'}, "
            f"this run-ledger needs {expected}: run `ledger migrate`"
        )
