"""The headers every response under the web root carries (no scripts, no framing), the
same-origin check of a form post, and the host names a visitor without a login may read under."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledger.text import clip, visible
from service.web.state import ROOT, log

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


# The static files' own caching header is kept (see SecurityHeaders).
STATIC_ROOT = ROOT + "/static/"
CACHEABLE = frozenset({"cache-control"})


class SecurityHeaders:
    """Adds the security headers to every response under :data:`ROOT`, errors included: added
    around the whole API app, so that its own answers there (the redirect of ``/web``, the
    guard's 413 and 500, Starlette's 500 of a page) carry them too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == ROOT or path.startswith(ROOT + "/")):
            await self.app(scope, receive, send)
            return

        # The style sheet says it may be cached (an hour, public: it holds no data); every
        # other answer here is a page of ledger data or an error, never stored.
        kept = CACHEABLE if path.startswith(STATIC_ROOT) else frozenset()

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if (name := k.decode("latin-1").lower()) not in SECURITY_HEADERS or name in kept
                ]
                present = {k.decode("latin-1").lower() for k, _ in headers}
                headers += [
                    (k.encode(), v.encode())
                    for k, v in SECURITY_HEADERS.items()
                    if k not in present
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def origin_problem(request: Request) -> str | None:
    """Why a form post is refused as another site's, or None when it is this site's: its
    Origin (or, without one, its Referer) names this request's host (a browser always sends one
    of them with a cross-site POST). Said in full, the origin it came from and the host this
    server answers as. A reverse proxy that does not pass the browser's ``Host`` on makes
    every form of the site "another site's": the page said only "reload", which never helps,
    and the log said nothing."""
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None:
        if origin != "null" and origin.split("://", 1)[-1] == host:
            return None
        sent = origin
    else:
        referer = request.headers.get("referer")
        if referer is None:
            return None  # neither (not a browser, or stripped): the CSRF token and SameSite decide
        # Only its origin is named: the rest of the address is another site's business.
        parts = referer.split("://", 1)
        where = parts[-1].split("/", 1)[0]
        if where == host:
            return None
        sent = f"{parts[0]}://{where}" if len(parts) == 2 else where
    if sent == "null":
        came_from = "a page without an origin (Origin: null: a sandboxed page, a local file)"
    else:
        came_from = repr(clip(visible(sent), 100))
    problem = (
        f"the form was posted from {came_from}, and this server answers as "
        f"{clip(visible(host), 100)!r} (the request's Host): a form from another site is "
        "refused. Behind a reverse proxy, pass the browser's Host on (nginx: "
        "proxy_set_header Host $host)"
    )
    log.warning("web form refused: %s", problem)
    return problem


# Names no DNS answer can rebind: the browser's own machine.
LOOPBACK_NAMES = frozenset({"localhost"})


def request_host(request: Request) -> str:
    """The host name of the ``Host`` header, its port apart, lower case, without a trailing dot
    ("" when it has none). Read from the header itself: Starlette's ``request.url.hostname``
    would take ``evil.example@127.0.0.1`` for ``127.0.0.1``."""
    host = request.headers.get("host", "").strip().lower()
    if host.startswith("["):  # an IPv6 literal, "[::1]:8080"
        return host[1 : host.find("]")] if "]" in host else host
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit():
        host = name
    return host.rstrip(".")


def public_host(request: Request, allowed: Collection[str]) -> bool:
    """May a visitor without a login read under this request's host name? An IP address or
    ``localhost`` (what the visitor typed: no other site's page runs under it), or a name in
    ``[web] allowed_hosts``. Any other name is a site's whose DNS may point at this server
    (DNS rebinding): its page, run in an internal visitor's browser, would read the runs."""
    host = request_host(request)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host in LOOPBACK_NAMES or host in allowed
    return True
