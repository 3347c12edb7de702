"""``ledger import-legacy`` adopts a legacy ``ingestion_runs`` table into the ledger, on SQLite
and on MariaDB: a rebuild reproduces every row; a row that cannot be a fact, or a time that is
not one, stops the import before anything is appended; legacy details of any shape and names
are adopted as recorded, the ledger's reserved detail keys kept apart; a missing table, or run
ids already in the ledger, are refused saying why."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from freezegun import freeze_time
from sqlalchemy import text

from forensics.audit import audit_run
from forensics.legacy_import import import_legacy
from forensics.legacy_table import LegacyTableChangedError
from forensics.verify import verify_all
from ledger import Ledger, ValidationError, sweep
from ledger.urls import mask_url
from migrations.runner import upgrade
from projections import Projector, rebuild
from tests import support
from tests.forensics.support import AUDIT_CLEANUP, run, seed_legacy_table
from tests.projection_support import table_rows


def test_import_legacy_then_rebuild_reproduces_every_row(tmp_path: Path) -> None:
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            upgrade(store.engine, url)  # moves the old table to ingestion_runs_legacy
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
            summary = json.loads(result.stdout)  # type: ignore[attr-defined]
            assert (summary["rows"], summary["imported"], summary["left_open"]) == (39, 39, [30003])
            assert summary["duration_repaired"] == list(range(1, 38))
            assert summary["mismatches"] == []
            again = json.loads(run("import-legacy", "--db", url).stdout)  # type: ignore[attr-defined]
            assert (again["imported"], again["already_imported"]) == (0, 39)
            rebuild(store)
            rows = table_rows(store)
            assert rows[30002]["recordsFetched"] == 15
            assert (
                rows[30002]["recordsCreated"],
                rows[30002]["recordsUpdated"],
                rows[30002]["recordsSkipped"],
            ) == (10, 3, 2)
            assert rows[30002]["duration"] == 2
            assert rows[30002]["errorDetails"] == {"proof": True}
            assert rows[30002]["createdAt"] == datetime(2026, 2, 1, 19, 59, 33, tzinfo=UTC)
            assert rows[36]["errorMessage"] == AUDIT_CLEANUP
            assert rows[36]["duration"] == int(
                (
                    datetime(2026, 2, 1, 23, 33, 44, tzinfo=UTC) - rows[36]["startedAt"]
                ).total_seconds()
            )
            assert rows[30003]["status"] == "running"
            assert verify_all(store).ok
            assert store.start_run(1, "SOURCE_1") == 30004  # the allocator continues above
            with freeze_time("2026-02-03 12:00:00"):
                swept = sweep(store)
            assert [r.run_id for r in swept.timed_out] == [30003]
            Projector(store).run_once()
            assert table_rows(store)[30003]["status"] == "failed"
            audit = audit_run(store, 30002)
            assert audit[0].event.actor == "import:legacy"
            assert audit[0].event.payload_data["metadata"]["imported"] is True


def test_import_legacy_again_after_a_sweep_finds_nothing_new(tmp_path: Path) -> None:
    """README's next step after an import is `ledger sweep`, which times out the row left
    open. A second import compared the legacy rows with the runs as they are now: it exited 1
    listing the timeout as "mismatches" in Python reprs, and still called the run open."""
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            upgrade(store.engine, url)
            first = json.loads(run("import-legacy", "--db", url).stdout)  # type: ignore[attr-defined]
            assert (first["left_open"], first["mismatches"]) == ([30003], [])
            with freeze_time("2026-02-03 12:00:00"):
                assert [r.run_id for r in sweep(store).timed_out] == [30003]
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
            again = json.loads(result.stdout)  # type: ignore[attr-defined]
            assert (again["imported"], again["already_imported"]) == (0, 39)
            assert (again["left_open"], again["mismatches"]) == ([], [])
            assert again["duration_repaired"] == first["duration_repaired"]


def test_import_legacy_still_reports_a_real_mismatch_after_a_sweep(tmp_path: Path) -> None:
    """A legacy value its facts cannot give back is a mismatch (exit 1), before and after the
    sweep; each value quoted as an ISO time, JSON text or null, not as Python writes it."""
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            with store.engine.begin() as conn:  # a duration its times disagree with, and a
                # running row with an end and an error message (neither is a fact of a start)
                conn.execute(text("UPDATE ingestion_runs SET duration = 999 WHERE id = 30002"))
                conn.execute(
                    text(
                        "UPDATE ingestion_runs SET completedAt = '2026-02-02 11:00:00', "
                        "errorMessage = 'half \"done\"' WHERE id = 30003"
                    )
                )
            upgrade(store.engine, url)
            expected = [
                "row 30002: duration was 999, the ledger gives 2",
                "row 30003: completedAt was 2026-02-02T11:00:00.000000Z, the ledger gives null",
                'row 30003: errorMessage was "half \\"done\\"", the ledger gives null',
            ]
            for step in ("import", "sweep", "import again"):
                if step == "sweep":
                    with freeze_time("2026-02-03 12:00:00"):
                        sweep(store)
                    continue
                result = run("import-legacy", "--db", url)
                assert result.exit_code == 1, (step, result.output)  # type: ignore[attr-defined]
                summary = json.loads(result.stdout)  # type: ignore[attr-defined]
                assert summary["mismatches"] == expected, step


def test_a_legacy_row_that_cannot_be_a_fact_stops_the_import(tmp_path: Path) -> None:
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            with store.engine.begin() as conn:
                conn.execute(text("UPDATE ingestion_runs SET recordsFetched = -5 WHERE id = 7"))
            upgrade(store.engine, url)
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 2  # type: ignore[attr-defined]
            assert "legacy row id 7: records_fetched" in result.stderr  # type: ignore[attr-defined]
            assert store.head().last_position == 0


def test_a_legacy_name_is_adopted_as_it_was_recorded(tmp_path: Path) -> None:
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            with store.engine.begin() as conn:
                conn.execute(text("UPDATE ingestion_runs SET connectorName = 'SOURCE_1 '"))
            upgrade(store.engine, url)
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
            assert json.loads(result.stdout)["mismatches"] == []  # type: ignore[attr-defined]
            assert {row["connectorName"] for row in table_rows(store).values()} == {"SOURCE_1 "}


def test_import_legacy_keeps_reserved_detail_keys_apart_and_says_so(tmp_path: Path) -> None:
    """A legacy row's own `reason` or `late` cannot pose as the ledger's bookkeeping: they are
    kept under errorDetails.reported, and the import names those rows (not as mismatches)."""
    details = {"reason": "HTTP 500", "late": False, "proof": True}
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            with store.engine.begin() as conn:
                conn.execute(
                    text("UPDATE ingestion_runs SET errorDetails = :d WHERE id = 30002"),
                    {"d": json.dumps(details)},
                )
            upgrade(store.engine, url)
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
            summary = json.loads(result.stdout)  # type: ignore[attr-defined]
            assert (summary["details_kept_apart"], summary["mismatches"]) == ([30002], [])
            assert table_rows(store)[30002]["errorDetails"] == {
                "proof": True,
                "reported": {"reason": "HTTP 500", "late": False},
            }


def test_import_legacy_adopts_any_details_the_legacy_column_held(tmp_path: Path) -> None:
    """An array, or an object nested deeper than the ledger takes, is adopted under
    legacy_error_details (the deep one as its JSON text) and named as kept apart; a time that
    is not one stops the import naming the row and the column, before anything is appended."""
    deep: dict[str, object] = {"leaf": 1}
    for _ in range(24):
        deep = {"d": deep}
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            with store.engine.begin() as conn:
                for row_id, details in ((7, [1, 2]), (30002, deep)):
                    conn.execute(
                        text("UPDATE ingestion_runs SET errorDetails = :d WHERE id = :id"),
                        {"d": json.dumps(details), "id": row_id},
                    )
            upgrade(store.engine, url)
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
            summary = json.loads(result.stdout)  # type: ignore[attr-defined]
            assert (summary["details_kept_apart"], summary["mismatches"]) == ([7, 30002], [])
            rows = table_rows(store)
            assert rows[7]["errorDetails"] == {"legacy_error_details": [1, 2]}
            kept = rows[30002]["errorDetails"]["legacy_error_details"]
            assert json.loads(kept) == deep
            assert verify_all(store).ok


def test_import_legacy_names_a_time_that_is_not_one(tmp_path: Path) -> None:
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            if store.engine.dialect.name != "sqlite":
                continue  # a MariaDB TIMESTAMP column cannot hold such text
            seed_legacy_table(store)
            with store.engine.begin() as conn:
                conn.execute(text("UPDATE ingestion_runs SET startedAt = 'yesterday' WHERE id = 7"))
            upgrade(store.engine, url)
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 2  # type: ignore[attr-defined]
            assert 'legacy row id 7: startedAt: "yesterday" is not a time' in result.stderr  # type: ignore[attr-defined]
            assert "Traceback" not in result.output  # type: ignore[attr-defined]
            assert store.head().last_position == 0


def test_import_legacy_names_a_counter_or_time_that_is_not_one(tmp_path: Path) -> None:
    # int() of the counter was a ValueError's traceback (exit 1), and a number in createdAt an
    # AttributeError's; 1.5 records were cut to 1. A SQLite column holds any value whatever
    # its type, a MariaDB legacy table may keep its counters as text.
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            cases = [("recordsFetched", "12 rows\n\x1b[2J", '"12 rows\\n\\x1b[2J"')]
            with store.engine.begin() as conn:
                if store.engine.dialect.name == "sqlite":
                    cases += [("claimsCreated", 1.5, '"1.5"'), ("recordsSkipped", 1e999, '"inf"')]
                    cases += [("createdAt", 12.5, '"12.5"')]
                else:
                    conn.execute(text("ALTER TABLE ingestion_runs MODIFY recordsFetched TEXT"))
            upgrade(store.engine, url)
            for column, value, shown in cases:
                with store.engine.begin() as conn:
                    conn.execute(
                        text(f"UPDATE ingestion_runs_legacy SET {column} = :v WHERE id = 7"),
                        {"v": value},
                    )
                result = run("import-legacy", "--db", url)
                assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
                kind = "time" if column == "createdAt" else "whole number"
                assert result.stderr == (  # type: ignore[attr-defined]
                    f"Error: legacy row id 7: {column}: {shown} is not a {kind}; nothing was "
                    "imported\n"
                )
                assert store.head().last_position == 0
                with store.engine.begin() as conn:
                    conn.execute(
                        text(f"UPDATE ingestion_runs_legacy SET {column} = :v WHERE id = 7"),
                        {"v": "2026-01-28 01:12:07" if column == "createdAt" else 3},
                    )
            result = run("import-legacy", "--db", url)  # text of digits is a count
            assert result.exit_code == 0, result.output  # type: ignore[attr-defined]


def test_import_legacy_without_the_table_says_where_it_looked_and_why(tmp_path: Path) -> None:
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            upgrade(store.engine, url)  # no ingestion_runs to rename: no legacy table
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 1  # type: ignore[attr-defined]
            error = result.stderr  # type: ignore[attr-defined]
            assert f"no legacy table 'ingestion_runs_legacy' in {mask_url(url)}" in error
            assert "`ledger migrate` renames an existing ingestion_runs" in error
            result = run("import-legacy", "--from-url", url, "--table", "old_runs", "--db", url)
            assert f"no legacy table 'old_runs' in {mask_url(url)}" in result.stderr  # type: ignore[attr-defined]
            assert "--table" in result.stderr  # type: ignore[attr-defined]
            result = run("import-legacy", "--table", "ledger_head", "--db", url)
            assert result.exit_code == 1  # type: ignore[attr-defined]
            assert "'ledger_head' in" in result.stderr  # type: ignore[attr-defined]
            assert (
                "is not a legacy ingestion_runs table: it has no sourceId, connectorName"
                in result.stderr
            )  # type: ignore[attr-defined]


def test_import_legacy_names_the_option_of_a_bad_legacy_url(db_url: str) -> None:
    # With --db and --from-url both given, "not a database URL" did not say which one it was.
    for bad, why in (
        ("notaurl", "not a database URL: 'notaurl'"),
        ("postgresql://u:pw-x@h/legacy", "unsupported database 'postgresql'"),
    ):
        result = run("import-legacy", "--from-url", bad, "--db", db_url)
        assert result.exit_code == 2  # type: ignore[attr-defined]
        assert result.stderr.startswith(f"Error: --from-url: {why}")  # type: ignore[attr-defined]
        assert "pw-x" not in result.stderr  # type: ignore[attr-defined]


def test_import_legacy_over_runs_with_the_same_ids_refuses_before_appending(
    tmp_path: Path,
) -> None:
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            upgrade(store.engine, url)
            store.start_run(7, "SOURCE_7", run_id=1)  # the ledger's own, not legacy row 1
            store.start_run(7, "SOURCE_7", run_id=30002)
            head = store.head().last_position
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
            error = result.stderr  # type: ignore[attr-defined]
            assert "legacy run id(s) 1, 30002 already exist in the ledger" in error
            assert "nothing was appended" in error
            assert "Import into a fresh ledger" in error
            assert "RunStarted may appear only once" not in error
            assert store.head().last_position == head


def test_a_refused_import_leaves_the_run_id_allocator_where_it_was(db_url: str) -> None:
    """A wrong source (legacy ids that clash with the ledger's runs) is refused before it
    reserves anything: the allocator would otherwise jump to its highest id for good."""
    store = Ledger.from_url(db_url)
    try:
        with store.engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE old_runs (id INTEGER PRIMARY KEY, sourceId INTEGER NOT NULL, "
                "connectorName VARCHAR(100) NOT NULL, startedAt TIMESTAMP NULL, "
                "completedAt TIMESTAMP NULL, status VARCHAR(7) NOT NULL, createdAt TIMESTAMP NULL)"
            )
            conn.execute(
                text(
                    "INSERT INTO old_runs (id, sourceId, connectorName, startedAt, status) "
                    "VALUES (:id, 1, 'SOURCE_1', '2026-01-28 01:00:00', 'running')"
                ),
                [{"id": 1}, {"id": 2_000_000_000}],
            )
        store.start_run(7, "SOURCE_7")  # run 1: the ledger's own
        before = store.head()
        result = run("import-legacy", "--from-url", db_url, "--table", "old_runs", "--db", db_url)
        assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
        assert "legacy run id(s) 1 already exist" in result.stderr  # type: ignore[attr-defined]
        assert store.head() == before
        assert store.start_run(7, "SOURCE_7") == 2
    finally:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE old_runs")
        store.close()


def test_import_legacy_gives_back_empty_details_and_reports_json_null(tmp_path: Path) -> None:
    """Legacy details `{}` projected NULL and were named "kept apart" (no reserved key was
    there); the JSON text `null` was taken for SQL NULL. `{}` now projects as `{}` with nothing
    to report; JSON null, which a fact cannot hold apart from no details, is a mismatch."""
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            with store.engine.begin() as conn:
                for row_id, details in ((7, "{}"), (8, "null")):
                    conn.execute(
                        text("UPDATE ingestion_runs SET errorDetails = :d WHERE id = :id"),
                        {"d": details, "id": row_id},
                    )
            upgrade(store.engine, url)
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 1, result.output  # type: ignore[attr-defined]
            summary = json.loads(result.stdout)  # type: ignore[attr-defined]
            assert summary["details_kept_apart"] == []
            assert summary["mismatches"] == [
                "row 8: errorDetails was the JSON text null, the ledger gives SQL NULL (a fact "
                "cannot hold JSON null details)"
            ]
            rows = table_rows(store)
            assert rows[7]["errorDetails"] == {}
            assert rows[8]["errorDetails"] is None
            rebuild(store)
            assert table_rows(store)[7]["errorDetails"] == {}
            assert verify_all(store).ok


def _without_its_primary_key(store: Ledger) -> None:
    """The seeded legacy table copied without its primary key, as a table kept by hand (or
    dumped and restored without its keys) may be: nothing stops two rows of one id."""
    with store.engine.begin() as conn:
        conn.execute(text("CREATE TABLE legacy_copy AS SELECT * FROM ingestion_runs"))
        conn.execute(text("DROP TABLE ingestion_runs"))
        conn.execute(text("ALTER TABLE legacy_copy RENAME TO ingestion_runs"))


def test_import_legacy_refuses_two_rows_of_one_id_before_appending(tmp_path: Path) -> None:
    # Before: the batches before the second row were appended, the allocator raised to the
    # highest legacy id for good, and the import stopped on "event_id … is already stored …
    # for a different fact" naming no legacy row; every re-run stopped there again.
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            _without_its_primary_key(store)
            with store.engine.begin() as conn:
                conn.execute(  # a second row 30002, the 39th row: in the second batch of 38
                    text(
                        "INSERT INTO ingestion_runs SELECT id, sourceId, connectorName, "
                        "startedAt, completedAt, duration, 'failed', recordsFetched, "
                        "recordsCreated, recordsUpdated, recordsSkipped, claimsCreated, "
                        "'again', errorDetails, coverageCellsUpdated, createdAt "
                        "FROM ingestion_runs WHERE id IN (30002, 5)"
                    )
                )
            upgrade(store.engine, url)  # continues the allocator above the legacy ids
            before = store.head()
            expected = (
                "table 'ingestion_runs_legacy': more than one legacy row has the id 5 (2 rows), "
                "30002 (2 rows); a legacy id becomes the id of one run: remove or renumber the "
                "repeated rows; nothing was imported"
            )
            with pytest.raises(ValidationError) as refused:
                import_legacy(store, rows_per_batch=38)
            assert str(refused.value) == expected
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
            assert result.stderr == f"Error: {expected}\n"  # type: ignore[attr-defined]
            assert store.head() == before
            assert before.last_position == 0


def test_import_legacy_names_a_null_start_and_takes_text_held_as_bytes(tmp_path: Path) -> None:
    # A NULL startedAt was an AttributeError's traceback (exit 1); a connectorName or
    # errorMessage held as bytes (a SQLite BLOB, a MariaDB VARBINARY) was imported, then the
    # comparison's TypeError traceback (exit 1) hid the summary; bytes that are not UTF-8 were
    # refused as "Input should be a valid string" without the value.
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            if store.engine.dialect.name == "sqlite":
                _without_its_primary_key(store)  # and its NOT NULL
            with store.engine.begin() as conn:
                if store.engine.dialect.name != "sqlite":
                    conn.execute(
                        text(
                            "ALTER TABLE ingestion_runs MODIFY startedAt DATETIME NULL, "
                            "MODIFY connectorName VARBINARY(100) NOT NULL, "
                            "MODIFY errorMessage BLOB NULL"
                        )
                    )
                conn.execute(text("UPDATE ingestion_runs SET startedAt = NULL WHERE id = 7"))
            upgrade(store.engine, url)
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
            assert result.stderr == (  # type: ignore[attr-defined]
                "Error: legacy row id 7: startedAt is NULL: a run's facts are dated from its "
                "start; nothing was imported\n"
            )
            with store.engine.begin() as conn:
                conn.execute(
                    text(
                        "UPDATE ingestion_runs_legacy SET startedAt = '2026-01-28 01:12:07', "
                        "errorMessage = :bad WHERE id = 7"
                    ),
                    {"bad": b"caf\xe9"},
                )
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
            refused = (
                "Error: legacy row id 7: errorMessage: \"b'caf\\\\xe9'\" is not UTF-8 text "
                "(byte 4); nothing was imported\n"
            )
            assert result.stderr == refused  # type: ignore[attr-defined]
            if store.engine.dialect.name == "sqlite":  # the same bytes as TEXT: the driver's
                # "Could not decode to UTF-8 column 'errorMessage'", exit 1, naming no row
                with store.engine.begin() as conn:
                    conn.execute(
                        text(
                            "UPDATE ingestion_runs_legacy SET errorMessage = "
                            "CAST(X'636166E9' AS TEXT) WHERE id = 7"
                        )
                    )
                result = run("import-legacy", "--db", url)
                assert (result.exit_code, result.stderr) == (2, refused)  # type: ignore[attr-defined]
            assert store.head().last_position == 0
            with store.engine.begin() as conn:
                conn.execute(
                    text(
                        "UPDATE ingestion_runs_legacy SET errorMessage = :message, "
                        "connectorName = :name WHERE id = 7"
                    ),
                    {"message": "café 😀".encode(), "name": b"SOURCE_2"},
                )
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
            assert json.loads(result.stdout)["mismatches"] == []  # type: ignore[attr-defined]
            row = table_rows(store)[7]
            assert (row["connectorName"], row["errorMessage"]) == ("SOURCE_2", "café 😀")


def test_import_legacy_of_a_table_without_created_at_reports_no_mismatch(tmp_path: Path) -> None:
    # A legacy table without createdAt (the import dates it from startedAt) was reported
    # "createdAt was null, the ledger gives …" for every row, exit 1.
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            with store.engine.begin() as conn:
                if store.engine.dialect.name == "sqlite":
                    conn.execute(text("DROP INDEX IF EXISTS idx_ingestion_runs_createdAt"))
                conn.execute(text("ALTER TABLE ingestion_runs DROP COLUMN createdAt"))
            upgrade(store.engine, url)
            result = run("import-legacy", "--db", url)
            assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
            summary = json.loads(result.stdout)  # type: ignore[attr-defined]
            assert (summary["imported"], summary["mismatches"]) == (39, [])
            assert table_rows(store)[30002]["createdAt"] == table_rows(store)[30002]["startedAt"]


def test_import_legacy_names_a_status_outside_the_legacy_enum(tmp_path: Path) -> None:
    # It said "status: Input should be 'success', 'partial' or 'failed'", without the value.
    with support.unmigrated_databases(tmp_path) as databases:
        for url, store in databases:
            seed_legacy_table(store)
            if store.engine.dialect.name != "sqlite":
                with store.engine.begin() as conn:
                    conn.execute(text("ALTER TABLE ingestion_runs MODIFY status VARCHAR(20)"))
            upgrade(store.engine, url)
            for status, shown in [("timed_out", '"timed_out"'), ("SUCCESS", '"SUCCESS"')]:
                with store.engine.begin() as conn:
                    conn.execute(
                        text("UPDATE ingestion_runs_legacy SET status = :s WHERE id = 7"),
                        {"s": status},
                    )
                result = run("import-legacy", "--db", url)
                assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
                assert result.stderr == (  # type: ignore[attr-defined]
                    f"Error: legacy row id 7: status: {shown} is not a legacy status (running, "
                    "success, partial, failed); nothing was imported\n"
                )
                assert store.head().last_position == 0


# ---------------------------------------------------------------- an import in pages
# The import reads the legacy table in pages (`page_rows`) and keeps only what later steps
# need; these tests page a small table by 3 or 4 rows to try each edge on both databases.

PAGED_DDL = (
    "CREATE TABLE old_runs (id INTEGER NULL, sourceId INTEGER NOT NULL, "
    "connectorName VARCHAR(100) NOT NULL, startedAt TIMESTAMP NULL, completedAt TIMESTAMP NULL, "
    "status VARCHAR(9) NOT NULL, recordsFetched INTEGER NOT NULL DEFAULT 0, "
    "createdAt TIMESTAMP NULL)"
)  # no primary key: nothing stops two rows of one id, or a NULL id


def _old_runs(store: Ledger, ids: list[int | None], **changes: dict[str, object]) -> None:
    """A legacy table ``old_runs`` (no primary key) of a success for each of ``ids``;
    ``changes`` sets columns of the row of the id its key names (``{"r10": {...}}``)."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS old_runs")
        conn.exec_driver_sql(PAGED_DDL)
        rows = [
            {
                "id": row_id,
                "started": "2026-01-28 01:00:00",
                "completed": "2026-01-28 01:00:30",
                "status": "success",
                "fetched": row_id or 0,
                **changes.get(f"r{row_id}", {}),
            }
            for row_id in ids
        ]
        conn.execute(
            text(
                "INSERT INTO old_runs (id, sourceId, connectorName, startedAt, completedAt, "
                "status, recordsFetched, createdAt) VALUES (:id, 1, 'SOURCE_1', :started, "
                ":completed, :status, :fetched, :started)"
            ),
            rows,
        )


