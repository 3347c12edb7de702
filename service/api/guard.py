"""The ASGI middleware around every request of the API (and of the web view mounted in it):
the body limit, the read timeout, one log line per request and a bare 500 for the unexpected.

It wraps the FastAPI app from outside, in ASGI messages: a declared Content-Length over the
limit and an unexpected error are answered here as problem+json (:mod:`service.api.problems`);
a body that grows over the limit or stalls is refused inside the app's own read of it, as an
``HTTPException`` that the app's handlers render.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ledger.outage import Outage
from ledger.text import visible
from service.api.head import REQUEST_METHOD
from service.api.problems import (
    PROBLEM_JSON,
    RETRY_AFTER_UNREACHABLE,
    ApiProblem,
    encoded_body_problem,
)

# The API's logger: a request's log line reads the same from the guard as from an endpoint.
log = logging.getLogger("ledger.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Guard:
    """Around every request: the body limit (Content-Length first, then the bytes as they
    arrive), one log line per request (no query string, no header, the token's name only, the
    path as :func:`logged_path` gives it), and a 500 problem without details for anything
    unexpected (logged with its traceback)."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        read_timeout: float,
        outage: Outage | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout
        self.outage = outage  # ended by the first answer the database took part in after it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0
        limit = self.max_body_bytes
        too_large = ApiProblem(
            413,
            "content-too-large",
            "Content too large",
            f"the request body is over the limit of {limit} bytes ([api] max_body_bytes)",
        )

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = _with_defaults(message.get("headers", []))
            await send(message)

        received = 0
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body: waiting for a disconnect, as long as it takes
                return await receive()
            try:  # a client that stalls mid-body holds no worker for ever (slow loris)
                message = await asyncio.wait_for(receive(), self.read_timeout)
            except TimeoutError:
                raise HTTPException(
                    408,
                    f"the request body stalled for {self.read_timeout:g}s ([api] read_timeout)",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    if not body_done:
                        await _discard_body(receive, received, self.read_timeout)
                    raise HTTPException(413, too_large.detail)
            return message

        try:
            declared = _content_length(scope)
            refused = too_large if declared is not None and declared > limit else None
            refused = refused or _encoded_body(scope)
            if refused is not None:
                if declared is None or declared <= DISCARD_MAX_BYTES:
                    await _discard_body(receive, 0, self.read_timeout)
                await _send_problem(send_and_note, refused)
                return
            log.debug("%s %s started", scope["method"], path_root(scope))
            await self.app(scope, limited_receive, send_and_note)
        except ClientDisconnect:
            # The client went away before its body was read: nobody to answer, and no
            # server error (it was logged as a 500 with a traceback). 499, as nginx logs it.
            status = status or CLIENT_CLOSED
        except asyncio.CancelledError:
            # uvicorn cancels a request still running when [api] grace_period has run out at
            # a stop: it would answer a bare text 500 and log "Exception in ASGI application"
            # with a traceback. The client gets a problem it can act on, and the request ends
            # here (its append, in a worker thread, may still commit: a retry finds it).
            log.warning(
                "stopping: %s %s was still running when the grace period ran out",
                scope["method"],
                logged_path(scope, status),
            )
            if status == 0:
                with contextlib.suppress(Exception):
                    await _send_problem(send_and_note, SHUTTING_DOWN)
        except Exception:
            log.exception(
                "unexpected error answering %s %s", scope["method"], logged_path(scope, status)
            )
            if status == 0:
                await _send_problem(
                    send_and_note,
                    ApiProblem(
                        500,
                        "internal-error",
                        "Internal error",
                        "an unexpected error occurred; it is logged on the server",
                    ),
                )
        finally:
            if self.outage is not None and _database_answered(scope, status):
                self.outage.ended()
            log.info(
                "%s %s %d %.1fms caller=%s",
                scope.get(REQUEST_METHOD, scope["method"]),
                logged_path(scope, status),
                status,
                (time.monotonic() - started) * 1000,
                scope.get("ledger_caller", "-"),
            )


def logged_path(scope: Scope, status: int) -> str:
    """A request's path as its log lines show it, which must never show a token a client
    pasted into it (``/v1/runs/TOKEN``, ``/v1/runs/TOKEN%0A``, ``/x/TOKEN.json``): the path
    itself only when the request succeeded (a matched route whose parameters all passed their
    checks: run ids, the names of files that exist), else the matched route's template
    (``/v1/runs/{run_id}``), else the path's first segment when it is one of the API's own
    (``/v1/…``). Nothing is looked up or hashed: a long path costs nothing more."""
    template = getattr(scope.get("route"), "path", None)
    if template is None:
        return f"{path_root(scope)} (no route)"
    if 0 < status < 400:
        return visible(scope["path"])
    return f"{scope.get('root_path', '')}{template}"


def path_root(scope: Scope) -> str:
    """The path's first segment when it is one of the API's own (``/v1/…``), else ``/…``:
    what the log may say of a path before a route has matched it."""
    first = str(scope["path"]).lstrip("/").split("/", 1)[0]
    return f"/{first}/…" if first in _OWN_ROOTS else "/…"


# The first segments of the API's own paths (a request under any other names no route).
_OWN_ROOTS = frozenset({"v1", "web", "healthz", "readyz", "metrics", "openapi.json", "docs"})

CLIENT_CLOSED = 499  # logged for a request whose client went away mid-body (nginx's code)
SHUTTING_DOWN = ApiProblem(
    503,
    "shutting-down",
    "Shutting down",
    "the server stopped before this request finished: retry (an append retried with the same "
    "body is not appended twice, whether or not this one was made)",
    headers={"Retry-After": str(RETRY_AFTER_UNREACHABLE)},
)

# Paths whose answer needs the database (a 2xx-4xx from one says it answers again); the
# process's own (/healthz, /metrics' fallback, /docs, the web's login and files) do not.
_DATABASE_PATHS = ("/v1/", "/readyz", "/web/runs", "/web/stuck", "/web/proof", "/web/integrity")


def _database_answered(scope: Scope, status: int) -> bool:
    """Whether this answer shows the database answering again: a success of a path that reads
    it. Not any answer under 500: a wrong token (401), a malformed parameter (400) or an unknown
    path (404) is answered before the database is asked, and ended the outage while the
    database was still away, so that each such request between two 503s wrote one more WARNING
    and a false "proceeding again after 0s" (a client with a stale token polling through an
    outage flooded the log). A 404 or 409 the ledger answered would show it too, but nothing
    tells them apart from those: the outage ends at the next success instead."""
    path: str = scope.get("path", "")
    return 200 <= status < 300 and path.startswith(_DATABASE_PATHS)


# On every answer unless it says otherwise: a browser never sniffs a connector's "<script>" in
# JSON into HTML, and ledger data and problems stay out of caches (Swagger UI's files say
# "public" themselves; the web view's pages get their own headers, SecurityHeaders).
DEFAULT_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"))


def _with_defaults(headers: Any) -> list[tuple[bytes, bytes]]:
    listed = list(headers)
    present = {bytes(name).lower() for name, _ in listed}
    return listed + [(name, value) for name, value in DEFAULT_HEADERS if name not in present]


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", []):
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def _content_length(scope: Scope) -> int | None:
    text = (_header(scope, b"content-length") or "").strip()
    return int(text) if text.isascii() and text.isdigit() else None


# Requests without a body: a Content-Encoding header on them encodes nothing.
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})


