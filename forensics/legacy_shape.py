"""The legacy ``ingestion_runs`` shape, read from ``ingestion_runs.mysql.sql`` (shipped with the
projection), compared with the live shape a database's catalogue describes
(:func:`forensics.dialects.live_shape`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

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
