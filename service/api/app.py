"""The HTTP API: FastAPI over the library, the same calls and the same JSON as the CLI's
``--format json``. Endpoints hold no logic of their own: they parse, call the library, and
turn library errors into problems (:mod:`service.api.problems`).

Every endpoint but ``/healthz`` needs a bearer token with a scope (:mod:`service.api.auth`).
Request bodies are held to ``[api] max_body_bytes`` while they are read, before parsing.
"""

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from connectors import Spool
from forensics.audit import audit_run
from forensics.verify import verify_all
from ledger import Ledger, LedgerError, fail_run
from ledger.durations import parse_duration
from ledger.events import MAX_RUN_ID, event_adapter, operator_actor, operators_act
from ledger.outage import Outage
from ledger.schema import MAX_POSITION
from ledger.text import visible
from ledger.wire import LineBatch, append_lines, read_array, read_json, read_lines
from projections.as_of import parse_as_of
from projections.queries import (
    RunFilter,
    find_run,
    find_runs,
    jsonable_row,
    not_started_message,
)
from projections.schema import RUN_STATUSES
from service.api.auth import TOKEN_PARAMETERS, Caller, Tokens, bearer_token
from service.api.docs import ASSETS_PATH, asset, docs_page
from service.api.guard import Guard
from service.api.problems import (
    PROBLEM_JSON,
    RETRY_AFTER_BUSY,
    ApiProblem,
    busy_detail,
    expensive_slot,
    problem_for,
)
from service.config import ApiScope, LedgerConfig
from service.metrics import LedgerCollector, collect_figures, scrape_url, status_report

NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/x-jsonlines"})
MAX_PAGE = 1000
AS_OF_NAMES = ("as_of", "at_position")
RunStatus = Literal[RUN_STATUSES]  # type: ignore[valid-type]


class LedgerJSON(JSONResponse):
    """JSON with every non-ASCII character escaped: values come back exactly as stored, and a
    U+2028 or U+202E in them reaches no client raw."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


# ---------------------------------------------------------------------- documented shapes


class Problem(BaseModel):
    """An error (RFC 9457); ``errors`` lists each problem of invalid input with its field and
    line (NDJSON) or item (JSON array)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None
    run_id: int | None = None
    rule: str | None = None
    expected_version: int | None = None
    actual_version: int | None = None


class AppendSummary(BaseModel):
    appended: int
    duplicates: int
    first_position: int | None
    last_position: int | None
    allocated_run_ids: list[int]
    run_refs: dict[str, int]


UtcSeconds = Annotated[
    str, Field(json_schema_extra={"format": "date-time"}, examples=["2026-01-28T03:00:07Z"])
]
UtcMicros = Annotated[
    str,
    Field(json_schema_extra={"format": "date-time"}, examples=["2026-01-28T03:00:07.123456Z"]),
]


class IngestionRun(BaseModel):
    """One ``ingestion_runs`` row, the legacy columns as they are (times in whole seconds)."""

    id: int
    sourceId: int
    connectorName: str
    startedAt: UtcSeconds
    completedAt: UtcSeconds | None
    duration: int | None = Field(description="Seconds from startedAt to completedAt")
    status: RunStatus
    recordsFetched: int
    recordsCreated: int
    recordsUpdated: int
    recordsSkipped: int
    claimsCreated: int
    errorMessage: str | None
    errorDetails: Any = Field(description="A JSON object, or null")
    coverageCellsUpdated: int
    createdAt: UtcSeconds


class LedgerRunState(BaseModel):
    """A run's write-side state (``ledger_runs``): what appends check against."""

    run_id: int
    source_id: int
    connector_name: str
    version: int = Field(description="Its number of events: the next append's expected_version")
    state: Literal["open", "timed_out", "finished"]
    started_at: UtcMicros
    last_event_at: UtcMicros = Field(description="The latest occurred_at: its last activity")
    opened_at: UtcMicros
    updated_at: UtcMicros


class RunDetail(BaseModel):
    """A run: its legacy row and its write-side state, live or as of a position."""

    run_id: int
    as_of_position: int | None = Field(description="null: live; else the position replayed to")
    row: IngestionRun | None = Field(description="null while the projection is behind")
    ledger: LedgerRunState
    projected: bool
    note: str | None = Field(description="Why row is null, when it is")