def _paged_import(
    store: Ledger, db_url: str, page_rows: int = 3, rows_per_batch: int = 2
) -> dict[str, object]:
    result = import_legacy(
        store, db_url, "old_runs", rows_per_batch=rows_per_batch, page_rows=page_rows
    )
    return result.to_dict()


def _drop_old_runs(store: Ledger) -> None:
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS old_runs")


def test_an_import_in_pages_imports_every_row_and_a_rerun_appends_nothing(
    ledger: Ledger, db_url: str
) -> None:
    try:
        _old_runs(ledger, list(range(1, 11)), r7={"status": "running", "completed": None})
        first = _paged_import(ledger, db_url)
        assert (first["rows"], first["imported"], first["already_imported"]) == (10, 10, 0)
        assert (first["left_open"], first["mismatches"]) == ([7], [])
        head = ledger.head()
        assert head.last_run_id == 10
        for page_rows in (1, 4, 10, 11):  # a page of one row, pages cut anywhere, one page
            again = _paged_import(ledger, db_url, page_rows=page_rows, rows_per_batch=3)
            assert (again["imported"], again["already_imported"]) == (0, 10), page_rows
            assert (again["left_open"], again["mismatches"]) == ([7], []), page_rows
        assert ledger.head() == head
        assert sorted(state.run_id for state in ledger.runs()) == list(range(1, 11))
        assert verify_all(ledger).ok
    finally:
        _drop_old_runs(ledger)


