"""``ledger migrate`` says what it did to a table it did not create (issue 15, item 9), and
``ledger migrate --check`` tells, from any folder, whether a migration is pending (item 13);
on both databases."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from click.testing import CliRunner, Result
from sqlalchemy import Column, Integer, Table, text
from sqlalchemy.exc import DBAPIError

from ledger import Ledger, RunStarted
from ledger.dialects import database_kind, expected_triggers
from ledger.schema import REVISIONS, metadata
from migrations.runner import alembic_config
from service.cli import cli
from tests import support
from tests.forensics.support import seed_legacy_table
from tests.support import stop_process

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def upgrade_to(store: Ledger, revision: str) -> None:
    with store.engine.connect() as conn, conn.begin():
        command.upgrade(alembic_config(conn), revision)


def test_migrate_says_it_moved_a_legacy_table_and_what_comes_next(tmp_path: Path) -> None:
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)  # 39 rows, as the seed's
            pending = run("migrate", "--check", "--db", url)
            assert pending.exit_code == 1, pending.output
            assert "it will rename the legacy ingestion_runs table to ingestion_runs_legacy" in (
                pending.stdout
            )
            result = run("migrate", "--db", url)
            assert result.exit_code == 0, result.output
            assert (
                "renamed the legacy table ingestion_runs (39 row(s)) to ingestion_runs_legacy: "
                "nothing was dropped, and new run ids continue after its highest id."
            ) in result.stdout
            assert (
                "Next: `ledger import-legacy` (with the same --db) adopts its rows into the "
                "ledger." in result.stdout
            )
            again = run("migrate", "--db", url)
            assert again.exit_code == 0
            assert "renamed" not in again.stdout
            imported = run("import-legacy", "--db", url)  # the next step it names works
            assert imported.exit_code == 0, imported.output
            assert '"imported": 39' in imported.stdout


def test_migrate_says_nothing_of_a_legacy_table_when_there_is_none(db_url: str) -> None:
    result = run("migrate", "--db", db_url)
    assert result.exit_code == 0
    assert result.stdout.count("\n") == 1


def test_check_passes_at_head_from_any_folder(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not the repository: `alembic check` needed its alembic.ini
    result = run("migrate", "--check", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(
        f": at {support.head_revision()}, the newest revision: nothing to migrate\n"
    )
    assert list(elsewhere.iterdir()) == []


def test_check_names_the_pending_migrations_and_changes_nothing(tmp_path: Path) -> None:
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            store.engine.connect().close()  # SQLite: an empty file, not a missing one
            empty = run("migrate", "--check", "--db", url)
            assert empty.exit_code == 1, empty.output
            assert (
                f"{len(REVISIONS)} migration(s) pending, from empty to {REVISIONS[-1]}: "
                f"{', '.join(REVISIONS)}; run `ledger migrate`"
            ) in empty.stdout
            upgrade_to(store, REVISIONS[1])
            behind = run("migrate", "--check", "--db", url)
            assert behind.exit_code == 1
            assert (
                f"4 migration(s) pending, from {REVISIONS[1]} to {REVISIONS[-1]}: "
                f"{', '.join(REVISIONS[2:])}; run `ledger migrate`"
            ) in behind.stdout
            assert run("migrate", "--check", "--db", url).stdout == behind.stdout  # unchanged
            assert run("migrate", "--db", url).exit_code == 0
            assert run("migrate", "--check", "--db", url).exit_code == 0


def test_check_finds_a_revision_it_does_not_know_and_drift(ledger: Ledger, db_url: str) -> None:
    extra = Table("drift_probe", metadata, Column("id", Integer, primary_key=True))
    try:
        drift = run("migrate", "--check", "--db", db_url)
    finally:
        metadata.remove(extra)
    assert drift.exit_code == 1
    assert "but its tables differ from this run-ledger's" in drift.stdout
    assert "drift_probe" in drift.stdout
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE ledger_alembic_version SET version_num = '9999_from_the_future'"))
    try:
        newer = run("migrate", "--check", "--db", db_url)
    finally:
        with ledger.engine.begin() as conn:
            conn.execute(
                text("UPDATE ledger_alembic_version SET version_num = :head"),
                {"head": support.head_revision()},
            )
    assert newer.exit_code == 1
    assert "at revision 9999_from_the_future, which this run-ledger does not know" in newer.stdout


def test_migrate_puts_back_the_triggers_a_restored_dump_lacks(ledger: Ledger, db_url: str) -> None:
    """A dump restored without its triggers (`mariadb-dump --skip-triggers`, or by a user
    without TRIGGER, which leaves them out without a word) is at the newest revision with
    ledger_events open to UPDATE. Before: `migrate --check` exit 0, `migrate` "already at",
    and appends went on into a mutable ledger; only `verify` said so."""
    ledger.append([RunStarted(source_id=1, connector_name="restored")])
    with ledger.engine.begin() as conn:  # every one, as the dump left them out
        names = [trigger.name for trigger in expected_triggers(database_kind(conn))]
        for name in names:
            conn.execute(text(f"DROP TRIGGER {name}"))
    triggers = ", ".join(names)
    pending = run("migrate", "--check", "--db", db_url)
    assert pending.exit_code == 1, pending.output
    assert f"but ledger_events lacks its append-only trigger(s) {triggers}" in pending.stdout
    assert "run `ledger migrate` to put them back" in pending.stdout
    migrated = run("migrate", "--db", db_url)
    assert migrated.exit_code == 0, migrated.output
    assert f"put back the missing append-only trigger(s) of ledger_events: {triggers}" in (
        migrated.stdout
    )
    assert run("migrate", "--check", "--db", db_url).exit_code == 0
    verified = run("verify", "--db", db_url)
    assert verified.exit_code == 0, verified.output
    with pytest.raises(DBAPIError, match="append-only"), ledger.engine.begin() as conn:
        conn.execute(text("UPDATE ledger_events SET actor = 'edited'"))
    again = run("migrate", "--db", db_url)
    assert again.exit_code == 0
    assert "put back" not in again.stdout


def test_check_creates_no_database(tmp_path: Path) -> None:
    result = run("migrate", "--check", "--db", f"sqlite:///{tmp_path / 'typo.db'}")
    assert result.exit_code == 2
    assert f"no SQLite database at {tmp_path / 'typo.db'}" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_two_migrates_at_once_both_succeed_one_upgrading(tmp_path: Path) -> None:
    """Every replica of a deployment may run `ledger migrate` as it starts: the second waits
    for the first and finds the newest revision (it failed: a table the first had just
    created on MariaDB, "database is locked" on SQLite)."""
    with support.unmigrated_databases(tmp_path) as databases:
        for url, _store in databases:
            command = [sys.executable, "-m", "service.cli", "migrate", "--db", url]
            processes = [
                subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for _ in range(3)
            ]
            try:
                outputs = [process.communicate(timeout=120) for process in processes]
            finally:
                for process in processes:
                    stop_process(process, signal.SIGKILL)
            assert [process.returncode for process in processes] == [0, 0, 0], outputs
            said = sorted(out.decode().split(": ", 1)[1].strip() for out, _err in outputs)
            assert said == [
                f"already at {REVISIONS[-1]}",
                f"already at {REVISIONS[-1]}",
                f"migrated from empty to {REVISIONS[-1]}",
            ], outputs
