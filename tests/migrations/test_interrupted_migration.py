"""A ``ledger migrate`` that died between two statements, or a ``ledger_alembic_version`` set
back by hand, is finished by the next ``ledger migrate`` (migrations.resumable); on both
databases.

MySQL and MariaDB commit each DDL statement on its own, so a migrate killed half-way through a
revision leaves that revision's first tables made and the revision unrecorded: the next migrate
failed with "table … already exists" on every try. The fault is injected where it happens: the
process stops right after the database ran its k-th schema statement, for every k.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect, text

from forensics.triggers import check_triggers
from ledger import Ledger, SchemaError
from migrations.runner import check, upgrade
from tests import support
from tests.forensics.support import seed_legacy_table
from tests.migrations.support import empty_database

CHANGES = ("CREATE", "ALTER", "RENAME", "INSERT", "DROP")


class Killed(BaseException):
    """The migrating process died here (a BaseException, as SIGKILL is not an error it saw)."""


@contextmanager
def killed_after(ledger: Ledger, statements: int | str) -> Iterator[list[str]]:
    """Stop the migration right after the database ran its ``statements``-th change (or the
    first change that starts with ``statements``, given as text), and close
    its connection under it as the death of its process would (the database then rolls back
    what was not committed; on MySQL each DDL statement committed already)."""
    ran: list[str] = []
    dying: list[Any] = []

    def after(conn: Any, cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith(CHANGES):
            ran.append(statement)
            if len(ran) == statements or (
                isinstance(statements, str) and statement.lstrip().startswith(statements)
            ):
                # The cursor first: SQLite defers closing a connection (and keeps its lock)
                # while a statement of it is open, and the traceback holds this one.
                dying.extend((cursor, conn.connection.dbapi_connection))
                raise Killed(statement)

    event.listen(ledger.engine, "after_cursor_execute", after)
    try:
        yield ran
    finally:
        event.remove(ledger.engine, "after_cursor_execute", after)
        for handle in dying:
            with contextlib.suppress(Exception):  # closed already (the driver's own cleanup)
                handle.close()
        # SQLite keeps a closed connection's lock while any statement of it is unfinalised:
        # a cursor the driver opened for a RETURNING, held by the traceback's frames.
        gc.collect()


def changes_in_a_whole_migration(ledger: Ledger) -> list[str]:
    with killed_after(ledger, 0) as ran:
        upgrade(ledger)
    return ran


def assert_migrated_whole(ledger: Ledger, legacy_rows: int | None) -> None:
    found = check(ledger)
    assert found.current_ok, found
    assert found.current == support.head_revision()
    assert check_triggers(ledger).ok
    with ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM ledger_head")).scalar() == 1
        assert conn.execute(text("SELECT COUNT(*) FROM projection_checkpoints")).scalar() == 1
        tables = set(inspect(conn).get_table_names())
        if legacy_rows is None:
            # Killed between making the projection's ingestion_runs and its indexes, a migrate
            # leaves a table the next cannot tell from an empty legacy one: moved aside, empty.
            if "ingestion_runs_legacy" in tables:
                legacy = conn.execute(text("SELECT COUNT(*) FROM ingestion_runs_legacy")).scalar()
                assert legacy == 0
        else:
            legacy = conn.execute(text("SELECT COUNT(*) FROM ingestion_runs_legacy")).scalar()
            assert legacy == legacy_rows
        assert conn.execute(text("SELECT COUNT(*) FROM ingestion_runs")).scalar() == 0
    run_id = ledger.start_run(1, "SOURCE_1")
    assert ledger.run(run_id) is not None


@contextmanager
def opened(url: str) -> Iterator[Ledger]:
    ledger = Ledger.from_url(url)
    try:
        yield ledger
    finally:
        ledger.close()  # as a process that died: its connections, locks and transaction go


def migrate_killed_then_again(url: str, statements: int | str, with_legacy_table: bool) -> None:
    with opened(url) as dying:
        if with_legacy_table:
            seed_legacy_table(dying)
        with killed_after(dying, statements), pytest.raises(Killed):
            upgrade(dying)
    with opened(url) as ledger:
        upgrade(ledger)
        assert_migrated_whole(ledger, 39 if with_legacy_table else None)


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE ingestion_run_transitions",  # 0002 half-way, the legacy table moved
        "CREATE TABLE schedule_claims",  # 0004 made, unrecorded
        "CREATE TRIGGER ledger_events_no_update",  # 0001: one trigger of two
    ],
)
def test_a_migrate_killed_after_a_table_is_finished_by_the_next(
    tmp_path: Path, backend: str, statement: str
) -> None:
    with empty_database(tmp_path, backend) as url:
        migrate_killed_then_again(url, statement, with_legacy_table=True)


@pytest.mark.slow
@pytest.mark.parametrize("with_legacy_table", [False, True], ids=["new", "legacy-table"])
def test_a_migrate_killed_after_any_statement_is_finished_by_the_next(
    tmp_path: Path, backend: str, with_legacy_table: bool
) -> None:
    if backend == "sqlite":
        # Its DDL is transactional: a kill anywhere leaves nothing of the migration (the
        # named kill points above show the next migrate then runs whole).
        pytest.skip("SQLite rolls an interrupted migrate back whole; MariaDB is the case")
    with empty_database(tmp_path, backend) as url, opened(url) as ledger:
        if with_legacy_table:
            seed_legacy_table(ledger)
        ran = changes_in_a_whole_migration(ledger)
    assert len(ran) > 20  # every table, index, trigger and row of every revision
    # The legacy table matters to the first two revisions only (0002 moves it aside).
    last = len(ran)
    if with_legacy_table:
        last = next(i for i, s in enumerate(ran, 1) if "CREATE TABLE source_records" in s)
    for statements in range(1, last):
        with empty_database(tmp_path, backend) as url:
            migrate_killed_then_again(url, statements, with_legacy_table)


def test_a_version_set_back_by_hand_is_migrated_forward(ledger: Ledger) -> None:
    for revision in (None, "0001_event_store", "0003_source_records"):
        with ledger.engine.begin() as conn:
            conn.execute(text("DELETE FROM ledger_alembic_version"))
            if revision is not None:
                conn.execute(
                    text("INSERT INTO ledger_alembic_version VALUES (:r)"), {"r": revision}
                )
        result = upgrade(ledger)
        assert (result.before, result.after) == (revision, support.head_revision())
        assert result.legacy_rows_moved is None  # the projection's own table stays where it is
    assert_migrated_whole(ledger, legacy_rows=None)


def test_a_table_of_another_application_under_a_ledger_name_is_refused(
    tmp_path: Path, backend: str
) -> None:
    with empty_database(tmp_path, backend) as url, opened(url) as ledger:
        with ledger.engine.begin() as conn:
            conn.execute(text("CREATE TABLE schedule_claims (id INTEGER PRIMARY KEY, job TEXT)"))
        refused = r"cannot migrate .*: table schedule_claims exists but"
        with pytest.raises(SchemaError, match=refused):
            upgrade(ledger)
        with ledger.engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("schedule_claims")}
        assert columns == {"id", "job"}  # left as it was


# Tables with every column of the ledger's schedule_claims, by name, that are not it: kept as
# it, the times would be text (a claim's tick compared as a string) or two serve processes
# would both win the INSERT that claims a tick and run it twice.
LOOKALIKES = {
    "times-as-text": "CREATE TABLE schedule_claims (job_id VARCHAR(200) NOT NULL, "
    "tick_at VARCHAR(40) NOT NULL, claimed_by VARCHAR(200) NOT NULL, "
    "claimed_at VARCHAR(40) NOT NULL, PRIMARY KEY (job_id, tick_at))",
    "no-primary-key": "CREATE TABLE schedule_claims (job_id VARCHAR(200) NOT NULL, "
    "tick_at DATETIME NOT NULL, claimed_by VARCHAR(200) NOT NULL, claimed_at DATETIME NOT NULL)",
}


@pytest.mark.parametrize("lookalike", sorted(LOOKALIKES))
def test_a_table_with_the_ledger_column_names_but_not_its_shape_is_refused(
    tmp_path: Path, backend: str, lookalike: str
) -> None:
    """``resumable.create_table`` compared the column names only: a table of another
    application with the same names but other types, or without the primary key, was kept as
    the ledger's own, and migrate went on to the newest revision over it."""
    with empty_database(tmp_path, backend) as url, opened(url) as ledger:
        with ledger.engine.begin() as conn:
            conn.execute(text(LOOKALIKES[lookalike]))
        with pytest.raises(SchemaError, match=r"table schedule_claims exists but") as refused:
            upgrade(ledger)
        said = str(refused.value)
        if lookalike == "times-as-text":
            assert "tick_at is VARCHAR(40), not a date and time" in said
            assert "claimed_at is VARCHAR(40)" in said
            assert "job_id" not in said
        else:
            assert "primary key" in said, said
        assert check(ledger).current != support.head_revision()  # not recorded as migrated
        with ledger.engine.connect() as conn:
            assert inspect(conn).get_pk_constraint("schedule_claims")["constrained_columns"] == (
                [] if lookalike == "no-primary-key" else ["job_id", "tick_at"]
            )  # left as it was
