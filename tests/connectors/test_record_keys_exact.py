"""Source record keys are compared exactly on both databases (revision 0006).

On MariaDB the key column was ``utf8mb4_bin``, a PAD SPACE collation: "a" and "a " were one key,
so a connector that reported both had the second refused by the unique key, retried as a
conflict and failed, where SQLite kept two records. Revision 0006 gives the column a binary NO
PAD collation; a database migrated before it keeps its records and takes the new keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alembic import command
from click.testing import CliRunner, Result
from sqlalchemy import select

from connectors import RecordStore
from connectors.schema import source_records
from ledger import Ledger
from migrations.runner import alembic_config, upgrade
from service.cli import cli
from tests import support

KEYS = ["a", "a ", "a  ", "A", "a\t"]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def stored(ledger: Ledger, source_id: int) -> dict[str, str]:
    with ledger.engine.connect() as conn:
        query = select(source_records.c.external_id, source_records.c.payload).where(
            source_records.c.source_id == source_id
        )
        return {row.external_id: row.payload for row in conn.execute(query)}


def test_keys_that_differ_only_by_trailing_spaces_are_records_of_their_own(
    ledger: Ledger,
) -> None:
    store = RecordStore(ledger)
    counts = store.upsert(7, [(key, {"key": key}) for key in KEYS])
    assert (counts.created, counts.updated, counts.skipped) == (5, 0, 0)
    assert stored(ledger, 7) == {
        key: json.dumps({"key": key}, separators=(",", ":")) for key in KEYS
    }
    # Each key finds its own record again: "a " is not taken for "a" by the lookup either.
    again = store.upsert(7, [("a ", {"key": "a "}), ("a", {"key": "changed"})])
    assert (again.created, again.updated, again.skipped) == (0, 1, 1)
    assert stored(ledger, 7)["a"] == '{"key":"changed"}'
    assert stored(ledger, 7)["a "] == '{"key":"a "}'


def test_a_database_migrated_before_keeps_its_records_and_takes_the_new_keys(
    tmp_path: Path,
) -> None:
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            with store.engine.connect() as conn, conn.begin():
                command.upgrade(alembic_config(conn), "0005_rebuild_claims")
            records = RecordStore(store)
            assert records.upsert(3, [("a", {"v": 1}), ("b ", {"v": 2})]).created == 2
            result = upgrade(store.engine, url)
            assert (result.before, result.after) == ("0005_rebuild_claims", support.head_revision())
            assert upgrade(store.engine, url).changed is False  # again: nothing to do
            counts = records.upsert(3, [("a", {"v": 1}), ("a ", {"v": 3}), ("b", {"v": 4})])
            assert (counts.created, counts.updated, counts.skipped) == (2, 0, 1), url
            assert stored(store, 3) == {
                "a": '{"v":1}',
                "a ": '{"v":3}',
                "b ": '{"v":2}',
                "b": '{"v":4}',
            }


def set_key_collation(ledger: Ledger, collation: str) -> None:
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql(
            "ALTER TABLE source_records MODIFY external_id VARCHAR(255) "
            f"CHARACTER SET utf8mb4 COLLATE {collation} NOT NULL"
        )


def test_migrate_check_sees_a_key_column_that_pads_again(ledger: Ledger) -> None:
    """The drift check takes the collation revision 0006 gives as the column's shape: a key
    column set back to the PAD SPACE collation by hand is a difference to report."""
    if ledger.is_sqlite:
        pytest.skip("SQLite has no collations to set back")
    assert run("migrate", "--check", "--db", ledger.url).exit_code == 0
    set_key_collation(ledger, "utf8mb4_bin")
    try:
        result = run("migrate", "--check", "--db", ledger.url)
    finally:
        set_key_collation(ledger, "utf8mb4_nopad_bin")  # the session's database, for the next
    assert result.exit_code == 1, result.output
    assert "source_records" in result.stdout, result.stdout
    assert "external_id" in result.stdout, result.stdout
