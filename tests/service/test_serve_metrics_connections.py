"""Connections to serve's ``/metrics`` that never send a request: prometheus_client's server
kept a thread and a file descriptor for each of them for the rest of the process's life (300
of them were 310 threads a minute later), where the API's listener closes them. Now each must
send its request within a read timeout, and at most so many are served at once."""

from __future__ import annotations

import logging
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.error import HTTPError

import pytest

from ledger.errors import ValidationError
from service import load_config, metrics_server
from service.serve import LedgerService
from tests.support import free_port

DEADLINE_S = 20.0


@contextmanager
def metrics_of_serve(tmp_path: Path, db_url: str) -> Iterator[int]:
    """A serve process's metrics listener (started as ``ledger serve`` starts it); its port."""
    config = tmp_path / "ledger.toml"
    config.write_text(f'database_url = "{db_url}"\n', encoding="utf-8")
    port = free_port()
    service = LedgerService(load_config(config), metrics_port=port)
    try:
        service.start_metrics()
        yield port
    finally:
        service.close_ledgers()


def serving_metrics(tmp_path: Path, db_url: str) -> tuple[LedgerService, int]:
    """A serve whose metrics listener and scheduler run, for a test to stop with
    ``shutdown()`` as serve stops; its metrics port."""
    config = tmp_path / "ledger.toml"
    config.write_text(f'database_url = "{db_url}"\n', encoding="utf-8")
    port = free_port()
    service = LedgerService(load_config(config), metrics_port=port)
    service.start_metrics()
    service.scheduler.start()
    return service, port


def idle_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that begin a request and never finish it."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # no blank line: the headers never end
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE_S}s: {what}")
        time.sleep(0.05)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return str(answer.read().decode())


def test_a_connection_that_sends_no_request_is_closed(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_server, "READ_TIMEOUT_S", 0.5)
    with metrics_of_serve(tmp_path, db_url) as port:
        idle = idle_connections(port, 5)
        try:
            wait_for(lambda: all(closed_by_server(sock) for sock in idle), "idle ones closed")
        finally:
            for sock in idle:
                sock.close()
        assert "ledger_database_up 1.0" in scrape(port)