def test_an_import_in_pages_finds_ids_repeated_across_a_page_boundary(
    ledger: Ledger, db_url: str
) -> None:
    """Rows of one id are adjacent in id order: a page takes every row of its last id, so a
    repeated id is found on a page boundary (a `WHERE id > last` page would skip the second
    row of id 3, the first page's last), and the message names 10 of them with their counts
    as the whole-table check did."""
    try:
        before = ledger.head()
        _old_runs(ledger, [1, 2, 3, 3, 4, 5, 6, 6, 6, 7])
        with pytest.raises(ValidationError) as refused:
            _paged_import(ledger, db_url, page_rows=3)
        assert str(refused.value) == (
            "table 'old_runs': more than one legacy row has the id 3 (2 rows), 6 (3 rows); a "
            "legacy id becomes the id of one run: remove or renumber the repeated rows; "
            "nothing was imported"
        )
        _old_runs(ledger, [row_id for row_id in range(1, 14) for _ in range(2)] + [14])
        for page_rows in (2, 3, 5):
            with pytest.raises(ValidationError) as refused:
                _paged_import(ledger, db_url, page_rows=page_rows)
            assert "has the id 1 (2 rows), 2 (2 rows)" in str(refused.value)
            assert "10 (2 rows) and 3 more; a legacy id" in str(refused.value), page_rows
        assert ledger.head() == before
    finally:
        _drop_old_runs(ledger)


