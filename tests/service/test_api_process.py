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
import pytest

from tests.support import free_port, stop_process

TOKEN = "process-test-token-0123456789"
DEADLINE_S = 30.0
# Real `ledger api` processes, waited on (`-m "not processes"` leaves them out).
pytestmark = pytest.mark.processes


def test_ledger_api_serves_appends_and_drains_on_sigterm(db_url: str, tmp_path: Path) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text(
        '[api]\n[[api.tokens]]\nname = "proc"\nscopes = ["append", "read"]\n'
        'env = "API_PROCESS_TOKEN"\n',
        encoding="utf-8",
    )
    port = free_port()
    process, lines = api_with_its_log(
        ["-vv"], port, config, db_url, {**os.environ, "API_PROCESS_TOKEN": TOKEN}
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        wait_for_healthz(process, base)

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
            while "POST /v1/… started" not in lines.get(timeout=DEADLINE_S):
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
        stop_process(process, read_output=False)  # a thread reads stderr


def api_with_its_log(
    options: list[str], port: int, config: Path, db_url: str, env: dict[str, str] | None
) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    """``ledger OPTIONS api`` on ``port``, and its standard error's lines as a thread reads
    them (the test stops the process; the thread ends with its output)."""
    command = [sys.executable, "-m", "service.cli", *options, "api"]
    command += ["--listen", f"127.0.0.1:{port}", "--config", str(config), "--db", db_url]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None
    stderr = process.stderr
    threading.Thread(target=lambda: [lines.put(line) for line in stderr], daemon=True).start()
    return process, lines


def wait_for_healthz(process: subprocess.Popen[str], base: str) -> None:
    """Until ``ledger api`` answers /healthz (it must not exit first)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        assert process.poll() is None, "ledger api exited before answering"
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "no /healthz within the deadline"
        time.sleep(0.05)  # polling interval, not a wait for something to happen


def stalled_post(port: int) -> socket.socket:
    """A POST /v1/events whose handler is reading its body (the server's "100 Continue"
    says so), and the body stalled after its first byte."""
    request = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
    request.sendall(
        b"POST /v1/events HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\n"
        + f"Authorization: Bearer {TOKEN}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    assert request.recv(100).startswith(b"HTTP/1.1 100 "), "no 100 Continue"
    request.sendall(b"[")
    return request


def test_a_client_gone_mid_body_and_a_request_past_the_grace_period(
    db_url: str, tmp_path: Path
) -> None:
    """A client that goes away mid-body is logged 499, not a 500 with a traceback; a request
    still running when ``[api] grace_period`` runs out at SIGTERM gets 503 shutting-down
    (problem+json, Retry-After), not uvicorn's text 500 and "Exception in ASGI application"."""
    config = tmp_path / "ledger.toml"
    config.write_text(
        '[api]\ngrace_period = "1s"\nread_timeout = "60s"\n'
        '[[api.tokens]]\nname = "proc"\nscopes = ["append"]\nenv = "API_PROCESS_TOKEN"\n',
        encoding="utf-8",
    )
    port = free_port()
    command = [sys.executable, "-m", "service.cli", "-v", "api", "--listen", f"127.0.0.1:{port}"]
    log_path = tmp_path / "api.log"
    with log_path.open("w", encoding="utf-8") as log_file:
        process = subprocess.Popen(
            [*command, "--config", str(config), "--db", db_url],
            stderr=log_file,
            text=True,
            env={**os.environ, "API_PROCESS_TOKEN": TOKEN},
        )
    try:
        wait_for_healthz(process, f"http://127.0.0.1:{port}")
        stalled_post(port).close()  # the client goes away mid-body
        deadline = time.monotonic() + DEADLINE_S
        while "POST /v1/events 499" not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        request = stalled_post(port)
        process.send_signal(signal.SIGTERM)
        answer = b""
        while chunk := request.recv(4096):
            answer += chunk
        request.close()
        assert process.wait(timeout=DEADLINE_S) == 0
    finally:
        stop_process(process)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 "), answer
    assert b"content-type: application/problem+json" in head.lower()
    assert b"retry-after: " in head.lower()
    assert json.loads(body)["type"] == "urn:run-ledger:problem:shutting-down"
    log = log_path.read_text()
    assert "Traceback" not in log, log
    assert "Exception in ASGI application" not in log
    assert "was still running when the grace period ran out" in log


def test_a_body_over_the_limit_gets_its_413_not_a_reset_connection(
    db_url: str, tmp_path: Path
) -> None:
    """A client still sending a body the API refuses (over ``max_body_bytes``, declared or
    grown, or compressed: 415) reads the problem that names the limit: the API reads the rest
    and drops it before answering. Answering and closing with the body unread makes the
    client's kernel see a reset that throws the answer away (the TypeScript client saw
    ``ECONNRESET`` instead of its 413)."""
    config = tmp_path / "ledger.toml"
    config.write_text(
        "[api]\nmax_body_bytes = 1024\n"
        '[[api.tokens]]\nname = "proc"\nscopes = ["append"]\nenv = "API_PROCESS_TOKEN"\n',
        encoding="utf-8",
    )
    port = free_port()
    command = [sys.executable, "-m", "service.cli", "api", "--listen", f"127.0.0.1:{port}"]
    process = subprocess.Popen(
        [*command, "--config", str(config), "--db", db_url],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "API_PROCESS_TOKEN": TOKEN},
    )
    body = b"[" + b" " * (4 * 1024 * 1024) + b"]"  # far more than the socket buffers hold
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\n"
    )
    try:
        wait_for_healthz(process, f"http://127.0.0.1:{port}")
        for framing, extra, expected in (
            (f"Content-Length: {len(body)}\r\n", "", b"413"),
            ("Transfer-Encoding: chunked\r\n", "", b"413"),
            ("Transfer-Encoding: chunked\r\n", "Content-Encoding: gzip\r\n", b"415"),
        ):
            answer = send_whole_request(port, (head + framing + extra + "\r\n").encode(), body)
            status_line = answer.split(b"\r\n", 1)[0]
            assert status_line.startswith(b"HTTP/1.1 " + expected), (framing, extra, answer[:300])
            assert b"problem+json" in answer.lower()
    finally:
        stop_process(process, signal.SIGKILL)


