"""The HTTP API: FastAPI over the library, the same calls and the same JSON as the CLI's
``--format json``. Endpoints hold no logic of their own: they parse, call the library, and
turn library errors into problems (:mod:`service.api.problems`).

Every endpoint but ``/healthz`` needs a bearer token with a scope (:mod:`service.api.auth`).
Every ``GET`` answers ``HEAD`` too (:mod:`service.api.head`).
Request bodies are held to ``[api] max_body_bytes`` while they are read, before parsing.
"""

import threading
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import PlainTextResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from connectors import Spool
from forensics.verify import verify_all
from ledger import Ledger, StuckCursor, ValidationError
from ledger.clock import isoformat_utc
from projections.as_of import QUERY_AS_OF_MAX_LENGTH, judged_moment
from service.api.access import Scopes, invalid_parameter, query_duration, query_moment
from service.api.auth import Caller, Tokens
from service.api.events import add_event_routes
from service.api.guard import Guard
from service.api.handlers import add_error_handlers
from service.api.head import HeadAsGet
from service.api.limits import auth_failures_of
from service.api.openapi import add_docs_routes, openapi_document, problem_responses
from service.api.params import ASCII_DIGITS, AtPositionQuery, FlagQuery
from service.api.runs import DEFAULT_PAGE, MAX_PAGE, NEXT_LINK, TOTAL_COUNT, add_run_routes
from service.api.shapes import LedgerJSON
from service.api.state import ApiState, write_slots_for
from service.config import LedgerConfig
from service.metrics import LedgerCollector, collect_figures, scrape_url
from service.status import status_report

# A cursor of GET /v1/stuck: ``MICROSECONDS-RUNID`` (18 and 10 digits at most), then
# ``~POSITION`` (19) for a page as of a moment and ``-MICROSECONDS`` (18), when it is judged.
STUCK_CURSOR_MAX_LENGTH = 70


def _api_ledger(config: LedgerConfig) -> Ledger:
    """The API's ledger, its waits on the database bounded by ``[api] database_timeout``: a
    frozen server (or a lock held elsewhere) is a 503 in seconds, not a worker thread held for
    the driver's 75 s (SQLite's 30 s)."""
    seconds = max(1, int(config.api.database_timeout.total_seconds()))
    return Ledger.from_url(config.database_url, create=False, wait_bound_s=seconds)


def _check_cursor_position(ledger: Ledger, after: StuckCursor, at_position: int | None) -> None:
    """A cursor of the stuck runs as of a position goes on at that position: given live, or
    with another ``at_position``, its place would be one of another list (a 400 naming
    ``cursor``). With ``as_of``, the cursor's position is where the page stands."""
    if after.position is None:
        return
    if at_position is None or min(at_position, ledger.head().last_position) != after.position:
        raise invalid_parameter(
            "cursor",
            ValidationError(
                f"a cursor of the stuck runs as of position {after.position}: give the as_of "
                "or at_position of the page that named it"
            ),
        )