class FailRequest(BaseModel):
    # A field it does not know is refused, as the events' are: {"reason": …, "operator": "bob"}
    # would otherwise be recorded as the token's name without a word.
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=10_000)]


class FailResult(BaseModel):
    run_id: int
    position: int
    actor: str
    reason: str


# ---------------------------------------------------------------------- the app


@dataclass
class ApiState:
    config: LedgerConfig
    ledger: Ledger
    scrape_ledger: Ledger
    tokens: Tokens
    spool: Spool
    expensive_slots: threading.BoundedSemaphore
    # The database unreachable: one WARNING as it starts, one INFO as a request gets through
    # again, not a line per request answered 503 (the web view's pages share it).
    outage: Outage = field(
        default_factory=lambda: Outage("API requests", logging.getLogger("service.api"))
    )

    @contextmanager
    def expensive(self, what: str) -> Iterator[None]:
        """A slot for a request that replays history (verify, as_of): 429 when all
        ``[api] max_expensive`` are taken, rather than a queue of full scans."""
        busy = ApiProblem(
            429,
            "too-many-requests",
            "Too many requests",
            busy_detail(what, self.config.api.max_expensive),
            headers={"Retry-After": str(RETRY_AFTER_BUSY)},
        )
        with expensive_slot(self.expensive_slots, lambda: busy):
            yield

    def close(self) -> None:
        self.ledger.close()
        self.scrape_ledger.close()


bearer = HTTPBearer(auto_error=False, description="A token from the [api] tokens of the config")


