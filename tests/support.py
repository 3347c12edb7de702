"""Helpers shared by the contract suite: databases to test against, and ways to reset them."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url

from ledger.database import create_ledger_engine
from ledger.migrate import upgrade
from ledger.schema import GENESIS_HASH, metadata

MYSQL_URL_ENV = "LEDGER_TEST_MYSQL_URL"
TRIGGERS = ("ledger_events_no_update", "ledger_events_no_delete")


def mysql_base_url() -> str | None:
    return os.environ.get(MYSQL_URL_ENV) or None


def create_mysql_database(base_url: str) -> str:
    """Create a uniquely named database next to ``base_url``'s and return its URL."""
    name = f"ledger_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    finally:
        admin.dispose()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


def drop_mysql_database(url: str) -> None:
    parsed = make_url(url)
    admin = create_engine(parsed.set(database=None))
    try:
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{parsed.database}`"))
    finally:
        admin.dispose()


def migrate(url: str) -> None:
    engine = create_ledger_engine(url)
    try:
        upgrade(engine, url)
    finally:
        engine.dispose()


def make_sqlite_template(folder: Path) -> Path:
    """A migrated SQLite file that each test copies instead of migrating again."""
    path = folder / "template.db"
    migrate(f"sqlite:///{path}")
    return path


def sqlite_copy(template: Path, folder: Path) -> str:
    target = folder / "ledger.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


def reset_mysql(url: str) -> None:
    """Empty every table and restore the genesis head; re-create the database if a test
    dropped the immutability triggers (tamper tests do, as a hostile DBA would)."""
    engine = create_ledger_engine(url)
    try:
        with engine.connect() as conn:
            names = set(
                conn.execute(
                    text(
                        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
                        "WHERE TRIGGER_SCHEMA = DATABASE()"
                    )
                ).scalars()
            )
        if not set(TRIGGERS) <= names:
            engine.dispose()
            _recreate_mysql(url)
            return
        with engine.begin() as conn:
            for table in inspect(conn).get_table_names():
                if table in metadata.tables:
                    conn.execute(text(f"TRUNCATE TABLE `{table}`"))
            conn.execute(
                text(
                    "INSERT INTO ledger_head (id, last_position, last_hash, last_run_id) "
                    "VALUES (1, 0, :h, 0)"
                ),
                {"h": GENESIS_HASH},
            )
    finally:
        engine.dispose()


def _recreate_mysql(url: str) -> None:
    parsed = make_url(url)
    admin = create_engine(parsed.set(database=None))
    try:
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{parsed.database}`"))
            conn.execute(text(f"CREATE DATABASE `{parsed.database}` CHARACTER SET utf8mb4"))
    finally:
        admin.dispose()
    migrate(url)


def drop_triggers(engine: Engine) -> None:
    """What a hostile DBA would do before editing history."""
    with engine.begin() as conn:
        for name in TRIGGERS:
            conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
