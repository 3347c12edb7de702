"""What ``ledger serve`` and ``ledger project --follow`` log (issue 15, items 5, 6 and 12):
normal actions at INFO, an outage as one WARNING and one INFO, APScheduler's lines translated,
each applied batch with its lag at ``-v``, and one WARNING per failed run, with the reason."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobSubmissionEvent
from freezegun import freeze_time
from prometheus_client import CollectorRegistry, generate_latest

from ledger import Ledger, RunProgressed, RunStarted, sweep
from ledger.clock import utcnow
from projections import Projector
from projections.errors import CheckpointMovedError
from service.config import LedgerConfig
from service.metrics import LedgerCollector
from service.serve import LedgerService


@pytest.fixture
def service(db_url: str, tmp_path: Path) -> Iterator[LedgerService]:
    config = LedgerConfig.model_validate(
        {
            "database_url": db_url,
            "connectors": [
                {
                    "name": "broken",
                    "type": "csv",
                    "source_id": 2,
                    "schedule": {"interval": "15m"},
                    "options": {"path": str(tmp_path / "nowhere" / "records.csv")},
                }
            ],
        }
    )
    made = LedgerService(config)
    try:
        yield made
    finally:
        made.ledger.close()
        made.scrape_ledger.close()


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_a_failed_run_is_one_warning_with_its_reason_and_no_traceback(
    service: LedgerService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    service.connector_jobs.tick(service.config.connectors[0])
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    message = failures[0].getMessage()
    assert message.startswith("connector:broken:2: run 1 failed: FileNotFoundError: ")
    assert str(tmp_path / "nowhere" / "records.csv") in message
    assert failures[0].exc_info is None


def test_a_failed_http_json_run_is_one_warning_its_retries_are_info(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Each retry of a page was a WARNING: three "retrying … (attempt N)" before the run's
    # failure, at every tick of a source that is down.
    with socket.socket() as unused:  # bound, never listening: every attempt is refused
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        config = LedgerConfig.model_validate(
            {
                "database_url": db_url,
                "connectors": [
                    {
                        "name": "api",
                        "type": "http-json",
                        "source_id": 3,
                        "schedule": {"interval": "15m"},
                        "options": {"url": f"http://127.0.0.1:{port}/items", "backoff": 0},
                    }
                ],
            }
        )
        service = LedgerService(config)
        try:
            caplog.set_level(logging.INFO)
            service.connector_jobs.tick(service.config.connectors[0])
        finally:
            service.ledger.close()
            service.scrape_ledger.close()
    warnings = lines(caplog, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("connector:api:3: run 1 failed: ")
    assert "still failing after 3 retries" in warnings[0]
    retries = [line for line in lines(caplog, logging.INFO) if line.startswith("retrying ")]
    assert [line.split("(attempt ")[1][0] for line in retries] == ["2", "3", "4"]


def test_normal_actions_log_at_info(
    service: LedgerService, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    with freeze_time(utcnow() - timedelta(hours=2)):
        run_id = ledger.start_run(1, "stations")
    caplog.set_level(logging.INFO)
    service.sweeper_job()
    result = sweep(ledger)  # nothing left: the sweeper timed it out already
    assert result.timed_out == []
    assert lines(caplog, logging.WARNING) == []
    assert any(line.startswith(f"timed out run {run_id} ") for line in lines(caplog, logging.INFO))
    assert "sweeper: 1 run(s) timed out, 0 left alone" in lines(caplog, logging.INFO)


def test_apschedulers_skipped_and_missed_runs_are_said_once_naming_the_connector(
    service: LedgerService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tick = datetime(2026, 1, 28, 10, 15, tzinfo=UTC)
    for job in ("connector:broken:2", "connector:broken:2:start", "projector"):
        # What APScheduler does on such a run: log its own line, then tell the listeners.
        logging.getLogger("apscheduler.scheduler").warning(
            'Execution of job "%s" skipped: maximum number of running instances reached (%d)',
            job,
            1,
        )
        service.scheduler_event(JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, job, "default", [tick]))
    logging.getLogger("apscheduler.executors.default").warning(
        'Run time of job "%s" was missed by %s', "connector:broken:2", timedelta(seconds=75)
    )
    missed = JobSubmissionEvent(EVENT_JOB_MISSED, "connector:broken:2", "default", [tick])
    missed.scheduled_run_time = tick  # as JobExecutionEvent carries it
    service.scheduler_event(missed)  # type: ignore[arg-type]
    assert lines(caplog, logging.WARNING) == [
        "connector:broken:2: tick skipped, its previous run is still going",
        "connector:broken:2: tick skipped, its previous run is still going",
        "connector:broken:2: tick at 2026-01-28 10:15:00 missed (the process was busy or "
        "suspended)",
    ]
    assert lines(caplog, logging.DEBUG) == [
        "projector: tick skipped, its previous run is still going"
    ]


def test_serves_projector_logs_an_unreachable_database_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No server listens on port 1: each tick fails at once, and only the first says so."""
    config = LedgerConfig.model_validate(
        {"database_url": "mysql+pymysql://ledger:pw@127.0.0.1:1/ledger?connect_timeout=2"}
    )
    service = LedgerService(config)
    try:
        caplog.set_level(logging.INFO)
        for _tick in range(3):
            service.projector_job()
    finally:
        service.ledger.close()
        service.scrape_ledger.close()
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert failures[0].levelno == logging.WARNING
    assert failures[0].getMessage().startswith("projector cannot proceed, retrying until it can")


