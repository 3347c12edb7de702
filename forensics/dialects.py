"""Where the proof reads SQLite and MySQL/MariaDB differently, one function per difference:
the immutability triggers each database is given (I1) and how its catalogue shows them, the
user it is asked as, and how its catalogue describes a table.

The triggers' expected definitions are the ledger's (:func:`ledger.dialects.expected_triggers`:
``ledger migrate`` puts back one that is missing). Migration ``0001_event_store`` creates them
with its own frozen copy of the statements (a migration is history and never imports code that
may change); a freshly migrated database of each dialect passing
:func:`forensics.triggers.check_triggers` is what keeps the two equal, and a later change of the
triggers comes with a new migration and a change there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column as SqlColumn
from sqlalchemy import Connection, LargeBinary, String, cast, inspect, text, type_coerce
from sqlalchemy.sql.elements import ColumnElement

from forensics.legacy_shape import Column, Shape
from ledger import Ledger
from ledger.dialects import catalogued_triggers, is_sqlite

TABLE = "ledger_events"


@dataclass(frozen=True)
class FoundTrigger:
    name: str
    table: str
    timing: str
    event: str
    definition: str | None  # None: this user may not read it
    row_level: bool = True


def found_triggers(conn: Connection) -> list[FoundTrigger]:
    """The triggers on ``ledger_events`` as the catalogue shows them to this user
    (:func:`ledger.dialects.catalogued_triggers`)."""
    rows = catalogued_triggers(conn, table=TABLE)
    return _sqlite_triggers(rows) if is_sqlite(conn) else _mysql_triggers(rows)


def legacy_text_read(conn: Connection, column: SqlColumn[Any]) -> ColumnElement[Any]:
    """A legacy table's text ``column`` as ``ledger import-legacy`` reads it, to decode and
    parse it itself, naming the row of a value it cannot take: on SQLite its bytes (a TEXT
    column keeps any bytes, and the driver's decoding failed the whole read naming no row),
    on MariaDB/MySQL its text (the server converts it to the connection's utf8mb4)."""
    if is_sqlite(conn):
        return cast(column, LargeBinary).label(column.name)
    return type_coerce(column, String).label(column.name)


def definition_kind(dialect: str) -> str:
    """What a trigger's definition in the catalogue is: the whole statement on SQLite, the
    body on MariaDB/MySQL."""
    return "statement" if dialect == "sqlite" else "body"


def database_user(conn: Connection) -> str:
    """The MariaDB/MySQL account the checks run as, as ``'name'@'host'`` is written."""
    return str(conn.execute(text("SELECT CURRENT_USER()")).scalar_one())


_SQLITE_HEAD = re.compile(
    r"^\s*CREATE\s+(?:TEMP\w*\s+)?TRIGGER\s+(?:IF\s+NOT\s+EXISTS\s+)?\S+\s+"
    r"(BEFORE|AFTER|INSTEAD\s+OF)?\s*(DELETE|INSERT|UPDATE)\b",
    re.IGNORECASE,
)


def _sqlite_triggers(rows: Sequence[Sequence[Any]]) -> list[FoundTrigger]:
    found = []
    for name, table, sql in rows:
        match = _SQLITE_HEAD.match(sql or "")
        timing = " ".join((match.group(1) or "BEFORE").split()).upper() if match else "?"
        event = match.group(2).upper() if match else "?"
        found.append(FoundTrigger(str(name), str(table), timing, event, str(sql or "")))
    return found


def _mysql_triggers(rows: Sequence[Sequence[Any]]) -> list[FoundTrigger]:
    return [
        FoundTrigger(
            str(name),
            str(table),
            str(timing),
            str(event),
            None if body is None else str(body),
            str(orientation) == "ROW",
        )
        for name, table, timing, event, body, orientation in rows
    ]


def may_see_triggers(conn: Connection) -> bool:
    """Whether the current user would see the triggers of ``ledger_events`` in the catalogue:
    always on SQLite; on MySQL/MariaDB if it holds the TRIGGER privilege on the table (globally,
    on the database or on the table). A privilege held through a role is not listed to the user,
    so this errs towards "cannot see": the check then says "not checked", never "missing"."""
    if is_sqlite(conn):
        return True
    user = database_user(conn)
    name, _, host = user.rpartition("@")
    grantee = f"'{name}'@'{host}'"
    query = text(
        "SELECT 1 FROM information_schema.USER_PRIVILEGES "
        "WHERE GRANTEE = :grantee AND PRIVILEGE_TYPE = 'TRIGGER' "
        "UNION ALL SELECT 1 FROM information_schema.SCHEMA_PRIVILEGES "
        "WHERE GRANTEE = :grantee AND PRIVILEGE_TYPE = 'TRIGGER' "
        "AND TABLE_SCHEMA = DATABASE() "
        "UNION ALL SELECT 1 FROM information_schema.TABLE_PRIVILEGES "
        "WHERE GRANTEE = :grantee AND PRIVILEGE_TYPE = 'TRIGGER' "
        "AND TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :table"
    )
    return conn.execute(query, {"grantee": grantee, "table": TABLE}).first() is not None


def types_comparable(ledger: Ledger) -> bool:
    """Whether the catalogue's column types can be compared with the legacy MySQL ones (SQLite
    has its own type names: there only names, order, nullability and indexes are)."""
    return not ledger.is_sqlite


def live_shape(conn: Connection, table: str = "ingestion_runs") -> Shape:
    """The table as the database's catalogue describes it (MySQL types; SQLite's own)."""
    if is_sqlite(conn):
        inspector = inspect(conn)
        columns = [
            Column(c["name"], str(c["type"]).lower(), bool(c["nullable"]))
            for c in inspector.get_columns(table)
        ]
        keys = {"PRIMARY": inspector.get_pk_constraint(table)["constrained_columns"]}
        for index in inspector.get_indexes(table):
            keys[str(index["name"])] = [str(c) for c in index["column_names"]]
        return Shape(columns, keys)
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
