"""Schema operations that an interrupted migration can run again.

MySQL and MariaDB commit each DDL statement on its own, and Alembic writes the new revision to
``ledger_alembic_version`` only after a revision's last statement. A ``ledger migrate`` killed
between two statements (a deploy cancelled, an OOM kill, a lost connection) therefore leaves
some of a revision's tables made and the revision unrecorded; running it again met "table …
already exists" on every try, and only hand surgery got the database going again. The same state
follows a ``ledger_alembic_version`` set back by hand.

Each operation here first looks at what is there: an object this revision would create and that
exists already, with the shape the revision gives it, is kept as it is; one that exists with
another shape (a table of another application under the same name) is refused, naming what
differs, and nothing more is changed. On SQLite, whose DDL is transactional, an interrupted
revision leaves nothing behind, and these checks find nothing made.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from ledger.dialects import catalogued_triggers
from ledger.errors import SchemaError


def _inspector() -> sa.Inspector:
    return sa.inspect(op.get_bind())  # fresh each time: the previous statement changed the schema


def has_table(name: str) -> bool:
    return _inspector().has_table(name)


def create_table(name: str, *elements: Any, **options: Any) -> sa.TableClause:
    """``op.create_table``, or the table as it is when an earlier attempt made it."""
    columns = [e for e in elements if isinstance(e, sa.Column)]
    if not has_table(name):
        return op.create_table(name, *elements, **options)
    inspector = _inspector()
    reflected = inspector.get_columns(name)
    expected = {column.name for column in columns}
    found = {column["name"] for column in reflected}
    if found != expected:
        missing = ", ".join(sorted(expected - found)) or "none"
        extra = ", ".join(sorted(found - expected)) or "none"
        _refuse(name, f"columns missing: {missing}; columns it does not have: {extra}")
    # The same names are not yet the same table: another application's may hold text where
    # the ledger keeps times, or lack the key that makes one INSERT win (a tick claimed by two
    # serve processes, two events at one version). What an interrupted attempt made has both.
    types = {column["name"]: column["type"] for column in reflected}
    differ = [
        f"{column.name} is {types[column.name]}, not {_described(column.type)}"
        for column in columns
        if _family(types[column.name]) != _family(column.type)
    ]
    # Bound to a table of its own (never created) to read its keys as the revision names them.
    differ += _key_differences(inspector, sa.Table(name, sa.MetaData(), *elements, **options))
    if differ:
        _refuse(name, "; ".join(differ))
    return sa.table(name, *(sa.column(column.name) for column in columns))


def _refuse(name: str, what: str) -> None:
    raise SchemaError(
        f"table {name} exists but is not the one this migration makes ({what}): is it "
        "another application's table? Rename it, or use a database of the ledger's own; "
        "nothing more was changed"
    )


# Types compared by kind, not by spelling: each database reflects its own (MariaDB's JSON is a
# LONGTEXT, SQLite's BIGINT column of the ledger an INTEGER, an ENUM a VARCHAR).
_FAMILIES: tuple[tuple[str, tuple[type[Any], ...]], ...] = (
    ("integer", (sa.Integer,)),
    ("time", (sa.DateTime, sa.Date, sa.Time)),
    ("text", (sa.String, sa.JSON)),
)
_FAMILY_NAMES = {"integer": "an integer", "time": "a date and time", "text": "text"}


def _family(type_: Any) -> str:
    for family, kinds in _FAMILIES:
        if isinstance(type_, kinds):
            return family
    return str(type_)


def _described(type_: Any) -> str:
    family = _family(type_)
    return _FAMILY_NAMES.get(family, family)


def _key_differences(inspector: sa.Inspector, shape: sa.Table) -> list[str]:
    """The primary key and the unique constraints the revision gives the table that the one
    there lacks (a unique index counts: MySQL reflects a UNIQUE constraint as one)."""
    differ: list[str] = []
    wanted = list(shape.primary_key.columns.keys())
    found = inspector.get_pk_constraint(shape.name).get("constrained_columns") or []
    if set(found) != set(wanted):
        differ.append(f"primary key ({', '.join(found) or 'none'}), not ({', '.join(wanted)})")
    unique = {
        tuple(map(str, u["column_names"])) for u in inspector.get_unique_constraints(shape.name)
    }
    unique |= {
        tuple(map(str, i["column_names"])) for i in inspector.get_indexes(shape.name) if i["unique"]
    }
    for constraint in shape.constraints:
        if isinstance(constraint, sa.UniqueConstraint) and not isinstance(
            constraint, sa.PrimaryKeyConstraint
        ):
            columns = tuple(constraint.columns.keys())
            if columns not in unique:
                differ.append(f"no unique ({', '.join(columns)})")
    return differ


def create_index(name: str, table: str, columns: list[str]) -> None:
    """``op.create_index``, unless an earlier attempt made the index."""
    if any(index["name"] == name for index in _inspector().get_indexes(table)):
        return
    op.create_index(name, table, columns)


def create_trigger(name: str, statement: str) -> None:
    """Run ``statement`` (a ``CREATE TRIGGER name …``) unless the trigger exists."""
    if not catalogued_triggers(op.get_bind(), name=name):
        op.execute(statement)


def insert_once(table: sa.TableClause, row: dict[str, Any], key: str) -> None:
    """Insert ``row`` unless a row with its ``key`` is there (an earlier attempt inserted it:
    on MySQL the next DDL statement committed the insert)."""
    present = sa.select(sa.literal(1)).select_from(table).where(table.c[key] == row[key])
    if op.get_bind().execute(present).first() is None:
        op.bulk_insert(table, [row])
