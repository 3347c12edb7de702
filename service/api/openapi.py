"""The OpenAPI document: the problems each operation may answer, the events' body, and the
routes that serve the document and Swagger UI."""

from typing import Annotated, Any

from fastapi import FastAPI, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse

from ledger.events import event_adapter
from service.api.access import Scopes
from service.api.auth import Caller
from service.api.docs import ASSETS_PATH, asset, docs_page
from service.api.head import head_operations
from service.api.problems import PROBLEM_JSON, ApiProblem
from service.api.shapes import FailRequest, Problem

_TITLES = {
    400: "Invalid input or request",
    401: "No valid bearer token",
    403: "The token lacks the scope, or may not write for the run's connector",
    404: "No such run",
    409: "Conflict with the ledger's state",
    408: "The body stalled over [api] read_timeout",
    413: "Body over [api] max_body_bytes",
    415: "Not JSON nor JSON Lines, declared in a charset other than UTF-8, or compressed",
    429: "[api] max_expensive such requests already running, or [api] max_auth_failures "
    "refused tokens from this address (Retry-After)",
    500: "Unexpected error (no details)",
    503: "Database unreachable or schema not current (Retry-After)",
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
        "required": True,
    }
}
# The headers each problem always carries, as the document says them.
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": 'Bearer realm="run-ledger"',
            "schema": {"type": "string"},
            "required": True,
        }
    },
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {
            "description": _TITLES[status],
            "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}},
            **({"headers": _HEADERS[status]} if status in _HEADERS else {}),
        }
        for status in statuses
    }


def events_body() -> dict[str, Any]:
    schema = event_adapter.json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "array", "items": schema}},
            "application/x-ndjson": {
                "schema": {"type": "string", "description": "One event per line"}
            },
        },
    }


def openapi_document(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(event_adapter.json_schema(ref_template="#/components/schemas/{model}")["$defs"])
    schemas["Problem"] = Problem.model_json_schema()
    schemas["FailRequest"] = FailRequest.model_json_schema()  # read by a dependency
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    common = problem_responses(500, 503)
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if path != "/healthz":
                responses.update(
                    {str(k): v for k, v in problem_responses(400, 401, 403, 429).items()}
                )
            responses.update({str(k): v for k, v in common.items()})
    head_operations(document.get("paths", {}))  # listed: every GET answers HEAD (HeadAsGet)
    app.openapi_schema = document
    return document


def add_docs_routes(app: FastAPI, scopes: Scopes) -> None:
    """``/openapi.json`` and ``/docs`` (with a read token), Swagger UI's files (without)."""
    read_scope = scopes.read

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_caller: Annotated[Caller, read_scope]) -> dict[str, Any]:
        return app.openapi()

    @app.get("/docs", include_in_schema=False)
    def docs(_caller: Annotated[Caller, read_scope]) -> HTMLResponse:
        return docs_page(app.openapi(), "run-ledger API")

    @app.get(ASSETS_PATH + "/{name}", include_in_schema=False)
    def docs_asset(name: str) -> Response:
        """Swagger UI's own files (no ledger data): a page needs them without a token."""
        found = asset(name)
        if found is None:
            raise ApiProblem(404, "not-found", "Not found", "no such file")
        return found
