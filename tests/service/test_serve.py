"""``ledger serve`` as real processes: scheduled connector runs, metrics, SIGTERM, the grace
period, and two serve processes sharing one MariaDB."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import select

from connectors import Spool
from ledger import ConfigurationError, Ledger, RunFinished, Thresholds
from service import load_config
from service.claims import claim, claim_key
from service.cli import cli
from service.config import LedgerConfig
from service.connector_jobs import job_id
from service.metrics import LedgerCollector, collect_figures
from service.schema import schedule_claims
from service.serve import LedgerService
from tests.reliability.support import LineLog
from tests.service.support import (
    STATIONS,
    finished_runs,
    hanging_connector,
    open_runs,
    serve,
    write_config,
)
from tests.support import free_port, names_as_before_the_rule, stop_process

pytestmark = pytest.mark.slow


def wait_until(condition: Any, *processes: subprocess.Popen[str], timeout: float = 60.0) -> None:
    """Poll ``condition``; fail at once (with its stderr) if a serve process died."""
    deadline = time.monotonic() + timeout
    while not condition():
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"serve exited with {process.returncode}: {process.communicate()[1]}")
        assert time.monotonic() < deadline, "timed out waiting"
        threading.Event().wait(0.05)


CONNECTORS = f"""{STATIONS}
[[connectors]]
name = "broken"
type = "csv"
source_id = 2
schedule = {{ interval = "1s" }}
options = {{ path = "/nonexistent/records.csv" }}
"""


def test_serve_runs_connectors_on_schedule_exposes_metrics_and_stops_cleanly(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "ledger.toml", db_url, tmp_path / "spool", CONNECTORS)
    port = free_port()
    process = serve(config, "--metrics-port", str(port))
    try:
        wait_until(lambda: len(finished_runs(ledger, "stations")) >= 2, process)
        wait_until(lambda: len(finished_runs(ledger, "broken")) >= 2, process)  # it goes on
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        text = metrics.decode()
        assert 'ledger_runs{status="success"}' in text
        assert "ledger_open_runs" in text
        assert "ledger_projector_lag_events" in text
        assert "ledger_spool_backlog_events" in text
    finally:
        _out, err = stop_process(process)
    assert process.returncode == 0, err
    assert open_runs(ledger) == 0
    stations = finished_runs(ledger, "stations")
    assert stations[0]["status"] == "success"
    assert {run["status"] for run in finished_runs(ledger, "broken")} == {"failed"}
    first = ledger.read_run(stations[0]["run_id"])[0].payload_data
    assert first["metadata"]["trigger"] == "schedule"


def test_sigterm_gives_running_runs_a_grace_period_then_ends_them(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    with hanging_connector() as hanging:
        connectors = hanging
        config = write_config(
            tmp_path / "ledger.toml", db_url, tmp_path / "spool", connectors, grace="1s"
        )
        process = serve(config)
        try:
            wait_until(lambda: open_runs(ledger) == 1, process)
        finally:
            _out, err = stop_process(process, timeout=30)
    assert process.returncode == 0, err
    assert open_runs(ledger) == 0
    (run,) = finished_runs(ledger, "hanging")
    assert run["status"] == "failed"
    assert "shutdown" in run["error_message"]


def test_sigterm_drains_the_api_and_ends_the_runs_side_by_side(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    """The API's grace period and the connectors' run side by side: a run still going is
    ended ("shutdown") after ``[serve] grace_period`` even while a request holds the API's
    drain for its own, longer one. They ran one after the other, so a stop took both grace
    periods plus the settling: past an orchestrator's stop timeout (30 s by default), which
    kills the process and leaves the run open until the sweeper."""
    token = "drain-test-token-0123456789abcdef"
    digest = hashlib.sha256(token.encode()).hexdigest()
    port = free_port()
    with hanging_connector() as hanging:
        connectors = (
            hanging
            + f"""

[api]
listen = "127.0.0.1:{port}"
grace_period = "20s"
read_timeout = "60s"

