"""What an operator added to the live read-model tables and ``ledger rebuild``: an index is
carried over under its name; a column, a trigger, a CHECK constraint, a foreign key or an index
on a column the schema lacks refuses the rebuild (exit 2, nothing changed) unless ``--drop-extras``,
which rebuilds without them and says so."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, inspect

from ledger import Ledger, RunFinished, RunProgressed
from projections import Projector, rebuild
from projections.errors import ReadModelExtrasError
from projections.schema import ingestion_run_transitions, ingestion_runs
from tests.projection_support import replayed_rows, table_rows, transition_rows
from tests.service.support import run

RUNS, TRANSITIONS = "ingestion_runs", "ingestion_run_transitions"


def _some_history(ledger: Ledger) -> list[int]:
    runs = [ledger.start_run(source, f"conn-{source}") for source in (1, 2, 3)]
    ledger.append([RunProgressed(run_id=run_id, records_fetched=5) for run_id in runs])
    ledger.append([RunFinished(run_id=runs[0], status="failed")])
    return runs


def _schema_of(conn: Connection) -> Any:
    """How the database describes the two read-model tables (every index, trigger, CHECK)."""
    if conn.dialect.name == "sqlite":
        return sorted(
            tuple(row)
            for row in conn.exec_driver_sql(
                "SELECT type, name, tbl_name, sql FROM sqlite_master "
                f"WHERE tbl_name IN ('{RUNS}', '{TRANSITIONS}')"
            )
        )
    tables = [str(conn.exec_driver_sql(f"SHOW CREATE TABLE `{t}`").one()[1]) for t in (RUNS,)]
    tables.append(str(conn.exec_driver_sql(f"SHOW CREATE TABLE `{TRANSITIONS}`").one()[1]))
    triggers = sorted(
        conn.exec_driver_sql(
            "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS "
            "WHERE EVENT_OBJECT_SCHEMA = DATABASE()"
        ).all()
    )
    return tables, triggers


def _indexes_of(conn: Connection) -> set[str]:
    """Every index of the two tables, as the database would make it again."""
    if conn.dialect.name == "sqlite":
        return {
            str(row[0])
            for row in conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                f"AND tbl_name IN ('{RUNS}', '{TRANSITIONS}')"
            )
        }
    return {
        f"{table}: {line.strip().rstrip(',')}"
        for table in (RUNS, TRANSITIONS)
        for line in str(conn.exec_driver_sql(f"SHOW CREATE TABLE `{table}`").one()[1]).splitlines()
        if "KEY" in line
    }


def _state(ledger: Ledger) -> Any:
    with ledger.engine.connect() as conn:
        tables = sorted(inspect(conn).get_table_names())
        schema = _schema_of(conn)
    return table_rows(ledger), transition_rows(ledger), tables, schema, _checkpoint(ledger)


def _checkpoint(ledger: Ledger) -> int:
    return Projector(ledger).checkpoint().position


def _sqlite_recreate_with(conn: Connection, table: str, clause: str) -> None:
    """As a DBA adds a constraint on SQLite, which ALTER TABLE cannot: a new table with it."""
    sql = conn.exec_driver_sql(
        f"SELECT sql FROM sqlite_master WHERE type = 'table' AND name = '{table}'"
    ).scalar_one()
    indexes = [
        row[0]
        for row in conn.exec_driver_sql(
            f"SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = '{table}' "
            "AND sql IS NOT NULL"
        )
    ]
    body = sql[sql.index("(") : sql.rindex(")")]
    conn.exec_driver_sql(f"CREATE TABLE ops_copy {body}, {clause})")
    conn.exec_driver_sql(f'INSERT INTO ops_copy SELECT * FROM "{table}"')
    conn.exec_driver_sql(f'DROP TABLE "{table}"')
    conn.exec_driver_sql(f'ALTER TABLE ops_copy RENAME TO "{table}"')
    for index in indexes:
        conn.exec_driver_sql(index)


def _add_trigger(conn: Connection) -> None:
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"CREATE TRIGGER ops_audit AFTER INSERT ON {RUNS} BEGIN SELECT 1; END")
    else:
        conn.exec_driver_sql(
            f"CREATE TRIGGER ops_audit AFTER INSERT ON {RUNS} FOR EACH ROW SET @ops = NEW.id"
        )


def _add_check(conn: Connection) -> None:
    if conn.dialect.name == "sqlite":
        _sqlite_recreate_with(conn, RUNS, 'CONSTRAINT ops_positive CHECK ("sourceId" > 0)')
    else:
        conn.exec_driver_sql(
            f"ALTER TABLE {RUNS} ADD CONSTRAINT ops_positive CHECK (`sourceId` > 0)"
        )


def _add_foreign_key(conn: Connection) -> None:
    clause = f"CONSTRAINT ops_run FOREIGN KEY (run_id) REFERENCES {RUNS} (id)"
    if conn.dialect.name == "sqlite":
        _sqlite_recreate_with(conn, TRANSITIONS, clause)
    else:
        conn.exec_driver_sql(f"ALTER TABLE {TRANSITIONS} ADD {clause}")


def _add_index_on_an_operators_column(conn: Connection) -> None:
    conn.exec_driver_sql(f"ALTER TABLE {RUNS} ADD COLUMN ops_team INTEGER")
    conn.exec_driver_sql(f"CREATE INDEX ops_by_team ON {RUNS} (ops_team)")


def _add_column(conn: Connection) -> None:
    # Values no event holds: the operator's own, which a replay cannot give back.
    conn.exec_driver_sql(f"ALTER TABLE {RUNS} ADD COLUMN ops_note VARCHAR(100)")
    conn.exec_driver_sql(f"UPDATE {RUNS} SET ops_note = 'checked by the on-call'")


# The trigger last: SQLite's CHECK and foreign key make the table anew, without it.
EXTRAS: dict[str, tuple[Callable[[Connection], None], str]] = {
    "check": (_add_check, f"CHECK constraint ops_positive on {RUNS}"),
    "foreign key": (_add_foreign_key, f"foreign key ops_run on {TRANSITIONS}"),
    "index on an operator's column": (
        _add_index_on_an_operators_column,
        f"index ops_by_team on {RUNS} (on column(s) ops_team)",
    ),
    "column": (_add_column, f"column ops_note on {RUNS}"),
    "trigger": (_add_trigger, f"trigger ops_audit on {RUNS}"),
}


@pytest.fixture(autouse=True)
def read_model_as_the_schema_makes_it(ledger: Ledger) -> Iterator[None]:
    """The MariaDB test database is shared by the tests (each only emptied): the operator's
    extras are taken away with the tables, made again from the schema."""
    yield
    if ledger.is_sqlite:
        return
    with ledger.engine.begin() as conn:
        for table in (ingestion_run_transitions, ingestion_runs):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{table.name}`")
        for table in (ingestion_runs, ingestion_run_transitions):
            table.create(conn)


def test_an_operators_index_survives_a_rebuild_and_is_used_by_name(
    ledger: Ledger, backend: str
) -> None:
    _some_history(ledger)
    Projector(ledger).run_once()
    with ledger.engine.begin() as conn:
        if backend == "sqlite":
            conn.exec_driver_sql(
                f'CREATE INDEX ops_failed_by_connector ON {RUNS} ("connectorName", status DESC)'
            )
            # An expression and a WHERE: SQLite's own CREATE INDEX carries them.
            conn.exec_driver_sql(
                f"CREATE INDEX ops_lower_failed ON {RUNS} "
                "(lower(\"connectorName\")) WHERE status = 'failed'"
            )
            conn.exec_driver_sql(
                f"CREATE UNIQUE INDEX ops_one_per_position ON {TRANSITIONS} (run_id, position)"
            )
        else:
            conn.exec_driver_sql(
                f"CREATE INDEX ops_failed_by_connector ON {RUNS} "
                "(`connectorName`(10), `status` DESC) COMMENT 'dashboard'"
            )
            conn.exec_driver_sql(
                f"CREATE UNIQUE INDEX ops_one_per_position ON {TRANSITIONS} (run_id, position)"
            )
        before = _indexes_of(conn)
    ledger.append([RunProgressed(run_id=2, records_fetched=7)])  # the rebuild has work to do

    result = rebuild(ledger)

    assert {(extra.name, extra.table) for extra in result.carried} == {
        ("ops_failed_by_connector", RUNS),
        ("ops_one_per_position", TRANSITIONS),
        *([("ops_lower_failed", RUNS)] if backend == "sqlite" else []),
    }
    assert result.dropped == ()
    assert table_rows(ledger) == replayed_rows(ledger)
    with ledger.engine.connect() as conn:
        assert _indexes_of(conn) == before  # every index as it was, the schema's and the operator's
        if backend == "sqlite":
            hinted = f"SELECT id FROM {RUNS} INDEXED BY ops_failed_by_connector"
        else:
            hinted = f"SELECT id FROM {RUNS} FORCE INDEX (ops_failed_by_connector)"
        used = conn.exec_driver_sql(
            f"{hinted} WHERE `connectorName` = 'conn-2'".replace(
                "`", '"' if backend == "sqlite" else "`"
            )
        ).all()
        assert used == [(2,)]


def test_a_foreign_key_of_another_table_refuses_the_rebuild_even_with_drop_extras(
    ledger: Ledger, db_url: str
) -> None:
    """MariaDB's would follow ingestion_runs to ingestion_runs__old at the swap: the rebuild
    swapped, then failed to drop the old table (1451), the operator's key left on it."""
    _some_history(ledger)
    Projector(ledger).run_once()
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE ops_notes (id INTEGER PRIMARY KEY, run_id INTEGER, "
            f"CONSTRAINT ops_notes_run FOREIGN KEY (run_id) REFERENCES {RUNS} (id))"
        )
        conn.exec_driver_sql("INSERT INTO ops_notes VALUES (1, 1)")
    before = _state(ledger)
    try:
        for flags in ((), ("--drop-extras",)):
            refused = run("rebuild", *flags, "--db", db_url)
            assert refused.exit_code == 2, refused.output
            assert f"foreign key ops_notes_run on ops_notes (references {RUNS})" in refused.stderr
            assert "nothing was changed" in refused.stderr
            assert _state(ledger) == before
    finally:
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE ops_notes")


