"""The http-json connector against a hostile server, on SQLite and MariaDB (connectors review):
an endless body, a body dribbled a few bytes at a time, a redirect to another host, bodies that
are not UTF-8 JSON, a body cut short. Each fails the run (or retries) with a message naming the
URL and what was wrong, within a bound; nothing is fetched from another host."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from connectors import FetchError, HttpJsonConnector, Spool
from ledger import ConfigurationError, Ledger
from tests.connectors.support import finished

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

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

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


def raw(body: bytes) -> Behaviour:
    def send(handler: BaseHTTPRequestHandler, _stop: threading.Event) -> None:
        head(handler, Content_Type="application/json", Content_Length=str(len(body)))
        handler.wfile.write(body)

    return send


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
            "/away": away,
            "/latin1": raw(b'{"items": [{"id": "caf\xe9"}]}'),
            "/bigint": raw(b'{"items": [{"id": 1' + b"0" * 5000 + b"}]}"),
            "/deep": raw(b"[" * 100_000 + b"]" * 100_000),
            "/cut": cut_short,
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
