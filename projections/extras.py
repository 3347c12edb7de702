"""What an operator added to the live read-model tables, which a rebuild's shadow tables (made
from the schema's MetaData) would not have: indexes, triggers, CHECK constraints, foreign keys.

* Indexes are carried: made again on the shadow tables, with the same name after the swap.
  MySQL/MariaDB: index names are per table, so the index's own definition (``SHOW CREATE
  TABLE``'s line, prefix lengths, ``DESC``, ``FULLTEXT`` and comments included) is added to the
  shadow table before the replay. SQLite: index names are per database, so the index's own
  ``CREATE INDEX`` (``sqlite_master.sql``, expressions and ``WHERE`` included) is replayed in
  the swap's transaction, once the shadow has the live name (:func:`create_after_swap`).
  An index on a column the schema's table lacks cannot be carried.
* Triggers (one would fire for every replayed row), CHECK constraints and foreign keys are
  not carried: the rebuild refuses before it starts, naming each, unless told to drop them.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, Table, inspect, text
from sqlalchemy.exc import SAWarning

from ledger.dialects import is_sqlite
from ledger.text import visible
from projections.errors import ReadModelExtrasError
from projections.schema import ingestion_run_transitions, ingestion_runs

log = logging.getLogger(__name__)

_LIVE: tuple[Table, ...] = (ingestion_runs, ingestion_run_transitions)
# An index line of MySQL's SHOW CREATE TABLE: `  [UNIQUE |FULLTEXT |SPATIAL ]KEY `name` (…)`.
_MYSQL_INDEX_LINE = re.compile(r"^\s*((?:[A-Z]+ )?KEY) `((?:[^`]|``)+)` (.*?),?$")


@dataclass(frozen=True)
class Extra:
    """One thing an operator added to a live read-model table."""

    kind: str  # "index", "trigger", "CHECK constraint", "foreign key"
    name: str
    table: str
    # How to make it again (an index that can be carried): MySQL, the part of
    # ``ALTER TABLE t ADD …`` after ADD; SQLite, the whole ``CREATE INDEX``.
    definition: str | None = None
    why: str = ""  # why it cannot be carried, when it is an index that cannot

    def __str__(self) -> str:
        where = f"{self.kind} {visible(self.name)} on {self.table}"
        return f"{where} ({self.why})" if self.why else where


@dataclass(frozen=True)
class Extras:
    """The extras found: the indexes a rebuild makes again, and what it cannot carry."""

    carried: tuple[Extra, ...] = ()
    uncarried: tuple[Extra, ...] = ()


def find_extras(conn: Connection, shadows: Iterable[Table]) -> Extras:
    """The extras on the live tables, against the ``shadows`` made from the schema (same
    order as the live tables): an index is extra by name, a CHECK constraint by its text, a
    foreign key by what it links; every trigger is."""
    inspector = inspect(conn)
    carried: list[Extra] = []
    uncarried: list[Extra] = []
    for live, shadow in zip(_LIVE, shadows, strict=True):
        schema_indexes = {index.name for index in live.indexes}
        columns = set(live.columns.keys())
        with warnings.catch_warnings():  # SQLite: "skipped … expression-based index", which
            warnings.simplefilter("ignore", SAWarning)  # its own CREATE INDEX carries
            described = {index["name"]: index for index in inspector.get_indexes(live.name)}
        definitions = _index_definitions(conn, live.name)
        uncarried.extend(  # one the inspector names whose definition was not understood
            Extra("index", str(name), live.name, why="a definition not understood")
            for name in described.keys() - dict(definitions).keys() - schema_indexes
        )
        for name, definition in definitions:
            if name in schema_indexes:
                continue
            index = described.get(name)
            if index is None and not is_sqlite(conn):  # SQLite replays expressions as they are
                uncarried.append(Extra("index", name, live.name, why="an expression"))
            elif index is not None and not set(index["column_names"]) <= columns:
                missing = sorted(str(c) for c in set(index["column_names"]) - columns)
                uncarried.append(
                    Extra("index", name, live.name, why=f"on column(s) {', '.join(missing)}")
                )
            else:
                carried.append(Extra("index", name, live.name, definition))
        uncarried.extend(Extra("trigger", name, live.name) for name in _triggers(conn, live.name))
        schema_checks = {
            _normal(str(c["sqltext"])) for c in inspector.get_check_constraints(shadow.name)
        }
        uncarried.extend(
            Extra("CHECK constraint", c["name"] or "(unnamed)", live.name)
            for c in inspector.get_check_constraints(live.name)
            if _normal(str(c["sqltext"])) not in schema_checks
        )
        schema_keys = {_linked(fk) for fk in inspector.get_foreign_keys(shadow.name)}
        uncarried.extend(
            Extra("foreign key", fk["name"] or "(unnamed)", live.name)
            for fk in inspector.get_foreign_keys(live.name)
            if _linked(fk) not in schema_keys
        )
    return Extras(tuple(carried), tuple(uncarried))


def judge(extras: Extras, drop_extras: bool) -> None:
    """Refuse (:class:`ReadModelExtrasError`) what cannot be carried, unless ``drop_extras``:
    then say, as a WARNING, what the rebuild drops."""
    if not extras.uncarried:
        return
    named = "; ".join(map(str, extras.uncarried))
    if not drop_extras:
        raise ReadModelExtrasError(
            f"rebuild: the live read-model tables have what a rebuild cannot carry: {named}; "
            "nothing was changed. Remove them, or run `ledger rebuild --drop-extras` to "
            "rebuild without them"
        )
    log.warning("rebuild --drop-extras: the rebuilt tables will not have: %s", named)


def create_on_shadows(conn: Connection, extras: Extras, shadows: Iterable[Table]) -> None:
    """MySQL/MariaDB: add the carried indexes to the shadow tables (names are per table)."""
    if is_sqlite(conn):
        return  # made in the swap (create_after_swap): SQLite's names are per database
    shadow_of = {live.name: shadow.name for live, shadow in zip(_LIVE, shadows, strict=True)}
    quote = conn.dialect.identifier_preparer.quote
    for extra in extras.carried:
        conn.exec_driver_sql(f"ALTER TABLE {quote(shadow_of[extra.table])} ADD {extra.definition}")


def create_after_swap(conn: Connection, extras: Extras) -> None:
    """SQLite, in the swap's transaction once the shadows have the live names: the carried
    indexes' own ``CREATE INDEX``, which names the live table."""
    for extra in extras.carried:
        conn.exec_driver_sql(str(extra.definition))


