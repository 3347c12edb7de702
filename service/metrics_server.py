"""The listener of ``ledger serve``'s ``/metrics``: prometheus_client's threaded WSGI server,
with the two bounds the API's listener has (:mod:`service.api.connections`).

prometheus_client's ``start_http_server`` gives every connection a thread of its own and no
timeout, so a client that connects and sends nothing (a port scanner, a TCP health check that
never closes, a peer gone without a FIN after a network fault) held a thread and a file
descriptor for the rest of the process's life: 300 such connections to a running serve were
310 threads and 319 file descriptors, still, a minute later. Over weeks on a metrics port open
to a network (``metrics_host = "0.0.0.0"`` for a remote Prometheus) they add up until the
process runs out of descriptors, and with them the database connections, the SQLite file and
the spool of the jobs beside it. Here:

* a connection must send its request within :data:`READ_TIMEOUT_S` (and take the answer as
  fast), else it is closed;
* at most :data:`MAX_CONNECTIONS` are served at once (Prometheus scrapes one at a time); one
  more is closed at once, logged as one WARNING a minute at most with the count.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.registry import CollectorRegistry

from ledger.durations import format_duration
from ledger.outage import Tally
from ledger.text import visible

log = logging.getLogger("service.metrics")

READ_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 32
SHUTDOWN_POLL_S = 0.1  # how often the accept loop looks for shutdown()


class _Handler(WSGIRequestHandler):
    # StreamRequestHandler puts it on the socket: every read and write of the connection.
    timeout = READ_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing: a line per scrape (every 15 s) says nothing an operator needs."""


class MetricsServer(ThreadingMixIn, WSGIServer):
    """A thread a connection, at most :attr:`max_connections` of them at once."""

    daemon_threads = True  # a scrape in flight does not hold up the process's exit
    max_connections = MAX_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self.refused = Tally(
            f"connection(s) to /metrics refused: {self.max_connections} already open (the most "
            "served at once)",
            log,
        )

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            self.refused.add()
            return
        try:
            super().process_request(request, client_address)  # starts its thread
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out or went away is not serve's error (socketserver printed
        its traceback to stderr); anything else is logged with its traceback."""
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("metrics: a connection ended early", exc_info=True)
        else:
            log.exception("metrics: answering a scrape failed")


class _LoggedApp:
    """The metrics app, its failure logged and answered 500. wsgiref catches what the app
    raises before the server's :meth:`MetricsServer.handle_error` sees it, and prints the
    traceback to stderr itself, past the log's handlers and format: a collector that raised
    something not a :class:`ledger.StorageError` (a row edited by hand, the ``StoredRowError``
    naming it) was a bare traceback on stderr at every scrape.

    A failure that lasts is a spell, as :class:`ledger.outage.Outage` logs one: one ERROR with
    the traceback as it starts, the scrapes that fail after it at DEBUG, and an INFO with how
    long it lasted at the first scrape answered again (a scrape every 15 s was an ERROR and a
    traceback every 15 s, 5,760 a day, for a row nobody had rebuilt yet)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self._since: float | None = None  # time.monotonic() of the spell's first failure
        self._lock = threading.Lock()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        try:
            answer = self.app(environ, start_response)
        except Exception as exc:
            self._failed(exc)
            start_response(
                "500 Internal Server Error",
                [("Content-Type", "text/plain; charset=utf-8")],
                sys.exc_info(),
            )
            return [b"the metrics could not be collected: see the log of ledger serve\n"]
        self._answered()
        return answer

    # Each line is logged under the lock: logged after it, a scrape answered meanwhile (a
    # failure that comes and goes, scrapes from two Prometheus servers) logged its "answered
    # again" first, and the log ended on the ERROR while every scrape was answered.

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            starting, self._since = self._since is None, self._since or time.monotonic()
            if starting:
                log.exception("metrics: answering a scrape failed")
            else:
                log.debug("metrics: a scrape still failed: %s", visible(str(exc)))

    def _answered(self) -> None:
        with self._lock:
            since, self._since = self._since, None
            if since is not None:
                lasted = format_duration(round(time.monotonic() - since))
                log.info("metrics: scrapes answered again after %s", lasted)


def start_metrics_server(port: int, host: str, registry: CollectorRegistry) -> MetricsServer:
    """Serve ``registry`` on ``host:port`` in a daemon thread; an address that cannot be bound
    raises the ``OSError`` as ``start_http_server`` did."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    # Classes of this call's own: the socket's family is a class attribute the server's
    # constructor reads (AF_INET6 for an IPv6 host, as in prometheus_client's own
    # start_http_server), and the bounds are read now, not when the module was imported.
    server_class = type(
        "MetricsServer",
        (MetricsServer,),
        {"address_family": family, "max_connections": MAX_CONNECTIONS},
    )
    handler_class = type("MetricsHandler", (_Handler,), {"timeout": READ_TIMEOUT_S})
    server: MetricsServer = make_server(
        host, port, _LoggedApp(make_wsgi_app(registry)), server_class, handler_class
    )
    # serve_forever notices shutdown() between polls: a tenth of a second, not its default half,
    # is what `ledger serve` waits for /metrics as it stops.
    threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": SHUTDOWN_POLL_S},
        name="metrics",
        daemon=True,
    ).start()
    return server


__all__ = ["MAX_CONNECTIONS", "READ_TIMEOUT_S", "MetricsServer", "start_metrics_server"]