def create_app(config: LedgerConfig) -> FastAPI:
    """The API over ``config.database_url`` with ``config.api``'s tokens and limits."""
    state = ApiState(
        config=config,
        ledger=Ledger.from_url(config.database_url),
        scrape_ledger=Ledger.from_url(scrape_url(config.database_url)),
        tokens=Tokens(config.api),
        spool=Spool(config.spool.dir),
        expensive_slots=threading.BoundedSemaphore(config.api.max_expensive),
    )
    app = FastAPI(
        title="run-ledger",
        version="1",
        description="The ledger of ingestion runs over HTTP: append events, read runs.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        default_response_class=LedgerJSON,
        # Starlette's slash redirect is absolute, from the request's scheme and Host: behind a
        # TLS proxy it sends a browser to http://, and it names any host a request gives.
        redirect_slashes=False,
    )
    app.state.api = state
    _add_error_handlers(app)
    app.add_middleware(
        Guard,
        max_body_bytes=config.api.max_body_bytes,
        read_timeout=config.api.read_timeout.total_seconds(),
        outage=state.outage,
    )

    def require(scope: ApiScope) -> Callable[..., Caller]:
        def authorized(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> Caller:
            if TOKEN_PARAMETERS & {key.lower() for key in request.query_params}:
                raise ApiProblem(
                    400,
                    "token-in-url",
                    "Token in the URL",
                    "a token is accepted only in the Authorization header (URLs are logged)",
                )
            repeated = sorted(
                {key for key, _ in request.query_params.multi_items()}
                - {key for key in request.query_params if _once(request, key)}
            )
            if repeated:
                raise ApiProblem(
                    400,
                    "repeated-parameter",
                    "Repeated query parameter",
                    f"each query parameter may be given once: {visible(', '.join(repeated))}",
                )
            token = bearer_token(request.headers.get("authorization"))
            caller = None if token is None else state.tokens.caller(token)
            if caller is None:
                raise ApiProblem(
                    401,
                    "unauthorized",
                    "Unauthorized",
                    "a valid bearer token is required (Authorization: Bearer TOKEN)"
                    if token is None
                    else "the bearer token is not valid",
                    headers={"WWW-Authenticate": 'Bearer realm="run-ledger"'},
                )
            request.scope.setdefault("ledger_caller", caller.name)
            if scope not in caller.scopes:
                raise ApiProblem(
                    403,
                    "forbidden",
                    "Forbidden",
                    f"token {caller.name!r} lacks the {scope!r} scope",
                )
            return caller

        return authorized

    append_scope = Depends(require("append"))
    read_scope = Depends(require("read"))
    operate_scope = Depends(require("operate"))

    # ------------------------------------------------------------------ events

    @app.post(
        "/v1/events",
        summary="Append events, all or nothing",
        response_model=AppendSummary,
        responses=_problems(400, 408, 409, 413, 415),
        openapi_extra={"requestBody": _events_body()},
    )
    async def append_events(
        request: Request,
        caller: Annotated[Caller, append_scope],
        expected_version: Annotated[
            int | None,
            Query(ge=0, le=MAX_RUN_ID, description="The run's version before this batch"),
        ] = None,
    ) -> Any:
        """A JSON array of events, or JSON Lines (``application/x-ndjson``): validated first,
        appended in one transaction; an ``event_id`` already stored is not appended again."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json" and kind not in NDJSON_TYPES:
            raise ApiProblem(
                415,
                "unsupported-media-type",
                "Unsupported media type",
                "send a JSON array of events (application/json) or JSON Lines "
                "(application/x-ndjson)",
            )
        body = await request.body()
        most = config.api.max_events

        def append() -> dict[str, Any]:
            if kind != "application/json":
                lines = sum(1 for line in body.splitlines() if line.strip())
                if lines > most:
                    raise ApiProblem(
                        400,
                        "invalid-input",
                        "Invalid input",
                        f"invalid input, nothing was appended:\n  {lines:,} events in one "
                        f"request; the limit is {most:,} ([api] max_events)",
                    )
            batch: LineBatch = (
                read_array(body, most) if kind == "application/json" else read_lines(BytesIO(body))
            )
            _refuse_operators_acts(batch, caller)
            return append_lines(state.ledger, batch, expected_version).to_dict()

        return await run_in_threadpool(append)

    # ------------------------------------------------------------------ runs

    @app.get(
        "/v1/runs",
        summary="List runs, newest first",
        response_model=list[IngestionRun],
        responses=_problems(400, 429),
    )
    def list_runs(
        request: Request,
        response: Response,
        _caller: Annotated[Caller, read_scope],
        status: RunStatus | None = None,
        connector: Annotated[str | None, Query(max_length=1000)] = None,
        source: Annotated[int | None, Query(ge=0, le=MAX_RUN_ID)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        cursor: Annotated[
            int | None,
            Query(ge=1, le=MAX_RUN_ID, description="Runs below this id (the next page's)"),
        ] = None,
        as_of: Annotated[str | None, Query(max_length=100)] = None,
        at_position: Annotated[int | None, Query(ge=0, le=MAX_POSITION)] = None,
    ) -> list[dict[str, Any]]:
        """The rows of ``ingestion_runs`` (``ledger runs list --format json``), live or as of
        a time or position; a ``Link: <…>; rel="next"`` header names the next page."""
        moment = parse_as_of(as_of, at_position, AS_OF_NAMES)
        run_filter = RunFilter(status, connector, source, limit + 1, before=cursor)
        if moment is None and at_position is None:
            view = find_runs(state.ledger, run_filter)
        else:
            with state.expensive("a list as_of or at_position"):
                view = find_runs(state.ledger, run_filter, moment, at_position)
        rows = view.rows[:limit]
        if len(view.rows) > limit:
            pinned = {} if view.position is None else {"at_position": view.position}
            following = request.url.remove_query_params("as_of").include_query_params(
                cursor=rows[-1]["id"], **pinned
            )
            response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
        return [jsonable_row(row) for row in rows]

    run_id_path = Path(ge=1, le=MAX_RUN_ID)

    @app.get(
        "/v1/runs/{run_id}",
        summary="One run: its ingestion_runs row and its write-side state",
        response_model=RunDetail,
        responses=_problems(400, 404, 429),
    )
    def show_run(
        _caller: Annotated[Caller, read_scope],
        run_id: Annotated[int, run_id_path],
        as_of: Annotated[str | None, Query(max_length=100)] = None,
        at_position: Annotated[int | None, Query(ge=0, le=MAX_POSITION)] = None,
    ) -> dict[str, Any]:
        """The row ``ledger runs show --format json`` prints (``row``: null while the
        projection is behind, with a ``note``) and the ledger's own state of the run
        (``ledger``: version, state, start and last activity), live or as of a moment."""
        moment = parse_as_of(as_of, at_position, AS_OF_NAMES)
        if moment is None and at_position is None:
            view = find_run(state.ledger, run_id)
        else:
            with state.expensive("a run as_of or at_position"):
                view = find_run(state.ledger, run_id, moment, at_position)
        if view.state is None and view.position is not None:
            raise ApiProblem(
                404,
                "not-started-yet",
                "Run not started yet",
                not_started_message(run_id, view.position),
                run_id=run_id,
            )
        return view.to_dict(run_id)

    @app.get(
        "/v1/runs/{run_id}/events",
        summary="A run's audit timeline",
        responses=_problems(400, 404),
    )
    def run_events(
        _caller: Annotated[Caller, read_scope], run_id: Annotated[int, run_id_path]
    ) -> list[dict[str, Any]]:
        """Every event of the run with the status after it and its hash check (``ledger
        audit --format json``)."""
        return [entry.to_dict() for entry in audit_run(state.ledger, run_id)]

    @app.post(
        "/v1/runs/{run_id}/fail",
        summary="Declare an open run failed",
        response_model=FailResult,
        responses=_problems(400, 404, 408, 409, 413, 415),
    )
    def fail(
        caller: Annotated[Caller, operate_scope],
        _wire_rules: Annotated[None, Depends(wire_json)],
        run_id: Annotated[int, run_id_path],
        request: FailRequest,
    ) -> dict[str, Any]:
        """Appends RunTimedOut with ``detected_by=operator:TOKEN-NAME`` (``ledger runs
        fail``); a closed run is refused (409)."""
        actor = operator_actor(caller.name)  # as the CLI records --actor
        position = fail_run(state.ledger, run_id, request.reason, actor)
        return {"run_id": run_id, "position": position, "actor": actor, "reason": request.reason}

    # ------------------------------------------------------------------ health

    @app.get("/v1/stuck", summary="Stuck runs", responses=_problems(400))
    def stuck(
        _caller: Annotated[Caller, read_scope],
        older_than: Annotated[str | None, Query(max_length=100)] = None,
        max_runtime: Annotated[str | None, Query(max_length=100)] = None,
    ) -> list[dict[str, Any]]:
        """Open runs with no activity for ``older_than`` (or running longer than
        ``max_runtime``), as ``ledger stuck --format json``. Without either, the config's
        thresholds, each connector's own over the globals (what ``/v1/status``, the metrics
        and the web's Stuck page count); a value given replaces its threshold for every run."""
        found = config.stuck_runs(
            state.ledger,
            stale_after=None if older_than is None else parse_duration(older_than, "older_than"),
            max_runtime=None if max_runtime is None else parse_duration(max_runtime, "max_runtime"),
        )
        return [run.to_dict() for run in found]

    @app.get("/v1/status", summary="Head, runs, projection lag, spool")
    def status_endpoint(_caller: Annotated[Caller, read_scope]) -> dict[str, Any]:
        """``ledger status --format json`` with the config's thresholds and spool."""
        return status_report(state.ledger, state.config).to_dict()

    @app.get("/v1/verify", summary="Verify the ledger", responses=_problems(429))
    def verify(_caller: Annotated[Caller, read_scope], chain_only: bool = False) -> dict[str, Any]:
        """``ledger verify --format json``: ``ok``, the head checked and every problem."""
        with state.expensive("verify"):
            return verify_all(state.ledger, chain_only=chain_only).to_dict()

    registry = CollectorRegistry()
    registry.register(
        LedgerCollector(
            lambda: collect_figures(
                state.scrape_ledger,
                config.thresholds.to_thresholds(),
                config.overrides(),
                None,
            ),
            state.spool,
        )
    )

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
    )
    def metrics(_caller: Annotated[Caller, read_scope]) -> Response:
        """The collector of ``ledger serve --metrics-port``."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # async: answered on the event loop, so that it stays up while every worker thread waits
    # on a database that stopped answering (the process is up: that is all it says).
    @app.get("/healthz", summary="The process is up (no token needed)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # HEAD too (load balancers often probe with it), left out of the schema: one operation.
    @app.head("/healthz", include_in_schema=False)
    async def healthz_head() -> Response:
        return Response()

    @app.get("/readyz", summary="The database is reachable and its schema current")
    def readyz(_caller: Annotated[Caller, read_scope]) -> dict[str, str]:
        state.ledger.check_schema()
        return {"status": "ready"}

    @app.head("/readyz", include_in_schema=False)  # a load balancer's probe, as for /healthz
    def readyz_head(_caller: Annotated[Caller, read_scope]) -> Response:
        state.ledger.check_schema()
        return Response()

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

    if config.web.enabled:  # the web view (issue 17): same process, ledger and tokens
        from service.web import ROOT, SecurityHeaders, create_web_app

        web_app, app.state.web = create_web_app(
            config, state.ledger, state.expensive_slots, state.outage
        )

        @app.get(ROOT, include_in_schema=False)
        def web_home() -> Response:
            return RedirectResponse(ROOT + "/runs", status_code=303)

        app.mount(ROOT, web_app)
        # Outside the guard: its 413 and 500 under /web carry the pages' headers too.
        app.add_middleware(SecurityHeaders)
        app.state.web.verify.start()

    app.openapi = lambda: _openapi_document(app)  # type: ignore[method-assign]
    return app


async def wire_json(request: Request) -> None:
    """A JSON body (415 for another media type) held to the rules of ``POST /v1/events``
    (:func:`ledger.wire.read_json`): FastAPI's own parse keeps the last of a key given twice
    and takes ``NaN``."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiProblem(
            415, "unsupported-media-type", "Unsupported media type", "send JSON (application/json)"
        )
    await run_in_threadpool(read_json, await request.body())


