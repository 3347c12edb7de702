"""The style sheet, the root, and logging in and out with an API token."""

from __future__ import annotations

import threading
from importlib.resources import files
from typing import Annotated

from fastapi import FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.exceptions import HTTPException

from service.api.limits import note_auth_failure
from service.web.pages import Pages
from service.web.security import origin_problem
from service.web.sessions import (
    CSRF_REFUSED,
    LOGIN_COOKIE,
    LOGIN_NONCE_SECONDS,
    SESSION_COOKIE,
    WEB_SCOPES,
    Viewer,
    safe_next,
)
from service.web.state import ROOT, STATIC, Forbidden, LedgerErrorPage, WebState, log


def add_login_routes(app: FastAPI, state: WebState, pages: Pages) -> None:
    """``/static``, ``/``, ``/login``, ``/logout``."""
    viewer_of, render = pages.viewer_of, pages.render

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
        return state.config.web.secure_cookies or request.url.scheme == "https"

    def login_form(
        request: Request,
        viewer: Viewer | None,
        target: str,
        failed: bool,
        from_another_site: bool = False,
    ) -> HTMLResponse:
        """The login page with a fresh nonce in its own cookie (the form's CSRF token is bound
        to it); 401 after a refused token. ``from_another_site``: offer a link to ``target``
        for a visitor whose browser withheld its session (see :func:`login_page`)."""
        nonce = state.sessions.login_nonce()
        response = render(
            request,
            "login.html",
            viewer=viewer,
            page="login",
            next=target,
            login_csrf=state.sessions.csrf_token(nonce),
            failed=failed,
            from_another_site=from_another_site,
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

    def login_form_problem(request: Request, csrf: str) -> str | None:
        """Why a posted login form is refused before its token is read, or None: each cause
        named, with what helps (the page said "expired or did not come from this site:
        reload it" to all of them, and a reload helps none but an expired form)."""
        refused = origin_problem(request)
        if refused is not None:
            return refused
        nonce = request.cookies.get(LOGIN_COOKIE)
        if not nonce:
            secure = (
                ", or open it over https: with [web] secure_cookies = true its cookie is Secure, "
                "and a browser keeps that only from an https page"
                if state.config.web.secure_cookies
                else ""
            )
            return (
                "the browser sent the login form without its cookie: allow cookies for this "
                f"site{secure}"
            )
        if not state.sessions.login_nonce_ok(nonce):
            minutes = LOGIN_NONCE_SECONDS // 60
            return f"the login form expired (it is valid for {minutes} minutes): reload it"
        if not state.sessions.csrf_ok(nonce, csrf):
            return (
                "the login form does not match the browser's login cookie (a login form "
                "opened since, in another tab?): reload it"
            )
        return None

    @app.get("/login")
    def login_page(request: Request, next: str | None = None) -> Response:
        viewer = viewer_of(request)
        # The session cookie is SameSite=Strict: a browser does not send it with a navigation
        # from another site (a link to a run in a ticket, a chat, a mail), so a reader who is
        # logged in lands here and was asked for a token again. A link on this page is this
        # site's own: a click on it opens the page with the cookie (what Strict guards stays
        # guarded: another site's navigation alone never carries it).
        from_another_site = (
            viewer is None
            and next is not None
            and request.headers.get("sec-fetch-site") == "cross-site"
        )
        return login_form(
            request,
            viewer,
            safe_next(next, ROOT),
            failed=False,
            from_another_site=from_another_site,
        )

    @app.post("/login")
    def login(
        request: Request,
        token: Annotated[str, Form(max_length=1000)] = "",
        csrf: Annotated[str, Form(max_length=200)] = "",
        next: Annotated[str, Form(max_length=2000)] = "",
    ) -> Response:
        refused = login_form_problem(request, csrf)
        if refused is not None:
            raise Forbidden(refused)
        found = state.sessions.login(token.strip())  # compared in constant time
        attempt = state.auth_failures.attempt_of(request.scope, right=found is not None)
        if attempt.wait is not None:  # whatever the token: a guess tells nothing meanwhile
            raise LedgerErrorPage(
                429,
                "Too many failed logins",
                f"too many refused tokens from this address: try again in {attempt.wait} s",
                headers={"Retry-After": str(attempt.wait)},
            )
        target = safe_next(next, ROOT)
        if found is None:
            log.warning("web login refused (unknown token)")
            note_auth_failure(state.auth_failures, attempt, "web logins", state.config)
            return login_form(request, None, target, failed=True)
        viewer, cookie = found
        if not viewer.scopes & WEB_SCOPES:
            # A connector's append token (on every connector host) has nothing to read or do
            # here: no session for it, so that it cannot mint sessions (nor logouts to keep).
            log.warning("web login refused: token %r has neither read nor operate", viewer.name)
            raise Forbidden(
                f"token {viewer.name!r} has neither the 'read' nor the 'operate' scope: "
                "the web view has nothing for it"
            )
        log.info("web login: %s", viewer.name)
        redirect = RedirectResponse(target, status_code=303)
        redirect.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=state.sessions.lifetime,
            path=ROOT,
            httponly=True,
            samesite="strict",
            secure=session_cookie_secure(request),
        )
        redirect.delete_cookie(LOGIN_COOKIE, path=ROOT)
        return redirect

    https_unconfigured_said = threading.Event()

    def session_cookie_secure(request: Request) -> bool:
        """Secure as every cookie is (:func:`cookie_secure`), and also when the login form was
        posted from an https page (its Origin, which the browser writes): behind a TLS proxy
        without ``[web] secure_cookies = true`` the session cookie went without Secure, and a
        browser would send it over plain http to that host. A WARNING (once) says to set it."""
        if cookie_secure(request):
            return True
        if not request.headers.get("origin", "").startswith("https://"):
            return False
        if not https_unconfigured_said.is_set():
            https_unconfigured_said.set()
            log.warning(
                "web login from an https page, and [web] secure_cookies is false: the session "
                "cookie is made Secure from the form's Origin, but the login form's is not; "
                "behind a TLS proxy set [web] secure_cookies = true"
            )
        return True

    @app.post("/logout")
    def logout(request: Request, csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
        viewer = viewer_of(request)
        if viewer is not None:
            refused = origin_problem(request)
            if refused is None and not state.sessions.csrf_ok(viewer.nonce, csrf):
                refused = CSRF_REFUSED
            if refused is not None:
                raise Forbidden(refused)
            state.sessions.revoke(viewer)
        response = RedirectResponse(ROOT + "/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=ROOT)
        return response
