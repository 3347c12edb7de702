"""The legacy ``ingestion_runs`` shape, read from ``ingestion_runs.mysql.sql`` (shipped beside
this module), and the live shape read from a database's catalogue, for comparison."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, inspect, text

import projections

# The legacy shape ships with the projection that must reproduce it.
LEGACY_SQL = Path(projections.__file__).resolve().parent / "ingestion_runs.mysql.sql"
_COLUMN = re.compile(
    r"^\s*(?P<name>\w+)\s+(?P<type>INT\(11\)|VARCHAR\(\d+\)|TIMESTAMP|TEXT|JSON|ENUM\([^)]*\))"
    r"\s+(?P<null>NOT NULL|NULL)(?:\s+(?:AUTO_INCREMENT|DEFAULT (?P<default>\S+)))?",
    re.IGNORECASE,
)
_KEY = re.compile(r"^\s*KEY (?P<name>\w+) \((?P<column>\w+)\)")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # lower case, as MySQL's COLUMN_TYPE writes it
    nullable: bool


@dataclass(frozen=True)
class Shape:
    columns: list[Column]
    indexes: dict[str, list[str]]


def expected_shape() -> Shape:
    columns: list[Column] = []
    indexes = {"PRIMARY": ["id"]}
    for line in LEGACY_SQL.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("--"):
            continue
        if match := _COLUMN.match(line):
            columns.append(
                Column(match["name"], match["type"].lower(), match["null"].upper() == "NULL")
            )
        elif match := _KEY.match(line):
            indexes[match["name"]] = [match["column"]]
    return Shape(columns, indexes)


def live_shape(engine: Engine, table: str = "ingestion_runs") -> Shape:
    """The table as the database's catalogue describes it (MySQL types; SQLite's own)."""
    if engine.dialect.name == "sqlite":
        inspector = inspect(engine)
        columns = [
            Column(c["name"], str(c["type"]).lower(), bool(c["nullable"]))
            for c in inspector.get_columns(table)
        ]
        keys = {"PRIMARY": inspector.get_pk_constraint(table)["constrained_columns"]}
        for index in inspector.get_indexes(table):
            keys[str(index["name"])] = [str(c) for c in index["column_names"]]
        return Shape(columns, keys)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t ORDER BY ORDINAL_POSITION"
            ),
            {"t": table},
        ).all()
        index_rows = conn.execute(
            text(
                "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t "
                "ORDER BY INDEX_NAME, SEQ_IN_INDEX"
            ),
            {"t": table},
        ).all()
    # MariaDB reports JSON as its alias LONGTEXT (with a json_valid CHECK).
    columns = [
        Column(name, "json" if kind == "longtext" else kind, nullable == "YES")
        for name, kind, nullable in rows
    ]
    indexes: dict[str, list[str]] = {}
    for index, column in index_rows:
        indexes.setdefault(index, []).append(column)
    return Shape(columns, indexes)


def compare(expected: Shape, live: Shape, exact_types: bool) -> list[str]:
    """Mismatches, one line each. ``exact_types`` False (SQLite): names, order, nullability and
    indexes only, since SQLite has its own type names."""
    problems: list[str] = []
    live_by_name = {c.name: c for c in live.columns}
    for column in expected.columns:
        found = live_by_name.get(column.name)
        if found is None:
            problems.append(f"column {column.name} is missing")
            continue
        if exact_types and found.type != column.type:
            problems.append(f"column {column.name} is {found.type}, expected {column.type}")
        if found.nullable != column.nullable:
            problems.append(
                f"column {column.name} is {'NULL' if found.nullable else 'NOT NULL'}"
                f", expected {'NULL' if column.nullable else 'NOT NULL'}"
            )
    for extra in [c.name for c in live.columns if c.name not in {e.name for e in expected.columns}]:
        problems.append(f"column {extra} is not in the legacy table")
    if [c.name for c in live.columns if c.name in {e.name for e in expected.columns}] != [
        c.name for c in expected.columns if c.name in live_by_name
    ]:
        problems.append("columns are not in the legacy order")
    for name, columns in expected.indexes.items():
        if live.indexes.get(name) != columns:
            problems.append(f"index {name} on ({', '.join(columns)}) is missing or different")
    return problems
