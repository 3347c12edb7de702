"""The web view: server-rendered pages over the library calls the API makes (Jinja2, no
JavaScript at all). Mounted at ``/web`` of the API app (:func:`service.api.create_app`) when
``[web] enabled``; it shares the API's ledger and tokens.

Read-only but for the operator's fail form. Every page takes ``?as_of=`` / ``?at_position=``.
Every response carries a Content-Security-Policy without scripts and without framing.
"""

from __future__ import annotations

import hashlib
import threading
from importlib.resources import files

import anyio
from fastapi import FastAPI
from jinja2 import Environment, PackageLoader, select_autoescape

from ledger import Ledger
from ledger.outage import Outage
from ledger.text import ABSENT
from service.api.limits import AuthFailures, auth_failures_of
from service.api.state import write_slots_for
from service.config import LedgerConfig
from service.web import views
from service.web.errors import add_error_handlers
from service.web.integrity import VerifyCache
from service.web.login import add_login_routes
from service.web.pages import Pages
from service.web.proof import add_proof_routes
from service.web.runs import add_run_routes
from service.web.security import SecurityHeaders
from service.web.sessions import Sessions
from service.web.state import ROOT, WebState, log, public_share


def create_web_app(
    config: LedgerConfig,
    ledger: Ledger,
    expensive_slots: threading.BoundedSemaphore | None = None,
    outage: Outage | None = None,
    auth_failures: AuthFailures | None = None,
    write_slots: anyio.CapacityLimiter | None = None,
) -> tuple[FastAPI, WebState]:
    """The web view's app (to mount at :data:`ROOT`) and its state (close it with the app).
    ``expensive_slots``, ``outage``, ``auth_failures`` and ``write_slots``: the API's, so that
    pages and API requests share one budget, one log of a database outage, one count of
    refused tokens and one bound on the writes waiting on the database."""
    outage = outage or Outage("web pages", log)
    state = WebState(
        config=config,
        ledger=ledger,
        sessions=Sessions(config),
        verify=VerifyCache(ledger, config.web.verify_interval, outage),
        expensive_slots=expensive_slots or threading.BoundedSemaphore(config.api.max_expensive),
        public_slots=threading.BoundedSemaphore(public_share(config.api.max_expensive)),
        outage=outage,
        # "is None": an AuthFailures with no failures yet is empty, and so false.
        auth_failures=auth_failures_of(config) if auth_failures is None else auth_failures,
        write_slots=write_slots or anyio.CapacityLimiter(write_slots_for(ledger)),
    )
    templates = Environment(
        loader=PackageLoader("service.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=views.shown,
    )
    templates.filters.update(views.FILTERS)
    templates.globals["absent"] = ABSENT  # a missing value, spelled as everywhere else
    templates.globals["style_version"] = style_version()
    # No slash redirects: Starlette's are absolute, from the request's scheme and Host (see
    # the API's app).
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False)
    pages = Pages(state, templates)
    add_error_handlers(app, state, pages)
    add_login_routes(app, state, pages)
    add_run_routes(app, state, pages)
    add_proof_routes(app, state, pages)
    app.state.web = state
    return app, state


def style_version() -> str:
    """A digest of the style sheet, in its address on every page: browsers keep it an hour
    (its Cache-Control), and after an upgrade that changed it, pages were laid out by the old
    one for as long; a new style sheet has a new address."""
    body = files("service.web").joinpath("static", "style.css").read_bytes()
    return hashlib.sha256(body).hexdigest()[:12]


__all__ = ["ROOT", "SecurityHeaders", "WebState", "create_web_app"]