def test_an_import_in_pages_refuses_a_bad_row_on_its_last_page_before_writing(
    ledger: Ledger, db_url: str
) -> None:
    """Each refusal of a row on the last page (a page of 3 rows, the bad rows 9 and 10) comes
    before anything is written, the run id allocator included; NULL ids (more than a page of
    them) are refused too, without paging for ever."""
    before = ledger.head()
    ahead = {"started": "2037-06-01 00:00:00", "completed": None, "status": "running"}
    try:
        for changes, refusal in (
            ({"r10": {"status": "timed_out"}}, 'legacy row id 10: status: "timed_out" is not'),
            ({"r10": {"started": None}}, "legacy row id 10: startedAt is NULL"),
            ({"r10": {"fetched": -1}}, "legacy row id 10: records_fetched"),
            (
                {"r9": ahead, "r10": ahead},
                "legacy row id 9 (and 1 other row(s)): occurred_at: 2037-06-01T00:00:00.000000Z "
                "is more than 5 minutes ahead of the ledger clock",
            ),
        ):
            _old_runs(ledger, list(range(1, 11)), **changes)
            with pytest.raises(ValidationError) as refused:
                _paged_import(ledger, db_url)
            assert str(refused.value).startswith(refusal), str(refused.value)
            assert ledger.head() == before  # last_run_id too
        _old_runs(ledger, [None] * 7 + [1, 2])
        with pytest.raises(ValidationError, match="legacy row id None: event: run_id"):
            _paged_import(ledger, db_url, page_rows=2)
        assert ledger.head() == before
        store = ledger.start_run(1, "SOURCE_1")
        assert store == 1
    finally:
        _drop_old_runs(ledger)


