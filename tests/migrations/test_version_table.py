"""run-ledger's schema revision in a table of its own (``ledger_alembic_version``), so that the
ledger shares a database with an application migrated by Alembic too: the application whose
legacy ``ingestion_runs`` the projection replaces lives there. Both kept their revision in
``alembic_version``: ``ledger migrate`` refused such a database ("Can't locate revision
identified by 'ae1027a6acf' (was it migrated by a newer run-ledger?)", exit 1), and an
application migrated after run-ledger would have refused run-ledger's revision the same way.
A ledger migrated by a release that kept its revision in ``alembic_version`` is read as it is,
and ``ledger migrate`` moves the revision, a move that a cut can interrupt at any step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Connection, inspect, text

from ledger import Ledger
from ledger.schema import REVISIONS, SCHEMA_REVISION
from migrations.runner import alembic_config, check, upgrade
from service.cli import cli
from tests.forensics.support import seed_legacy_table
from tests.migrations.support import empty_database

# A revision of another application's Alembic migrations (Alembic makes 12 hex digits).
ITS_REVISION = "ae1027a6acf2"
REPOSITORY = Path(__file__).resolve().parents[2]


def make_shared_table(conn: Connection, *revisions: str) -> None:
    """``alembic_version`` as Alembic makes it, holding ``revisions``."""
    conn.execute(
        text(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
    )
    for revision in revisions:
        conn.execute(text("INSERT INTO alembic_version VALUES (:r)"), {"r": revision})


def versions(conn: Connection, table: str) -> list[str] | None:
    """The rows of a version table (None: no such table)."""
    if not inspect(conn).has_table(table):
        return None
    return sorted(conn.execute(text(f"SELECT version_num FROM {table}")).scalars())


def as_an_earlier_release_left_it(ledger: Ledger, revision: str) -> None:
    """The database at ``revision``, kept in ``alembic_version`` as releases before
    2026-12-07 kept it."""
    with ledger.engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)
    with ledger.engine.begin() as conn:
        conn.execute(text("DROP TABLE ledger_alembic_version"))
    with ledger.engine.begin() as conn:
        make_shared_table(conn, revision)


def migrate(url: str, *options: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["migrate", *options, "--db", url])
    return result.exit_code, result.output


def test_migrate_leaves_another_applications_alembic_version_as_it_is(
    tmp_path: Path, backend: str
) -> None:
    with empty_database(tmp_path, backend) as url:
        ledger = Ledger.from_url(url)
        try:
            with ledger.engine.begin() as conn:
                make_shared_table(conn, ITS_REVISION)
            assert migrate(url) == (0, f"{url}: migrated from empty to {SCHEMA_REVISION}\n")
            assert migrate(url, "--check")[0] == 0
            ledger.check_schema()
            with ledger.engine.connect() as conn:
                assert versions(conn, "alembic_version") == [ITS_REVISION]
                assert versions(conn, "ledger_alembic_version") == [SCHEMA_REVISION]
                # What the application's own Alembic reads: its revision, as before.
                assert MigrationContext.configure(conn).get_current_revision() == ITS_REVISION
            assert migrate(url) == (0, f"{url}: already at {SCHEMA_REVISION}\n")
        finally:
            ledger.close()


@pytest.mark.parametrize("revision", [REVISIONS[3], SCHEMA_REVISION])
def test_a_ledger_an_earlier_release_migrated_is_read_and_its_revision_moved(
    tmp_path: Path, backend: str, revision: str
) -> None:
    with empty_database(tmp_path, backend) as url:
        ledger = Ledger.from_url(url)
        try:
            as_an_earlier_release_left_it(ledger, revision)
            if revision == SCHEMA_REVISION:
                ledger.check_schema()  # the library reads it where it is: no migrate needed
            code, said = migrate(url, "--check")
            assert code == 1
            if revision == SCHEMA_REVISION:
                assert "kept in the shared table alembic_version" in said
            code, said = migrate(url)
            assert code == 0, said
            if revision == SCHEMA_REVISION:
                assert f"already at {SCHEMA_REVISION}" in said
            else:
                assert f"migrated from {revision} to {SCHEMA_REVISION}" in said
            assert "moved the schema's revision from the shared table alembic_version" in said
            with ledger.engine.connect() as conn:
                assert versions(conn, "alembic_version") is None  # it was the ledger's alone
                assert versions(conn, "ledger_alembic_version") == [SCHEMA_REVISION]
            found = check(ledger)
            assert found.current_ok, found
            ledger.check_schema()
        finally:
            ledger.close()


def test_a_check_of_a_revision_not_yet_moved_names_the_legacy_table_the_upgrade_renames(
    tmp_path: Path, backend: str
) -> None:
    # A run-ledger before 2026-12-07 created its event store in the database of the legacy
    # ingestion_runs and stopped there: the upgrade both moves the revision and renames it.
    with empty_database(tmp_path, backend) as url:
        ledger = Ledger.from_url(url)
        try:
            as_an_earlier_release_left_it(ledger, REVISIONS[0])
            seed_legacy_table(ledger)
            found = check(ledger)
            assert found.version_to_move
            assert found.legacy_table_to_move, found
            code, said = migrate(url, "--check")
            assert code == 1
            assert "it will rename the legacy ingestion_runs table to ingestion_runs_legacy" in said
            code, said = migrate(url)
            assert code == 0, said
            assert "renamed the legacy table ingestion_runs (39 row(s))" in said
        finally:
            ledger.close()


@pytest.mark.parametrize(
    ("own", "shared", "shared_after"),
    [
        # Cut after its own table was made, before the revision was written into it.
        ([], [SCHEMA_REVISION], None),
        # Cut after the revision was written, before it was taken out of alembic_version.
        ([SCHEMA_REVISION], [SCHEMA_REVISION], None),
        # Cut after it was taken out, before the empty alembic_version was dropped.
        ([SCHEMA_REVISION], [], []),
        # Another application's revision beside run-ledger's: only run-ledger's is moved.
        (None, [SCHEMA_REVISION, ITS_REVISION], [ITS_REVISION]),
    ],
)
def test_a_move_cut_short_is_finished_by_the_next_migrate(
    tmp_path: Path,
    backend: str,
    own: list[str] | None,
    shared: list[str],
    shared_after: list[str] | None,
) -> None:
    """Each state a cut between two of the move's statements leaves (on MySQL/MariaDB each
    CREATE and DROP commits on its own): the next migrate ends with the revision in the
    ledger's own table, once."""
    with empty_database(tmp_path, backend) as url:
        ledger = Ledger.from_url(url)
        try:
            upgrade(ledger)
            with ledger.engine.begin() as conn:
                conn.execute(text("DELETE FROM ledger_alembic_version"))
                for revision in own or []:
                    conn.execute(
                        text("INSERT INTO ledger_alembic_version VALUES (:r)"), {"r": revision}
                    )
            if own is None:
                with ledger.engine.begin() as conn:
                    conn.execute(text("DROP TABLE ledger_alembic_version"))
            with ledger.engine.begin() as conn:
                make_shared_table(conn, *shared)
            assert migrate(url)[0] == 0
            with ledger.engine.connect() as conn:
                assert versions(conn, "ledger_alembic_version") == [SCHEMA_REVISION]
                # An empty alembic_version is dropped only by the move that emptied it.
                assert versions(conn, "alembic_version") == shared_after
            assert check(ledger).current_ok
        finally:
            ledger.close()


