"""A real ``ledger api`` process: it answers once /healthz does, appends, and on SIGTERM
finishes the request in flight before it exits."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

TOKEN = "process-test-token-0123456789"
DEADLINE_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ledger_api_serves_appends_and_drains_on_sigterm(db_url: str, tmp_path: Path) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text(
        '[api]\n[[api.tokens]]\nname = "proc"\nscopes = ["append", "read"]\n'
        'env = "API_PROCESS_TOKEN"\n',
        encoding="utf-8",
    )
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "-vv",
            "api",
            "--listen",
            f"127.0.0.1:{port}",
            "--config",
            str(config),
            "--db",
            db_url,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "API_PROCESS_TOKEN": TOKEN},
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None
    stderr = process.stderr
    threading.Thread(target=lambda: [lines.put(line) for line in stderr], daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert process.poll() is None, "ledger api exited before answering"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "no /healthz within the deadline"
            time.sleep(0.05)  # polling interval, not a wait for something to happen

        event = {
            "type": "RunStarted",
            "event_id": str(uuid.uuid4()),
            "source_id": 1,
            "connector_name": "process",
        }
        first = httpx.post(f"{base}/v1/events", json=[event], headers=headers, timeout=10)
        assert first.status_code == 200, first.text
        assert first.json()["appended"] == 1

        # SIGHUP (systemctl reload, logrotate) is said and ignored: it killed the process.
        process.send_signal(signal.SIGHUP)
        while "received SIGHUP" not in lines.get(timeout=DEADLINE_S):
            pass
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200

        # A request in flight: headers and half the body sent, then SIGTERM, then the rest.
        body = json.dumps([{**event, "event_id": str(uuid.uuid4()), "run_id": 2}]).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S) as conn:
            conn.sendall(
                f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body[:10]
            )
            while "POST /v1/events started" not in lines.get(timeout=DEADLINE_S):
                pass
            process.send_signal(signal.SIGTERM)
            while "Shutting down" not in lines.get(timeout=DEADLINE_S):
                pass
            conn.sendall(body[10:])
            reply = b""
            while chunk := conn.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert b'"appended": 1' in reply
        assert process.wait(timeout=DEADLINE_S) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
