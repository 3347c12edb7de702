"""``ledger serve --config FILE`` with ``[api] listen``: one real process serves the API beside
the scheduler, and its embedded projector makes an event appended over HTTP readable as a row
over HTTP; SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from tests.support import free_port, stop_process

TOKEN = "serve-api-test-token-0123456789"
DEADLINE_S = 60.0
POLL_S = 0.05  # between polls of a condition, each bounded by DEADLINE_S


def test_serve_with_api_listen_appends_projects_and_stops_on_sigterm(
    db_url: str, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "ledger.toml"
    config.write_text(
        f'database_url = "{db_url}"\n'
        '[projector]\ninterval = "1s"\n'
        f'[spool]\ndir = "{tmp_path / "spool"}"\n'
        '[serve]\ngrace_period = "10s"\n'
        f'[api]\nlisten = "127.0.0.1:{port}"\ngrace_period = "10s"\n'
        '[[api.tokens]]\nname = "serve-test"\nscopes = ["append", "read"]\n'
        'env = "SERVE_API_TOKEN"\n',
        encoding="utf-8",
    )
    log_path = tmp_path / "serve.log"
    with log_path.open("w", encoding="utf-8") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "-v", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            text=True,
            env={**os.environ, "SERVE_API_TOKEN": TOKEN},
        )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def log() -> str:
        return log_path.read_text(encoding="utf-8", errors="replace")

    try:
        with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
            deadline = time.monotonic() + DEADLINE_S
            while True:
                assert process.poll() is None, f"serve exited early:\n{log()}"
                try:
                    if client.get("/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"no /healthz in time:\n{log()}"
                time.sleep(POLL_S)

            event = {
                "type": "RunStarted",
                "event_id": str(uuid.uuid4()),
                "source_id": 3,
                "connector_name": "over-http",
            }
            appended = client.post("/v1/events", json=[event])
            assert appended.status_code == 200, appended.text
            run_id = appended.json()["allocated_run_ids"][0]
            finished = {
                "type": "RunFinished",
                "run_id": run_id,
                "status": "success",
                "records_fetched": 4,
            }
            assert client.post("/v1/events", json=[finished]).status_code == 200

            # The embedded projector, not this test, brings the row.
            deadline = time.monotonic() + DEADLINE_S
            while True:
                shown = client.get(f"/v1/runs/{run_id}")
                assert shown.status_code == 200, shown.text
                if shown.json()["row"] is not None and shown.json()["row"]["status"] != "running":
                    break
                assert process.poll() is None, f"serve exited:\n{log()}"
                assert time.monotonic() < deadline, f"never projected:\n{log()}"
                time.sleep(POLL_S)
            body = shown.json()
            assert body["row"]["connectorName"] == "over-http"
            assert body["row"]["status"] == "success"
            assert body["row"]["recordsFetched"] == 4
            assert body["ledger"]["state"] == "finished"
            assert body["ledger"]["version"] == 2

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE_S) == 0, log()
        assert "Traceback" not in log()
        assert TOKEN not in log()
    finally:
        stop_process(process)


def test_serve_names_the_api_on_its_start_line_and_logs_no_warning_for_it(
    db_url: str, tmp_path: Path
) -> None:
    """Without ``-v`` the API's address is on serve's one start line, not a WARNING: starting
    the API is a normal action (INFO), as the metrics endpoint's is."""
    port = free_port()
    config = tmp_path / "ledger.toml"
    config.write_text(
        f'database_url = "{db_url}"\n'
        "[serve]\nrun_at_start = false\n"
        f'[spool]\ndir = "{tmp_path / "spool"}"\n'
        f'[api]\nlisten = "127.0.0.1:{port}"\n'
        '[[api.tokens]]\nname = "serve-test"\nscopes = ["read"]\nenv = "SERVE_API_TOKEN"\n',
        encoding="utf-8",
    )
    log_path = tmp_path / "serve.log"
    with log_path.open("w", encoding="utf-8") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            text=True,
            env={**os.environ, "SERVE_API_TOKEN": TOKEN},
        )

    def log() -> str:
        return log_path.read_text(encoding="utf-8", errors="replace")

    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert process.poll() is None, f"serve exited early:\n{log()}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no /healthz in time:\n{log()}"
            time.sleep(POLL_S)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE_S) == 0, log()
    finally:
        stop_process(process)
    first = log().splitlines()[0]
    assert first.startswith("serving "), log()
    assert f"API on http://127.0.0.1:{port}" in first, log()
    assert "WARNING" not in log(), log()