# ---------------------------------------------------------------------- errors


def _problem_response(problem: ApiProblem) -> Response:
    return Response(
        problem.render(),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def api_problem(_request: Request, exc: ApiProblem) -> Response:
        return _problem_response(exc)

    @app.exception_handler(LedgerError)
    async def ledger_error(request: Request, exc: LedgerError) -> Response:
        return _problem_response(problem_for(exc, request.app.state.api.outage))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> Response:
        errors = []
        for error in exc.errors():
            where = [str(part) for part in error.get("loc", ())]
            field = ".".join(where[1:]) if len(where) > 1 else ".".join(where)
            message = (
                "not a field of this request body"  # pydantic: "Extra inputs are not permitted"
                if error.get("type") == "extra_forbidden"
                else str(error.get("msg"))
            )
            errors.append({"field": visible(field), "message": visible(message)})
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return _problem_response(
            ApiProblem(400, "invalid-request", "Invalid request", detail, errors=errors)
        )

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> Response:
        titles = {
            404: "Not found",
            405: "Method not allowed",
            408: "Request timeout",
            413: "Content too large",
        }
        title = titles.get(exc.status_code, "HTTP error")
        slug = title.lower().replace(" ", "-")
        detail = exc.detail if isinstance(exc.detail, str) else title
        return _problem_response(
            ApiProblem(
                exc.status_code, slug, title, visible(detail), headers=dict(exc.headers or {})
            )
        )


def _refuse_operators_acts(batch: LineBatch, caller: Caller) -> None:
    """403 for the first event only an operator may record (:func:`ledger.events.operators_act`)
    unless the token may operate: a connector's token cannot fail a run or pass for the
    sweeper, an operator or an import in the audit and the report."""
    if "operate" in caller.scopes:
        return
    for event, line in zip(batch.events, batch.line_numbers, strict=True):
        why = operators_act(event)
        if why is not None:
            raise ApiProblem(
                403,
                "forbidden",
                "Forbidden",
                f"{batch.unit} {line}: {visible(why)}; token {caller.name!r} lacks the "
                "'operate' scope it needs, nothing was appended",
            )


def _once(request: Request, key: str) -> bool:
    return len(request.query_params.getlist(key)) == 1


# ---------------------------------------------------------------------- OpenAPI

_TITLES = {
    400: "Invalid input or request",
    401: "No valid bearer token",
    403: "The token lacks the scope",
    404: "No such run",
    409: "Conflict with the ledger's state",
    408: "The body stalled over [api] read_timeout",
    413: "Body over [api] max_body_bytes",
    415: "Not JSON nor JSON Lines",
    429: "[api] max_expensive such requests already running (Retry-After)",
    500: "Unexpected error (no details)",
    503: "Database unreachable or schema not current (Retry-After)",
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {
            "description": _TITLES[status],
            "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}},
        }
        for status in statuses
    }


def _events_body() -> dict[str, Any]:
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


def _openapi_document(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(event_adapter.json_schema(ref_template="#/components/schemas/{model}")["$defs"])
    schemas["Problem"] = Problem.model_json_schema()
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    common = _problems(500, 503)
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if path != "/healthz":
                responses.update({str(k): v for k, v in _problems(400, 401, 403).items()})
            responses.update({str(k): v for k, v in common.items()})
    app.openapi_schema = document
    return document


__all__ = ["create_app"]
