"""Every error an endpoint raises, answered as a problem (RFC 9457, application/problem+json)."""

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from ledger import LedgerError
from ledger.text import visible
from service.api.problems import PROBLEM_JSON, ApiProblem, problem_for


def _problem_response(problem: ApiProblem) -> Response:
    return Response(
        problem.render(),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def add_error_handlers(app: FastAPI) -> None:
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
                # A validator's ValueError: its message without pydantic's "Value error, ".
                else str(error.get("msg")).removeprefix("Value error, ")
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
