"""Fetching a page over HTTP(S) for the ``http-json`` connector, within what a hostile server
must not get: a redirect followed only on the first URL's scheme, host and port; every read
of a page's exchange (status line, headers, body, and those of its redirects) held to the
page's deadline; URLs shown with their secrets masked.
"""

from __future__ import annotations

import functools
import http.client
import io
import re
import socket
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from ledger.text import clip, describe_char, visible
from ledger.urls import MAX_TCP_PORT, mask_secrets, tcp_port_problem


class FetchError(RuntimeError):
    """A page could not be fetched (after the retries, for retryable failures)."""


# What an HTTP request line cannot carry in its URL: http.client refuses a space, a control
# character or DEL (InvalidURL) and cannot encode one outside ASCII (UnicodeEncodeError).
_UNREQUESTABLE = re.compile(r"[^\x21-\x7e]")
_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def shown(url: str) -> str:
    """The URL as it may appear in the ledger, logs and output: credentials and key-like
    query parameters masked (the ledger is immutable: a leaked secret could never be removed).
    A space or control character (a server's next link can hold one) is shown percent-encoded:
    a masked value ends at a space, which left the rest of a secret such as "SEKRET8 x"."""
    return mask_secrets(_SPACE_OR_CONTROL.sub(lambda found: f"%{ord(found[0]):02X}", url))


def unrequestable(url: str, exc: Exception) -> str:
    """Why http.client would not send ``url``, without its own message: that quotes the URL
    raw, unmasked."""
    found = _UNREQUESTABLE.search(url)
    if found is not None:
        return (
            f"the URL holds {describe_char(found[0])} at character {found.start() + 1}, "
            "which an HTTP request cannot carry"
        )
    return f"not a URL HTTP can request ({clip(mask_secrets(visible(str(exc))), 200)})"


def clip_link(link: Any) -> str:
    """A link found in a page, as a message may quote it: masked and at most 200 characters."""
    return clip(shown(str(link)), 200)


@dataclass(frozen=True)
class Page:
    """One fetched page: its URL, its JSON document and the next URL its Link header names."""

    url: str
    document: Any
    link_next: str | None


def origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, lower-case host and effective port: what a next URL must share with the first."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: no origin matches it
        return (parts.scheme.lower(), "", -1)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return (parts.scheme.lower(), (parts.hostname or "").lower(), port or default)


def url_port_problem(parts: urllib.parse.SplitResult) -> str | None:
    """Why the URL's port is not one to connect to, or None (no port: the scheme's)."""
    try:
        port = parts.port
    except ValueError:  # out of 0..65535, or not a number: urllib names neither the port
        # Read as urllib does, after the credentials: a password is never quoted.
        text = parts.netloc.rpartition("@")[2].rpartition("]")[2].rpartition(":")[2]
        if text.isascii() and text.isdigit():
            if len(text.lstrip("0")) > len(str(MAX_TCP_PORT)):  # int() refuses 4,300 digits
                return f"port {clip(text, 20)!r} is not a TCP port (1 to {MAX_TCP_PORT})"
            return tcp_port_problem(int(text))
        return f"port {clip(text, 20)!r} is not a number"
    return None if port is None else tcp_port_problem(port)


class PageDeadline:
    """When one attempt at a page must have arrived whole (``page_deadline``), and how long one
    read may wait for a byte (``timeout``). Counted from the request, not from the body: a
    server that sent its status line or headers a byte at a time, each within the socket
    timeout, held the run for as long as it liked (a header line may be 64 KiB)."""

    def __init__(self, url: str, seconds: float, read_timeout: float) -> None:
        self.url = url
        self.seconds = seconds
        self.read_timeout = read_timeout
        self.at = time.monotonic() + seconds

    def wait(self) -> float:
        """How long the next read may wait; raises once the deadline has passed."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise self.exceeded()
        return min(self.read_timeout, left)

    def exceeded(self) -> FetchError:
        return FetchError(
            f"{shown(self.url)}: the response was still arriving after {self.seconds:g}s: "
            "refused (page_deadline)"
        )


@dataclass
class Deadlines:
    """The deadline of the page a connector is fetching, shared with its handlers."""

    current: PageDeadline | None = None


class _DeadlineReads(io.RawIOBase):
    """A response's reads of its socket, each waiting no later than the page's deadline."""

    def __init__(self, sock: socket.socket, deadline: PageDeadline) -> None:
        super().__init__()
        self._socket = sock
        # Through makefile, as http.client reads: the file keeps the socket open after the
        # connection closes its own handle (it does once the headers are read).
        self._reads = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._socket.settimeout(self._deadline.wait())
        try:
            return self._reads.readinto(buffer)
        except TimeoutError:
            self._deadline.wait()  # past the deadline: that is the failure to name
            raise

    def close(self) -> None:
        self._reads.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, *args: Any, deadline: PageDeadline, **kwargs: Any):
        super().__init__(sock, *args, **kwargs)
        self.fp.close()  # nothing read from it yet; its hold on the socket is let go
        self.fp = io.BufferedReader(_DeadlineReads(sock, deadline))


def _held_to(connection_class: type[http.client.HTTPConnection], deadlines: Deadlines) -> Any:
    """A maker of ``connection_class`` connections whose responses keep the current page's
    deadline (what ``AbstractHTTPHandler.do_open`` calls with the host)."""

    def connect(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        connection = connection_class(host, **kwargs)
        if deadlines.current is not None:
            connection.response_class = functools.partial(  # type: ignore[assignment]
                _DeadlineResponse, deadline=deadlines.current
            )
        return connection

    return connect


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadlines: Deadlines) -> None:
        super().__init__()
        self.deadlines = deadlines

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_held_to(http.client.HTTPConnection, self.deadlines), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadlines: Deadlines) -> None:
        super().__init__()
        self.deadlines = deadlines

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            _held_to(http.client.HTTPSConnection, self.deadlines),
            req,
            context=self._context,  # type: ignore[attr-defined]
        )


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects only within the first URL's scheme, host and port: the rule for next links.
    urllib followed any redirect (another host, an internal address, even ftp://), a way
    around the origin check and a way to send the URL's query, a token in it, elsewhere."""

    def __init__(self, first_url: str) -> None:
        self.first_url = first_url

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if origin(newurl) != origin(self.first_url):
            raise FetchError(
                f"{shown(req.full_url)}: HTTP {code} redirects to {clip_link(newurl)}, not on "
                f"{shown(self.first_url)}'s scheme, host and port: refused"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def page_opener(first_url: str, deadlines: Deadlines) -> urllib.request.OpenerDirector:
    """The opener of a connector's pages: redirects kept to ``first_url``'s origin, every read
    held to the deadline ``deadlines`` holds at the time."""
    return urllib.request.build_opener(
        _SameOriginRedirects(first_url),
        _DeadlineHTTPHandler(deadlines),
        _DeadlineHTTPSHandler(deadlines),
    )