def progress(run_id: int) -> RunProgressed:
    return RunProgressed(run_id=run_id)  # a heartbeat


def test_v_logs_each_applied_batch_with_its_positions_and_lag(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    with freeze_time("2026-01-28 10:00:00") as clock:
        run_id = ledger.start_run(1, "stations")
        ledger.append([progress(run_id), progress(run_id)])
        clock.tick(5)
        caplog.set_level(logging.INFO, logger="projections.projector")
        assert Projector(ledger, batch_size=2).run_once() == 3
    assert lines(caplog, logging.INFO) == [
        "projected 2 event(s), positions 1..2; lag 1 event(s), 5.0s",
        "projected 1 event(s), positions 3..3; lag 0 event(s), 5.0s",
    ]


def test_a_shutdown_during_a_conflict_retry_reports_no_outage(
    db_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve's projector tick losing every batch to another projector (Galera) when the
    process is told to stop: the retry ends at once and is not logged as an outage."""
    service = LedgerService(LedgerConfig.model_validate({"database_url": db_url}))
    try:
        service.ledger.start_run(1, "contested")

        def lost(one_by_one: bool) -> tuple[int, bool]:
            service.stop.set()  # the shutdown arrives while the batch is being retried
            raise CheckpointMovedError("another projector advanced the checkpoint first")

        monkeypatch.setattr(service.projector, "_apply_batch", lost)
        caplog.set_level(logging.INFO)
        service.projector_job()
    finally:
        service.ledger.close()
        service.scrape_ledger.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_scrapes_and_spool_flushes_log_an_unreachable_database_once(
    ledger: Ledger, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Prometheus scrapes every 15 s and the spool is flushed every minute: each logged a
    WARNING at every try for as long as the database was down. Now one WARNING as the outage
    starts, one INFO as it ends, as the projector does."""
    config = LedgerConfig.model_validate(
        {
            "database_url": "mysql+pymysql://ledger:pw@127.0.0.1:1/ledger?connect_timeout=2",
            "spool": {"dir": str(tmp_path / "spool")},
        }
    )
    service = LedgerService(config)
    service.spool.put([RunStarted(source_id=1, connector_name="spooled")])
    collector = LedgerCollector(service.figures, service.spool)
    down = service.scrape_ledger, service.ledger
    caplog.clear()  # the put's own "spooled 1 event(s)"
    try:
        caplog.set_level(logging.INFO)
        for _try in range(4):
            assert "ledger_database_up 0.0" in scrape(collector)
            service.spool_job()
        warnings = lines(caplog, logging.WARNING)
        assert len(warnings) == 2, warnings
        assert warnings[0].startswith("metrics scrape (ledger_database_up 0) cannot proceed")
        assert warnings[1].startswith("spool flush cannot proceed, retrying until it can")
        service.scrape_ledger = service.ledger = ledger  # the database is back
        for _try in range(2):
            assert "ledger_database_up 1.0" in scrape(collector)
            service.spool_job()
    finally:
        for engine in down:
            engine.close()
    assert len(lines(caplog, logging.WARNING)) == 2
    ended = [line for line in lines(caplog, logging.INFO) if "proceeding again" in line]
    assert [line.split(" proceeding")[0] for line in ended] == [
        "metrics scrape (ledger_database_up 0)",
        "spool flush",
    ]
    assert service.spool.status().pending == 0


def scrape(collector: LedgerCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def _every_minute(tmp_path: Path, database_url: str) -> LedgerConfig:
    """Three csv connectors due every minute (their file missing) on ``database_url``."""
    connectors = [
        {
            "name": f"c{number}",
            "type": "csv",
            "source_id": number,
            "schedule": {"interval": "1m"},
            "options": {"path": str(tmp_path / "nowhere.csv")},
        }
        for number in range(1, 4)
    ]
    return LedgerConfig.model_validate(
        {
            "database_url": database_url,
            "spool": {"dir": str(tmp_path / "spool")},
            "connectors": connectors,
        }
    )


def _tick_three_minutes(service: LedgerService) -> None:
    """Each connector's tick and a sweep, at 12:00, 12:01 and 12:02."""
    for minute in range(3):
        with freeze_time(datetime(2026, 1, 1, 12, minute, 1, tzinfo=UTC)):
            for connector in service.config.connectors:
                service.connector_jobs.tick(connector)
            service.sweeper_job()


def test_connector_and_sweeper_ticks_log_an_unreachable_database_once(
    ledger: Ledger, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each connector's tick and each sweep logged an ERROR while the database was down: with
    20 connectors every minute, 1,200 lines an hour. Now two lines for the whole outage."""
    config = _every_minute(
        tmp_path, "mysql+pymysql://ledger:pw@127.0.0.1:1/ledger?connect_timeout=2"
    )
    service = LedgerService(config)
    down = service.ledger
    caplog.set_level(logging.INFO)
    try:
        _tick_three_minutes(service)
        failures = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(failures) == 1, failures
        assert failures[0].startswith("scheduled ticks cannot proceed, retrying until it can")
        service.ledger = ledger  # the database is back
        with freeze_time(datetime(2026, 1, 1, 12, 3, 1, tzinfo=UTC)):
            service.sweeper_job()
    finally:
        down.close()
        service.scrape_ledger.close()
    assert [line for line in lines(caplog, logging.INFO) if "proceeding again" in line] == [
        "scheduled ticks proceeding again after 3m"
    ]


def test_ticks_meeting_a_missing_schema_say_so_once_and_again_when_it_is_back(
    ledger: Ledger, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The schema gone under a running serve (a database restored without it, tables dropped):
    each connector's tick and each sweep logged an ERROR "…the schema is missing: run `ledger
    migrate`…", every tick, for ever. Now one line as it starts and one once it is back, as
    for an unreachable database (and as the projector said it already)."""
    config = _every_minute(tmp_path, db_url)
    service = LedgerService(config)
    caplog.set_level(logging.INFO)
    with ledger.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE schedule_claims RENAME TO schedule_claims_away")
    try:
        _tick_three_minutes(service)
        failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(failures) == 1, [r.getMessage() for r in failures]
        said = failures[0].getMessage()
        assert said.startswith("scheduled ticks cannot proceed, retrying until it can"), said
        assert "the schema is missing: run `ledger migrate`" in said
    finally:
        with ledger.engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE schedule_claims_away RENAME TO schedule_claims")
    try:
        with freeze_time(datetime(2026, 1, 1, 12, 3, 1, tzinfo=UTC)):
            service.sweeper_job()
    finally:
        service.ledger.close()
        service.scrape_ledger.close()
    assert [line for line in lines(caplog, logging.INFO) if "proceeding again" in line] == [
        "scheduled ticks proceeding again after 3m"
    ]