def _index_definitions(conn: Connection, table: str) -> list[tuple[str, str]]:
    """(name, definition) of every index of ``table`` but its primary key and SQLite's own."""
    if is_sqlite(conn):
        rows = conn.execute(
            text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :t "
                "AND sql IS NOT NULL ORDER BY name"
            ),
            {"t": table},
        ).all()
        return [(str(name), str(sql)) for name, sql in rows]
    quote = conn.dialect.identifier_preparer.quote
    create = str(conn.exec_driver_sql(f"SHOW CREATE TABLE {quote(table)}").one()[1])
    found = []
    for line in create.splitlines():
        match = _MYSQL_INDEX_LINE.match(line)
        if match:
            name = match[2].replace("``", "`")
            found.append((name, f"{match[1]} {quote(name)} {match[3]}"))
    return found


def _triggers(conn: Connection, table: str) -> list[str]:
    if is_sqlite(conn):
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"
    else:
        query = (
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
            "WHERE EVENT_OBJECT_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE = :t"
        )
    return sorted(str(name) for (name,) in conn.execute(text(query), {"t": table}))


def _normal(sql: str) -> str:
    return re.sub(r"[\s`\"]", "", sql).lower()


def _linked(fk: object) -> tuple[object, ...]:
    info = dict(fk)  # type: ignore[call-overload]
    return (
        tuple(info["constrained_columns"]),
        info["referred_table"],
        tuple(info["referred_columns"]),
    )
