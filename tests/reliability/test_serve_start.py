"""Issue 12, item 10: ``ledger serve`` started while MariaDB cannot be reached waits for it (it
exited 1), answering ``/metrics`` meanwhile, and proceeds once the database is back; what
waiting would not fix (refused credentials, an unmigrated database) still fails at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from ledger import Ledger
from tests import support
from tests.reliability.fault_proxy import FaultProxy
from tests.reliability.summary import Summary
from tests.reliability.support import LineLog, database_up_metric, through, wait_until
from tests.service.support import STATIONS, finished_runs, serve, write_config
from tests.support import free_port, stop_process


def test_serve_started_during_an_outage_waits_then_proceeds(
    ledger: Ledger, db_url: str, proxy: FaultProxy, tmp_path: Path, reliability: Summary
) -> None:
    proxy.outage()  # every connection refused from the start
    port = free_port()
    url = through(proxy, db_url, read_timeout=False)
    config = write_config(tmp_path / "ledger.toml", url, tmp_path / "spool", STATIONS)
    started = time.monotonic()
    process = serve(config, "--metrics-port", str(port))
    log = LineLog(process)
    log.start()
    try:
        wait_until(lambda: log.count("retrying in 2s"), [process], "a second, longer retry")
        assert database_up_metric(port) == "ledger_database_up 0.0"
        assert not finished_runs(ledger, "stations")
        proxy.restore()
        wait_until(lambda: finished_runs(ledger, "stations"), [process], "serve's first run")
        waited = time.monotonic() - started
        assert database_up_metric(port) == "ledger_database_up 1.0"
    finally:
        stop_process(process, read_output=False)  # the log reads stderr
        log.join(timeout=10)
    assert process.returncode == 0, "".join(log.lines)
    retries = log.count("database unreachable at start")
    assert retries >= 2
    reliability.record(
        "12.10 serve start",
        "mysql",
        f"`ledger serve` started while a proxy refused every connection to MariaDB "
        f"({proxy.refused} refused), then the database came back",
        f"it stayed up, logged {retries} retries with growing delays, answered /metrics with "
        f"ledger_database_up 0, then proceeded by itself (first connector run {waited:.0f}s "
        "after start, ledger_database_up 1) and exited 0 on SIGTERM",
    )


def test_what_waiting_would_not_fix_still_fails_at_once(
    backend: str, db_url: str, tmp_path: Path
) -> None:
    if backend != "mysql":
        pytest.skip("credentials are MariaDB's")
    denied = make_url(db_url).set(username="no_such_ledger_user", password="wrong-pw")
    unmigrated = support.create_mysql_database(db_url)
    try:
        for url, expected, code in (
            # Refused credentials are the environment's (3); a schema never migrated, 1.
            (denied.render_as_string(hide_password=False), "Access denied", 3),
            (unmigrated, "run `ledger migrate`", 1),
        ):
            config = write_config(tmp_path / "ledger.toml", url, tmp_path / "spool", "")
            process = serve(config)
            try:
                _out, err = process.communicate(timeout=60)  # it exits by itself, at once
            finally:
                stop_process(process)  # its failure is the test's, and it dies with it
            assert process.returncode == code, err
            assert expected in err
            assert "retrying" not in err
            assert "wrong-pw" not in err
            assert "serving" not in err  # it said so, then exited
    finally:
        support.drop_mysql_database(unmigrated)
