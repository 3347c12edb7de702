"""``ledger demo``, on SQLite and on MariaDB: from an empty folder it makes a demo database
whose report passes, and a second run appends nothing; it refuses, leaving every table as it
was, a database that holds anything but its own runs (someone else's run, a non-demo write to
a demo database, other tables, a legacy table), with the password masked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time
from rich.cells import cell_len
from sqlalchemy import func, inspect, select, table

from ledger import Ledger
from ledger.schema import SCHEMA_REVISION
from ledger.urls import mask_url
from migrations.runner import upgrade
from service.demo import DemoRefusedError, run_demo
from tests import support
from tests.forensics.support import run, seed_legacy_table
from tests.projection_support import table_rows


def test_the_demo_from_an_empty_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, db_url: str
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["demo"] if backend == "sqlite" else ["demo", "--db", db_url]
    result = run(*args)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    out = result.stdout  # type: ignore[attr-defined]
    assert "the sweeper timed run 4 out" in out
    assert "Result: 6/6 conditions pass" in out
    assert "ledger audit 4" in out
    if backend == "sqlite":
        assert (tmp_path / "ledger-demo.db").exists()
    store = Ledger.from_url(db_url if backend == "mysql" else "sqlite:///ledger-demo.db")
    try:
        rows = table_rows(store)
        assert [rows[i]["status"] for i in (1, 2, 3, 4)] == [
            "success",
            "partial",
            "failed",
            "failed",
        ]
        assert rows[1]["recordsCreated"] > 0
        head = store.head()
        again = run(*args)
        assert again.exit_code == 0  # type: ignore[attr-defined]
        assert "already ran" in again.stdout  # type: ignore[attr-defined]
        # One blank line before the report, as on the first run (there were two).
        first, blank, report = again.stdout.splitlines()[:3]  # type: ignore[attr-defined]
        assert ("already ran" in first, blank, report) == (True, "", "INGESTION_RUNS PROOF REPORT")
        assert store.head() == head  # idempotent: nothing appended
    finally:
        store.close()


def test_the_demo_fits_80_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its numbered story ran to 200 characters a line, wrapped by the terminal at the margin.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")
    result = run("demo")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    out = result.stdout  # type: ignore[attr-defined]
    assert [line for line in out.splitlines() if cell_len(line) > 80] == []
    assert "(success, non-zero\n   counters)\n" in out  # a hanging indent, as the report's


def store_snapshot(store: Ledger) -> dict[str, object]:
    """Every table with its row count, and the head: what a refused demo must leave as it was."""
    with store.engine.connect() as conn:
        names = sorted(inspect(conn).get_table_names())
        counts = {
            name: conn.execute(select(func.count()).select_from(table(name))).scalar_one()
            for name in names
        }
    head = store.head() if "ledger_head" in counts else None
    return {"tables": counts, "head": head}


def test_the_demo_refuses_a_ledger_that_holds_someone_elses_run(
    ledger: Ledger, db_url: str, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It migrated any database, wrote demo runs next to real ones and swept them globally."""
    monkeypatch.chdir(tmp_path)
    with freeze_time(datetime.now(UTC) - timedelta(hours=3)):
        ledger.start_run(1, "stations")  # a real run, open and silent: a global sweep took it
    before = store_snapshot(ledger)
    result = run("demo", "--db", db_url)
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    [line] = result.stderr.splitlines()  # type: ignore[attr-defined]
    assert line.startswith(f"Error: the demo will not write to {mask_url(db_url)}: it holds")
    assert "events other than the demo's (run 1, 'stations')" in line
    assert store_snapshot(ledger) == before
    assert ledger.run(1).state == "open"  # type: ignore[union-attr]


def test_the_demo_refuses_a_demo_database_someone_else_wrote_to(
    ledger: Ledger, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run("demo", "--db", db_url).exit_code == 0  # type: ignore[attr-defined]
    assert run("demo", "--db", db_url).exit_code == 0  # type: ignore[attr-defined]
    ledger.start_run(9, "demo-stations")  # a demo name, but not a demo run (no trigger)
    before = store_snapshot(ledger)
    result = run("demo", "--db", db_url)
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    assert "(run 5, 'demo-stations')" in result.stderr  # type: ignore[attr-defined]
    assert store_snapshot(ledger) == before


def test_the_demo_tells_its_own_alembic_version_from_an_applications(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A demo database an earlier release made kept its revision in ``alembic_version``: the
    demo runs on it again. An ``alembic_version`` holding another application's revision says
    the database is that application's: refused, nothing written. (Databases of its own: the
    tables it leaves are no other test's.)"""
    monkeypatch.chdir(tmp_path)
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            assert run("demo", "--db", url).exit_code == 0  # type: ignore[attr-defined]
            with store.engine.begin() as conn:
                conn.exec_driver_sql("DROP TABLE ledger_alembic_version")
            with store.engine.begin() as conn:
                conn.exec_driver_sql(
                    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"
                )
                conn.exec_driver_sql(f"INSERT INTO alembic_version VALUES ('{SCHEMA_REVISION}')")
            again = run("demo", "--db", url)
            assert again.exit_code == 0, again.output  # type: ignore[attr-defined]
            with store.engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32))")
                conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('ae1027a6acf2')")
            head = store.head()
            refused = run("demo", "--db", url)
            assert refused.exit_code == 2  # type: ignore[attr-defined]
            assert "not run-ledger's (alembic_version)" in refused.stderr  # type: ignore[attr-defined]
            assert store.head() == head


def test_the_demo_refusal_masks_the_password(ledger: Ledger) -> None:
    ledger.start_run(1, "stations")
    disguised = Ledger(ledger.engine, "mysql+pymysql://ops:hunter22secret@db.example:3306/prod")
    with pytest.raises(DemoRefusedError) as refused:
        run_demo(disguised)
    assert "mysql+pymysql://ops:***@db.example:3306/prod" in str(refused.value)
    assert "hunter22secret" not in str(refused.value)


def test_the_demo_refuses_a_database_that_is_not_empty_before_migrating_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            with store.engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE app_users (id INTEGER PRIMARY KEY)")
            before = store_snapshot(store)
            result = run("demo", "--db", url)
            assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
            assert "holds tables but no ledger (app_users)" in result.stderr  # type: ignore[attr-defined]
            assert store_snapshot(store) == before  # not migrated
            with store.engine.begin() as conn:
                conn.exec_driver_sql("DROP TABLE app_users")
            seed_legacy_table(store)  # a legacy ingestion_runs, that migrate would move
            before = store_snapshot(store)
            assert run("demo", "--db", url).exit_code == 2  # type: ignore[attr-defined]
            assert store_snapshot(store) == before
            upgrade(store.engine, url)  # now ingestion_runs_legacy, waiting for an import
            before = store_snapshot(store)
            result = run("demo", "--db", url)
            assert result.exit_code == 2  # type: ignore[attr-defined]
            assert "legacy ingestion_runs" in result.stderr  # type: ignore[attr-defined]
            assert store_snapshot(store) == before
