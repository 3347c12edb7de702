"""``/v1/runs``: runs live or as of a moment, one run's detail and timeline, failing a run."""

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError as PydanticValidationError
from starlette.concurrency import run_in_threadpool

from forensics.audit import audit_page
from ledger import StoredEventError, UnknownRunError, ValidationError, fail_run
from ledger.events import MAX_RUN_ID, operator_actor
from ledger.schema import MAX_POSITION
from ledger.wire import read_json
from projections.as_of import QUERY_AS_OF_MAX_LENGTH
from projections.queries import RunFilter, find_run, find_runs
from service.api.access import Scopes, invalid_parameter, query_moment
from service.api.auth import Caller
from service.api.openapi import problem_responses
from service.api.params import ASCII_DIGITS, AtPositionQuery, RunIdPath
from service.api.problems import ApiProblem, declared_charset_problem, media_type
from service.api.shapes import FailRequest, FailResult, IngestionRun, RunDetail, RunStatus
from service.api.state import ApiState, require_current_schema

MAX_PAGE = 1000
DEFAULT_PAGE = 50  # of GET /v1/runs and GET /v1/stuck
# Timeline entries per page of GET /v1/runs/{id}/events, and the default: a run that fits one
# page is answered as before paging (no Link header).
MAX_EVENTS_PAGE = 1000
NEXT_LINK = {
    "Link": {
        "description": 'The next page, `<URL>; rel="next"`: absent on the last page',
        "schema": {"type": "string"},
    }
}
TOTAL_COUNT = {
    "X-Total-Count": {
        "description": "How many items every page together holds: on the first page only",
        "schema": {"type": "integer"},
    }
}


