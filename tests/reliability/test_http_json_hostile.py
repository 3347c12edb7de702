"""The http-json connector against a hostile server, on SQLite and MariaDB (connectors review):
an endless body, a body dribbled a few bytes at a time, a redirect to another host, bodies that
are not UTF-8 JSON, a body cut short, a status line that would draw on the terminal. Each fails
the run (or retries) with a message naming the URL and what was wrong, within a bound; nothing
is fetched from another host, and nothing the server sends forges a log line."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from connectors import FetchError, HttpJsonConnector, Spool
from ledger import ConfigurationError, Ledger
from tests.connectors.support import finished
from tests.support import free_port, run_to_end

Behaviour = Callable[[BaseHTTPRequestHandler, threading.Event], None]


class HostileServer:
    """A threaded server on 127.0.0.1 whose paths each misbehave in their own way."""

    def __init__(self, paths: dict[str, Behaviour]) -> None:
        self.stop = threading.Event()
        self.calls: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                outer.calls[path] = outer.calls.get(path, 0) + 1
                # The connector giving up on us is what the test wants.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    paths[path](self, outer.stop)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def __enter__(self) -> HostileServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def head(handler: BaseHTTPRequestHandler, status: int = 200, **headers: str) -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.end_headers()


def endless(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    head(handler, Content_Type="application/json")  # no length: the body ends at close
    handler.wfile.write(b'{"items": [')
    while not stop.is_set():
        handler.wfile.write(b'{"id": 1},' * 10_000)


def dribble(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    body = b'{"items": [' + b'{"id": 1},' * 1000 + b'{"id": 2}]}'
    head(handler, Content_Type="application/json", Content_Length=str(len(body)))
    for index in range(len(body)):
        if stop.wait(0.02):  # a byte every 20 ms: each read is well within the socket timeout
            return
        handler.wfile.write(body[index : index + 1])
        handler.wfile.flush()


def dribbled_headers(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """The status line, then a header line a byte every 20 ms: http.client reads the headers
    before any body, each byte well within the socket timeout."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Padding: ")
    for _ in range(60_000):  # one header line may be 64 KiB: 20 minutes of it
        if stop.wait(0.02):
            return
        handler.wfile.write(b"a")
        handler.wfile.flush()


def raw(body: bytes) -> Behaviour:
    def send(handler: BaseHTTPRequestHandler, _stop: threading.Event) -> None:
        head(handler, Content_Type="application/json", Content_Length=str(len(body)))
        handler.wfile.write(body)

    return send


# A status line a hostile server sends: a screen clear, an OSC 8 hyperlink, a C1 CSI, a CR, and
# a second line laid out as a log line of the SDK's (http.client puts the whole line, raw, in
# its BadStatusLine).
FORGED_STATUS = (
    b"\x1b[2J\x1b]8;;http://evil.example/\x07click\x1b]8;;\x07 \x9b31m\r"
    b"INFO connectors.sdk: run 1 of http-json finished: success\r\n\r\n"
)


def forged_status(handler: BaseHTTPRequestHandler, _stop: threading.Event) -> None:
    handler.wfile.write(FORGED_STATUS)
    handler.close_connection = True


def cut_short(handler: BaseHTTPRequestHandler, _stop: threading.Event) -> None:
    head(handler, Content_Type="application/json", Content_Length="1000")
    handler.wfile.write(b'{"items": [')
    handler.close_connection = True


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


@pytest.fixture
def elsewhere() -> Iterator[HostileServer]:
    with HostileServer({"/secret": raw(b'{"items": [{"id": "internal"}]}')}) as server:
        yield server


@pytest.fixture
def hostile(elsewhere: HostileServer) -> Iterator[HostileServer]:
    def away(handler: BaseHTTPRequestHandler, _stop: threading.Event) -> None:
        head(handler, 302, Location=f"http://localhost:{elsewhere.port}/secret", Content_Length="0")

    with HostileServer(
        {
            "/endless": endless,
            "/dribble": dribble,
            "/dribbled-headers": dribbled_headers,
            "/away": away,
            "/latin1": raw(b'{"items": [{"id": "caf\xe9"}]}'),
            "/bigint": raw(b'{"items": [{"id": 1' + b"0" * 5000 + b"}]}"),
            "/deep": raw(b"[" * 100_000 + b"]" * 100_000),
            "/cut": cut_short,
            "/forged": forged_status,
        }
    ) as server:
        yield server


def fails(ledger: Ledger, spool: Spool, connector: HttpJsonConnector) -> str:
    with pytest.raises(FetchError) as failure:
        connector.run(ledger, spool=spool)
    assert finished(ledger, ledger.head().last_run_id)["status"] == "failed"
    return str(failure.value)


def test_an_endless_body_fails_the_run_at_the_size_limit(
    ledger: Ledger, spool: Spool, hostile: HostileServer
) -> None:
    # It was read whole into memory: a server that never ends its body filled the host's RAM.
    url = f"http://127.0.0.1:{hostile.port}/endless"
    connector = HttpJsonConnector(1, url, records_path="items", max_page_bytes=2_000_000)
    assert "larger than 2,000,000 bytes" in fails(ledger, spool, connector)


