"""The web view: server-rendered pages over the library calls the API makes (Jinja2, no
JavaScript at all). Mounted at ``/web`` of the API app (:func:`service.api.create_app`) when
``[web] enabled``; it shares the API's ledger and tokens.

Read-only but for the operator's fail form. Every page takes ``?as_of=`` / ``?at_position=``.
Every response carries a Content-Security-Policy without scripts and without framing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from forensics.anchors import Anchor, anchor_at, current_anchor
from forensics.audit import audit_run
from forensics.chain import ChainReport, verify_chain
from forensics.report import build_report, render_text
from ledger import Ledger, LedgerError, UnknownRunError, fail_run
from ledger.clock import utcnow
from ledger.events import MAX_RUN_ID, REASON_MAX, operator_actor
from ledger.outage import Outage
from ledger.schema import MAX_POSITION
from ledger.text import visible
from projections.as_of import parse_as_of, resolve_position
from projections.queries import RunFilter, find_run, find_runs, status_counts_by_day
from projections.schema import RUN_STATUSES
from service.api.limits import (
    AuthFailures,
    auth_failures_of,
    client_address,
    note_auth_failure,
    trusted_networks,
)
from service.api.problems import RETRY_AFTER_BUSY, busy_detail, expensive_slot, problem_for
from service.config import LedgerConfig
from service.web import views
from service.web.integrity import VerifyCache, VerifyOutcome
from service.web.sessions import LOGIN_COOKIE, SESSION_COOKIE, Sessions, Viewer, safe_next

log = logging.getLogger("ledger.web")

ROOT = "/web"
PAGE_SIZE = 50
DAYS_SHOWN = 14
COUNTS_TTL = timedelta(seconds=60)
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
STATIC = {"style.css": "text/css; charset=utf-8"}
NOTICES = {"failed": "The run was failed: its timeline shows the RunTimedOut you appended."}


@dataclass
class WebState:
    config: LedgerConfig
    ledger: Ledger
    sessions: Sessions
    verify: VerifyCache
    # The process's slots for requests that read the whole history (the API's, when mounted in
    # it): a page that replays or verifies takes one, or says "busy" when all are taken.
    expensive_slots: threading.BoundedSemaphore
    outage: Outage  # the API's, when mounted in it
    auth_failures: AuthFailures  # the API's, when mounted in it: one count of refused tokens
    counts: dict[str, tuple[datetime, dict[str, dict[str, int]]]] = field(default_factory=dict)

    @contextmanager
    def expensive(self, what: str, needed: bool = True) -> Iterator[None]:
        """A slot for a page that reads the whole history (Proof, Integrity, any page as of a
        past moment): a 429 page with Retry-After when all ``[api] max_expensive`` are taken,
        rather than a queue of full scans that would hold every worker thread."""
        if not needed:
            yield
            return
        busy = LedgerErrorPage(
            429,
            "Busy",
            busy_detail(what, self.config.api.max_expensive),
            headers={"Retry-After": str(RETRY_AFTER_BUSY)},
        )
        with expensive_slot(self.expensive_slots, lambda: busy):
            yield

    def close(self) -> None:
        self.verify.stop()


class LoginRequired(Exception):
    pass


class Forbidden(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class Moment:
    """The as-of of a request: nothing (live), or the position the page is pinned to."""

    position: int | None = None
    as_of: datetime | None = None
    params: Mapping[str, str] = field(default_factory=dict)  # to carry along in links

    @property
    def live(self) -> bool:
        return self.position is None


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

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.decode("latin-1").lower() not in SECURITY_HEADERS
                ]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def create_web_app(
    config: LedgerConfig,
    ledger: Ledger,
    expensive_slots: threading.BoundedSemaphore | None = None,
    outage: Outage | None = None,
    auth_failures: AuthFailures | None = None,
) -> tuple[FastAPI, WebState]:
    """The web view's app (to mount at :data:`ROOT`) and its state (close it with the app).
    ``expensive_slots`` and ``outage``: the API's, so that pages and API requests share one
    budget and one log of a database outage."""
    state = WebState(
        config=config,
        ledger=ledger,
        sessions=Sessions(config),
        verify=VerifyCache(ledger, config.web.verify_interval),
        expensive_slots=expensive_slots or threading.BoundedSemaphore(config.api.max_expensive),
        outage=outage or Outage("web pages", log),
        # "is None": an AuthFailures with no failures yet is empty, and so false.
        auth_failures=auth_failures_of(config) if auth_failures is None else auth_failures,
    )
    trusted_proxies = trusted_networks(config.api.trusted_proxies)
    templates = Environment(
        loader=PackageLoader("service.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=views.shown,
    )
    templates.filters.update(views.FILTERS)
    # No slash redirects: Starlette's are absolute, from the request's scheme and Host (see
    # the API's app).
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False)
    public_read = config.web.public_read

    # ------------------------------------------------------------------ helpers

    def viewer_of(request: Request) -> Viewer | None:
        """The logged-in viewer (None: nobody), named in the request's log line. A query
        parameter given twice is refused, as the API refuses it: which one a page used would
        be a guess."""
        params = request.query_params
        repeated = sorted({key for key in params if len(params.getlist(key)) > 1})
        if repeated:
            raise LedgerErrorPage(
                400,
                "Invalid request",
                f"each query parameter may be given once: {visible(', '.join(repeated))}",
            )
        return session_viewer(request)

    def session_viewer(request: Request) -> Viewer | None:
        viewer = state.sessions.viewer(request.cookies.get(SESSION_COOKIE))
        if viewer is not None:
            request.scope.setdefault("ledger_caller", viewer.name)
        return viewer

    def reader(request: Request) -> Viewer | None:
        """Who reads: a logged-in viewer with the read scope, or anyone when public_read."""
        viewer = viewer_of(request)
        if viewer is not None and "read" in viewer.scopes:
            return viewer
        if public_read:
            return viewer
        if viewer is None:
            raise LoginRequired
        raise Forbidden(f"token {viewer.name!r} lacks the 'read' scope")

    def moment_of(request: Request) -> Moment:
        as_of_text = request.query_params.get("as_of") or None
        position_text = request.query_params.get("at_position") or None
        if as_of_text is not None and len(as_of_text) > 100:
            raise LedgerErrorPage(400, "Invalid request", "as_of: at most 100 characters")
        at_position = None
        if position_text is not None:
            # The length first: int() refuses more than 4,300 digits with a ValueError.
            too_long = len(position_text) > len(str(MAX_POSITION))
            if too_long or not _decimal(position_text) or int(position_text) > MAX_POSITION:
                raise LedgerErrorPage(
                    400, "Invalid request", f"at_position: {position_text!r} is not a position"
                )
            at_position = int(position_text)
        moment = parse_as_of(as_of_text, at_position, ("as_of", "at_position"))
        if moment is None and at_position is None:
            return Moment()
        position = resolve_position(state.ledger, moment, at_position)
        # A position past the head is the head: links name the position shown, so that a
        # download or the next page shows the same moment after more appends.
        params = {"as_of": as_of_text} if as_of_text else {"at_position": str(position)}
        return Moment(position, moment, params)

    def moment_time(moment: Moment) -> datetime | None:
        """When a pinned page stands: its as-of time, or (a position alone) when the event at
        that position was recorded; None for a live page."""
        if moment.live or moment.as_of is not None:
            return moment.as_of
        assert moment.position is not None
        return state.ledger.recorded_at(moment.position)

    def link(path: str, moment: Moment | None = None, **params: Any) -> str:
        query = {k: str(v) for k, v in params.items() if v is not None and v != ""}
        if moment is not None:
            query = {**moment.params, **query}
        return ROOT + path + ("?" + urlencode(query) if query else "")

    def render(
        request: Request,
        template: str,
        *,
        viewer: Viewer | None,
        moment: Moment | None = None,
        status_code: int = 200,
        page: str = "",
        **context: Any,
    ) -> HTMLResponse:
        moment = moment or Moment()
        html = templates.get_template(template).render(
            root=ROOT,
            page=page,
            viewer=viewer,
            public_read=public_read,
            csrf=None if viewer is None else state.sessions.csrf_token(viewer.nonce),
            moment=moment,
            link=lambda path, **p: link(path, moment, **p),
            plain_link=link,
            verify=state.verify.last,
            reason_max=REASON_MAX,
            now=utcnow(),
            **context,
        )
        return HTMLResponse(html, status_code=status_code)

    def operator(request: Request, csrf: str) -> Viewer:
        """The viewer posting a form: logged in (public_read is not enough), with a valid CSRF
        token, from this origin, holding the operate scope."""
        viewer = viewer_of(request)
        if viewer is None:
            raise LoginRequired
        if not same_origin(request) or not state.sessions.csrf_ok(viewer.nonce, csrf):
            raise Forbidden("the form's CSRF token is missing or wrong: reload the page")
        if "operate" not in viewer.scopes:
            raise Forbidden(f"token {viewer.name!r} lacks the 'operate' scope")
        return viewer

    # ------------------------------------------------------------------ errors

    def error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
        viewer = session_viewer(request)
        return render(
            request,
            "error.html",
            viewer=viewer,
            status_code=status,
            status=status,
            title=title,
            detail=detail,
        )

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
        response = error_page(request, problem.status, problem.title, problem.detail)
        response.headers.update(problem.headers)  # Retry-After on a 503, as the API sends it
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        details = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ())[1:])
            details.append(f"{visible(where)}: {visible(str(error.get('msg')))}")
        return error_page(request, 400, "Invalid request", "; ".join(details))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else "error"
        return error_page(
            request,
            exc.status_code,
            "Not found" if exc.status_code == 404 else "HTTP error",
            visible(detail),
        )

    # ------------------------------------------------------------------ static, login

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, "no such file")
        body = files("service.web").joinpath("static", name).read_bytes()
        return Response(
            body, media_type=STATIC[name], headers={"cache-control": "public, max-age=3600"}
        )

    @app.get("/")
    def home() -> Response:
        return RedirectResponse(ROOT + "/runs", status_code=303)

    def cookie_secure(request: Request) -> bool:
        return config.web.secure_cookies or request.url.scheme == "https"

    def login_form(
        request: Request, viewer: Viewer | None, target: str, failed: bool
    ) -> HTMLResponse:
        """The login page with a fresh nonce in its own cookie (the form's CSRF token is bound
        to it); 401 after a refused token."""
        nonce = state.sessions.login_nonce()
        response = render(
            request,
            "login.html",
            viewer=viewer,
            page="login",
            next=target,
            login_csrf=state.sessions.csrf_token(nonce),
            failed=failed,
            status_code=401 if failed else 200,
        )
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            max_age=1800,
            path=ROOT,
            httponly=True,
            samesite="strict",
            secure=cookie_secure(request),
        )
        return response

    @app.get("/login")
    def login_page(request: Request, next: str | None = None) -> Response:
        return login_form(request, viewer_of(request), safe_next(next, ROOT), failed=False)

    @app.post("/login")
    def login(
        request: Request,
        token: Annotated[str, Form(max_length=1000)] = "",
        csrf: Annotated[str, Form(max_length=200)] = "",
        next: Annotated[str, Form(max_length=2000)] = "",
    ) -> Response:
        nonce = request.cookies.get(LOGIN_COOKIE)
        if (
            not same_origin(request)
            or not state.sessions.login_nonce_ok(nonce)
            or not state.sessions.csrf_ok(nonce, csrf)
        ):
            raise Forbidden("the login form expired or did not come from this site: reload it")
        address = client_address(request.scope, trusted_proxies)
        wait = state.auth_failures.retry_after(address)
        if wait is not None:  # refused unchecked: a guess tells nothing meanwhile
            raise LedgerErrorPage(
                429,
                "Too many failed logins",
                f"too many refused tokens from this address: try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        found = state.sessions.login(token.strip())
        target = safe_next(next, ROOT)
        if found is None:
            log.warning("web login refused (unknown token)")
            note_auth_failure(state.auth_failures, address, "web logins", config)
            return login_form(request, None, target, failed=True)
        viewer, cookie = found
        log.info("web login: %s", viewer.name)
        redirect = RedirectResponse(target, status_code=303)
        redirect.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=state.sessions.lifetime,
            path=ROOT,
            httponly=True,
            samesite="strict",
            secure=cookie_secure(request),
        )
        redirect.delete_cookie(LOGIN_COOKIE, path=ROOT)
        return redirect

    @app.post("/logout")
    def logout(request: Request, csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
        viewer = viewer_of(request)
        if viewer is not None and not (
            same_origin(request) and state.sessions.csrf_ok(viewer.nonce, csrf)
        ):
            raise Forbidden("the form's CSRF token is missing or wrong: reload the page")
        if viewer is not None:
            state.sessions.revoke(viewer)
        response = RedirectResponse(ROOT + "/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=ROOT)
        return response

    # ------------------------------------------------------------------ runs

    def day_counts() -> dict[str, dict[str, int]]:
        cached = state.counts.get("days")
        now = utcnow()
        if cached is not None and now - cached[0] < COUNTS_TTL:
            return cached[1]
        since = (now - timedelta(days=DAYS_SHOWN - 1)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        counts = status_counts_by_day(state.ledger, since)
        days = [(since + timedelta(days=d)).date().isoformat() for d in range(DAYS_SHOWN)]
        filled = {day: counts.get(day, dict.fromkeys(RUN_STATUSES, 0)) for day in days}
        state.counts["days"] = (now, filled)
        return filled

    @app.get("/runs")
    def runs_page(
        request: Request,
        status: Annotated[str | None, Query(max_length=20)] = None,
        connector: Annotated[str | None, Query(max_length=100)] = None,
        source: Annotated[str | None, Query(max_length=12)] = None,
        before: Annotated[int | None, Query(ge=1, le=MAX_RUN_ID)] = None,
    ) -> Response:
        viewer = reader(request)
        moment = moment_of(request)
        status = status or None
        connector = connector or None
        if status is not None and status not in RUN_STATUSES:
            raise LedgerErrorPage(400, "Invalid request", f"status: {status!r} is not a status")
        source_id = None
        if source:
            if not _decimal(source) or int(source) > MAX_RUN_ID:
                raise LedgerErrorPage(400, "Invalid request", f"source: {source!r} is not an id")
            source_id = int(source)
        run_filter = RunFilter(status, connector, source_id, PAGE_SIZE + 1, before=before)
        with state.expensive("the runs as of a past moment", needed=not moment.live):
            view = find_runs(state.ledger, run_filter, None, moment.position)
        rows = view.rows[:PAGE_SIZE]
        following = None
        if len(view.rows) > PAGE_SIZE:
            pinned = {} if moment.live else {"at_position": moment.position}
            following = link(
                "/runs",
                None,
                status=status,
                connector=connector,
                source=source,
                before=rows[-1]["id"],
                **pinned,
            )
        stuck: dict[int, str] = {}
        if moment.live:
            stuck = {run.run_id: run.rule for run in config.stuck_runs(state.ledger)}
        return render(
            request,
            "runs.html",
            viewer=viewer,
            moment=moment,
            page="runs",
            rows=rows,
            stuck=stuck,
            following=following,
            first_page=before is not None,
            filters={"status": status or "", "connector": connector or "", "source": source or ""},
            statuses=RUN_STATUSES,
        )

    @app.get("/runs/days.svg")
    def days_chart(request: Request) -> Response:
        """The per-day status bars, a separate image so the runs page never waits for them
        (the count scans a fortnight of rows; cached for a minute)."""
        reader(request)
        svg = templates.get_template("days.svg").render(
            chart=views.day_chart(day_counts()), colours=views.COLOURS
        )
        return Response(svg, media_type="image/svg+xml")

    @app.get("/runs/{run_id}")
    def run_page(
        request: Request,
        run_id: Annotated[int, Path(ge=1, le=MAX_RUN_ID)],
        notice: Annotated[str | None, Query(max_length=20)] = None,
    ) -> Response:
        viewer = reader(request)
        moment = moment_of(request)
        timeline = audit_run(state.ledger, run_id)
        shown = [e for e in timeline if moment.live or e.event.position <= (moment.position or 0)]
        try:
            with state.expensive("a run as of a past moment", needed=not moment.live):
                run_view = find_run(state.ledger, run_id, None, moment.position)
            row, transitions = run_view.row, run_view.transitions
        except UnknownRunError:
            row, transitions = None, []
        stuck = None
        if moment.live and row is not None and row["status"] == "running":
            stuck = next(
                (r for r in config.stuck_runs(state.ledger) if r.run_id == run_id),
                None,
            )
        return render(
            request,
            "run.html",
            viewer=viewer,
            moment=moment,
            page="runs",
            run_id=run_id,
            timeline=shown,
            hidden=len(timeline) - len(shown),
            row=row,
            transitions=transitions,
            stuck=stuck,
            notice=NOTICES.get(notice or ""),
        )

    # ------------------------------------------------------------------ stuck, fail

    @app.get("/stuck")
    def stuck_page(request: Request) -> Response:
        viewer = reader(request)
        moment = moment_of(request)
        thresholds = config.thresholds.to_thresholds()
        judged_at = moment_time(moment)
        with state.expensive("the stuck runs as of a past moment", needed=not moment.live):
            found = config.stuck_runs(state.ledger, moment.position, judged_at)
        return render(
            request,
            "stuck.html",
            viewer=viewer,
            moment=moment,
            page="stuck",
            runs=found,
            judged_at=judged_at,  # "silent for" counts to it (None: now)
            thresholds=thresholds,
            overrides=config.overrides(),
        )

    @app.post("/runs/{run_id}/fail")
    def fail(
        request: Request,
        run_id: Annotated[int, Path(ge=1, le=MAX_RUN_ID)],
        reason: Annotated[str, Form(max_length=REASON_MAX)] = "",
        csrf: Annotated[str, Form(max_length=200)] = "",
        confirm: Annotated[str, Form(max_length=10)] = "",
    ) -> Response:
        viewer = operator(request, csrf)
        reason = reason.strip()
        if not reason:
            raise LedgerErrorPage(400, "Invalid request", "give a reason for failing the run")
        if confirm != "yes":
            row = find_run(state.ledger, run_id).row
            return render(
                request,
                "confirm.html",
                viewer=viewer,
                page="stuck",
                run_id=run_id,
                reason=reason,
                row=row,
                actor=operator_actor(viewer.name),
            )
        actor = operator_actor(viewer.name)  # as the CLI records --actor
        position = fail_run(state.ledger, run_id, reason, actor)
        log.warning("web: run %d failed by %s at position %d", run_id, actor, position)
        return RedirectResponse(link(f"/runs/{run_id}", notice="failed"), status_code=303)

    # ------------------------------------------------------------------ proof, integrity

    @app.get("/proof")
    def proof_page(request: Request) -> Response:
        viewer = reader(request)
        moment = moment_of(request)
        report = proof_report(moment)
        return render(
            request,
            "proof.html",
            viewer=viewer,
            moment=moment,
            page="proof",
            report=report,
            passed=all(c["passed"] for c in report["conditions"]),
        )

    @app.get("/proof.md")
    def proof_markdown(request: Request) -> Response:
        reader(request)
        report = proof_report(moment_of(request))
        return Response(
            render_text(report, markdown=True),
            media_type="text/markdown; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="ledger-proof.md"'},
        )

    def proof_report(moment: Moment) -> dict[str, Any]:
        with state.expensive("the proof report"):
            return build_report(
                state.ledger,
                stuck_after=config.thresholds.stale_after,
                at_position=moment.position,
                at=moment.as_of,  # None for a position alone: when its event was recorded
            )

    @app.get("/integrity")
    def integrity_page(request: Request) -> Response:
        viewer = reader(request)
        moment = moment_of(request)
        outcome: VerifyOutcome | None = None
        chain: ChainReport | None = None
        if moment.live:
            with state.expensive("verify"):
                outcome = state.verify.refresh()
            anchor: Anchor | None = current_anchor(state.ledger)
        else:
            # What verify could say then: the chain up to that position, and the head as it
            # stood (the other checks compare the tables as they are now); the anchor only for
            # a chain that holds up to it: an altered row's hash is nothing to anchor to.
            assert moment.position is not None
            with state.expensive("verify as of a past moment"):
                chain = verify_chain(state.ledger, 1, moment.position)
            anchor = anchor_at(state.ledger, moment.position) if chain.ok else None
        return render(
            request,
            "integrity.html",
            viewer=viewer,
            moment=moment,
            page="integrity",
            outcome=outcome,
            chain=chain,
            checked_at=utcnow(),
            anchor=anchor,
        )

    app.state.web = state
    return app, state


class LedgerErrorPage(Exception):
    """A page's own refusal of its input (or of the moment: busy), shown as an error page."""

    def __init__(
        self, status: int, title: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})


def _decimal(text: str) -> bool:
    """ASCII digits only: "²".isdigit() is true, and int() refuses it (a 500 once)."""
    return text.isascii() and text.isdigit()


def same_origin(request: Request) -> bool:
    """A form post from this site: its Origin (or, without one, its Referer) names this host.
    A browser always sends one of them with a cross-site POST."""
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None:
        return origin != "null" and origin.split("://", 1)[-1] == host
    referer = request.headers.get("referer")
    if referer is not None:
        return referer.split("://", 1)[-1].split("/", 1)[0] == host
    return True  # neither (not a browser, or stripped): the CSRF token and SameSite decide


__all__ = ["ROOT", "SecurityHeaders", "WebState", "create_web_app"]