[[api.tokens]]
name = "drain"
scopes = ["append"]
sha256 = "{digest}"
"""
        )
        config = write_config(
            tmp_path / "ledger.toml", db_url, tmp_path / "spool", connectors, grace="1s"
        )
        process = serve(config)
        request = socket.socket()
        try:
            wait_until(lambda: open_runs(ledger) == 1, process)
            # A request in flight: its body stalls, so the API's drain waits for it. The
            # server's "100 Continue" says the handler is reading the body (a request not yet
            # read when the stop begins would just be closed).
            request.connect(("127.0.0.1", port))
            request.settimeout(30)
            request.sendall(
                b"POST /v1/events HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\n"
                + f"Authorization: Bearer {token}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            )
            assert request.recv(100).startswith(b"HTTP/1.1 100 "), "no 100 Continue"
            request.sendall(b"[")
            process.send_signal(signal.SIGTERM)
            # The run is ended while the request still holds the API's drain open.
            wait_until(lambda: open_runs(ledger) == 0, process, timeout=15)
            request.settimeout(0)
            try:
                still_open = request.recv(1) != b""
            except BlockingIOError:
                still_open = True
            assert still_open, "the API had stopped before the run was ended"
            request.close()
        finally:
            request.close()
            _out, err = stop_process(process)
    assert process.returncode == 0, err
    (run,) = finished_runs(ledger, "hanging")
    assert "shutdown" in run["error_message"]


def test_sighup_is_said_and_ignored_not_a_kill_that_leaves_runs_open(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    """SIGHUP (``systemctl reload``, logrotate's ``postrotate``) killed serve on the spot: the
    run in progress stayed open until the sweeper timed it out, and its connector's ticks were
    skipped meanwhile."""
    with hanging_connector() as hanging:
        connectors = hanging
        config = write_config(
            tmp_path / "ledger.toml", db_url, tmp_path / "spool", connectors, grace="1s"
        )
        process = serve(config)
        log = LineLog(process)
        log.start()
        try:
            wait_until(lambda: open_runs(ledger) == 1, process)
            process.send_signal(signal.SIGHUP)
            wait_until(lambda: log.count("received SIGHUP"), process)
            assert process.poll() is None
            assert open_runs(ledger) == 1  # the run goes on
        finally:
            stop_process(process, timeout=30, read_output=False)  # the log reads stderr
            log.join(timeout=10)
    assert process.returncode == 0, "".join(log.lines)
    assert open_runs(ledger) == 0
    (run,) = finished_runs(ledger, "hanging")
    assert "shutdown" in run["error_message"]


def test_two_serve_processes_start_each_tick_once(
    ledger: Ledger, db_url: str, backend: str, tmp_path: Path
) -> None:
    """Each tick is claimed once (a ``schedule_claims`` row per job and tick, its key), and a
    process starts a run only for a tick it claimed: no process starts more runs than it won
    claims. (Counting runs per wall-clock second was no proof: a tick's run that starts late
    in the next second shares it with that second's own run.)"""
    if backend != "mysql":
        pytest.skip("several serve processes share a production MariaDB")
    configs = [
        write_config(tmp_path / f"ledger{i}.toml", db_url, tmp_path / f"spool{i}", STATIONS)
        for i in range(2)
    ]
    processes = []
    try:
        processes.extend(serve(config) for config in configs)
        wait_until(lambda: len(finished_runs(ledger, "stations")) >= 5, *processes)
    finally:
        errors = [stop_process(process)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], errors
    (stations,) = load_config(configs[0]).connectors
    with ledger.engine.connect() as conn:
        claimed_by = conn.execute(
            select(schedule_claims.c.claimed_by).where(
                schedule_claims.c.job_id == claim_key(job_id(stations))
            )
        ).scalars()
        claims = Counter(int(identity.rsplit(":", 1)[1]) for identity in claimed_by)
    starts = [e for e in ledger.read_all() if e.type == "RunStarted"]
    # The run's actor is connector:stations@HOST:PID, the claim's serve:HOST:PID.
    runs = Counter(int(e.actor.rsplit(":", 1)[1]) for e in starts)
    assert set(runs) <= {process.pid for process in processes}, runs
    for pid, started in runs.items():
        assert started <= claims[pid], (runs, claims)  # a run per claimed tick, at most
    assert len(starts) >= 5
    assert open_runs(ledger) == 0


def test_an_unreadable_spool_is_not_reported_as_the_database_down(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.folder.mkdir()
    spool.path.write_bytes(b"not a database at all" * 100)
    registry = CollectorRegistry()
    registry.register(
        LedgerCollector(lambda: collect_figures(ledger, Thresholds(), None, None), spool)
    )
    text = generate_latest(registry).decode()
    assert "ledger_database_up 1.0" in text
    assert "ledger_spool_backlog_events" not in text  # unknown, not a false 0


# ------------------------------------------------------------ issue 12, item 10


def scrape(host: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize(
    ("metrics_host", "reachable", "unreachable"),
    [
        # Every interface, as for a remote scraper (only loopback addresses are scraped here).
        ("0.0.0.0", ["127.0.0.1", "127.0.0.2"], []),  # noqa: S104
        ("127.0.0.2", ["127.0.0.2"], ["127.0.0.1"]),  # only the address configured
    ],
)
def test_metrics_listen_on_the_configured_host(
    ledger: Ledger,
    db_url: str,
    tmp_path: Path,
    metrics_host: str,
    reachable: list[str],
    unreachable: list[str],
) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "ledger.toml",
        db_url,
        tmp_path / "spool",
        "",
        serve=f'metrics_host = "{metrics_host}"\nmetrics_port = {port}\n',
    )
    process = serve(config)
    try:
        wait_until(lambda: not refused(reachable[0], port), process)
        for host in reachable:
            assert "ledger_database_up 1.0" in scrape(host, port)
        for host in unreachable:
            assert refused(host, port)
    finally:
        _out, err = stop_process(process)
    assert process.returncode == 0, err
    assert f"metrics on http://{metrics_host}:{port}/metrics" in err


@pytest.mark.parametrize(
    "value", ["not a host!", "[::1]", "127.0.0.1:9464", "", "-bad-.example", "a" * 254, "1.2.3.4/8"]
)
def test_a_bad_metrics_host_is_a_config_error(tmp_path: Path, value: str) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text(f"[serve]\nmetrics_host = {json.dumps(value)}\n", encoding="utf-8")
    for command in (["config", "check", str(config)], ["serve", "--config", str(config)]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 2, result.output
        assert "serve.metrics_host" in result.output


@pytest.mark.parametrize("metrics_host", ["::1", "localhost", "127.0.0.1"])
def test_good_metrics_hosts_are_accepted(tmp_path: Path, metrics_host: str) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text(f'[serve]\nmetrics_host = "{metrics_host}"\n', encoding="utf-8")
    assert load_config(config).serve.metrics_host == metrics_host


def test_serve_waits_for_an_unreachable_database_and_stops_cleanly(tmp_path: Path) -> None:
    """Nothing listens on the port: serve starts, answers /metrics with ledger_database_up 0,
    logs its retries with growing delays, and exits 0 on SIGTERM while still waiting.
    (tests/reliability/test_serve_start.py lets the database come back.)"""
    closed = free_port()
    # free_port reserves nothing: from a range of 10 ($LEDGER_TEST_PORTS) it gave the same port
    # twice one time in ten, and serve's "database" was its own metrics server, which took the
    # MySQL handshake and answered nothing (a read timeout each try, no retry logged in 60 s).
    port = next(port for port in iter(free_port, None) if port != closed)
    config = write_config(
        tmp_path / "ledger.toml",
        f"mysql+pymysql://ledger:secret-pw@127.0.0.1:{closed}/ledger",
        tmp_path / "spool",
        STATIONS,
    )
    process = serve(config, "--metrics-port", str(port))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr or []), daemon=True)
    reader.start()
    try:
        wait_until(lambda: not refused("127.0.0.1", port), process)
        text = scrape("127.0.0.1", port)
        assert "ledger_database_up 0.0" in text
        assert "ledger_spool_backlog_events 0.0" in text
        wait_until(lambda: sum("retrying in 2s" in line for line in lines) >= 1, process)
        assert process.poll() is None
    finally:
        stop_process(process, read_output=False)  # the reader thread reads stderr
        reader.join(timeout=10)
    log = "".join(lines)
    assert process.returncode == 0, log
    assert "database unreachable at start, retrying in 1s" in log
    assert "stopped before the database could be reached" in log
    assert "secret-pw" not in log


def test_the_open_run_check_and_the_schedule_claims_compare_names_exactly(
    ledger: Ledger, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On MariaDB the open run of "stations" (or of "stations " from before the name rule) kept
    "Stations" from running, and the two connectors' claims of one tick collided."""

    def connector(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "type": "csv",
            "source_id": 1,
            "schedule": {"interval": "15m"},
            "options": {"path": "stations.csv"},  # a csv connector's required option
        }

    config = LedgerConfig.model_validate(
        {"database_url": db_url, "connectors": [connector("Stations"), connector("stations")]}
    )
    upper, lower = config.connectors
    service = LedgerService(config)
    try:
        run_id = ledger.start_run(1, "stations")
        assert service.connector_jobs._has_open_run(lower)
        assert not service.connector_jobs._has_open_run(upper)
        ledger.append([RunFinished(run_id=run_id, status="success")])
        names_as_before_the_rule(monkeypatch)
        ledger.start_run(1, "stations ")
        assert not service.connector_jobs._has_open_run(lower)
        tick = datetime(2026, 1, 28, 1, 15, tzinfo=UTC)
        assert claim(ledger, job_id(upper), tick, "serve:a")
        assert claim(ledger, job_id(lower), tick, "serve:a")
        assert not claim(ledger, job_id(lower), tick, "serve:b")  # still once per tick
    finally:
        service.ledger.close()
        service.scrape_ledger.close()


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


@pytest.mark.parametrize("where", ["api", "metrics", "--metrics-port"])
def test_a_taken_port_is_refused_before_a_database_is_made_or_serving_said(
    tmp_path: Path, backend: str, db_url: str, where: str
) -> None:
    """With its API's or its metrics' port taken, serve made the SQLite file and printed
    "serving sqlite:///… with 1 scheduled connector(s), API on http://…" before it exited 2
    "Address already in use": the ports are bound before anything is made or said."""
    url = f"sqlite:///{tmp_path / 'new.db'}" if backend == "sqlite" else db_url
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        body = {
            "api": f'[api]\nlisten = "127.0.0.1:{port}"\n',
            "metrics": f"[serve]\nmetrics_port = {port}\n",
            "--metrics-port": "",
        }[where]
        config = tmp_path / "ledger.toml"
        config.write_text(f'database_url = "{url}"\n{body}', encoding="utf-8")
        options = ["--metrics-port", str(port)] if where == "--metrics-port" else []
        result = CliRunner().invoke(cli, ["serve", "--config", str(config), *options])
    assert result.exit_code == 2, result.output
    what = "the API" if where == "api" else "metrics"
    assert f"Error: cannot serve {what} on 127.0.0.1:{port}: Address already in use" in (
        result.output
    )
    assert "serving" not in result.output
    assert "created" not in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "new.db").exists()
