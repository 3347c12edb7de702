"""The projection's named locks on MySQL/MariaDB (issue 12, item 4): names that are unique and
at most 64 characters whatever the database is called, so a rebuild never waits on itself and
two ledgers on one server never share a lock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import make_url

from ledger import Ledger, RunFinished
from ledger.dialects import LOCK_NAME_MAX, lock_name, lock_name_for
from projections import ProjectionBusyError, Projector, rebuild
from projections.dialects import exclusive_rebuild
from projections.schema import PROJECTION_NAME
from service.cli import cli
from tests import support
from tests.projection_support import replayed_rows, table_rows

REBUILD = f"{PROJECTION_NAME}.rebuild"
LONG_NAMES = [
    "d" * 64,
    "ledger_" + "é" * 57,  # MariaDB identifiers may be any Unicode: 64 characters, 121 bytes
    'back`tick\'s "quoted" name' + "x" * 38,
    "日本語の台帳",
]


@pytest.mark.parametrize("database", [*LONG_NAMES, "", "ledger"])
def test_the_rebuild_and_projector_locks_differ_and_fit_for_any_database_name(
    database: str,
) -> None:
    names = {lock_name_for(database, projection) for projection in (PROJECTION_NAME, REBUILD)}
    assert len(names) == 2, "the rebuild would wait on its own projector lock"
    for name in names:
        assert len(name) <= LOCK_NAME_MAX
        assert name.isascii()
        assert name.isprintable()
        assert name.startswith("run_ledger.")


def test_databases_sharing_a_long_prefix_never_share_a_lock() -> None:
    shared = "p" * 63
    databases = [shared + "a", shared + "b", shared, "p" * 52 + "q" * 12]
    names = {lock_name_for(db, p) for db in databases for p in (PROJECTION_NAME, REBUILD)}
    assert len(names) == 2 * len(databases)


def test_a_short_database_name_stays_readable_in_the_lock_name() -> None:
    assert lock_name_for("ledger", PROJECTION_NAME).endswith(f".{PROJECTION_NAME}.ledger")


@pytest.fixture(params=["plain", "hostile"])
def long_named_database(backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated MariaDB database whose name has 64 characters, the server's maximum: plain,
    or with a backtick, quotes, spaces and non-ASCII letters in it."""
    base = support.mysql_base_url()
    if backend != "mysql" or base is None:
        pytest.skip("named locks are MySQL/MariaDB's (SQLite locks the file)")
    unique = uuid.uuid4().hex
    if request.param == "plain":
        name = f"ledger_test_{unique}".ljust(64, "x")
    else:
        name = f"led`ger 'test\" é日本 {unique}".ljust(64, "z")
    assert len(name) == 64
    url = support.create_mysql_database(base, name)
    try:
        support.migrate(url)
        yield url
    finally:
        support.drop_mysql_database(url)


def test_rebuild_and_projector_run_on_a_database_with_a_64_character_name(
    long_named_database: str,
) -> None:
    ledger = Ledger.from_url(long_named_database)
    try:
        with ledger.engine.connect() as conn:
            assert lock_name(conn, PROJECTION_NAME) != lock_name(conn, REBUILD)
        runs = [ledger.start_run(1, f"SOURCE_{i}") for i in range(3)]
        ledger.append([RunFinished(run_id=runs[0], status="success")])
        assert Projector(ledger).run_once() == 4
        # Before the fix both locks were this database's name cut at 64 characters: the
        # rebuild waited 60 s on the lock it held itself, then failed.
        result = CliRunner().invoke(
            cli, ["rebuild", "--db", long_named_database], catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        ledger.append([RunFinished(run_id=runs[1], status="failed")])
        assert Projector(ledger).run_once() == 1
        assert table_rows(ledger) == replayed_rows(ledger)
    finally:
        ledger.close()


def test_a_second_rebuild_is_refused_naming_the_connection_that_holds_the_lock(
    backend: str, ledger: Ledger, db_url: str
) -> None:
    if backend != "mysql":
        pytest.skip("named locks are MySQL/MariaDB's (SQLite locks the file)")
    with ledger.engine.connect() as conn:
        server_wait = int(conn.exec_driver_sql("SELECT @@SESSION.wait_timeout").scalar_one())
    with exclusive_rebuild(ledger.engine, PROJECTION_NAME):
        with ledger.engine.connect() as conn:
            holder = conn.exec_driver_sql(
                "SELECT IS_USED_LOCK(%s)", (lock_name(conn, REBUILD),)
            ).scalar_one()
        result = CliRunner().invoke(cli, ["rebuild", "--db", db_url], catch_exceptions=False)
        assert result.exit_code == 1, result.output
        assert f"KILL {holder}" in result.stderr
    # The lock's session, exempt from the idle bound while it held the lock, went back to the
    # pool with its own wait_timeout again.
    for _ in range(3):
        with ledger.engine.connect() as conn:
            assert int(conn.exec_driver_sql("SELECT @@SESSION.wait_timeout").scalar_one()) == (
                server_wait
            )


def test_a_second_rebuild_at_once_is_refused(ledger: Ledger) -> None:
    ledger.start_run(1, "SOURCE_1")
    with (
        exclusive_rebuild(ledger.engine, "ingestion_runs"),
        pytest.raises(ProjectionBusyError, match="another rebuild"),
    ):
        rebuild(ledger)
    assert rebuild(ledger).events == 1  # and works once the first is done


def test_a_sqlite_file_has_one_rebuild_lock_whatever_its_url(
    tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lock file was named after the URL's text: a URI's (file:/abs/ledger.db) named a
    # folder "file:" that does not exist (every rebuild failed), or a file other than the
    # plain URL's, so two rebuilds of one database did not exclude each other.
    plain = support.sqlite_copy(sqlite_template, tmp_path)
    path = Path(make_url(plain).database or "")
    monkeypatch.chdir(tmp_path)
    for url in (f"sqlite:///file:{path}?uri=true", f"sqlite:///file:{path.name}?uri=true"):
        first, second = Ledger.from_url(plain), Ledger.from_url(url)
        try:
            assert rebuild(second).events == 0
            with (
                exclusive_rebuild(first, PROJECTION_NAME),
                pytest.raises(ProjectionBusyError, match="another rebuild"),
            ):
                rebuild(second)
        finally:
            first.close()
            second.close()
    assert sorted(item.name for item in tmp_path.iterdir() if "lock" in item.name) == [
        f"{path.name}.rebuild.lock"
    ]