def test_an_import_in_pages_stops_when_the_table_changes_between_its_passes(
    ledger: Ledger, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows are checked in a first pass, appended in a second: a row that changed (or came)
    in between was never checked. The page holding it is not appended: the import stops
    saying the table changed and that running it again is safe, which then completes it."""
    reserve = Ledger.reserve_run_ids
    change: list[str] = []

    def reserve_then_change(self: Ledger, *args: object, **kwargs: object) -> None:
        reserve(self, *args, **kwargs)  # type: ignore[arg-type]
        with self.engine.begin() as conn:
            for statement in change:
                conn.exec_driver_sql(statement)
        change.clear()

    monkeypatch.setattr(Ledger, "reserve_run_ids", reserve_then_change)
    try:
        _old_runs(ledger, list(range(1, 11)))
        change.append("UPDATE old_runs SET status = 'failed' WHERE id = 5")  # the 2nd page
        result = run("import-legacy", "--from-url", db_url, "--table", "old_runs", "--db", db_url)
        assert result.exit_code == 3, result.output  # type: ignore[attr-defined]
        assert result.stderr.startswith(  # type: ignore[attr-defined]
            "Error: table 'old_runs' in "
        )
        assert "changed during the import" in result.stderr  # type: ignore[attr-defined]
        assert "Running `ledger import-legacy` again is safe" in result.stderr  # type: ignore[attr-defined]
        assert "Traceback" not in result.output  # type: ignore[attr-defined]
        # the first page of 1,000 held all 10 rows: with pages of 3, the first is appended
        _old_runs(ledger, list(range(1, 11)))
        change.append("UPDATE old_runs SET status = 'failed' WHERE id = 5")
        with pytest.raises(LegacyTableChangedError):
            _paged_import(ledger, db_url)
        assert sorted(state.run_id for state in ledger.runs()) == [1, 2, 3]
        change.append(
            "INSERT INTO old_runs SELECT 11, sourceId, connectorName, startedAt, "
            "completedAt, status, recordsFetched, createdAt FROM old_runs WHERE id = 1"
        )
        with pytest.raises(LegacyTableChangedError):  # a row added on the last page
            _paged_import(ledger, db_url)
        assert len(ledger.runs()) == 9  # the last page, 10 and 11, not appended
        again = _paged_import(ledger, db_url)
        assert (again["rows"], again["imported"], again["already_imported"]) == (11, 2, 9)
        assert again["mismatches"] == []
        assert table_rows(ledger)[5]["status"] == "failed"
        assert verify_all(ledger).ok
    finally:
        _drop_old_runs(ledger)


def test_an_import_in_pages_checks_the_pages_again_under_the_lock_when_the_head_moved(
    ledger: Ledger, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that takes a legacy id between the first pass and the reservation is found by
    the pages read again under the head lock (each verified against its digest), and the
    reservation is rolled back; so is one made while the table changed."""
    reserve = Ledger.reserve_run_ids
    meanwhile: list[Callable[[Ledger], object]] = []

    def reserve_after(self: Ledger, *args: object, **kwargs: object) -> None:
        for step in meanwhile:
            step(self)
        meanwhile.clear()
        reserve(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Ledger, "reserve_run_ids", reserve_after)
    try:
        _old_runs(ledger, list(range(1, 11)))
        meanwhile.append(lambda store: store.start_run(7, "SOURCE_7", run_id=8))
        with pytest.raises(ValidationError, match=r"legacy run id\(s\) 8 already exist"):
            _paged_import(ledger, db_url)
        before = ledger.head()
        assert before.last_run_id == 0  # not 10: the reservation was rolled back

        def change_the_table(store: Ledger) -> None:
            store.start_run(7, "SOURCE_7", run_id=40)  # not a legacy id: the head moves
            with store.engine.begin() as conn:
                conn.exec_driver_sql("UPDATE old_runs SET status = 'failed' WHERE id = 22")

        _old_runs(ledger, list(range(21, 31)))
        meanwhile.append(change_the_table)
        with pytest.raises(LegacyTableChangedError):
            _paged_import(ledger, db_url)
        assert ledger.head().last_run_id == 0
        assert [state.run_id for state in ledger.runs()] == [8, 40]
    finally:
        _drop_old_runs(ledger)
