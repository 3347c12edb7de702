"""``POST /v1/events``: a JSON array or JSON Lines, validated, appended all or nothing; an
operator's act only with an ``operate`` token."""

from io import BytesIO
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request

from ledger.events import MAX_RUN_ID, operators_act
from ledger.text import visible
from ledger.wire import LineBatch, append_lines, read_array, read_lines
from service.api.access import Scopes
from service.api.auth import Caller
from service.api.openapi import events_body, problem_responses
from service.api.params import ASCII_DIGITS
from service.api.problems import ApiProblem, declared_charset_problem, media_type
from service.api.shapes import AppendSummary
from service.api.state import ApiState, require_current_schema

NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/x-jsonlines"})


def add_event_routes(app: FastAPI, state: ApiState, scopes: Scopes) -> None:
    """``POST /v1/events``."""
    append_scope = scopes.append

    @app.post(
        "/v1/events",
        summary="Append events, all or nothing",
        response_model=AppendSummary,
        responses=problem_responses(400, 408, 409, 413, 415),
        openapi_extra={"requestBody": events_body()},
    )
    async def append_events(
        request: Request,
        caller: Annotated[Caller, append_scope],
        expected_version: Annotated[
            int | None,
            Query(ge=0, le=MAX_RUN_ID, description="The run's version before this batch"),
            ASCII_DIGITS,
        ] = None,
    ) -> Any:
        """A JSON array of events, or JSON Lines (``application/x-ndjson``): validated first,
        appended in one transaction; an ``event_id`` already stored is not appended again."""
        content_type = request.headers.get("content-type", "")
        kind = media_type(content_type)
        if kind != "application/json" and kind not in NDJSON_TYPES:
            raise ApiProblem(
                415,
                "unsupported-media-type",
                "Unsupported media type",
                "send a JSON array of events (application/json) or JSON Lines "
                "(application/x-ndjson)",
            )
        refused_charset = declared_charset_problem(content_type)
        if refused_charset is not None:
            raise refused_charset
        body = await request.body()
        most = state.config.api.max_events

        def append() -> dict[str, Any]:
            require_current_schema(state.ledger)
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
            return append_lines(state.ledger, batch, expected_version, caller.connectors).to_dict()

        return await state.write(append)


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
