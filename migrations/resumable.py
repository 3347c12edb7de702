"""Schema operations that an interrupted migration can run again.

MySQL and MariaDB commit each DDL statement on its own, and Alembic writes the new revision to
``alembic_version`` only after a revision's last statement. A ``ledger migrate`` killed between
two statements (a deploy cancelled, an OOM kill, a lost connection) therefore leaves some of a
revision's tables made and the revision unrecorded; running it again met "table … already
exists" on every try, and only hand surgery got the database going again. The same state
follows an ``alembic_version`` set back by hand.

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
    expected = {column.name for column in columns}
    found = {column["name"] for column in _inspector().get_columns(name)}
    if found != expected:
        missing = ", ".join(sorted(expected - found)) or "none"
        extra = ", ".join(sorted(found - expected)) or "none"
        raise SchemaError(
            f"table {name} exists but is not the one this migration makes (columns missing: "
            f"{missing}; columns it does not have: {extra}): is it another application's "
            "table? Rename it, or use a database of the ledger's own; nothing more was changed"
        )
    return sa.table(name, *(sa.column(column.name) for column in columns))


def create_index(name: str, table: str, columns: list[str]) -> None:
    """``op.create_index``, unless an earlier attempt made the index."""
    if any(index["name"] == name for index in _inspector().get_indexes(table)):
        return
    op.create_index(name, table, columns)


def create_trigger(name: str, statement: str) -> None:
    """Run ``statement`` (a ``CREATE TRIGGER name …``) unless the trigger exists."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        query = "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = :name"
    else:
        query = (
            "SELECT 1 FROM information_schema.TRIGGERS "
            "WHERE TRIGGER_SCHEMA = DATABASE() AND TRIGGER_NAME = :name"
        )
    if bind.execute(sa.text(query), {"name": name}).first() is None:
        op.execute(statement)


def insert_once(table: sa.TableClause, row: dict[str, Any], key: str) -> None:
    """Insert ``row`` unless a row with its ``key`` is there (an earlier attempt inserted it:
    on MySQL the next DDL statement committed the insert)."""
    present = sa.select(sa.literal(1)).select_from(table).where(table.c[key] == row[key])
    if op.get_bind().execute(present).first() is None:
        op.bulk_insert(table, [row])