def test_a_dribbled_body_fails_the_run_at_the_page_deadline(
    ledger: Ledger, spool: Spool, hostile: HostileServer
) -> None:
    # Each byte came within the socket timeout, so the page never timed out: the run stayed
    # open forever, kept alive by its heartbeats, and serve never ran that connector again.
    url = f"http://127.0.0.1:{hostile.port}/dribble"
    connector = HttpJsonConnector(1, url, records_path="items", timeout=2, page_deadline=0.5)
    started = time.monotonic()
    assert "still arriving after 0.5s" in fails(ledger, spool, connector)
    assert time.monotonic() - started < 10  # the whole body would take over 200 s


def test_dribbled_headers_fail_the_run_at_the_page_deadline(
    ledger: Ledger, spool: Spool, hostile: HostileServer
) -> None:
    # The deadline was counted from the first byte of the body: a server that sent its headers
    # a byte at a time (a header line may be 64 KiB, a response 100 of them) held the run for
    # as long as it liked, alive by its heartbeats.
    url = f"http://127.0.0.1:{hostile.port}/dribbled-headers"
    connector = HttpJsonConnector(1, url, records_path="items", timeout=2, page_deadline=0.5)
    started = time.monotonic()
    assert "still arriving after 0.5s" in fails(ledger, spool, connector)
    assert time.monotonic() - started < 10  # the header line alone would take 20 minutes


def test_a_redirect_to_another_host_is_refused(
    ledger: Ledger, spool: Spool, hostile: HostileServer, elsewhere: HostileServer
) -> None:
    # urllib followed it: the origin rule for next links did not hold for redirects, and the
    # run stored another host's records as this source's.
    url = f"http://127.0.0.1:{hostile.port}/away?api_key=s3cr3t-token"
    connector = HttpJsonConnector(1, url, records_path="items", retries=0)
    message = fails(ledger, spool, connector)
    assert f"redirects to http://localhost:{elsewhere.port}/secret" in message
    assert "refused" in message
    assert "s3cr3t-token" not in message
    assert elsewhere.calls == {}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/latin1", "not JSON (not UTF-8 at byte 22)"),
        ("/bigint", "not JSON this connector can read"),
        ("/deep", "not JSON this connector can read"),
    ],
)
def test_a_body_that_is_not_utf8_json_fails_the_run_naming_the_url(
    ledger: Ledger, spool: Spool, hostile: HostileServer, path: str, expected: str
) -> None:
    # They were a UnicodeDecodeError, a ValueError and a RecursionError, naming no URL.
    url = f"http://127.0.0.1:{hostile.port}{path}"
    message = fails(ledger, spool, HttpJsonConnector(1, url, records_path="items"))
    assert message.startswith(url)
    assert expected in message


def test_a_body_cut_short_is_retried_then_fails_the_run(
    ledger: Ledger, spool: Spool, hostile: HostileServer
) -> None:
    # http.client's IncompleteRead was not retried like a dropped connection, and its raw
    # repr failed the run.
    url = f"http://127.0.0.1:{hostile.port}/cut"
    connector = HttpJsonConnector(1, url, records_path="items", retries=2, backoff=0.01)
    message = fails(ledger, spool, connector)
    assert "still failing after 2 retries (IncompleteRead" in message
    assert hostile.calls["/cut"] == 3


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_page_bytes", 0), ("max_page_bytes", 1.5), ("page_deadline", float("nan"))],
)
def test_page_limits_are_checked(option: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=option):
        HttpJsonConnector(1, "http://127.0.0.1:1/", **{option: value})  # type: ignore[arg-type]


def raw_characters(text: str) -> list[str]:
    return [char for char in set(text) if not char.isprintable() and char != "\n"]


def test_a_status_line_that_draws_on_the_terminal_forges_no_log_line(
    ledger: Ledger, spool: Spool, hostile: HostileServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The retry's INFO line quoted http.client's BadStatusLine raw: `ledger -v run http-json`
    # (and serve -v) cleared the screen, printed a hyperlink, and wrote a line of its own,
    # "INFO connectors.sdk: run 1 of http-json finished: success", for a run that failed.
    url = f"http://127.0.0.1:{hostile.port}/forged"
    connector = HttpJsonConnector(1, url, records_path="items", retries=1, backoff=0)
    with caplog.at_level(logging.INFO, logger="connectors.http_json"):
        message = fails(ledger, spool, connector)
    assert "BadStatusLine" in message  # the ledger keeps the server's words as they were
    retries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retrying")]
    assert len(retries) == 1
    assert "BadStatusLine: \\x1b[2J\\x1b]8;;http://evil.example/\\x07click" in retries[0]
    assert raw_characters(retries[0]) == []
    assert "\n" not in retries[0]


def test_no_log_line_of_the_cli_holds_what_a_server_sent_raw(
    db_url: str, hostile: HostileServer
) -> None:
    # The same through the command, whose log handler makes every message one visible line
    # (whichever library call logged it, and whatever quoted the server).
    url = f"http://127.0.0.1:{hostile.port}/forged"
    command = [sys.executable, "-c", "from service.cli import main; main()", "-v", "run"]
    command += ["http-json", "--url", url, "--retries", "1", "--backoff", "0", "--db", db_url]
    done = run_to_end(command, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert raw_characters(done.stderr) == [], done.stderr
    assert any(line.startswith("INFO connectors.http_json: retrying") for line in lines)
    sdk_lines = [line for line in lines if line.startswith("INFO connectors.sdk: run ")]
    assert [line.rsplit(" ", 1)[-1] for line in sdk_lines] == ["started", "failed"], done.stderr
