"""Defects found by reviewing issues 3-5, each pinned by a test (SQLite and MariaDB)."""

from __future__ import annotations

import json
import socket
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from connectors import CsvConnector, HttpJsonConnector, RunContext, Spool
from ledger import (
    ConfigurationError,
    Ledger,
    StorageError,
    ValidationError,
    parse_event,
    stuck_runs,
)
from ledger.durations import parse_duration
from projections import ProjectionBusyError, rebuild
from projections.dialects import exclusive_rebuild
from service import load_config
from service.cli import cli


def test_a_second_rebuild_at_once_is_refused(ledger: Ledger) -> None:
    ledger.start_run(1, "SOURCE_1")
    with (
        exclusive_rebuild(ledger.engine, "ingestion_runs"),
        pytest.raises(ProjectionBusyError, match="another rebuild"),
    ):
        rebuild(ledger)
    assert rebuild(ledger).events == 1  # and works once the first is done


def test_connector_overrides_keep_global_fields_and_are_per_source(
    tmp_path: Path, ledger: Ledger
) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text(
        '[thresholds]\nstale_after = "60m"\nmax_runtime = "6h"\n'
        '[[connectors]]\nname = "api"\ntype = "csv"\nsource_id = 2\n'
        'schedule = { interval = "5m" }\nthresholds = { stale_after = "10m" }\n'
        '[[connectors]]\nname = "api"\ntype = "csv"\nsource_id = 3\n'
        'schedule = { interval = "5m" }\nthresholds = { stale_after = "3h" }\n'
    )
    loaded = load_config(config)
    overrides = loaded.overrides()
    assert overrides[("api", 2)].max_runtime == timedelta(hours=6)  # inherited
    assert overrides[("api", 2)].stale_after == timedelta(minutes=10)
    assert overrides[("api", 3)].stale_after == timedelta(hours=3)
    from freezegun import freeze_time

    from ledger.clock import utcnow

    now = utcnow()
    with freeze_time(now - timedelta(minutes=20)):
        two = ledger.start_run(2, "api")
        three = ledger.start_run(3, "api")
    found = {r.run_id for r in stuck_runs(ledger, now=now, overrides=overrides)}
    assert found == {two}
    assert three not in found


def test_http_json_secrets_never_reach_the_ledger(ledger: Ledger, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    connector = HttpJsonConnector(
        1,
        f"http://user:pass-word@127.0.0.1:{port}/x?api_key=TOPSECRET",
        retries=1,
        backoff=0.01,
        timeout=1,
    )
    with pytest.raises(Exception, match="still failing"):
        connector.run(ledger, spool=Spool(tmp_path))
    stored = " ".join(e.payload for e in ledger.read_all())
    assert "TOPSECRET" not in stored
    assert "pass-word" not in stored
    assert "api_key=***" in stored


def test_record_keys_are_case_sensitive_on_both_databases(ledger: Ledger, tmp_path: Path) -> None:
    data = tmp_path / "keys.csv"
    data.write_text("id,v\nabc,1\nABC,2\nabc ,3\n")
    result = CsvConnector(1, data).run(ledger, spool=Spool(tmp_path))
    # "abc" and "ABC" are two records everywhere; "abc " is "abc" (keys are trimmed, as
    # MariaDB's PAD SPACE collations would compare them anyway), here with a new value.
    assert (result.status, result.totals["records_created"], result.totals["records_updated"]) == (
        "success",
        2,
        1,
    )


def test_the_first_second_of_1970_is_refused() -> None:
    with pytest.raises(ValidationError, match="before 1970-01-01T00:00:01Z"):
        parse_event(
            {
                "type": "RunStarted",
                "source_id": 1,
                "connector_name": "x",
                "occurred_at": "1970-01-01T00:00:00.5Z",
            }
        )


def test_absurd_durations_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="longer than 3650 days"):
        parse_duration("999999d", "stale_after")


def test_counts_survive_a_failed_send_and_spool(
    ledger: Ledger, backend: str, tmp_path: Path
) -> None:
    if backend != "sqlite":
        pytest.skip("the outage is made with SQLite's write lock")
    blocker_file = tmp_path / "not-a-folder"
    blocker_file.write_text("")
    broken_spool = Spool(blocker_file / "spool")  # cannot be created: a file is in the way
    impatient = Ledger.from_url(ledger.url, sqlite_busy_timeout_ms=50)
    run = RunContext(impatient, 1, "SOURCE_1", spool=broken_spool, progress_interval=0)
    run.start()
    path = make_url(ledger.url).database
    blocker = sqlite3.connect(str(path), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StorageError, match="spool"):
        run.progress(fetched=5)
    with pytest.raises(StorageError):
        run.finish()
    blocker.execute("ROLLBACK")
    blocker.close()
    result = run.finish()  # nothing was lost: the 5 go out before RunFinished
    assert result.status == "success"
    fetched = sum(e.payload_data.get("records_fetched", 0) for e in ledger.read_run(run.run_id))
    assert fetched == 5


def test_a_corrupt_spool_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "spool.db").write_bytes(b"this is not a database" * 100)
    result = CliRunner().invoke(cli, ["spool", "status", "--spool-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "spool" in result.stderr
    assert "Traceback" not in result.output


def test_a_busy_metrics_port_is_a_clear_error(tmp_path: Path, db_url: str) -> None:
    from service import LedgerService

    config = tmp_path / "ledger.toml"
    config.write_text(f'database_url = "{db_url}"\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = LedgerService(load_config(config), metrics_port=port)
        with pytest.raises(ConfigurationError, match=f"127.0.0.1:{port}"):
            service.start_metrics()
    _ = json


def test_report_on_an_unmigrated_database_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["report", "--db", f"sqlite:///{tmp_path / 'new.db'}"])
    assert result.exit_code == 1
    assert "ledger migrate" in result.stderr
    assert "Traceback" not in result.output


def test_http_json_usage_is_checked_before_a_run_starts(db_url: str, ledger: Ledger) -> None:
    runner = CliRunner()
    both = runner.invoke(
        cli,
        [
            "run",
            "http-json",
            "--url",
            "http://x/",
            "--page-param",
            "p",
            "--next-path",
            "n",
            "--db",
            db_url,
        ],
    )
    assert both.exit_code == 2
    bad = runner.invoke(cli, ["run", "http-json", "--url", "not-a-url", "--db", db_url])
    assert bad.exit_code == 2
    assert ledger.head().last_position == 0


def test_config_paths_are_relative_to_the_config_file() -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "ledger.toml"
    config = load_config(example)
    path = Path(config.connectors[0].options["path"])
    assert path.is_absolute()
    assert path.exists()
