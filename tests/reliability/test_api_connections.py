"""Clients that hold connections without finishing a request (slow loris), against a real
``ledger api``: uvicorn held a connection that sent no complete headers for ever, so a few
hundred of them (no token needed) took every file descriptor of the process: /healthz stopped
answering and every accept logged a traceback. service/api/connections.py bounds both."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.reliability.summary import Summary
from tests.reliability.support import wait_until
from tests.service.test_api_process import wait_for_healthz
from tests.support import free_port, stop_process

TOKEN = "connections-test-token-0123456789"
READ_TIMEOUT_S = 2
# The process's limit of open files in the flood test: small, so that a few hundred
# connections would take them all.
OPEN_FILES = 128
FLOOD = 600
DEADLINE_S = 30.0


@contextmanager
def api_process(db_url: str, tmp_path: Path, open_files: int | None = None) -> Iterator[str]:
    """A ``ledger api`` with ``read_timeout = 2s`` (and ``open_files`` as its limit of open
    files); yields its base URL. The log is ``tmp_path / "api.log"``."""
    config = tmp_path / "ledger.toml"
    config.write_text(
        f'[api]\nread_timeout = "{READ_TIMEOUT_S}s"\n'
        '[[api.tokens]]\nname = "conn"\nscopes = ["append", "read"]\nenv = "API_CONN_TOKEN"\n',
        encoding="utf-8",
    )
    port = free_port()

    def limit_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    command = [sys.executable, "-m", "service.cli", "-v", "api", "--listen", f"127.0.0.1:{port}"]
    with (tmp_path / "api.log").open("w", encoding="utf-8") as log_file:
        process = subprocess.Popen(
            [*command, "--config", str(config), "--db", db_url],
            stderr=log_file,
            text=True,
            env={**os.environ, "API_CONN_TOKEN": TOKEN},
            preexec_fn=limit_files,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_healthz(process, base)
        yield base
        assert process.poll() is None, "ledger api exited"
    finally:
        stop_process(process)


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def read_to_end(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the test's deadline as
    the socket's timeout: a connection still open then fails the test)."""
    conn.settimeout(DEADLINE_S)
    answer = b""
    while chunk := conn.recv(65536):
        answer += chunk
    return answer


def test_a_request_whose_headers_never_finish_is_closed_after_read_timeout(
    db_url: str, tmp_path: Path, backend: str, reliability: Summary
) -> None:
    """A connection that sends nothing is closed without a word; one that sends a header line
    every half second, and one that asked a first request and then began a second on the same
    connection, each get a 408 problem after ``read_timeout`` and are closed. Requests that
    finish their headers in time are answered meanwhile."""
    with api_process(db_url, tmp_path) as base:
        port = port_of(base)
        started = time.monotonic()
        silent = socket.create_connection(("127.0.0.1", port))
        trickling = socket.create_connection(("127.0.0.1", port))
        trickling.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        kept_alive = socket.create_connection(("127.0.0.1", port))
        kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status": "ok"}'):  # the whole first answer
            chunk = kept_alive.recv(65536)
            assert chunk, first
            first += chunk
        assert first.startswith(b"HTTP/1.1 200 "), first
        kept_alive.sendall(b"GET /healthz HTTP/1.1\r\n")
        deadline = time.monotonic() + DEADLINE_S
        trickling.setblocking(False)
        while time.monotonic() < deadline:  # one header line every half second
            try:
                trickling.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break  # closed by the server
            # Others are answered while it trickles.
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            time.sleep(0.5)  # the client's own pace, not a wait for the server
        trickled = read_to_end(trickling)
        assert read_to_end(silent) == b"", "a silent connection is closed, not answered"
        second = read_to_end(kept_alive)
        took = time.monotonic() - started
    for answer in (trickled, second):
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), answer
        assert b"content-type: application/problem+json" in head.lower()
        problem = json.loads(body)
        assert problem["type"] == "urn:run-ledger:problem:request-timeout"
        assert "[api] read_timeout" in problem["detail"]
    assert took < READ_TIMEOUT_S + DEADLINE_S / 2
    log = (tmp_path / "api.log").read_text(encoding="utf-8")
    # The first of the three at once, the other two as the API stopped: their line waited for
    # a timer a minute away, a daemon thread the exit ended, and they were never said.
    assert "1 connection(s) closed: request headers not complete in time" in log
    assert "2 connection(s) closed: request headers not complete in time" in log
    assert "Traceback" not in log, log
    reliability.record(
        "API slow clients",
        backend,
        "`ledger api` (`read_timeout = 2s`): a connection that sends nothing, one that sends a "
        "header line every 0.5 s, and one that began a second request after a first answer",
        "closed after the timeout, the two mid-request with a 408 problem; requests answered "
        "meanwhile (before: each held open for ever)",
    )


def test_a_flood_of_idle_connections_leaves_the_process_its_files(
    db_url: str, tmp_path: Path, backend: str, reliability: Summary
) -> None:
    """600 connections that send nothing, to an API whose limit of open files is 128: the
    connections over its bound are closed at once (when that many arrive together) and the
    rest after ``read_timeout``; the process never runs out of files (no "Too many open
    files", no traceback) and, once they are gone, answers and appends."""
    with api_process(db_url, tmp_path, open_files=OPEN_FILES) as base:
        port = port_of(base)
        flood = []
        for _ in range(FLOOD):
            conn = socket.socket()
            conn.setblocking(False)
            with contextlib.suppress(BlockingIOError):  # the flood does not wait to connect
                conn.connect(("127.0.0.1", port))
            flood.append(conn)

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_until(healthy, [], "ledger api answers again after the flood")
            event = {
                "type": "RunStarted",
                "event_id": str(uuid.uuid4()),
                "source_id": 1,
                "connector_name": "flooded",
            }
            appended = httpx.post(
                f"{base}/v1/events",
                json=[event],
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=10,
            )
        finally:
            for conn in flood:
                conn.close()
    assert appended.status_code == 200, appended.text
    assert appended.json()["appended"] == 1
    log = (tmp_path / "api.log").read_text(encoding="utf-8")
    assert "Too many open files" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    reliability.record(
        "API slow clients",
        backend,
        f"{FLOOD} connections that send nothing to `ledger api` limited to {OPEN_FILES} open files",
        "no accept failed for want of files, no traceback; /healthz and an append answered "
        "once the held connections timed out (before: a traceback per accept, /healthz "
        "unanswered for as long as the connections stayed)",
    )
