"""Schema upgrades through Alembic, the only owner of the schema: what ``ledger migrate`` and
``ledger demo`` run, and what the tests migrate their databases with.

The check that a database is at the revision the code needs is the ledger's own
(:meth:`ledger.Ledger.check_schema`): every package may run it, while this package (whose
Alembic environment imports every package's tables) is imported by the service alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine

from ledger import Ledger
from ledger.database import current_revision
from ledger.errors import SchemaError
from ledger.store import as_ledger
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


def upgrade(database: Ledger | Engine, url: str | None = None) -> MigrationResult:
    """Upgrade the database to the newest revision; a no-op when already there. Takes the
    :class:`ledger.Ledger`, or an Engine and its URL (the tests and tools hold those)."""
    ledger = as_ledger(database, url)
    with ledger.connect("migrate") as connection, connection.begin():
        before = current_revision(connection)
        try:
            command.upgrade(alembic_config(connection), "head")
        except CommandError as exc:
            raise SchemaError(
                f"cannot migrate {mask_url(ledger.url)} from revision {before}: {exc} "
                "(was it migrated by a newer run-ledger?)"
            ) from exc
        after = current_revision(connection)
    log.info("schema at %s (was %s)", after, before)
    return MigrationResult(before, after)
