"""The proof report judges stuck runs as `ledger stuck --config`, serve's sweeper and the web's
Stuck page do: by each connector's own thresholds from the serve config, not by one global
silence (a connector allowed 6h was "stuck" at 90 minutes in the report, and the web's Proof
page disagreed with its own Stuck page), on SQLite and on MariaDB."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from fastapi.testclient import TestClient
from freezegun import freeze_time

from ledger import Ledger
from projections import Projector
from service.api import create_app
from service.cli import cli
from service.config import ConnectorConfig
from tests.service.web.support import TOKENS, log_in, web_config

NOW = datetime(2026, 2, 1, 23, 33, 44, tzinfo=UTC)
CONFIG = (
    '[thresholds]\nstale_after = "60m"\n'
    '[[connectors]]\nname = "backfill"\ntype = "csv"\nsource_id = 1\n'
    'schedule = { interval = "1d" }\noptions = { path = "x.csv" }\n'
    'thresholds = { stale_after = "6h" }\n'
)
PATIENT_CONNECTOR: dict[str, Any] = {
    "name": "backfill",
    "type": "csv",
    "source_id": 1,
    "schedule": {"interval": "1d"},
    "options": {"path": "x.csv"},
    "thresholds": {"stale_after": "6h"},
}


def silent_runs(ledger: Ledger) -> tuple[int, int]:
    """Two runs of `backfill`, silent for 90 minutes: source 1's connector is allowed 6h of
    silence by the config, source 2's is not configured (60m)."""
    started = NOW - timedelta(minutes=90)
    with freeze_time(started):
        patient = ledger.start_run(1, "backfill", occurred_at=started)
        other = ledger.start_run(2, "backfill", occurred_at=started)
    return patient, other


def stuck_in_report(data: dict[str, Any]) -> list[int]:
    return [run["run_id"] for run in data["stuck_runs"]]


def test_report_with_config_finds_the_stuck_runs_stuck_finds(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    patient, other = silent_runs(ledger)
    config = tmp_path / "ledger.toml"
    config.write_text(CONFIG)
    runner = CliRunner()
    with freeze_time(NOW):
        stuck = runner.invoke(
            cli, ["stuck", "--config", str(config), "--format", "json", "--db", db_url]
        )
        report = runner.invoke(
            cli, ["report", "--config", str(config), "--format", "json", "--db", db_url]
        )
        as_of = runner.invoke(  # replayed, judged at NOW
            cli,
            ["report", "--config", str(config), "--as-of", NOW.isoformat(), "--format", "json",
             "--db", db_url],
        )  # fmt: skip
        unconfigured = runner.invoke(cli, ["report", "--format", "json", "--db", db_url])
        forced = runner.invoke(
            cli,
            ["report", "--config", str(config), "--stuck-after", "1h", "--format", "json",
             "--db", db_url],
        )  # fmt: skip
    assert [run["run_id"] for run in json.loads(stuck.stdout)] == [other]
    assert report.exit_code == 1, report.output
    assert stuck_in_report(json.loads(report.stdout)) == [other], report.output
    assert stuck_in_report(json.loads(as_of.stdout)) == [other], as_of.output
    condition = json.loads(report.stdout)["conditions"][0]
    assert condition["name"] == "no stuck runs"
    assert not condition["passed"]
    assert condition["detail"] == (
        "1 open run(s) silent for more than 1h (or by its connector's own thresholds: 1 set)"
    )
    # Without the config, the 60m default for every run; --stuck-after replaces each threshold.
    assert stuck_in_report(json.loads(unconfigured.stdout)) == [patient, other]
    assert stuck_in_report(json.loads(forced.stdout)) == [patient, other]


def test_report_with_a_missing_config_is_the_callers_mistake(db_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["report", "--config", str(tmp_path / "no.toml"), "--db", db_url]
    )
    assert result.exit_code == 2, result.output
    assert "cannot read the config file" in result.output


def test_the_web_proof_page_agrees_with_the_stuck_page(ledger: Ledger, db_url: str) -> None:
    patient, other = silent_runs(ledger)
    Projector(ledger).run_once()
    config = web_config(db_url).model_copy(
        update={"connectors": [ConnectorConfig.model_validate(PATIENT_CONNECTOR)]}
    )
    app = create_app(config)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            log_in(client, "reader")
            with freeze_time(NOW):  # the runs' silence: 90 minutes
                stuck_page = client.get("/web/stuck").text
                proof = client.get("/web/proof.md").text
    finally:
        app.state.web.close()
        app.state.api.close()
    assert f"/web/runs/{other}" in stuck_page
    assert f"/web/runs/{patient}" not in stuck_page
    stuck_section = proof.split("## E", 1)[1].split("## F", 1)[0]
    assert f"- run {other} (" in stuck_section
    assert f"- run {patient} (" not in stuck_section
    assert TOKENS["reader"][0] not in proof
