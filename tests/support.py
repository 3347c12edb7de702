"""Helpers shared by the contract suite: databases to test against, and ways to reset them."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sqlite3
import stat
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from click.testing import Result
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url

from forensics.dialects import TriggerDefinition, expected_triggers
from forensics.triggers import check_triggers
from ledger import Ledger, RecordedEvent, RunProgressed
from ledger import events as events_module
from ledger.database import create_ledger_engine
from ledger.schema import GENESIS_HASH, metadata
from ledger.urls import sqlite_file_of
from migrations.runner import alembic_config, upgrade

MYSQL_URL_ENV = "LEDGER_TEST_MYSQL_URL"
TRIGGERS = ("ledger_events_no_update", "ledger_events_no_delete")
# The events that close a run (DESIGN.md §4, I10): what the tests count per run.
TERMINAL_EVENT_TYPES = frozenset({"RunFinished", "RunTimedOut"})


# --- what only the tests ask of the library (kept here, not in the production code)


def is_heartbeat(event: RunProgressed) -> bool:
    """A RunProgressed whose counter deltas are all zero (DESIGN.md §5)."""
    return not any(event.counter_deltas().values())


def recorded_event(row: Mapping[Any, Any]) -> RecordedEvent:
    """A selected ``ledger_events`` row (its columns by name) as the ledger hands it back."""
    return RecordedEvent(**{name: row[name] for name in RecordedEvent.__dataclass_fields__})


def head_revision() -> str | None:
    """The newest migration's revision."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL opens (None: in memory), as ``ledger.urls.sqlite_file_of``."""
    return sqlite_file_of(make_url(url))


def mysql_base_url() -> str | None:
    return os.environ.get(MYSQL_URL_ENV) or None


def _server_statements(url: str, *statements: str) -> None:
    """Run statements on the server of ``url``, outside any database."""
    admin = create_engine(make_url(url).set(database=None))
    try:
        with admin.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        admin.dispose()


def create_mysql_database(base_url: str, name: str | None = None) -> str:
    """Create a database next to ``base_url``'s (uniquely named unless ``name`` is given) and
    return its URL. A unique name starts with the base database's own name (``rev2`` gives
    ``rev2_test_…``), so suites run side by side on one server each keep to their own names."""
    prefix = make_url(base_url).database or "ledger"
    name = name or f"{prefix[:40]}_test_{uuid.uuid4().hex[:12]}"
    _server_statements(base_url, f"CREATE DATABASE {_quoted(name)} CHARACTER SET utf8mb4")
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


def drop_mysql_database(url: str) -> None:
    _server_statements(url, f"DROP DATABASE IF EXISTS {_quoted(make_url(url).database or '')}")


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


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
    dropped, redefined or added a trigger on the events (tamper tests do, as a hostile DBA
    would)."""
    engine = create_ledger_engine(url)
    try:
        store = Ledger(engine, url)
        if not check_triggers(store).ok:
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
    name = make_url(url).database
    _server_statements(
        url, f"DROP DATABASE IF EXISTS `{name}`", f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
    )
    migrate(url)


def drop_triggers(engine: Engine) -> None:
    """What a hostile DBA would do before editing history."""
    with engine.begin() as conn:
        for name in TRIGGERS:
            conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))


def create_trigger_statement(trigger: TriggerDefinition, dialect: str) -> str:
    """The CREATE TRIGGER statement of an expected trigger (SQLite stores it whole)."""
    if dialect == "sqlite":
        return trigger.definition
    return (
        f"CREATE TRIGGER {trigger.name} {trigger.timing} {trigger.event} ON ledger_events "
        f"FOR EACH ROW {trigger.definition}"
    )


def restore_triggers(engine: Engine) -> None:
    """What a careful hostile DBA does after editing history: put the triggers back as they
    were, so that nothing shows they were ever gone."""
    dialect = engine.dialect.name
    with engine.begin() as conn:
        for trigger in expected_triggers(dialect):
            conn.execute(text(f"DROP TRIGGER IF EXISTS {trigger.name}"))
            conn.execute(text(create_trigger_statement(trigger, dialect)))


_examples = itertools.count()


def fresh_store(backend: str, template: Path, tmp_path: Path, mysql_url: str | None) -> Ledger:
    """An empty, migrated store for one hypothesis example (function fixtures run once per
    test, not per example)."""
    if backend == "sqlite":
        folder = tmp_path / f"example-{next(_examples)}"
        folder.mkdir()
        return Ledger.from_url(sqlite_copy(template, folder))
    assert mysql_url is not None
    reset_mysql(mysql_url)
    return Ledger.from_url(mysql_url)


def sqlite_without_schema(path: Path) -> str:
    """The URL of a SQLite database at ``path`` that holds one unrelated table and none of the
    ledger's (an empty file is refused as no database at all)."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE other (x INTEGER)")
    return f"sqlite:///{path}"


@contextmanager
def unmigrated_databases(tmp_path: Path) -> Iterator[Iterator[tuple[str, Ledger]]]:
    """Empty, unmigrated databases: a SQLite file, and a MariaDB database when configured.
    Each is closed (and dropped on MariaDB) afterwards."""
    urls = [f"sqlite:///{tmp_path / 'unmigrated.db'}"]
    base = mysql_base_url()
    if base is not None:
        urls.append(create_mysql_database(base))
    stores = [Ledger.from_url(url) for url in urls]
    try:
        yield iter(zip(urls, stores, strict=True))
    finally:
        for url, store in zip(urls, stores, strict=True):
            store.close()
            if url.startswith("mysql"):
                drop_mysql_database(url)


def names_as_before_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let appends store any name, as run-ledger did before names had a rule: history written
    then (trailing spaces, control characters) must still read, project, verify and show."""
    monkeypatch.setattr(events_module, "name_problem", lambda value: None, raising=False)


def as_another_user(work: Callable[[], list[tuple[str, Result]]]) -> list[tuple[str, int, str]]:
    """``work``'s (name, exit code, output) as a user who does not own the test's files."""

    def summary(results: list[tuple[str, Result]]) -> list[tuple[str, int, str]]:
        return [(name, result.exit_code, result.output) for name, result in results]

    if os.geteuid() != 0:
        return summary(work())
    nobody = 65534
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child reports through the pipe)
        code = 1
        try:
            os.close(read_end)
            os.setgid(nobody)
            os.setuid(nobody)
            os.write(write_end, json.dumps(summary(work())).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        data = reader.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    return [(name, code, output) for name, code, output in json.loads(data)]


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """The process's umask set to ``mask`` for the block, the previous one restored after."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    """The permission bits of ``path`` (0o600, 0o755, …)."""
    return stat.S_IMODE(path.stat().st_mode)