@pytest.mark.parametrize("kind", EXTRAS)
def test_what_a_rebuild_cannot_carry_refuses_it_with_exit_2_and_nothing_changes(
    ledger: Ledger, db_url: str, kind: str
) -> None:
    _some_history(ledger)
    Projector(ledger).run_once()
    ledger.append([RunProgressed(run_id=2, records_fetched=1)])  # not projected yet
    add, named = EXTRAS[kind]
    with ledger.engine.begin() as conn:
        add(conn)
    before = _state(ledger)

    refused = run("rebuild", "--db", db_url)

    assert refused.exit_code == 2, refused.output
    assert named in refused.stderr
    assert "nothing was changed" in refused.stderr
    assert "--drop-extras" in refused.stderr
    assert "Traceback" not in refused.output
    assert _state(ledger) == before  # no row, no table, no index, no checkpoint moved
    with pytest.raises(ReadModelExtrasError, match=named.split(" (")[0]):
        rebuild(ledger)
    assert _state(ledger) == before


def test_drop_extras_rebuilds_without_them_and_warns(
    ledger: Ledger, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    _some_history(ledger)
    with ledger.engine.begin() as conn:
        for add, _named in EXTRAS.values():
            add(conn)
        conn.exec_driver_sql(
            f"CREATE INDEX ops_by_source ON {RUNS} (`sourceId`)".replace(
                "`", '"' if conn.dialect.name == "sqlite" else "`"
            )
        )

    with caplog.at_level(logging.WARNING, logger="projections.extras"):
        done = run("rebuild", "--drop-extras", "--db", db_url)

    assert done.exit_code == 0, done.output
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for _add, named in EXTRAS.values():
        assert any(named in message for message in warned), (named, warned)
        assert named in done.stdout  # "dropped (--drop-extras): …"
    assert f"carried over: index ops_by_source on {RUNS}" in done.stdout
    assert table_rows(ledger) == replayed_rows(ledger)
    assert _checkpoint(ledger) == ledger.head().last_position
    with ledger.engine.connect() as conn:
        inspector = inspect(conn)
        assert "ops_positive" not in {c["name"] for c in inspector.get_check_constraints(RUNS)}
        assert inspector.get_foreign_keys(TRANSITIONS) == []
        assert {"ops_team", "ops_note"}.isdisjoint(c["name"] for c in inspector.get_columns(RUNS))
        names = {index["name"] for index in inspector.get_indexes(RUNS)}
        assert "ops_by_source" in names
        assert "ops_by_team" not in names
        assert "ops_audit" not in str(_schema_of(conn))
        assert [t for t in inspector.get_table_names() if t.endswith(("__rebuild", "__old"))] == []


def test_a_swap_interrupted_with_an_operators_index_still_recovers_with_it(
    ledger: Ledger, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MariaDB: killed between its RENAME and the checkpoint's move, the next projector
    finishes the swap, and the index is on the swapped-in table. SQLite: killed in the swap's
    transaction after the index was made, all of it rolls back, the index still there."""
    import projections.dialects as swap_module

    _some_history(ledger)
    Projector(ledger).run_once()
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE INDEX ops_by_status ON {RUNS} (status)")
        before = _indexes_of(conn)
    ledger.append([RunProgressed(run_id=2, records_fetched=1)])

    def die(*_args: object) -> None:
        raise KeyboardInterrupt("killed in the swap")

    # MariaDB: after the RENAME; SQLite: after the indexes, before the transaction commits.
    monkeypatch.setattr(swap_module, "finish_swap" if backend == "mysql" else "advance", die)
    with pytest.raises(KeyboardInterrupt):
        rebuild(ledger)
    monkeypatch.undo()

    with ledger.engine.connect() as conn:
        assert _indexes_of(conn) == before
    assert Projector(ledger).run_once() == (0 if backend == "mysql" else 1)
    assert table_rows(ledger) == replayed_rows(ledger)
    assert _checkpoint(ledger) == ledger.head().last_position
    result = rebuild(ledger)  # and the next rebuild, leftovers dropped, carries it again
    assert [extra.name for extra in result.carried] == ["ops_by_status"]
    with ledger.engine.connect() as conn:
        assert _indexes_of(conn) == before
        assert [t for t in inspect(conn).get_table_names() if "__" in t] == []


def test_an_operators_views_read_the_rebuilt_tables(ledger: Ledger) -> None:
    """A view naming a read-model table (a dashboard's) is the operator's too, and needs
    nothing carried: it names the table, which the swap gives back under its name. On SQLite
    the swap's RENAME checked every view of the schema with the live table dropped and failed
    ("error in view ops_failed: no such table: main.ingestion_runs", with `ledger migrate`
    advised): no rebuild was possible beside a view."""
    _some_history(ledger)
    Projector(ledger).run_once()
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE VIEW ops_failed AS SELECT id FROM {RUNS} WHERE status = 'failed'"
        )
        conn.exec_driver_sql(f"CREATE VIEW ops_moves AS SELECT run_id FROM {TRANSITIONS}")
    try:
        ledger.append([RunFinished(run_id=2, status="failed")])  # the rebuild has work to do
        result = rebuild(ledger)
        assert result.dropped == ()
        with ledger.engine.connect() as conn:
            failed = sorted(row[0] for row in conn.exec_driver_sql("SELECT id FROM ops_failed"))
            moves = conn.exec_driver_sql("SELECT COUNT(*) FROM ops_moves").scalar_one()
        assert failed == [1, 2]
        assert moves == len(transition_rows(ledger))
        assert table_rows(ledger) == replayed_rows(ledger)
    finally:
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql("DROP VIEW IF EXISTS ops_failed")
            conn.exec_driver_sql("DROP VIEW IF EXISTS ops_moves")