def _encoded_body(scope: Scope) -> ApiProblem | None:
    """415 for a request body sent compressed, on every route (JSON, JSON Lines, web forms)."""
    # Every Content-Encoding header counts (a second one, ``gzip`` after ``identity``, is
    # as much a coding of the body as a list in one header).
    encodings = [
        value.decode("latin-1")
        for name, value in scope.get("headers", [])
        if name == b"content-encoding"
    ]
    if not encodings or scope["method"] in _BODILESS:
        return None
    return encoded_body_problem(", ".join(encodings))


# A body refused before it was read (413, 415) is still read, up to this many bytes, and
# dropped before the answer: a server that answers and closes while the client is still
# sending makes the client's kernel see a reset, which throws the answer away (the client
# reports "connection reset" instead of the 413 that names the limit). Larger bodies are
# answered at once; nginx's "lingering close" does the same.
DISCARD_MAX_BYTES = 64 * 1024 * 1024


async def _discard_body(receive: Receive, received: int, timeout: float) -> None:
    """Read and drop the rest of a refused body until its end, until ``DISCARD_MAX_BYTES``
    have arrived, or until ``timeout`` seconds have passed, whichever comes first."""
    deadline = time.monotonic() + timeout
    more_body = True
    while more_body and received <= DISCARD_MAX_BYTES:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            message = await asyncio.wait_for(receive(), remaining)
        except TimeoutError:
            return
        if message["type"] != "http.request":
            return  # the client went away: nothing left to read
        received += len(message.get("body", b""))
        more_body = message.get("more_body", False)


async def _send_problem(send: Send, problem: ApiProblem) -> None:
    body = problem.render()
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in problem.headers.items()),
    ]
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["Guard"]
