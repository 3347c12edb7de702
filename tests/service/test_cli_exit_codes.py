"""One exit code per kind of failure, on every command (issue 15, item 7): 2 the caller's mistake
(an unknown run, an unknown or unnamed database, a missing SQLite file), 3 the environment (the
database unreachable, credentials or permission refused); the message names the run, the
database or the host, never the password."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ledger import Ledger, StorageError
from service.cli import cli
from service.cli.errors import EXIT_ENVIRONMENT, EXIT_USAGE, exit_code_for
from tests import support
from tests.support import as_another_user

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_events.jsonl"

# Commands that open the database, each as its arguments (with no --db).
DATABASE_COMMANDS = [
    ("runs", "list"),
    ("runs", "show", "1"),
    ("runs", "fail", "1", "--reason", "gone"),
    ("audit", "1"),
    ("events",),
    ("events", "--run", "1"),
    ("verify",),
    ("status",),
    ("stuck",),
    ("report",),
    ("project",),
    ("migrate",),
    ("migrate", "--check"),
    ("append", str(SAMPLE)),
]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@dataclass(frozen=True)
class Case:
    """A database URL that fails one way, the exit code that way, and what the one-line
    message must name."""

    url: Callable[[str], str]  # from the MariaDB server URL (unused by server-less cases)
    exit_code: int
    names: tuple[str, ...]
    needs_server: bool = False


UNKNOWN_DATABASE = f"ledger_no_such_{uuid.uuid4().hex[:8]}"


def _on_server(**parts: str) -> Callable[[str], str]:
    return lambda base: make_url(base).set(**parts).render_as_string(hide_password=False)


CASES = {
    "unknown database": Case(
        # The driver's "Unknown database" alone left a new user to find out that run-ledger
        # makes tables, not the database: the line says how to create it.
        _on_server(database=UNKNOWN_DATABASE),
        EXIT_USAGE,
        (
            UNKNOWN_DATABASE,
            f"check its name, or create it first: CREATE DATABASE `{UNKNOWN_DATABASE}` "
            "CHARACTER SET utf8mb4",
        ),
        needs_server=True,
    ),
    "no database name": Case(
        lambda _: "mysql+pymysql://app:pw-nodb-1@127.0.0.1:3306",
        EXIT_USAGE,
        ("names no database", "app:***@127.0.0.1:3306"),
    ),
    "no database name, trailing slash": Case(
        lambda _: "mysql+pymysql://app:pw-nodb-2@127.0.0.1:3306/",
        EXIT_USAGE,
        ("names no database", "app:***@127.0.0.1:3306/"),
    ),
    "port out of range": Case(  # was "Connection refused", exit 3 (issue 15)
        lambda _: "mysql+pymysql://app:pw-port-2@127.0.0.1:99999/ledger",
        EXIT_USAGE,
        ("app:***@127.0.0.1:99999/ledger", "port 99999 is not a TCP port (1 to 65535)"),
    ),
    "port zero": Case(
        lambda _: "mysql+pymysql://app:pw-port-3@127.0.0.1:0/ledger",
        EXIT_USAGE,
        ("port 0 is not a TCP port",),
    ),
    "unreachable port": Case(
        lambda _: "mysql+pymysql://app:pw-port-1@127.0.0.1:1/ledger",
        EXIT_ENVIRONMENT,
        ("app:***@127.0.0.1:1/ledger", "Can't connect"),
    ),
    "unknown host": Case(
        lambda _: "mysql+pymysql://app:pw-host-1@host.invalid:3306/ledger",
        EXIT_ENVIRONMENT,
        ("host.invalid",),
    ),
    "wrong credentials": Case(
        _on_server(username="ledger_nobody", password="pw-wrong-1"),
        EXIT_ENVIRONMENT,
        ("ledger_nobody:***@", "Access denied"),
        needs_server=True,
    ),
}


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_command_exits_the_same_way_for_the_same_database_failure(
    case: str, command: tuple[str, ...]
) -> None:
    spec = CASES[case]
    base = support.mysql_base_url()
    if spec.needs_server and base is None:
        pytest.skip(f"MariaDB half skipped: set {support.MYSQL_URL_ENV} to run it")
    url = spec.url(base or "mysql+pymysql://root@127.0.0.1:3306/test")
    result = run(*command, "--db", url)
    assert result.exit_code == spec.exit_code, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: ")
    for name in spec.names:
        assert name in line
    password = make_url(url).password
    assert password is None or str(password) not in result.output
    assert "Traceback" not in result.output


UNKNOWN_RUN_COMMANDS = [
    ("runs", "show", "999"),
    ("runs", "fail", "999", "--reason", "gone"),
    ("audit", "999"),
    ("events", "--run", "999"),
]


@pytest.mark.parametrize("command", UNKNOWN_RUN_COMMANDS, ids=" ".join)
def test_an_unknown_run_is_the_callers_mistake_everywhere(
    ledger: Ledger, db_url: str, command: tuple[str, ...]
) -> None:
    ledger.start_run(1, "SOURCE_1")
    result = run(*command, "--db", db_url)
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.stderr == "Error: run 999 does not exist\n"


def test_a_missing_sqlite_file_is_the_callers_mistake(tmp_path: Path) -> None:
    for command in DATABASE_COMMANDS:
        if command[0] in ("migrate", "append") and command[-1] != "--check":
            continue  # these create it
        result = run(*command, "--db", f"sqlite:///{tmp_path / 'typo.db'}")
        assert result.exit_code == EXIT_USAGE, (command, result.output)
        assert f"no SQLite database at {tmp_path / 'typo.db'}" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_sqlite_file_this_user_may_not_open_is_the_environment(tmp_path: Path) -> None:
    """As another user (root reads every file, so a root run forks one that is not)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    run("migrate", "--db", f"sqlite:///{locked / 'in-locked-folder.db'}")
    run("migrate", "--db", f"sqlite:///{tmp_path / 'unreadable.db'}")
    tmp_path.chmod(0o755)
    locked.chmod(0o700)
    (tmp_path / "unreadable.db").chmod(0o600)
    urls = {
        "in-locked-folder.db": f"sqlite:///{locked / 'in-locked-folder.db'}",
        "unreadable.db": f"sqlite:///{tmp_path / 'unreadable.db'}",
        "new-in-locked-folder.db": f"sqlite:///{locked / 'new-in-locked-folder.db'}",
    }
    commands = [("runs", "list"), ("verify",), ("migrate",)]
    try:
        outcomes = as_another_user(
            lambda: [
                (name, run(*command, "--db", url))
                for name, url in urls.items()
                for command in commands
            ]
        )
    finally:
        locked.chmod(0o755)
    for name, code, output in outcomes:
        assert code == EXIT_ENVIRONMENT, output
        assert name in output
        assert "permission denied" in output or "may not open or create it" in output


