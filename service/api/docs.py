"""``/docs``: Swagger UI for the API, served from this machine (no CDN: an API behind a firewall
has its docs too) with the OpenAPI document embedded in the page, so the page needs no second,
unauthenticated request for it (a browser sends no bearer token on its own).

Swagger UI's own files come from the ``swagger-ui-py`` package (Apache 2.0), read from its
``static`` folder without importing it; only the names in :data:`ASSETS` are served.
"""

from __future__ import annotations

import html
import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse, Response

ASSETS_PATH = "/docs/assets"
# Swagger UI renders with inline styles and shows its logo as a data: URL; scripts only from
# this server: the document travels as data in a non-executable <script type> element.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)
ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "init.js": "text/javascript; charset=utf-8",
}
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script type="application/json" id="openapi-document">{document}</script>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{assets}/init.js"></script>
</body>
</html>
"""


def docs_page(document: dict[str, Any], title: str) -> HTMLResponse:
    """The Swagger UI page with ``document`` embedded. ``<``, ``>`` and ``&`` are escaped as
    JSON escapes, so no text in the document (a description, an example) can close the
    element or open another."""
    data = (
        json.dumps(document, ensure_ascii=True)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )
    body = _PAGE.format(title=html.escape(title), assets=ASSETS_PATH, document=data)
    return HTMLResponse(body, headers={"content-security-policy": CSP})


def asset(name: str) -> Response | None:
    """One of :data:`ASSETS` (None: not one of them), cached by the browser for an hour."""
    media_type = ASSETS.get(name)
    if media_type is None:
        return None
    return Response(
        _asset_bytes(name),
        media_type=media_type,
        headers={"cache-control": "public, max-age=3600", "x-content-type-options": "nosniff"},
    )


@cache
def _asset_bytes(name: str) -> bytes:
    if name == "init.js":
        return (Path(__file__).parent / "static" / "init.js").read_bytes()
    return (_swagger_ui_static() / name).read_bytes()


def _swagger_ui_static() -> Path:
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed (pip install -e .)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"