def test_connections_past_the_most_served_at_once_are_closed_at_once(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(metrics_server, "MAX_CONNECTIONS", 3)
    caplog.set_level(logging.WARNING, logger="service.metrics")
    with metrics_of_serve(tmp_path, db_url) as port:
        idle = idle_connections(port, 10)
        try:
            wait_for(lambda: sum(closed_by_server(sock) for sock in idle) == 7, "7 of 10 closed")
            assert [closed_by_server(sock) for sock in idle[:3]] == [False] * 3
        finally:
            for sock in idle:
                sock.close()
        wait_for(lambda: _answers(port), "a scrape answered once the idle ones are gone")
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    # The first at once; the other 6 once the minute is over (ledger.outage.Tally).
    assert refusals[0] == (
        "1 connection(s) to /metrics refused: 3 already open (the most served at once)"
    )


def test_refusals_not_yet_logged_are_logged_as_serve_stops(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The count after the first line waited for a daemon timer a minute away: refusals in
    the minute before a stop (an overloaded serve its operator then restarted) were never
    logged. The stop says them."""
    monkeypatch.setattr(metrics_server, "MAX_CONNECTIONS", 1)
    caplog.set_level(logging.WARNING, logger="service.metrics")
    service, port = serving_metrics(tmp_path, db_url)
    held = idle_connections(port, 1)
    wait_for(lambda: not closed_by_server(held[0]), "the first connection to be served")
    refused = idle_connections(port, 4)
    try:
        wait_for(lambda: all(closed_by_server(sock) for sock in refused), "4 refused")
        service.shutdown()
    finally:
        for sock in held + refused:
            sock.close()
    # This server's own lines (an earlier test's server, still alive, has its own tally).
    refusals = [r.getMessage() for r in caplog.records if "1 already open" in r.getMessage()]
    assert refusals == [
        "1 connection(s) to /metrics refused: 1 already open (the most served at once)",
        "3 connection(s) to /metrics refused: 1 already open (the most served at once)",
    ]


def _answers(port: int) -> bool:
    try:
        return "ledger_database_up 1.0" in scrape(port)
    except OSError:
        return False


def test_a_scrape_that_fails_is_logged_not_printed(
    tmp_path: Path,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The collector raising what is not a StorageError (a row edited by hand: the
    StoredRowError naming it): wsgiref printed its traceback to stderr at every scrape, past
    the log, before the listener's handle_error could see it. It is one ERROR of the log, with
    the traceback, for the whole spell of failed scrapes (each a 500), and an INFO as it
    ends."""

    row_edited = True
    figures = LedgerService.figures

    def unreadable_row(self: LedgerService) -> Any:
        if row_edited:
            raise ValidationError("the ingestion_runs row of run 7 cannot be read")
        return figures(self)

    monkeypatch.setattr(LedgerService, "figures", unreadable_row)
    caplog.set_level(logging.INFO, logger="service.metrics")
    with metrics_of_serve(tmp_path, db_url) as port:
        for _ in range(3):  # a scrape every 15 s until the row is rebuilt
            with pytest.raises(HTTPError) as answer:
                scrape(port)
            assert answer.value.code == 500
        row_edited = False  # `ledger rebuild`
        assert "ledger_database_up 1.0" in scrape(port)
    assert "Traceback" not in capfd.readouterr().err
    logged = [(r.levelname, r.getMessage()) for r in caplog.records]
    # One ERROR for the spell, not one a scrape (5,760 a day); an INFO as it ends.
    assert logged == [
        ("ERROR", "metrics: answering a scrape failed"),
        ("INFO", "metrics: scrapes answered again after 0s"),
    ]
    exc_info = caplog.records[0].exc_info
    assert exc_info is not None
    assert "run 7 cannot be read" in str(exc_info[1])


def test_a_scrape_answered_while_the_failure_is_logged_is_logged_after_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Two scrapes at once, the first failing, the second answered while the first's ERROR is
    being written (a failure that comes and goes, two Prometheus servers): the spell's state
    was changed under the lock and logged after it, so the second's "answered again" could come
    first and the log end on the ERROR while every scrape was answered. The spell cannot end
    while its lines are written: the answered scrape waits, its INFO after the ERROR."""
    answers = iter([ValueError("a row edited by hand"), None])

    def collector(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        failure = next(answers)
        if failure is not None:
            raise failure
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ledger_database_up 1.0\n"]

    app = metrics_server._LoggedApp(collector)
    written = metrics_server.log.exception
    ended_meanwhile = []

    def exception(*args: Any, **kwargs: Any) -> None:
        # The other scrape, answered now: it may end the spell only once this line is written.
        free = app._lock.acquire(blocking=False)
        if free:
            app._lock.release()
            app({}, lambda *_: None)
        ended_meanwhile.append(free)
        written(*args, **kwargs)

    monkeypatch.setattr(metrics_server.log, "exception", exception)
    caplog.set_level(logging.INFO, logger="service.metrics")
    app({}, lambda *_: None)
    if ended_meanwhile == [False]:  # held: the answered scrape comes after, as it would
        app({}, lambda *_: None)
    logged = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert logged == [
        ("ERROR", "metrics: answering a scrape failed"),
        ("INFO", "metrics: scrapes answered again after 0s"),
    ]


def test_metrics_stop_taking_connections_before_serve_says_stopped(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The stop said the refusals not yet logged, then "stopped", while /metrics kept taking
    connections: one refused after that was counted on a timer the exit ended, or logged
    after "stopped". The listener is closed before the counts are said."""
    caplog.set_level(logging.INFO, logger="service.serve")
    service, port = serving_metrics(tmp_path, db_url)
    assert _answers(port)
    service.shutdown()
    assert caplog.records[-1].getMessage() == "stopped"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S).close()