def send_whole_request(port: int, head: bytes, body: bytes) -> bytes:
    """Send a request to its last byte, then read the answer to the end of the connection: a
    reset anywhere fails the test (it is the defect)."""
    chunked = b"chunked" in head
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S) as request:
        request.sendall(head)
        if chunked:
            for start in range(0, len(body), 65536):
                piece = body[start : start + 65536]
                request.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            request.sendall(b"0\r\n\r\n")
        else:
            request.sendall(body)
        answer = b""  # the API closes the connection after it (Connection: close)
        while chunk := request.recv(65536):
            answer += chunk
        return answer


def test_the_no_tokens_warning_does_not_claim_public_pages_are_refused(
    db_url: str, tmp_path: Path
) -> None:
    """Without tokens but with ``[web] public_read``, ``ledger api`` warned "every request but
    /healthz is refused" while its pages answered anyone who reached the port: an operator
    reading the warning took the port for closed. The warning says what is open."""
    config = tmp_path / "ledger.toml"
    config.write_text(
        '[web]\nenabled = true\npublic_read = true\nverify_interval = "0s"\n', encoding="utf-8"
    )
    port = free_port()
    process, lines = api_with_its_log([], port, config, db_url, None)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_healthz(process, base)
        said = []
        while not said or not said[-1].startswith("API for"):
            said.append(lines.get(timeout=DEADLINE_S))
        warning = " ".join(line.strip() for line in said[:-1])
        assert httpx.get(f"{base}/web/runs", timeout=10).status_code == 200  # open to anyone
        assert httpx.get(f"{base}/v1/runs", timeout=10).status_code == 401
        assert "every request but /healthz is refused" not in warning, warning
        assert "every API request but /healthz is refused" in warning, warning
        assert "readable by anyone who reaches this port ([web] public_read)" in warning
    finally:
        stop_process(process, read_output=False)  # a thread reads stderr
