"""The live ingestion_runs has exactly the legacy shape (projections/ingestion_runs.mysql.sql)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from ledger import Ledger
from migrations.runner import upgrade
from projections import Projector, rebuild
from tests import support
from tests.projection_support import table_rows

LEGACY_SQL = Path(__file__).resolve().parents[2] / "projections" / "ingestion_runs.mysql.sql"
COLUMN = re.compile(
    r"^\s*(?P<name>\w+)\s+(?P<type>INT\(11\)|VARCHAR\(\d+\)|TIMESTAMP|TEXT|JSON|ENUM\([^)]*\))"
    r"\s+(?P<null>NOT NULL|NULL)(?:\s+(?:AUTO_INCREMENT|DEFAULT (?P<default>\S+)))?",
    re.IGNORECASE,
)
KEY = re.compile(r"^\s*KEY (?P<name>\w+) \((?P<column>\w+)\)")


def legacy_shape() -> tuple[list[tuple[str, str, bool, str | None]], dict[str, list[str]]]:
    columns = []
    indexes = {"PRIMARY": ["id"]}
    for line in LEGACY_SQL.read_text().splitlines():
        if line.strip().startswith("--"):
            continue
        if match := COLUMN.match(line):
            default = match["default"]
            if default is not None:
                default = default.rstrip(",").strip("'")
            columns.append(
                (match["name"], match["type"].lower(), match["null"].upper() == "NULL", default)
            )
        elif match := KEY.match(line):
            indexes[match["name"]] = [match["column"]]
    return columns, indexes


def test_the_shipped_legacy_definition_parses() -> None:
    columns, indexes = legacy_shape()
    assert len(columns) == 16
    assert len(indexes) == 5


def live_shape(
    ledger: Ledger,
) -> tuple[list[tuple[str, str, bool, str | None]], dict[str, list[str]]]:
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT "
                "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                "AND TABLE_NAME = 'ingestion_runs' ORDER BY ORDINAL_POSITION"
            )
        ).all()
        index_rows = conn.execute(
            text(
                "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'ingestion_runs' "
                "ORDER BY INDEX_NAME, SEQ_IN_INDEX"
            )
        ).all()
    columns = []
    for name, column_type, nullable, default in rows:
        # MariaDB reports JSON as its alias LONGTEXT (with a json_valid CHECK) and the
        # CURRENT_TIMESTAMP default as a function call; both are the same definition.
        kind = "json" if column_type == "longtext" else column_type
        if default == "current_timestamp()":
            default = "CURRENT_TIMESTAMP"
        if default == "NULL" or (default is None and nullable == "YES"):
            default = "NULL" if nullable == "YES" else None
        columns.append(
            (name, kind, nullable == "YES", None if default is None else default.strip("'"))
        )
    indexes: dict[str, list[str]] = {}
    for index, column in index_rows:
        indexes.setdefault(index, []).append(column)
    return columns, indexes


def test_mariadb_catalogue_matches_the_legacy_table(ledger: Ledger, backend: str) -> None:
    if backend != "mysql":
        pytest.skip("the legacy shape is a MySQL/MariaDB catalogue")
    expected_columns, expected_indexes = legacy_shape()
    live_columns, live_indexes = live_shape(ledger)
    normalised_expected = [
        (name, kind, nullable, "NULL" if nullable and default is None else default)
        for name, kind, nullable, default in expected_columns
    ]
    assert live_columns == normalised_expected
    assert live_indexes == expected_indexes
    rebuild(ledger)  # a rebuilt table keeps the shape
    assert live_shape(ledger) == (live_columns, live_indexes)


def test_sqlite_keeps_names_indexes_and_the_status_check(ledger: Ledger, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite's nearest equivalent")
    expected_columns, expected_indexes = legacy_shape()
    inspector = inspect(ledger.engine)
    columns = inspector.get_columns("ingestion_runs")
    assert [c["name"] for c in columns] == [name for name, *_ in expected_columns]
    assert [c["nullable"] for c in columns] == [nullable for _, _, nullable, _ in expected_columns]
    indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("ingestion_runs")}
    assert indexes == {k: v for k, v in expected_indexes.items() if k != "PRIMARY"}
    checks = inspector.get_check_constraints("ingestion_runs")
    assert any("'running'" in c["sqltext"] and "'failed'" in c["sqltext"] for c in checks)
    rebuild(ledger)
    inspector = inspect(ledger.engine)
    assert {i["name"] for i in inspector.get_indexes("ingestion_runs")} == set(indexes)


def test_a_legacy_table_is_kept_aside_not_dropped(tmp_path: Path) -> None:
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            with store.engine.begin() as conn:
                conn.exec_driver_sql(
                    "CREATE TABLE ingestion_runs (id INTEGER PRIMARY KEY, status VARCHAR(10))"
                )
                conn.exec_driver_sql("INSERT INTO ingestion_runs VALUES (36, 'failed')")
            upgrade(store.engine, url)
            with store.engine.connect() as conn:
                assert conn.exec_driver_sql(
                    "SELECT id, status FROM ingestion_runs_legacy"
                ).all() == [(36, "failed")]
            assert store.start_run(1, "SOURCE_1") == 37
            Projector(store).run_once()
            assert set(table_rows(store)) == {37}
