"""A run closed under its connector (another writer appended its RunFinished), as ``ledger
run`` and ``ledger serve`` report it, on SQLite and on MariaDB: one line naming who closed it,
no traceback; ``ledger run`` prints the run's JSON with status ``closed`` and exits 1, and
``ledger spool status`` lists the refused events."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from connectors import CsvConnector, RunContext
from ledger import Ledger, RunFinished
from service.cli import cli
from service.config import LedgerConfig
from service.serve import LedgerService
from tests.connectors.support import write


@pytest.fixture
def closed_mid_run(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """The csv connector's ingest, with an operator appending the run's RunFinished first."""
    ingest = CsvConnector.ingest

    def closed_then_ingest(self: CsvConnector, run: RunContext) -> None:
        ledger.append(
            [
                RunFinished(
                    run_id=run.run_id,
                    status="failed",
                    error_message="duplicate run, closed by hand",
                    actor="operator:bob",
                )
            ]
        )
        ingest(self, run)

    monkeypatch.setattr(CsvConnector, "ingest", closed_then_ingest)


def test_ledger_run_reports_a_run_closed_under_it_in_one_line(
    ledger: Ledger, db_url: str, tmp_path: Path, closed_mid_run: None
) -> None:
    spool_dir = str(tmp_path / "spool")
    data = write(tmp_path / "rows.csv", "id,name\n1,a\n2,b\n")
    result = CliRunner().invoke(
        cli,
        [
            *("run", "csv", "--path", str(data), "--progress-interval", "0"),
            *("--spool-dir", spool_dir, "--db", db_url),
        ],
    )
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["status"] == "closed"
    assert report["error"].startswith(
        f"RunClosedError: run {report['run_id']} of csv: operator:bob closed it while the "
        "connector was running"
    )
    assert "Traceback" not in result.output
    assert "Traceback" not in result.stderr
    status = CliRunner().invoke(cli, ["spool", "status", "--spool-dir", spool_dir, "--wide"])
    assert status.exit_code == 1
    assert "rejected:  2" in status.stdout  # the first progress and the outcome
    assert "operator:bob closed it" in status.stdout


def test_serve_logs_a_run_closed_under_its_job_in_one_line(
    ledger: Ledger,
    db_url: str,
    tmp_path: Path,
    closed_mid_run: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = write(tmp_path / "rows.csv", "id,name\n1,a\n")
    config = LedgerConfig.model_validate(
        {
            "database_url": db_url,
            "spool": {"dir": str(tmp_path / "spool")},
            "serve": {"progress_interval": "0s"},
            "connectors": [
                {
                    "name": "stations",
                    "type": "csv",
                    "source_id": 1,
                    "schedule": {"interval": "15m"},
                    "options": {"path": str(data)},
                }
            ],
        }
    )
    service = LedgerService(config)
    try:
        with caplog.at_level(logging.INFO):
            service.connector_jobs._run_connector(config.connectors[0], "stations")
    finally:
        service.ledger.close()
        service.scrape_ledger.close()
    said = [r.getMessage() for r in caplog.records if r.name == "service.serve"]
    assert len(said) == 1
    assert said[0].startswith("stations: run 1 closed: RunClosedError: run 1 of stations: ")
    assert "operator:bob closed it" in said[0]
    assert not [r for r in caplog.records if r.exc_info]
