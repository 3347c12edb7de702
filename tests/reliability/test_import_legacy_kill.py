"""``ledger import-legacy`` SIGKILLed mid-import, a connector run started, then the import run
again: the legacy ids are the runs' ids, so the run the connector started must not take one of
the rows the killed import had not reached, or the re-run is refused for good and those legacy
facts can never be adopted."""

from __future__ import annotations

import json
import subprocess
import sys

from sqlalchemy import text

from forensics.verify import verify_all
from ledger import Ledger
from projections import Projector, rebuild
from tests.projection_support import table_rows
from tests.reliability.summary import Summary
from tests.reliability.support import REPO, kill_when

LEGACY_ROWS = 3_000  # 15 appends of 200 rows: the kill lands well before the last
LEGACY_DDL = """
CREATE TABLE old_runs (
  id INTEGER PRIMARY KEY, sourceId INTEGER NOT NULL, connectorName VARCHAR(100) NOT NULL,
  startedAt TIMESTAMP NULL, completedAt TIMESTAMP NULL, status VARCHAR(7) NOT NULL,
  recordsFetched INTEGER NOT NULL DEFAULT 0, createdAt TIMESTAMP NULL
)
"""


def _seed_legacy_table(ledger: Ledger) -> None:
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql(LEGACY_DDL)
        conn.execute(
            text(
                "INSERT INTO old_runs (id, sourceId, connectorName, startedAt, completedAt, "
                "status, recordsFetched, createdAt) VALUES (:id, 1, 'SOURCE_1', "
                "'2026-01-28 01:00:00', '2026-01-28 02:00:00', 'success', 5, "
                "'2026-01-28 01:00:00')"
            ),
            [{"id": i} for i in range(1, LEGACY_ROWS + 1)],
        )


def _import_command(db_url: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "service.cli",
        "import-legacy",
        "--from-url",
        db_url,
        "--table",
        "old_runs",
        "--db",
        db_url,
    ]


def test_an_import_killed_half_way_completes_when_run_again(
    ledger: Ledger, db_url: str, backend: str, reliability: Summary
) -> None:
    _seed_legacy_table(ledger)
    try:
        process = subprocess.Popen(
            _import_command(db_url),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        kill_when(ledger.runs, process, "the import's first batch of rows committed")
        imported_at_kill = len(ledger.runs())
        assert 0 < imported_at_kill < LEGACY_ROWS, "the kill did not land mid-import"

        connector_run = ledger.start_run(7, "SOURCE_7")  # a connector, before the import is re-run
        again = subprocess.run(_import_command(db_url), cwd=REPO, capture_output=True, text=True)

        assert again.returncode == 0, again.stderr
        summary = json.loads(again.stdout)
        assert (summary["imported"], summary["already_imported"]) == (
            LEGACY_ROWS - imported_at_kill,
            imported_at_kill,
        )
        assert summary["mismatches"] == []
        assert connector_run > LEGACY_ROWS
        runs = {state.run_id: state for state in ledger.runs()}
        assert len(runs) == LEGACY_ROWS + 1
        assert runs[connector_run].connector_name == "SOURCE_7"
        assert all(runs[i].connector_name == "SOURCE_1" for i in range(1, LEGACY_ROWS + 1))
        assert verify_all(ledger).ok
        Projector(ledger).run_once()
        projected = table_rows(ledger)
        rebuild(ledger)
        assert table_rows(ledger) == projected
    finally:  # the session's database is shared: a later test may make its own old_runs
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE old_runs")
    reliability.record(
        "import-legacy killed",
        backend,
        f"`ledger import-legacy --from-url` of {LEGACY_ROWS:,} legacy rows SIGKILLed after "
        f"{imported_at_kill} were imported; a connector run started; the import run again",
        "the connector's run took an id above every legacy id; the re-run imported the other "
        f"{LEGACY_ROWS - imported_at_kill:,} rows and found the first {imported_at_kill} "
        "stored; verify passes, projection = rebuild",
    )
