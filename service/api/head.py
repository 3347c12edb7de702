"""``HEAD`` for every ``GET`` of the API and of the web view mounted in it, in one place.

FastAPI routes a ``GET`` endpoint for ``GET`` alone, so ``curl -I`` and a monitor's ``HEAD``
were answered 405. :class:`HeadAsGet`, around the whole app, answers a ``HEAD`` as the ``GET``
of the same URL (same route, same token or session check, same status and headers, the
``Content-Length`` the ``GET`` would send) and sends no body. A path without a ``GET`` answers
``HEAD`` as it answers ``GET``: 405 naming its methods. A 405's ``Allow`` names ``HEAD``
beside every ``GET`` (RFC 9110 10.2.1: the methods the resource supports), which the routes'
own 405s, knowing nothing of this class, left out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from starlette.routing import Match

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The scope key holding the request's own method, for the request's log line (the guard logs
# "HEAD /v1/runs", not the GET it was answered as).
REQUEST_METHOD = "ledger_method"


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def allowing_head(message: Message) -> None:
            await send(with_head_allowed(message))

        if scope["method"] != "HEAD":
            await self.app(scope, receive, allowing_head)
            return
        # A copy: the server reads its own scope's method to frame the response (no body
        # after the headers of a HEAD answer).
        as_get = {**scope, "method": "GET", REQUEST_METHOD: "HEAD"}

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(with_head_allowed(message))

        await self.app(as_get, receive, without_body)


def with_head_allowed(message: Message) -> Message:
    """``message`` with ``HEAD`` added to the ``Allow`` of a 405 that names ``GET``."""
    if message["type"] != "http.response.start" or message.get("status") != 405:
        return message
    headers = []
    for name, value in message.get("headers", ()):
        if name.lower() == b"allow":
            methods = [method.strip().upper() for method in value.split(b",")]
            if b"GET" in methods and b"HEAD" not in methods:
                value = value + b", HEAD"
        headers.append((name, value))
    return {**message, "headers": headers}


def allowed_methods(routes: Iterable[Any], scope: Scope) -> str | None:
    """The ``Allow`` of a 405 for ``scope``'s path: the methods of every route whose path
    matches it (Starlette's own 405 names those of the first such route alone, so a path with
    a GET route and a POST route said only ``GET``), or None when no route matches."""
    methods: set[str] = set()
    for route in routes:
        match, _child = route.matches({**scope, "method": ""})
        if match != Match.NONE and getattr(route, "methods", None):
            methods.update(route.methods)
    return ", ".join(sorted(methods)) if methods else None


def head_operations(paths: dict[str, dict[str, Any]]) -> None:
    """Add to an OpenAPI document's ``paths`` the ``head`` operation :class:`HeadAsGet` answers
    for each ``get``: listed rather than left out, so that a client generated from the
    document (a monitor's probe) finds them, with the same parameters, security and statuses
    and no content."""
    for operations in paths.values():
        get = operations.get("get")
        if get is None or "head" in operations:
            continue
        head = {**get, "summary": f"{get.get('summary', '')} (headers only)".strip()}
        if "operationId" in get:
            head["operationId"] = get["operationId"].removesuffix("_get") + "_head"
        head["responses"] = {
            status: {key: value for key, value in response.items() if key != "content"}
            for status, response in get.get("responses", {}).items()
        }
        operations["head"] = head


__all__ = [
    "REQUEST_METHOD",
    "HeadAsGet",
    "allowed_methods",
    "head_operations",
    "with_head_allowed",
]