def test_a_move_cut_after_its_table_was_made_is_read_at_its_revision_meanwhile(
    tmp_path: Path, backend: str
) -> None:
    """On MariaDB the move's CREATE TABLE commits on its own: a migrate killed (or a role
    without INSERT refused) right after it left ``ledger_alembic_version`` empty and the
    revision in ``alembic_version``. Every process then read "schema at nothing (empty
    database)" of a ledger holding events and refused to write; ``migrate --check`` listed six
    revisions pending "from empty"; the next migrate said "migrated from empty". The same state
    is what every other process sees while a migrate moves the revision (until its DROP
    commits the rest). Now the revision is read where it still is."""
    with empty_database(tmp_path, backend) as url:
        ledger = Ledger.from_url(url)
        try:
            as_an_earlier_release_left_it(ledger, SCHEMA_REVISION)
            with ledger.engine.begin() as conn:
                conn.execute(
                    text(
                        "CREATE TABLE ledger_alembic_version (version_num VARCHAR(32) NOT NULL, "
                        "CONSTRAINT ledger_alembic_version_pkc PRIMARY KEY (version_num))"
                    )
                )
            ledger.check_schema()
            code, said = migrate(url, "--check")
            assert code == 1
            assert "kept in the shared table alembic_version" in said, said
            code, said = migrate(url)
            assert code == 0, said
            assert said.startswith(f"{url}: already at {SCHEMA_REVISION}\n"), said
            with ledger.engine.connect() as conn:
                assert versions(conn, "ledger_alembic_version") == [SCHEMA_REVISION]
                assert versions(conn, "alembic_version") is None
        finally:
            ledger.close()


