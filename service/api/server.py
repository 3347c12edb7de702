"""Running the API on uvicorn: on its own (``ledger api``, SIGTERM/SIGINT drain the requests in
flight) or in a thread of ``ledger serve`` (stopped with the service)."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI

from ledger import ConfigurationError, DatabaseUnreachableError, Ledger
from ledger.outage import flush_tallies
from ledger.urls import resolve_database_url
from service.api.app import create_app
from service.api.connections import accept_backlog, bounded_protocol, connection_limit
from service.config import LedgerConfig, load_config, split_listen
from service.hangup import ignore_hangup
from service.stop_request import take_early_signals

log = logging.getLogger("ledger.api")

DEFAULT_LISTEN = "127.0.0.1:8080"


def standalone_config(config_path: Path | None, db_url: str | None) -> LedgerConfig:
    """The settings of ``ledger api``: the config file's (or the defaults), its database
    replaced by ``db_url`` (or ``$LEDGER_DATABASE_URL`` without a file). The database must be
    there and at this run-ledger's schema: the API appends but never creates one, so a typo in
    the URL or a database not migrated (or migrated by a newer run-ledger) is refused here, not
    answered with 503 on every request. A database that cannot be reached at start is waited
    for, as it would be later: /readyz says so."""
    config = load_config(config_path) if config_path else LedgerConfig()
    if db_url is not None or config_path is None:
        config = config.model_copy(update={"database_url": resolve_database_url(db_url or None)})
    ledger = Ledger.from_url(config.database_url, create=False)
    try:
        ledger.check_schema()
    except DatabaseUnreachableError:
        log.warning("the database cannot be reached yet; /readyz answers 503 until it can")
    finally:
        ledger.close()
    return config


def listen_address(listen: str | None, config: LedgerConfig) -> str:
    """Where to listen: ``listen`` if given, else ``[api] listen``, else :data:`DEFAULT_LISTEN`."""
    return listen or config.api.listen or DEFAULT_LISTEN


def bind(listen: str) -> socket.socket:
    """A listening socket on ``HOST:PORT``; a taken port or an unknown address is a
    :class:`ConfigurationError` naming it."""
    try:
        host, port = split_listen(listen)
    except ValueError as exc:
        raise ConfigurationError(f"api listen {listen!r}: {exc}") from exc
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve the API on {listen}: {exc.strerror or exc}"
        ) from exc
    sock.set_inheritable(True)
    return sock


def build_server(config: LedgerConfig) -> tuple[uvicorn.Server, FastAPI]:
    app = create_app(config)
    settings = uvicorn.Config(
        app,
        # uvicorn's h11 with a bound on request headers and on connections at once (see
        # service.api.connections): it held a connection that sent no headers for ever.
        http=bounded_protocol(config.api.read_timeout.total_seconds(), connection_limit()),
        backlog=accept_backlog(),
        access_log=False,  # the API logs each request itself, without query string or headers
        log_config=None,  # the CLI's logging configuration stands
        lifespan="off",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=int(config.api.grace_period.total_seconds()),
    )
    return uvicorn.Server(settings), app


def serve_api(
    config: LedgerConfig, listen: str, announce: Callable[[], None] = lambda: None
) -> None:
    """Serve until SIGTERM/SIGINT, then finish the requests in flight (within the grace
    period) and return. ``announce`` is called once the address is bound (a taken port is an
    error before anything says the API is up)."""
    sock = bind(listen)
    announce()
    server, app = build_server(config)
    log.info("API on http://%s (%d token(s))", listen, len(config.api.tokens))
    # uvicorn handles SIGTERM/SIGINT while it runs (drains, then stops), and then raises the
    # signal again for the handler it found: this one, which records it, so a clean stop exits
    # 0. Before uvicorn installs its own, this one asks it to stop as soon as it has started (it
    # looks at should_exit then): a SIGTERM while the command loaded (take_early_signals), or
    # one until uvicorn's handler is in place, was not lost.
    received: list[int] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)  # no lock and no log in a handler (see service.stop_request)
        server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    received.extend(take_early_signals())
    if received:
        server.should_exit = True
    ignore_hangup()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        close_app(app)
        flush_tallies()  # what the bounds refused in the last minute, said before the exit
    if received:
        log.info("stopped (%s)", signal.Signals(received[0]).name)


class ApiThread:
    """The API in a thread of another process (``ledger serve``): started, then stopped with
    the requests in flight drained."""

    def __init__(
        self, config: LedgerConfig, listen: str, sock: socket.socket | None = None
    ) -> None:
        """``sock``: ``listen`` bound already (serve binds it before it makes a database)."""
        self.listen = listen
        self.sock = bind(listen) if sock is None else sock
        self.server, self.app = build_server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="api", daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        log.info("API on http://%s", self.listen)

    def stop(self, timeout: float) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()
        close_app(self.app)


def close_app(app: FastAPI) -> None:
    web = getattr(app.state, "web", None)
    if web is not None:
        web.close()
    app.state.api.close()


__all__ = ["ApiThread", "bind", "build_server", "serve_api"]
