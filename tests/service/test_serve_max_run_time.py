"""``max_run_time``: a scheduled run that never ends does not hold its connector, or stay open,
for ever. Past its bound the run is asked to stop and ends ``failed`` naming the bound; one
whose connector is blocked in a read is timed out by serve after the grace period, and what the
connector reports once it wakes up is recorded after the timeout."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from freezegun import freeze_time

from connectors import RunContext, Spool
from ledger import Ledger
from ledger.clock import utcnow
from service import load_config, run_bound
from service.cli import cli
from service.config import LedgerConfig
from service.run_bound import MaxRunTimeExceeded, RunBound
from service.serve import LedgerService
from tests.service.support import fifo_source, finished_runs, serve, wait_for, write_config
from tests.service.test_serve import hanging_connector, wait_until
from tests.support import stop_process

NAME = "endless"


def bounded_service(db_url: str, path: Path, **serve: Any) -> LedgerService:
    config = LedgerConfig.model_validate(
        {
            "database_url": db_url,
            "serve": {"grace_period": "30s", **serve},
            "connectors": [
                {
                    "name": NAME,
                    "type": "csv",
                    "source_id": 1,
                    "schedule": {"interval": "15m"},
                    "options": {"path": str(path)},
                    "max_run_time": "2h",
                }
            ],
        }
    )
    return LedgerService(config)


@contextlib.contextmanager
def running_job(service: LedgerService) -> Iterator[threading.Thread]:
    """``ConnectorJobs.tick`` in a thread, as APScheduler runs it; the service closed after."""
    job = threading.Thread(target=service.connector_jobs.tick, args=[service.config.connectors[0]])
    job.start()
    try:
        yield job
    finally:
        job.join(timeout=60)
        service.ledger.close()
        service.scrape_ledger.close()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_run_past_max_run_time_is_asked_to_stop_and_ends_failed_naming_the_bound(
    ledger: Ledger, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    name = f"connector:{NAME}:1"
    with (
        fifo_source(tmp_path, feed=True) as source,
        freeze_time(utcnow() - timedelta(hours=3)) as clock,
    ):
        service = bounded_service(db_url, source.path)
        with running_job(service) as job:
            wait_for(lambda: name in service.connector_jobs.active)
            context = service.connector_jobs.active[name]
            clock.tick(timedelta(hours=1, minutes=59))
            wait_for(
                lambda: (
                    context.result is not None and context.result.totals["records_fetched"] >= 1000
                )
            )
            assert context._stop_request is None  # within its bound: it goes on
            clock.tick(timedelta(minutes=1))
            job.join(timeout=60)
            assert not job.is_alive()  # the connector's own code unwound: the job is over
    (run,) = finished_runs(ledger, NAME)
    assert run["status"] == "failed"
    assert run["error_message"] == "MaxRunTimeExceeded: exceeded max_run_time 2h"
    types = [e.type for e in ledger.read_run(run["run_id"])]
    assert "RunTimedOut" not in types  # it stopped itself: serve had nothing to end
    fetched = sum(e.payload_data.get("records_fetched", 0) for e in ledger.read_run(run["run_id"]))
    assert fetched == context.result.totals["records_fetched"] > 0  # every count recorded
    assert warnings(caplog) == [
        f"{name}: run {run['run_id']} failed: MaxRunTimeExceeded: exceeded max_run_time 2h"
    ]
    assert not service.connector_jobs._has_open_run(service.config.connectors[0])


def test_a_blocked_run_past_max_run_time_is_timed_out_by_serve_and_frees_its_connector(
    ledger: Ledger, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Blocked in a read, the connector never reports: serve times the run out after the
    grace period, and the job ends, so the next tick can run. Once the read returns, the
    connector's counts and its own RunFinished are recorded after the timeout."""
    caplog.set_level(logging.INFO)
    name = f"connector:{NAME}:1"
    with (
        fifo_source(tmp_path, feed=False) as source,
        freeze_time(utcnow() - timedelta(hours=3)) as clock,
    ):
        service = bounded_service(db_url, source.path)
        with running_job(service) as job:
            wait_for(lambda: name in service.connector_jobs.active)
            context = service.connector_jobs.active[name]
            run_id = context.run_id
            clock.tick(timedelta(hours=2))
            wait_for(lambda: context._stop_request is not None)
            assert context._heartbeat is not None
            context._heartbeat.join(timeout=30)
            assert not context._heartbeat.is_alive()  # it no longer looks alive
            assert ledger.run(run_id).state == "open"  # type: ignore[union-attr]
            assert warnings(caplog) == []  # within the grace period: nothing said yet
            clock.tick(timedelta(seconds=30))
            job.join(timeout=60)
            assert not job.is_alive()  # the connector is no longer held by this run
            state = ledger.run(run_id)
            assert state is not None
            assert state.state == "timed_out"
            timed_out = ledger.read_run(run_id)[-1]
            assert timed_out.type == "RunTimedOut"
            assert timed_out.payload_data["reason"].startswith("exceeded max_run_time 2h; ")
            assert timed_out.payload_data["threshold_seconds"] == 7200
            assert timed_out.payload_data["detected_by"] == service.identity
            assert service.identity.startswith("serve:")
            assert not service.connector_jobs._has_open_run(service.config.connectors[0])
            # serve's shutdown will not end it again:
            assert name not in service.connector_jobs.active
            (said,) = warnings(caplog)
            assert said.startswith(f"{name}: run {run_id} timed out: exceeded max_run_time 2h")
            # The read returns: the connector counts the rows, stops at that report, and its
            # late RunProgressed and RunFinished are recorded after the timeout (I5, I9).
            source.write("".join(f"{i},x\n" for i in range(10)))
            source.end()
            wait_for(lambda: ledger.run(run_id).state == "finished")  # type: ignore[union-attr]
    events = ledger.read_run(run_id)
    assert [e.type for e in events] == ["RunStarted", "RunTimedOut", "RunProgressed", "RunFinished"]
    assert events[2].payload_data["records_fetched"] == 10
    assert events[3].payload_data["status"] == "failed"
    assert events[3].payload_data["error_message"] == (
        "MaxRunTimeExceeded: exceeded max_run_time 2h"
    )


