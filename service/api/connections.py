"""The API's HTTP connections, bounded before any request exists.

uvicorn (h11) starts no timer on a connection until it has answered a first request, so a
client that connects and sends nothing, or a header line every few seconds (slow loris), held
its socket for ever, without a token. A few hundred of them took every file descriptor of the
process: each accept then failed with a traceback (thousands a second in the log), ``/healthz``
stopped answering, and so did whatever else the process opens (database connections, the
spool, the serve jobs beside the API). Two bounds, here, at the connection:

* A request's line and headers must arrive within ``[api] read_timeout`` of the connection (or
  of the answer before them on a kept-alive connection); else the connection gets a 408
  problem (nothing, if no byte came) and is closed. The body is bounded by the guard
  (:mod:`service.api.guard`), between reads.
* At most :func:`connection_limit` connections at once (from the process's limit of open
  files, some kept for the rest): one more is closed at once, so the process never runs out.

Each is logged as one WARNING at most once a minute, with the count, not a line a connection.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from ledger.outage import Tally
from service.api.problems import PROBLEM_JSON, ApiProblem

log = logging.getLogger("ledger.api")

# File descriptors kept for everything but the API's connections (database connections, the
# SQLite file and its journal, the spool, logs, the serve jobs), at most this many...
RESERVED_FILES = 256
# ...and at most this share of the limit (a limit of 128 keeps 32).
RESERVED_SHARE = 4
MIN_BACKLOG = 8
MAX_BACKLOG = 2048  # uvicorn's default


def _open_files() -> int | None:
    open_files, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if open_files == resource.RLIM_INFINITY or open_files <= 0 else open_files


def _reserved(open_files: int) -> int:
    return min(open_files // RESERVED_SHARE, RESERVED_FILES)


def connection_limit(open_files: int | None = None) -> int | None:
    """How many connections the API holds at once: the process's limit of open files less
    those kept for the rest (None: no limit)."""
    open_files = open_files or _open_files()
    if open_files is None:
        return None
    return max(1, open_files - _reserved(open_files))


def accept_backlog(open_files: int | None = None) -> int:
    """uvicorn's ``backlog``: asyncio accepts up to this many connections at each turn of its
    loop, and a connection reaches :class:`BoundedH11` (which closes those over
    :func:`connection_limit`) a few turns later, so a burst holds several batches at once: an
    eighth of the files kept for the rest, so that it cannot take them all (at most uvicorn's
    default, 2048)."""
    open_files = open_files or _open_files()
    if open_files is None:
        return MAX_BACKLOG
    return max(MIN_BACKLOG, min(MAX_BACKLOG, _reserved(open_files) // 8))


def headers_timeout_answer(seconds: float) -> bytes:
    """The whole HTTP answer to headers that did not arrive in time: a 408 problem."""
    problem = ApiProblem(
        408,
        "request-timeout",
        "Request timeout",
        f"the request's headers did not arrive within {seconds:g}s ([api] read_timeout)",
    )
    body = problem.render()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        f"content-type: {PROBLEM_JSON}\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class BoundedH11(H11Protocol):
    """uvicorn's h11 protocol with the two bounds of the module's docstring. A subclass made
    by :func:`bounded_protocol` holds the figures."""

    header_timeout_s: float = 30.0
    max_connections: int | None = None
    slow_headers: Tally = Tally("connection(s) closed: request headers not complete in time", log)
    over_limit: Tally = Tally("connection(s) refused: too many open at once", log)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._headers_timer: asyncio.TimerHandle | None = None
        self._bytes_waiting = False  # a request begun, its headers not complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            self.over_limit.add()
            transport.abort()
            return
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        running = self.cycle
        if self._headers_timer is not None:
            self._bytes_waiting = True
        super().data_received(data)
        self._note_new_request(running)

    def on_response_complete(self) -> None:
        finished = self.cycle
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.cycle is finished:  # no pipelined request began: the next one's headers
            self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_headers_timer()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        self._cancel_headers_timer()
        self._bytes_waiting = False
        self._headers_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _note_new_request(self, before: object) -> None:
        """The headers of a request are complete once uvicorn made its cycle."""
        if self.cycle is not None and self.cycle is not before:
            self._cancel_headers_timer()

    def _cancel_headers_timer(self) -> None:
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None

    def _headers_late(self) -> None:
        self._headers_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is running: its body is the guard's
        self.slow_headers.add()
        if self._bytes_waiting:  # a client mid-request is told why; an idle one is not
            self.transport.write(headers_timeout_answer(self.header_timeout_s))
        self.transport.close()


def bounded_protocol(header_timeout_s: float, max_connections: int | None) -> type[BoundedH11]:
    """The protocol class for uvicorn's ``http`` setting, with these bounds (its own tallies:
    two servers in one process count apart)."""
    return type(
        "BoundedH11",
        (BoundedH11,),
        {
            "header_timeout_s": header_timeout_s,
            "max_connections": max_connections,
            "slow_headers": Tally(BoundedH11.slow_headers.what, log),
            "over_limit": Tally(BoundedH11.over_limit.what, log),
        },
    )


__all__ = [
    "BoundedH11",
    "Tally",
    "accept_backlog",
    "bounded_protocol",
    "connection_limit",
    "headers_timeout_answer",
]
