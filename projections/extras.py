"""What an operator added to the live read-model tables, which a rebuild's shadow tables (made
from the schema's MetaData) would not have: indexes, triggers, CHECK constraints, foreign keys.

* Indexes are carried: made again on the shadow tables, with the same name after the swap.
  MySQL/MariaDB: index names are per table, so the index's own definition (``SHOW CREATE
  TABLE``'s line, prefix lengths, ``DESC``, ``FULLTEXT`` and comments included) is added to the
  shadow table before the replay. SQLite: index names are per database, so the index's own
  ``CREATE INDEX`` (``sqlite_master.sql``, expressions and ``WHERE`` included) is replayed in
  the swap's transaction, once the shadow has the live name. The differences are in
  :mod:`projections.dialects` (``index_definitions``, ``carry_indexes``, ``swap_in``).
  An index on a column the schema's table lacks cannot be carried.
* Columns (their values are the operator's, which no event holds), triggers (one would fire
  for every replayed row), CHECK constraints and foreign keys are not carried: the rebuild
  refuses before it starts, naming each, unless told to drop them.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, Table, inspect
from sqlalchemy.exc import SAWarning

from ledger.text import visible
from projections.dialects import index_definitions, replays_index_sql, table_triggers
from projections.errors import ReadModelExtrasError
from projections.schema import OLD, SHADOW, ingestion_run_transitions, ingestion_runs

log = logging.getLogger(__name__)

_LIVE: tuple[Table, ...] = (ingestion_runs, ingestion_run_transitions)


@dataclass(frozen=True)
class Extra:
    """One thing an operator added to a live read-model table."""

    kind: str  # "index", "column", "trigger", "CHECK constraint", "foreign key"
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
    # A foreign key of another table that references a live one: a rebuild cannot drop it
    # (MariaDB's would follow the live table to its ``__old`` name and block its drop).
    referencing: tuple[Extra, ...] = ()


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
        definitions = index_definitions(conn, live.name)
        uncarried.extend(  # one the inspector names whose definition was not understood
            Extra("index", str(name), live.name, why="a definition not understood")
            for name in described.keys() - dict(definitions).keys() - schema_indexes
        )
        for name, definition in definitions:
            if name in schema_indexes:
                continue
            index = described.get(name)
            if index is None and not replays_index_sql(conn):
                uncarried.append(Extra("index", name, live.name, why="an expression"))
            elif index is not None and not set(index["column_names"]) <= columns:
                missing = sorted(str(c) for c in set(index["column_names"]) - columns)
                uncarried.append(
                    Extra("index", name, live.name, why=f"on column(s) {', '.join(missing)}")
                )
            else:
                carried.append(Extra("index", name, live.name, definition))
        uncarried.extend(  # its values would be lost: the replay knows nothing of it
            Extra("column", str(column["name"]), live.name)
            for column in inspector.get_columns(live.name)
            if column["name"] not in columns
        )
        uncarried.extend(
            Extra("trigger", name, live.name) for name in table_triggers(conn, live.name)
        )
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
    live_names = {table.name for table in _LIVE}
    referencing = [
        Extra("foreign key", fk["name"] or "(unnamed)", other, why=f"references {target}")
        for other in inspector.get_table_names()
        if other not in live_names and not other.endswith((SHADOW, OLD))
        for fk in inspector.get_foreign_keys(other)
        if (target := fk["referred_table"]) in live_names
    ]
    return Extras(tuple(carried), tuple(uncarried), tuple(referencing))


def judge(extras: Extras, drop_extras: bool) -> None:
    """Refuse (:class:`ReadModelExtrasError`) what cannot be carried, unless ``drop_extras``:
    then say, as a WARNING, what the rebuild drops. A foreign key of another table that
    references the live ones refuses it either way."""
    if extras.referencing:
        raise ReadModelExtrasError(
            "rebuild: another table references the read-model tables, which a rebuild "
            f"replaces: {'; '.join(map(str, extras.referencing))}; nothing was changed. Drop "
            "that foreign key (a rebuild cannot, even with --drop-extras), rebuild, and add it "
            "again"
        )
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


def _normal(sql: str) -> str:
    return re.sub(r"[\s`\"]", "", sql).lower()


def _linked(fk: object) -> tuple[object, ...]:
    info = dict(fk)  # type: ignore[call-overload]
    return (
        tuple(info["constrained_columns"]),
        info["referred_table"],
        tuple(info["referred_columns"]),
    )
