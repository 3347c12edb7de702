"""What ``ledger serve`` shows as it starts (issue 15, item 5): one line saying what is scheduled
and when each job first fires, in UTC, on stderr by default; interval jobs and the sweeper run
once at start (``run_at_start``) instead of after their first interval."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from connectors import SAMPLE_CSV
from ledger import Ledger
from service.config import LedgerConfig
from service.serve import LedgerService
from tests.support import stop_process

REPO = Path(__file__).resolve().parents[2]


def connector(name: str, source_id: int, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "csv",
        "source_id": source_id,
        "options": {"path": str(SAMPLE_CSV)},
        **fields,
    }


@pytest.fixture
def services() -> Iterator[list[LedgerService]]:
    """Services a test makes; each is shut down (scheduler, connections) even if it fails."""
    made: list[LedgerService] = []
    yield made
    for service in made:
        if service.scheduler.running:
            service.shutdown()
        else:
            service.ledger.close()
            service.scrape_ledger.close()


def make_service(services: list[LedgerService], db_url: str, **config: Any) -> LedgerService:
    service = LedgerService(LedgerConfig.model_validate({"database_url": db_url, **config}))
    services.append(service)
    return service


@freeze_time("2026-01-28 10:03:17")
def test_the_startup_line_names_each_job_and_when_it_first_fires(
    db_url: str, services: list[LedgerService]
) -> None:
    service = make_service(
        services,
        db_url,
        sweeper={"interval": "15m"},
        connectors=[
            connector("stations", 1, schedule={"interval": "15m"}),
            connector("nightly", 2, schedule={"cron": "30 2 * * *"}),
            connector("quiet", 3, schedule={"interval": "1h", "run_at_start": False}),
            connector("off", 4, schedule={"interval": "5m"}, enabled=False),
        ],
    )
    service.add_jobs()
    assert service.schedule_summary() == (
        "scheduled (times UTC): connector:stations:1 every 15m, first now; "
        'connector:nightly:2 cron "30 2 * * *", first 2026-01-29 02:30:00; '
        "connector:quiet:3 every 1h, first 2026-01-28 11:00:00; "
        "projector every 1s; sweeper every 15m, first now; spool every 1m, first now; "
        "1 connector(s) disabled"
    )


@freeze_time("2026-01-28 10:03:17")
def test_run_at_start_false_waits_for_the_first_tick(
    db_url: str, services: list[LedgerService]
) -> None:
    service = make_service(
        services,
        db_url,
        serve={"run_at_start": False},
        connectors=[
            connector("stations", 1, schedule={"interval": "15m"}),
            connector("nightly", 2, schedule={"cron": "30 2 * * *", "run_at_start": True}),
        ],
    )
    service.add_jobs()
    summary = service.schedule_summary()
    assert "connector:stations:1 every 15m, first 2026-01-28 10:15:00" in summary
    assert 'connector:nightly:2 cron "30 2 * * *", first now' in summary  # its own choice
    assert "sweeper every 15m, first 2026-01-28 10:15:00" in summary
    assert [job.id for job in service.scheduler.get_jobs() if job.id.endswith(":start")] == [
        "connector:nightly:2:start"
    ]


def wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        threading.Event().wait(0.05)


def test_an_interval_connector_and_the_sweeper_run_at_start(
    ledger: Ledger, db_url: str, services: list[LedgerService]
) -> None:
    service = make_service(
        services,
        db_url,
        sweeper={"interval": "1d"},
        connectors=[connector("stations", 1, schedule={"interval": "1d"})],
    )
    service.add_jobs()
    service.scheduler.start()
    wait_for(lambda: service.last_sweep_at is not None)
    wait_for(lambda: any(e.type == "RunFinished" for e in ledger.read_all()))
    (started,) = [e for e in ledger.read_all() if e.type == "RunStarted"]
    assert started.payload_data["connector_name"] == "stations"


def test_serve_prints_the_startup_line_on_stderr_without_v(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text(
        f'database_url = "{db_url}"\n'
        '[[connectors]]\nname = "stations"\ntype = "csv"\nsource_id = 1\n'
        f'schedule = {{ interval = "15m" }}\noptions = {{ path = "{SAMPLE_CSV}" }}\n'
        "[web]\nenabled = true\n",  # without [api] listen: said, not silently ignored
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [sys.executable, "-c", "from service.cli import main; main()", "serve", "--config", config],
        cwd=REPO,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr or []), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("scheduled (times UTC)" in line for line in lines))
        wait_for(lambda: any(e.type == "RunFinished" for e in ledger.read_all()))  # not in 15m
    finally:
        stop_process(process, read_output=False)  # the reader thread reads stderr
        reader.join(timeout=10)
    assert process.returncode == 0, "".join(lines)
    (line,) = [line for line in lines if "scheduled (times UTC)" in line]
    assert line.startswith("scheduled (times UTC): connector:stations:1 every 15m, first now;")
    assert not any("apscheduler" in line for line in lines)
    assert any("[api] listen is not set: `ledger serve` serves no pages" in line for line in lines)