def create_app(config: LedgerConfig) -> FastAPI:
    """The API over ``config.database_url`` with ``config.api``'s tokens and limits."""
    tokens = Tokens(config.api)  # first: a token refused opens no database
    ledger = _api_ledger(config)
    state = ApiState(
        config=config,
        ledger=ledger,
        scrape_ledger=Ledger.from_url(scrape_url(config.database_url), create=False),
        tokens=tokens,
        spool=Spool(config.spool.dir),
        expensive_slots=threading.BoundedSemaphore(config.api.max_expensive),
        auth_failures=auth_failures_of(config),
        write_slots=anyio.CapacityLimiter(write_slots_for(ledger)),
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
    add_error_handlers(app)
    app.add_middleware(
        Guard,
        max_body_bytes=config.api.max_body_bytes,
        read_timeout=config.api.read_timeout.total_seconds(),
        outage=state.outage,
    )

    scopes = Scopes.of(state)
    read_scope = scopes.read
    add_event_routes(app, state, scopes)
    add_run_routes(app, state, scopes)

    # ------------------------------------------------------------------ health

    @app.get(
        "/v1/stuck",
        summary="Stuck runs, the longest silent first, a page at a time",
        responses={200: {"headers": {**NEXT_LINK, **TOTAL_COUNT}}, **problem_responses(400, 429)},
    )
    def stuck(
        request: Request,
        response: Response,
        _caller: Annotated[Caller, read_scope],
        older_than: Annotated[str | None, Query(max_length=100)] = None,
        max_runtime: Annotated[str | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE), ASCII_DIGITS] = DEFAULT_PAGE,
        cursor: Annotated[
            str | None,
            Query(
                max_length=STUCK_CURSOR_MAX_LENGTH,
                description="Where the page starts: the previous page's, from its Link header",
            ),
        ] = None,
        as_of: Annotated[str | None, Query(max_length=QUERY_AS_OF_MAX_LENGTH)] = None,
        at_position: AtPositionQuery = None,
    ) -> list[dict[str, Any]]:
        """Open runs with no activity for ``older_than`` (or running longer than
        ``max_runtime``), as ``ledger stuck --format json``, at most ``limit`` of them; a
        ``Link: <…>; rel="next"`` header names the next page. Without either threshold, the
        config's, each connector's own over the globals (what ``/v1/status``, the metrics and
        the web's Stuck page count); a value given replaces its threshold for every run. The
        first page (no ``cursor``) says in ``X-Total-Count`` how many runs are stuck.

        With ``as_of`` (a time) or ``at_position``, the runs stuck then (``ledger stuck
        --as-of``): replayed from the runs open at the last event recorded by that time (or at
        that position; past the head, the head) and judged at that time, never after now. The
        ``Link`` names the same moment (the time it was judged at, or the position when the
        clock stepped back behind events already recorded) and its ``cursor`` the position and
        time the first page stood at and was judged at, so every page is of one moment: no run
        missed or listed twice, even for an append recorded by that time and committed after
        it."""
        moment = query_moment(as_of, at_position)
        stale_after = query_duration(older_than, "older_than")
        runtime = query_duration(max_runtime, "max_runtime")
        after = None
        if cursor is not None:
            try:
                after = StuckCursor.decode(cursor)
            except ValidationError as exc:
                raise invalid_parameter("cursor", exc) from None
        if after is not None and moment is None:
            _check_cursor_position(state.ledger, after, at_position)
        pinned: dict[str, str] = {}
        if moment is None and at_position is None:
            page = config.stuck_page(
                state.ledger,
                limit,
                after,
                stale_after=stale_after,
                max_runtime=runtime,
                count=after is None,
            )
        else:
            # Every page replays the runs open then (a bounded read, but one that grows with
            # them): a slot, as a list of runs as of a moment takes.
            with state.expensive("stuck runs as_of or at_position"):
                position, judged = judged_moment(state.ledger, moment, at_position)
                page = config.stuck_page(
                    state.ledger,
                    limit,
                    after,
                    position=position,
                    at=judged,
                    stale_after=stale_after,
                    max_runtime=runtime,
                    count=after is None,
                )
            pinned = {"at_position": str(position)}
            if moment is not None and (
                judged == moment or state.ledger.position_at(judged) == position
            ):
                # The time judged (now, for a time ahead of the clock): unless the clock stepped
                # back behind events recorded, which its time stands before (the position then).
                pinned = {"as_of": isoformat_utc(judged)}
        if page.next is not None:
            following = request.url.remove_query_params("as_of").include_query_params(
                cursor=page.next.encode(), **pinned
            )
            response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
        if page.total is not None:
            response.headers["X-Total-Count"] = str(page.total)
        return [run.to_dict() for run in page.runs]

    @app.get("/v1/status", summary="Head, runs, projection lag, spool")
    def status_endpoint(_caller: Annotated[Caller, read_scope]) -> dict[str, Any]:
        """``ledger status --format json`` with the config's thresholds and spool, but for what
        would show any read token the server's files and where its database is: ``database``
        is its kind (``sqlite``, ``mysql``, ``mariadb``), never its URL, user, host or file; the
        spool's path is left out, and a spool that could not be read says so without the OS's
        message (which names the file; the server's ``ledger status`` shows it)."""
        # No schema check: its warning is left out of the public status (/readyz answers it),
        # and it was a catalogue read and a query more on every poll of this endpoint.
        report = status_report(state.ledger, state.config, schema=False)
        return report.to_dict(public=True)

    @app.get("/v1/verify", summary="Verify the ledger", responses=problem_responses(429))
    def verify(
        _caller: Annotated[Caller, read_scope], chain_only: FlagQuery = False
    ) -> dict[str, Any]:
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

    @app.get("/readyz", summary="The database is reachable and its schema current")
    def readyz(_caller: Annotated[Caller, read_scope]) -> dict[str, str]:
        state.ledger.check_schema()
        return {"status": "ready"}

    add_docs_routes(app, scopes)

    if config.web.enabled:  # the web view (issue 17): same process, ledger and tokens
        from service.web import ROOT, SecurityHeaders, create_web_app

        web_app, app.state.web = create_web_app(
            config,
            state.ledger,
            state.expensive_slots,
            state.outage,
            state.auth_failures,
            state.write_slots,
        )

        @app.get(ROOT, include_in_schema=False)
        def web_home() -> Response:
            return RedirectResponse(ROOT + "/runs", status_code=303)

        app.mount(ROOT, web_app)
        # Outside the guard: its 413 and 500 under /web carry the pages' headers too.
        app.add_middleware(SecurityHeaders)
        app.state.web.verify.start()

    # Outermost: a HEAD (a load balancer's probe, curl -I) is answered as its GET, whichever
    # route, page or refusal answers it, and never with a body.
    app.add_middleware(HeadAsGet)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


__all__ = ["ApiState", "create_app"]
