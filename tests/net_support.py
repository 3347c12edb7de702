"""Real network peers for the connector tests: a JSON HTTP server. (The TCP proxy in front of
MariaDB is ``tests/reliability/fault_proxy.py``.)"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (query, call number) -> (status, body), or (status, body, headers) for extra headers such as
# Link (a list of values sends the header once per value).
Route = Callable[[dict[str, str], int], tuple[Any, ...]]


class JsonServer:
    """A threaded HTTP server on 127.0.0.1 serving JSON from route functions."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.calls: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                route = outer.routes.get(parts.path)
                outer.calls[parts.path] = outer.calls.get(parts.path, 0) + 1
                headers: dict[str, str | list[str]] = {}
                if route is None:
                    status, body = 404, {"error": "not found"}
                else:
                    query = dict(urllib.parse.parse_qsl(parts.query))
                    status, body, *extra = route(query, outer.calls[parts.path])
                    headers = extra[0] if extra else {}
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, values in headers.items():
                    for value in [values] if isinstance(values, str) else values:
                        self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # serve_forever looks for shutdown() between polls: at its default half second, every
        # test's server took that long to stop (a minute of CI in the connector tests).
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> JsonServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