@pytest.mark.parametrize(
    "create",
    [
        "CREATE TABLE alembic_version (id INTEGER PRIMARY KEY, version VARCHAR(40))",
        "CREATE TABLE alembic_version (version_number VARCHAR(32) NOT NULL)",
    ],
)
def test_an_alembic_version_of_another_shape_is_another_applications(
    tmp_path: Path, backend: str, create: str
) -> None:
    """A table named ``alembic_version`` without Alembic's ``version_num`` column cannot hold
    run-ledger's revision: migrate failed ("Unknown column 'alembic_version.version_num'",
    exit 1), and ``migrate --check`` after it. Now it is left alone, as another application's."""
    with empty_database(tmp_path, backend) as url:
        ledger = Ledger.from_url(url)
        try:
            with ledger.engine.begin() as conn:
                conn.execute(text(create))
            assert migrate(url) == (0, f"{url}: migrated from empty to {SCHEMA_REVISION}\n")
            assert migrate(url, "--check")[0] == 0
            ledger.check_schema()
            with ledger.engine.connect() as conn:
                assert inspect(conn).has_table("alembic_version")
                assert versions(conn, "ledger_alembic_version") == [SCHEMA_REVISION]
        finally:
            ledger.close()


def alembic_command_line(url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """The ``alembic`` command as a developer runs it from the repository."""
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"db={url}", *arguments],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_alembic_command_line_refuses_a_revision_not_yet_moved(
    tmp_path: Path, backend: str
) -> None:
    """Alembic reads ``ledger_alembic_version`` only: run from the repository on a ledger of an
    earlier release, ``alembic current`` said nothing, and ``alembic upgrade head`` ran every
    revision from the first again over the existing tables (kept only because each step is
    resumable) and wrote a second revision beside the first. Now it is refused, naming
    ``ledger migrate``, and changes nothing."""
    with empty_database(tmp_path, backend) as url:
        ledger = Ledger.from_url(url)
        try:
            as_an_earlier_release_left_it(ledger, REVISIONS[3])
            for arguments in (("current",), ("upgrade", "head")):
                done = alembic_command_line(url, *arguments)
                assert done.returncode != 0, done
                assert "run `ledger migrate`" in done.stderr + done.stdout, done
                assert "Traceback" not in done.stderr, done.stderr
            with ledger.engine.connect() as conn:
                assert versions(conn, "ledger_alembic_version") is None
                assert versions(conn, "alembic_version") == [REVISIONS[3]]
            assert migrate(url)[0] == 0
            done = alembic_command_line(url, "current")
            assert done.returncode == 0, done
            assert SCHEMA_REVISION in done.stdout, done
        finally:
            ledger.close()