def add_run_routes(app: FastAPI, state: ApiState, scopes: Scopes) -> None:
    """``/v1/runs``: the list, one run, its timeline, failing it."""
    read_scope, operate_scope = scopes.read, scopes.operate

    @app.get(
        "/v1/runs",
        summary="List runs, newest first",
        response_model=list[IngestionRun],
        responses={200: {"headers": NEXT_LINK}, **problem_responses(400, 429)},
    )
    def list_runs(
        request: Request,
        response: Response,
        _caller: Annotated[Caller, read_scope],
        status: RunStatus | None = None,
        connector: Annotated[str | None, Query(max_length=1000)] = None,
        source: Annotated[int | None, Query(ge=0, le=MAX_RUN_ID), ASCII_DIGITS] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE), ASCII_DIGITS] = DEFAULT_PAGE,
        cursor: Annotated[
            int | None,
            Query(ge=1, le=MAX_RUN_ID, description="Runs below this id (the next page's)"),
            ASCII_DIGITS,
        ] = None,
        as_of: Annotated[str | None, Query(max_length=QUERY_AS_OF_MAX_LENGTH)] = None,
        at_position: AtPositionQuery = None,
    ) -> list[dict[str, Any]]:
        """The rows of ``ingestion_runs`` (``ledger runs list --format json``), live or as of
        a time or position; a ``Link: <…>; rel="next"`` header names the next page."""
        moment = query_moment(as_of, at_position)
        run_filter = RunFilter(status, connector, source, limit, before=cursor)
        if moment is None and at_position is None:
            view = find_runs(state.ledger, run_filter)
        else:
            with state.expensive("a list as_of or at_position"):
                view = find_runs(state.ledger, run_filter, moment, at_position)
        if view.next_before is not None:
            pinned = {} if view.position is None else {"at_position": view.position}
            following = request.url.remove_query_params("as_of").include_query_params(
                cursor=view.next_before, **pinned
            )
            response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
        return view.jsonable()

    @app.get(
        "/v1/runs/{run_id}",
        summary="One run: its ingestion_runs row and its write-side state",
        response_model=RunDetail,
        responses=problem_responses(400, 404, 429),
    )
    def show_run(
        _caller: Annotated[Caller, read_scope],
        run_id: RunIdPath,
        as_of: Annotated[str | None, Query(max_length=QUERY_AS_OF_MAX_LENGTH)] = None,
        at_position: AtPositionQuery = None,
    ) -> dict[str, Any]:
        """The row ``ledger runs show --format json`` prints (``row``: null while the
        projection is behind, with a ``note``) and the ledger's own state of the run
        (``ledger``: version, state, start and last activity), live or as of a moment."""
        moment = query_moment(as_of, at_position)
        if moment is None and at_position is None:
            view = find_run(state.ledger, run_id)
        else:
            with state.expensive("a run as_of or at_position"):
                view = find_run(state.ledger, run_id, moment, at_position)
        why = view.note(run_id)
        if why is not None and view.not_started:
            raise ApiProblem(
                404,
                "not-started-yet",
                "Run not started yet",
                why,
                run_id=run_id,
            )
        return view.to_dict(run_id)

    @app.get(
        "/v1/runs/{run_id}/events",
        summary="A run's audit timeline, a page at a time",
        responses={200: {"headers": NEXT_LINK}, **problem_responses(400, 404, 429)},
    )
    def run_events(
        request: Request,
        response: Response,
        _caller: Annotated[Caller, read_scope],
        run_id: RunIdPath,
        limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE), ASCII_DIGITS] = MAX_EVENTS_PAGE,
        cursor: Annotated[
            int | None,
            Query(
                ge=1,
                le=MAX_POSITION,
                description="The position of the run's event the page follows (the next "
                "page's, from the Link header)",
            ),
            ASCII_DIGITS,
        ] = None,
    ) -> list[dict[str, Any]]:
        """The run's events in order, each with the status after it and its hash check
        (``ledger audit --format json``), at most ``limit``; a ``Link: <…>; rel="next"``
        header names the next page, whose entries are audited from the state before them."""
        try:
            # A later page starts from the state before it, folded from every earlier event of
            # the run that can change its status (and their latest occurred_at): a read that
            # grows with the run's history, so it takes a slot as a replay does. The first
            # page reads ``limit`` events on the run's key, whatever its length.
            with state.expensive("a timeline page after a cursor", needed=cursor is not None):
                page = audit_page(state.ledger, run_id, cursor or 0, limit)
        except UnknownRunError:
            raise  # 404
        except StoredEventError:
            raise  # the ledger's, not the request's: a server error
        except ValidationError as exc:  # the cursor is not one of this run's events
            raise invalid_parameter("cursor", exc) from None
        entries = [entry.to_dict() for entry in page.entries]
        if page.more:
            following = request.url.include_query_params(cursor=entries[-1]["position"])
            response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
        return entries

    @app.post(
        "/v1/runs/{run_id}/fail",
        summary="Declare an open run failed",
        response_model=FailResult,
        responses=problem_responses(400, 404, 408, 409, 413, 415),
        openapi_extra={"requestBody": FAIL_BODY},
    )
    async def fail(
        caller: Annotated[Caller, operate_scope],
        run_id: RunIdPath,
        # A dependency after the token's, not a body parameter: FastAPI parses a body
        # parameter before any dependency, so a malformed body was answered before the 401.
        request: Annotated[FailRequest, Depends(fail_request)],
    ) -> dict[str, Any]:
        """Appends RunTimedOut with ``detected_by=operator:TOKEN-NAME`` (``ledger runs
        fail``); a closed run is refused (409)."""
        actor = operator_actor(caller.name)  # as the CLI records --actor

        def fail_it() -> int:
            require_current_schema(state.ledger)
            return fail_run(
                state.ledger, run_id, request.reason, actor, connectors=caller.connectors
            )

        position = await state.write(fail_it)  # a write slot, as an append takes
        return {"run_id": run_id, "position": position, "actor": actor, "reason": request.reason}


# Documented as FastAPI documents a body parameter; read by :func:`fail_request`.
FAIL_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FailRequest"}}},
}


async def fail_request(request: Request) -> FailRequest:
    """The body of ``POST /v1/runs/{id}/fail``, read once the token is checked: JSON (415 for
    another media type) held to the rules of ``POST /v1/events`` (:func:`ledger.wire.read_json`:
    ``not valid JSON (…)``, a key given twice, ``NaN``), then the shape of :class:`FailRequest`
    (``invalid-request`` naming the field, as FastAPI words a body it checks)."""
    content_type = request.headers.get("content-type", "")
    if media_type(content_type) != "application/json":
        raise ApiProblem(
            415, "unsupported-media-type", "Unsupported media type", "send JSON (application/json)"
        )
    refused_charset = declared_charset_problem(content_type)
    if refused_charset is not None:
        raise refused_charset
    data = await run_in_threadpool(read_json, await request.body())
    try:
        return FailRequest.model_validate(data, from_attributes=True)
    except PydanticValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None