def test_a_rebuild_lock_this_user_may_not_open_is_the_environment() -> None:
    """SQLite only: MariaDB's rebuild lock is a named lock, not a file. The lock file beside a
    database this user may use, left by another user's rebuild: exit 1 ("rebuild failed"),
    where a file this user may not open is the environment's failure, exit 3."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the rebuild as a user who does not own the lock file")
    # Under /tmp, not pytest's tmp_path: the other user must reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="ledger-lock-"))
    try:
        database = folder / "shared.db"
        url = f"sqlite:///{database}"
        assert run("migrate", "--db", url).exit_code == 0
        assert run("rebuild", "--db", url).exit_code == 0  # leaves the lock file, this user's
        lock = folder / "shared.db.rebuild.lock"
        assert lock.exists()
        folder.chmod(0o777)
        database.chmod(0o666)
        lock.chmod(0o600)
        [(_, code, output)] = as_another_user(lambda: [("rebuild", run("rebuild", "--db", url))])
    finally:
        shutil.rmtree(folder)
    assert code == EXIT_ENVIRONMENT, output
    assert "shared.db.rebuild.lock" in output
    assert "Permission denied" in output


def test_a_read_only_copy_says_how_to_read_it() -> None:
    """An auditor's copy in a folder they may not write: SQLite's WAL mode writes beside the
    file even to read, so every read command fails; the message says so and names the URL that
    reads it, and that URL works."""
    if os.geteuid() != 0:
        pytest.skip("needs root to read the copy as a user who may not write its folder")
    folder = Path(tempfile.mkdtemp(prefix="ledger-copy-"))
    try:
        original = folder / "ledger.db"
        assert run("demo", "--db", f"sqlite:///{original}").exit_code == 0
        # The copy an auditor is handed: the pages as they are (WAL mode included), no -wal
        # or -shm file beside it.
        database = folder / "copy.db"
        with sqlite3.connect(original) as source, sqlite3.connect(database) as copy:
            source.backup(copy)
        assert not (folder / "copy.db-shm").exists()
        url = f"sqlite:///{database}"
        folder.chmod(0o755)
        database.chmod(0o644)
        immutable = f"sqlite:///file:{database}?immutable=1&uri=true"
        results = as_another_user(
            lambda: [
                ("verify", run("verify", "--db", url)),
                ("immutable", run("verify", "--db", immutable)),
                ("runs", run("runs", "list", "--db", immutable)),
            ]
        )
    finally:
        shutil.rmtree(folder)
    (_, code, output), (_, read_code, read_output), (_, runs_code, _) = results
    assert code == EXIT_ENVIRONMENT, output
    assert "immutable=1&uri=true" in output
    assert read_code == 0, read_output
    assert runs_code == 0


def test_a_busy_database_is_the_environment(backend: str, db_url: str) -> None:
    """The database up and busy (no pooled connection free within the pool's wait; on MariaDB
    also a lock held elsewhere past the lock wait) exits 3, the environment's failure, which
    may pass, as a transaction that kept losing to others does: it was exit 1, "a check found
    a problem"."""
    ledger = Ledger.from_url(db_url, create=False, pool_size=1, max_overflow=0, pool_timeout=1)
    try:
        with ledger.engine.connect(), pytest.raises(StorageError) as exhausted:
            ledger.check_schema()
    finally:
        ledger.close()
    assert "QueuePool limit" in str(exhausted.value)
    assert exit_code_for(exhausted.value) == EXIT_ENVIRONMENT
    if backend != "mysql":  # SQLite's CLI waits its 30 s busy timeout: the pool half suffices
        return
    bounded = make_url(db_url).update_query_dict({"lock_wait_timeout": "1"})
    url = bounded.render_as_string(hide_password=False)
    holder = create_engine(db_url)
    try:
        with holder.connect() as conn:
            conn.execute(text("SELECT * FROM ledger_head FOR UPDATE"))
            result = run("append", str(SAMPLE), "--db", url)
            conn.rollback()
    finally:
        holder.dispose()
    assert result.exit_code == EXIT_ENVIRONMENT, result.output
    assert "Lock wait timeout" in result.output
    assert "Traceback" not in result.output
