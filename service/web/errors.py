"""Every error a page raises, shown as an error page (a login wanted: a redirect to it)."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from starlette.exceptions import HTTPException

from ledger import LedgerError
from ledger.text import visible
from service.api.head import allowed_methods
from service.api.problems import RESENT_APPEND, ApiProblem, problem_for
from service.web.pages import Pages
from service.web.state import ROOT, Forbidden, LedgerErrorPage, LoginRequired, WebState


def add_error_handlers(app: FastAPI, state: WebState, pages: Pages) -> None:
    """The exception handlers: each refusal and library error as its page."""
    link, error_page = pages.link, pages.error_page

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _exc: LoginRequired) -> Response:
        target = ROOT + request.url.path.removeprefix(request.scope.get("root_path", ""))
        if request.method not in ("GET", "HEAD"):
            # A form posted without a login (the fail form): back to the page it was on, the
            # run's (a login redirects with GET, which the form's own URL does not answer).
            target = target.rsplit("/", 1)[0]
        elif request.url.query:
            target += "?" + request.url.query
        return RedirectResponse(link("/login", next=target), status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return error_page(request, 403, "Forbidden", exc.detail)

    @app.exception_handler(LedgerErrorPage)
    async def bad_request(request: Request, exc: LedgerErrorPage) -> Response:
        response = error_page(request, exc.status, exc.title, exc.detail)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(LedgerError)
    async def ledger_error(request: Request, exc: LedgerError) -> Response:
        problem = problem_for(exc, state.outage)
        response = error_page(request, problem.status, problem.title, for_a_page(problem.detail))
        response.headers.update(problem.headers)  # Retry-After on a 503, as the API sends it
        return response

    @app.exception_handler(ApiProblem)
    async def api_problem(request: Request, problem: ApiProblem) -> Response:
        # What the API's shared steps refuse with (a write that got no write slot in time).
        response = error_page(request, problem.status, problem.title, for_a_page(problem.detail))
        response.headers.update(problem.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        details = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ())[1:])
            details.append(f"{visible(where)}: {visible(str(error.get('msg')))}")
        return error_page(request, 400, "Invalid request", "; ".join(details))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, _exc: Exception) -> Response:
        # Starlette's own answer is a bare "Internal Server Error" in plain text; the page says
        # as much as the API's 500 does (the guard logs the traceback, as Starlette re-raises).
        return error_page(
            request,
            500,
            "Internal error",
            "an unexpected error occurred; it is logged on the server",
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else "error"
        titles = {404: "Not found", 405: "Method not allowed"}
        response = error_page(
            request, exc.status_code, titles.get(exc.status_code, "HTTP error"), visible(detail)
        )
        # Starlette's headers (a 405's Allow, a 408's Connection: close) were dropped.
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            allow = allowed_methods(request.app.routes, request.scope)
            if allow is not None:
                response.headers["Allow"] = allow
        return response


def for_a_page(detail: str) -> str:
    """A problem's detail as a page says it: without the API's advice on resending a body of
    events, which a visitor never sent (the runs page of an auditor in an outage said "an
    append retried with the same body is not appended twice")."""
    return detail.replace(f"; {RESENT_APPEND}", "").replace(f" ({RESENT_APPEND})", "")