def test_once_serve_is_stopping_the_bound_no_longer_acts_and_the_shutdown_ends_the_run(
    ledger: Ledger, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A blocked run past its bound, asked to stop, when serve's shutdown begins: its grace
    period running out after that is not the bound's to act on (no RunTimedOut, the run is
    still the shutdown's), and the shutdown ends it, once, "shutdown". Every look of the
    watcher at the bound is recorded: the test waits for one made after the grace ran out,
    not for time to pass."""
    caplog.set_level(logging.INFO)
    name = f"connector:{NAME}:1"
    looks: list[tuple[bool, bool]] = []  # (serve stopping as it looked, gave up on the run)
    freezer = freeze_time(utcnow() - timedelta(hours=3))
    with fifo_source(tmp_path, feed=False) as source:
        clock = freezer.start()
        frozen = True
        try:
            service = bounded_service(db_url, source.path, grace_period="1s")
            past_bound = service.connector_jobs._past_bound

            def watched(name: str, context: RunContext, bound: RunBound) -> bool:
                stopping = service.stop.is_set()
                gave_up = past_bound(name, context, bound)
                looks.append((stopping, gave_up))
                return gave_up

            service.connector_jobs._past_bound = watched  # type: ignore[method-assign]
            with running_job(service) as job:
                wait_for(lambda: name in service.connector_jobs.active)
                context = service.connector_jobs.active[name]
                run_id = context.run_id
                clock.tick(timedelta(hours=2))
                wait_for(lambda: context._stop_request is not None)  # past it, within grace
                service.stop.set()  # the shutdown begins, as SIGTERM's handler starts it
                clock.tick(timedelta(seconds=5))  # the grace period has run out
                seen = len(looks)
                # The look under way as the clock moved may have read both before (and be
                # recorded after `seen` was counted); the next one started after them (a look
                # that gave up is the watcher's last).
                wait_for(lambda: len(looks) >= seen + 2 or any(g for _, g in looks))
                assert all(stopping for stopping, _ in looks[seen + 1 :])
                assert not any(gave_up for _, gave_up in looks)
                assert ledger.run(run_id).state == "open"  # type: ignore[union-attr]
                assert name in service.connector_jobs.active  # the shutdown's to end
                assert job.is_alive()
                freezer.stop()  # the shutdown's grace period is real time (1 s)
                frozen = False
                service.scheduler.start()  # started as serve starts it: shutdown stops it
                service.shutdown()
                source.end()  # the read returns: the connector's thread ends, so does the job
                job.join(timeout=60)
                assert not job.is_alive()
        finally:
            if frozen:
                freezer.stop()
    events = ledger.read_run(run_id)
    assert [e.type for e in events] == ["RunStarted", "RunFinished"]  # no RunTimedOut
    assert events[1].payload_data["status"] == "failed"
    assert events[1].payload_data["error_message"] == (
        "ServiceShutdown: shutdown: ledger serve stopped before the run finished"
    )
    assert warnings(caplog) == [f"{name}: run {run_id} ended failed (shutdown)"]


def test_max_run_time_is_validated_and_a_connectors_own_wins(tmp_path: Path) -> None:
    config = tmp_path / "ledger.toml"
    connector = (
        '[[connectors]]\nname = "{name}"\ntype = "csv"\nsource_id = 1\n'
        'schedule = {{ interval = "15m" }}\noptions = {{ path = "x.csv" }}\n{extra}'
    )
    config.write_text(
        '[serve]\nmax_run_time = "6h"\n'
        + connector.format(name="own", extra='max_run_time = "90m"\n')
        + connector.format(name="default", extra=""),
        encoding="utf-8",
    )
    loaded = load_config(config)
    own, default = loaded.connectors
    assert loaded.max_run_time(own) == timedelta(minutes=90)
    assert loaded.max_run_time(default) == timedelta(hours=6)
    assert LedgerConfig().max_run_time(default) is None  # no bound unless configured
    for value, why in [
        ('"0s"', "longer than zero"),
        ('"-1h"', "not a duration"),
        ('"3651d"', "longer than 3650 days"),
        ("7200", "as text"),
    ]:
        config.write_text(connector.format(name="x", extra=f"max_run_time = {value}\n"))
        result = CliRunner().invoke(cli, ["config", "check", str(config)])
        assert result.exit_code == 2, result.output
        assert "connectors[0] ('x', source 1).max_run_time" in result.output, result.output
        assert why in result.output, result.output
        config.write_text(f"[serve]\nmax_run_time = {value}\n")
        result = CliRunner().invoke(cli, ["config", "check", str(config)])
        assert result.exit_code == 2, result.output
        assert "serve.max_run_time" in result.output, result.output


@pytest.mark.slow
def test_serve_times_out_a_run_that_never_ends_and_runs_its_connector_again(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    """The real process, real time: a source that hangs in its HTTP read, a 2 s bound and a
    1 s grace. The first run is timed out by serve, and a later tick starts the next run
    (without the bound, every tick was skipped while the first stayed open)."""
    with hanging_connector() as hanging:
        connectors = hanging + 'max_run_time = "2s"\n'
        config = write_config(
            tmp_path / "ledger.toml", db_url, tmp_path / "spool", connectors, grace="1s"
        )
        process = serve(config)
        try:

            def runs() -> list[Any]:
                return [e for e in ledger.read_all() if e.type == "RunStarted"]

            wait_until(lambda: len(runs()) >= 2, process)
            first = runs()[0].run_id
            assert ledger.run(first).state == "timed_out"  # type: ignore[union-attr]
            timed_out = ledger.read_run(first)[-1]
            assert timed_out.payload_data["reason"].startswith("exceeded max_run_time 2s; ")
        finally:
            _out, err = stop_process(process, timeout=30)
    assert process.returncode == 0, err
    assert f"connector:hanging:3: run {first} timed out: exceeded max_run_time 2s" in err


def test_a_wall_clock_step_forward_does_not_stop_a_healthy_run(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit's: the bound was measured on the wall clock, so a forward NTP step of 3 h
    asked a healthy run to stop at once and then timed it out. Elapsed time is now monotonic:
    the step is not time the run spent. (freezegun moves monotonic with the wall clock, so the
    step is made with monotonic held still.)"""
    elapsed = [0.0]
    with freeze_time(utcnow()) as wall, monkeypatch.context() as patch:
        patch.setattr(run_bound, "monotonic", lambda: 1_000.0 + elapsed[0])
        context = RunContext(ledger, 1, NAME, spool=Spool(tmp_path / "spool"))
        context.start()
        try:
            bound = RunBound(timedelta(hours=2), timedelta(seconds=30))
            bound.opened()
            wall.tick(timedelta(hours=3))  # NTP steps the wall clock; no time has passed
            elapsed[0] += 60
            assert not bound.check(context)
            assert context._stop_request is None  # a healthy run goes on
            context.progress(fetched=1)
            elapsed[0] += 2 * 3600  # two hours later by the run's own time: past its bound
            assert not bound.check(context)
            assert isinstance(context._stop_request, MaxRunTimeExceeded)
            with pytest.raises(MaxRunTimeExceeded):  # the connector's next report unwinds it
                context.progress(fetched=1)
            elapsed[0] += 29
            assert not bound.check(context)  # within the grace period
            elapsed[0] += 1
            assert bound.check(context)
        finally:
            context.finish()


LEFT_BEHIND_AT_MOST = 3  # service.connector_jobs.MAX_LEFT_BEHIND


def test_runs_left_behind_are_bounded_and_the_tick_after_them_is_skipped(
    ledger: Ledger, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A source whose every read blocks (a FIFO nobody writes, a hung NFS mount) left one more
    thread blocked for ever at each tick, the run timed out and the connector's next tick
    started another: a long-lived serve gathered threads until it could start none. Past
    three of them the tick is skipped, before its claim, until one returns."""
    caplog.set_level(logging.INFO)
    name = f"connector:{NAME}:1"

    def blocked() -> int:
        return sum(t.name == f"run-{name}" and t.is_alive() for t in threading.enumerate())

    with (
        fifo_source(tmp_path, feed=False) as source,
        freeze_time(utcnow() - timedelta(days=1)) as clock,
    ):
        service = bounded_service(db_url, source.path)
        jobs = service.connector_jobs
        for _ in range(LEFT_BEHIND_AT_MOST):
            with running_job(service) as job:
                wait_for(lambda: name in jobs.active)
                context = jobs.active[name]
                clock.tick(timedelta(hours=2))
                wait_for(lambda: context._stop_request is not None)  # noqa: B023 (this round's)
                clock.tick(timedelta(seconds=30))
                job.join(timeout=60)
                assert not job.is_alive()
        assert blocked() == LEFT_BEHIND_AT_MOST
        runs_before = len(ledger.runs(connector_name=NAME))
        clock.tick(timedelta(minutes=15))  # the next tick
        caplog.clear()
        with running_job(service) as job:
            job.join(timeout=60)
            assert not job.is_alive()
        assert len(ledger.runs(connector_name=NAME)) == runs_before  # no run started
        assert warnings(caplog) == [
            f"{name}: tick skipped: the connectors of 3 earlier runs timed out past "
            "max_run_time are still blocked (at most 3 are left behind)"
        ]
        source.end()  # the reads return: the threads end, and the connector's ticks run again
        wait_for(lambda: blocked() == 0)
