"""``Pages``: the helpers every page uses (the viewer and their scopes, the as-of moment,
links, rendering, error pages)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment

from ledger.clock import isoformat_utc, utcnow
from ledger.events import REASON_MAX
from ledger.schema import MAX_POSITION
from ledger.text import clip, visible
from projections.as_of import (
    QUERY_AS_OF_MAX_LENGTH,
    QUERY_NAMES,
    judged_moment,
    parse_as_of,
)
from service.api.params import repeated_parameters, url_integer
from service.web.security import origin_problem, public_host, request_host
from service.web.sessions import CSRF_REFUSED, NEXT_MAX, SESSION_COOKIE, Viewer
from service.web.state import ROOT, Forbidden, LedgerErrorPage, LoginRequired, Moment, WebState

# The query parameters of a page's moment, and of its paging, which stood at that moment.
MOMENT_AND_PAGING = frozenset({*QUERY_NAMES, "before", "after"})


def echoed(value: str) -> str:
    """A refused query value as a page repeats it: quoted, visible and at most 40 characters
    (a megabyte of digits was sent back whole)."""
    return repr(clip(visible(value), 40))


class Pages:
    """What the pages of one web app do alike: who reads or posts, the moment a page stands at,
    links that keep it, rendering a template, an error page."""

    def __init__(self, state: WebState, templates: Environment) -> None:
        self.state = state
        self.templates = templates
        self.public_read = state.config.web.public_read
        self.allowed_hosts = frozenset(state.config.web.allowed_hosts)

    def viewer_of(self, request: Request) -> Viewer | None:
        """The logged-in viewer (None: nobody), named in the request's log line. A query
        parameter given twice is refused, as the API refuses it: which one a page used would
        be a guess."""
        repeated = repeated_parameters(request.query_params)
        if repeated:
            raise LedgerErrorPage(
                400,
                "Invalid request",
                f"each query parameter may be given once: {visible(', '.join(repeated))}",
            )
        return self.session_viewer(request)

    def session_viewer(self, request: Request) -> Viewer | None:
        viewer = self.state.sessions.viewer(request.cookies.get(SESSION_COOKIE))
        if viewer is not None:
            request.scope.setdefault("ledger_caller", viewer.name)
        return viewer

    def reader(self, request: Request) -> Viewer | None:
        """Who reads: a logged-in viewer with the read scope, or anyone when public_read."""
        viewer = self.viewer_of(request)
        if viewer is not None and "read" in viewer.scopes:
            return viewer
        if self.public_read and public_host(request, self.allowed_hosts):
            return viewer
        if self.public_read and viewer is None:
            raise Forbidden(
                f"pages are readable without a login only at an IP address, localhost or a "
                f"name in [web] allowed_hosts, and {visible(request_host(request))!r} is none "
                "of them: log in, or add the name to allowed_hosts"
            )
        if viewer is None:
            raise LoginRequired
        raise Forbidden(f"token {viewer.name!r} lacks the 'read' scope")

    @staticmethod
    def public(viewer: Viewer | None) -> bool:
        """Does the visitor :meth:`reader` let in read only because of public_read (no login,
        or a login without the read scope)? Such visitors share a part of the slots of the
        pages that read the whole history (:meth:`WebState.expensive`)."""
        return viewer is None or "read" not in viewer.scopes

    def may_read(self, viewer: Viewer | None, request: Request) -> bool:
        if viewer is not None and "read" in viewer.scopes:
            return True
        return self.public_read and public_host(request, self.allowed_hosts)

    def moment_of(self, request: Request) -> Moment:
        as_of_text = request.query_params.get("as_of") or None
        position_text = request.query_params.get("at_position") or None
        if as_of_text is not None and len(as_of_text) > QUERY_AS_OF_MAX_LENGTH:
            raise LedgerErrorPage(
                400, "Invalid request", f"as_of: at most {QUERY_AS_OF_MAX_LENGTH} characters"
            )
        at_position = None
        if position_text is not None:
            at_position = url_integer(position_text, MAX_POSITION)
            if at_position is None:
                raise LedgerErrorPage(
                    400,
                    "Invalid request",
                    f"at_position: {echoed(position_text)} is not a position",
                )
        moment = parse_as_of(as_of_text, at_position, QUERY_NAMES)
        if moment is None and at_position is None:
            return Moment()
        position, judged = judged_moment(self.state.ledger, moment, at_position)
        if moment is not None and judged != moment:
            # A time ahead of the clock, judged now: its links name the moment shown (links
            # carrying the future time moved on with every append), or its position when the
            # clock stepped back behind events already recorded: the clock's time stands
            # before them, and no time names this moment.
            as_of_text = isoformat_utc(judged)
            if self.state.ledger.position_at(judged) != position:
                as_of_text = None
            moment = judged
        # A position past the head is the head: links name the position shown, so that a
        # download or the next page shows the same moment after more appends.
        params = {"as_of": as_of_text} if as_of_text else {"at_position": str(position)}
        return Moment(position, moment, params, judged)

    def moment_time(self, moment: Moment) -> datetime | None:
        """When a pinned page stands: its as-of time, or (a position alone) when the event at
        that position was recorded, never after now (judged_moment); None for a live page."""
        return moment.judged

    def link(self, path: str, moment: Moment | None = None, **params: Any) -> str:
        query = {k: str(v) for k, v in params.items() if v is not None and v != ""}
        if moment is not None:
            query = {**moment.params, **query}
        return ROOT + path + ("?" + urlencode(query) if query else "")

    @staticmethod
    def here(request: Request) -> str | None:
        """This page's address (path and query), for the header's "Log in" to come back to:
        it led to the runs list, and a visitor reading with public_read lost the run or the
        moment they were on. None when too long for the login's ``next``, and for a form's
        post (a refused login's page: its address answers no GET)."""
        if request.method not in ("GET", "HEAD"):
            return None
        path = ROOT + request.url.path.removeprefix(request.scope.get("root_path", ""))
        address = path + ("?" + request.url.query if request.url.query else "")
        return address if len(address) <= NEXT_MAX else None

    @staticmethod
    def now_link(request: Request) -> str:
        """The page the as-of banner's "Back to now" opens: this one, live (its path and
        filters, without the moment and the paging that stood at it). It opened the runs list
        from any page but the four of the menu: from a run as of a moment, the run was lost
        (and a filter of the runs list with it)."""
        kept = [
            (name, value)
            for name, value in request.query_params.multi_items()
            if name not in MOMENT_AND_PAGING
        ]
        # As the login's redirect reads it: the path with or without the mount's root.
        path = ROOT + request.url.path.removeprefix(request.scope.get("root_path", ""))
        return path + ("?" + urlencode(kept) if kept else "")

    def render(
        self,
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
        html = self.templates.get_template(template).render(
            root=ROOT,
            page=page,
            viewer=viewer,
            public_read=self.public_read,
            csrf=None if viewer is None else self.state.sessions.csrf_token(viewer.nonce),
            moment=moment,
            link=lambda path, **p: self.link(path, moment, **p),
            plain_link=self.link,
            now_link=self.now_link(request),
            here=self.here(request),
            # The red banner, to those who may read (an anonymous visitor of the login or an
            # error page learns nothing of the ledger): the last verify that ran to the end.
            verify=self.state.verify.completed if self.may_read(viewer, request) else None,
            reason_max=REASON_MAX,
            now=utcnow(),
            **context,
        )
        return HTMLResponse(html, status_code=status_code)

    def may_operate(self, request: Request) -> Viewer:
        """The dependency of a form that needs ``operate``: logged in with that scope, checked
        before FastAPI reads the form (it reads and checks a form's fields before the handler
        runs: a visitor with no login was answered 400 for a field over its limit, not sent to
        the login page). :meth:`operator` checks the rest once the form is read."""
        viewer = self.viewer_of(request)
        if viewer is None:
            raise LoginRequired
        if "operate" not in viewer.scopes:
            raise Forbidden(f"token {viewer.name!r} lacks the 'operate' scope")
        return viewer

    def operator(self, request: Request, csrf: str) -> Viewer:
        """The viewer posting a form: logged in (public_read is not enough), with a valid CSRF
        token, from this origin, holding the operate scope."""
        viewer = self.viewer_of(request)
        if viewer is None:
            raise LoginRequired
        refused = origin_problem(request)
        if refused is not None:
            raise Forbidden(refused)
        if not self.state.sessions.csrf_ok(viewer.nonce, csrf):
            raise Forbidden(CSRF_REFUSED)
        if "operate" not in viewer.scopes:
            raise Forbidden(f"token {viewer.name!r} lacks the 'operate' scope")
        return viewer

    def error_page(self, request: Request, status: int, title: str, detail: str) -> HTMLResponse:
        viewer = self.session_viewer(request)
        return self.render(
            request,
            "error.html",
            viewer=viewer,
            status_code=status,
            status=status,
            title=title,
            detail=detail,
        )
