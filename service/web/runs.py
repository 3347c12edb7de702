"""The runs pages: the list (with its per-day chart), one run, the stuck runs, failing a run."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Depends, FastAPI, Form, Query, Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from forensics.audit import AuditPage, audit_page
from ledger import (
    Ledger,
    StoredEventError,
    UnknownRunError,
    ValidationError,
    fail_run,
    failable_run,
)
from ledger.clock import utcnow
from ledger.events import MAX_RUN_ID, REASON_MAX, operator_actor
from ledger.schema import MAX_POSITION
from ledger.text import says_something
from projections.fold import Row, Transition
from projections.queries import RunFilter, find_run, find_runs, status_counts_by_day
from projections.schema import RUN_STATUSES
from service.api.params import ASCII_DIGITS, RunIdPath, url_integer
from service.api.state import require_current_schema
from service.web import views
from service.web.pages import Pages, echoed
from service.web.sessions import Viewer
from service.web.state import (
    COUNTS_TTL,
    DAYS_SHOWN,
    NOTICES,
    PAGE_SIZE,
    TIMELINE_PART,
    LedgerErrorPage,
    WebState,
    log,
)

# The Stuck page shows at most this many runs, in the stuck query's order (the longest silent
# first) and says how many more there are: a ledger left without its sweeper after an outage
# can hold tens of thousands (20,000 made a 7 MB page that took 2.5 s), and `ledger stuck
# --limit 0` or /v1/stuck (a page at a time) list every one.
STUCK_PAGE_ROWS = 500


def add_run_routes(app: FastAPI, state: WebState, pages: Pages) -> None:
    """``/runs``, ``/runs/days.svg``, ``/runs/{id}``, ``/stuck``, ``/runs/{id}/fail``."""
    reader, moment_of, moment_time, link, render, operator = (
        pages.reader,
        pages.moment_of,
        pages.moment_time,
        pages.link,
        pages.render,
        pages.operator,
    )

    # Given as a default, not in Annotated: this module's annotations are strings, read where
    # ``pages`` is not a name.
    may_operate = Depends(pages.may_operate)

    def day_counts(public: bool) -> dict[str, dict[str, int]]:
        cached = state.counts.get("days")
        now = utcnow()
        if cached is not None and now - cached[0] < COUNTS_TTL:
            return cached[1]
        since = (now - timedelta(days=DAYS_SHOWN - 1)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        # Every run of a fortnight, counted: a slot, so that a burst of page loads on a cold
        # (or expired) cache is not a burst of such counts at once.
        with state.expensive("the runs-per-day chart", public=public):
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
        before: Annotated[int | None, Query(ge=1, le=MAX_RUN_ID), ASCII_DIGITS] = None,
    ) -> Response:
        viewer = reader(request)
        moment = moment_of(request)
        status = status or None
        connector = connector or None
        if status is not None and status not in RUN_STATUSES:
            raise LedgerErrorPage(
                400, "Invalid request", f"status: {echoed(status)} is not a status"
            )
        source_id = None
        if source:
            source_id = url_integer(source, MAX_RUN_ID)
            if source_id is None:
                raise LedgerErrorPage(
                    400, "Invalid request", f"source: {echoed(source)} is not an id"
                )
        run_filter = RunFilter(status, connector, source_id, PAGE_SIZE, before=before)
        with state.expensive(
            "the runs as of a past moment", needed=not moment.live, public=pages.public(viewer)
        ):
            view = find_runs(state.ledger, run_filter, None, moment.position)
            # Only this page's runs: every stuck run read for a page of 50 made the page's
            # time grow with them (20,000 stuck runs: 0.8 s instead of 30 ms); as of a past
            # moment, from these runs' events up to it, judged then.
            on_page = [row["id"] for row in view.rows]
            stuck = {
                run.run_id: run.rule
                for run in state.config.stuck_runs(
                    state.ledger,
                    moment.position,
                    None if moment.live else moment_time(moment),
                    run_ids=on_page,
                )
            }
        following = None
        if view.next_before is not None:
            # The page's own moment, as every other link names it: pinned to its position
            # instead, the next page of a page as of a time stood when that position's event
            # was recorded, and judged its runs stuck then, not at the time asked for.
            following = link(
                "/runs",
                moment,
                status=status,
                connector=connector,
                source=source,
                before=view.next_before,
            )
        return render(
            request,
            "runs.html",
            viewer=viewer,
            moment=moment,
            page="runs",
            rows=view.rows,
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
        viewer = reader(request)
        svg = pages.templates.get_template("days.svg").render(
            chart=views.day_chart(day_counts(pages.public(viewer))), colours=views.COLOURS
        )
        return Response(svg, media_type="image/svg+xml")

    def run_page_reads(
        run_id: int, after: int | None, limit: int, position: int | None
    ) -> tuple[AuditPage, Row | None, list[Transition]]:
        """The part of the run's timeline the page shows, and its row and transitions (live,
        or as of ``position``)."""
        try:
            part = audit_page(state.ledger, run_id, after or 0, limit)
        except UnknownRunError:
            raise
        except StoredEventError:
            raise  # the ledger's, not the request's: a server error
        except ValidationError as exc:  # ``after`` is not one of this run's events
            raise LedgerErrorPage(400, "Invalid request", f"after: {exc}") from None
        try:
            run_view = find_run(state.ledger, run_id, None, position)
        except UnknownRunError:
            return part, None, []
        return part, run_view.row, run_view.transitions

    @app.get("/runs/{run_id}")
    def run_page(
        request: Request,
        run_id: RunIdPath,
        notice: Annotated[str | None, Query(max_length=20)] = None,
        failed_at: Annotated[int | None, Query(ge=1, le=MAX_POSITION), ASCII_DIGITS] = None,
        after: Annotated[int | None, Query(ge=1, le=MAX_POSITION), ASCII_DIGITS] = None,
        limit: Annotated[int, Query(ge=1, le=TIMELINE_PART), ASCII_DIGITS] = TIMELINE_PART,
    ) -> Response:
        viewer = reader(request)
        moment = moment_of(request)
        # One slot for the page (never two at once: with one slot the page would refuse
        # itself): a later part of the timeline folds the run's earlier events (a read that
        # grows with its history), a page as of a past moment replays the run.
        with state.expensive(
            "a later part of a run's timeline or a run as of a past moment",
            needed=after is not None or not moment.live,
            public=pages.public(viewer),
        ):
            part, row, transitions = run_page_reads(run_id, after, limit, moment.position)
        timeline = part.entries
        shown = [e for e in timeline if moment.live or e.event.position <= (moment.position or 0)]
        following = None
        if part.more and len(shown) == len(timeline):
            following = link(
                f"/runs/{run_id}",
                moment,
                after=timeline[-1].event.position,
                limit=None if limit == TIMELINE_PART else limit,
            )
        # The status the run stands at: after the last event shown, when it is the last part.
        current = shown[-1].status_after if shown and following is None else None
        stuck = None
        # The ledger's status first (the stuck query reads the ledger): with the projector
        # down the run has no row, and its page said nothing of the run the Stuck page lists.
        if (current or (row["status"] if row is not None else "running")) == "running":
            # As of a past moment: from this run's events up to it, judged then.
            judged_at = None if moment.live else moment_time(moment)
            found = state.config.stuck_runs(
                state.ledger, moment.position, judged_at, run_ids=[run_id]
            )
            stuck = next(iter(found), None)
        return render(
            request,
            "run.html",
            viewer=viewer,
            moment=moment,
            page="runs",
            run_id=run_id,
            timeline=shown,
            current=current,
            hidden=len(shown) < len(timeline),
            following=following,
            first_part=after,  # the position this part follows (None: the first part)
            row=row,
            transitions=transitions,
            stuck=stuck,
            notice=fail_notice(state.ledger, notice, failed_at, viewer, run_id),
        )

    @app.get("/stuck")
    def stuck_page(request: Request) -> Response:
        viewer = reader(request)
        moment = moment_of(request)
        thresholds = state.config.thresholds.to_thresholds()
        judged_at = moment_time(moment)
        if moment.live:
            # One page read with each connector's thresholds in the database, and a COUNT: a
            # ledger left without its sweeper (20,000 stuck runs) had every one read for 500.
            page = state.config.stuck_page(state.ledger, STUCK_PAGE_ROWS, count=True)
            found, total = page.runs, page.total or 0
        else:
            with state.expensive(
                "the stuck runs as of a past moment", needed=True, public=pages.public(viewer)
            ):
                every = state.config.stuck_runs(state.ledger, moment.position, judged_at)
            found, total = every[:STUCK_PAGE_ROWS], len(every)
        return render(
            request,
            "stuck.html",
            viewer=viewer,
            moment=moment,
            page="stuck",
            runs=found,
            # The COUNT is a statement of its own: a run ended between the two is not "more".
            not_shown=max(0, total - len(found)),
            judged_at=judged_at,  # "silent for" counts to it (None: now)
            thresholds=thresholds,
            overrides=state.config.overrides(),
        )

    @app.post("/runs/{run_id}/fail")
    async def fail(
        request: Request,
        run_id: RunIdPath,
        _operator: Viewer = may_operate,
        reason: Annotated[str, Form(max_length=REASON_MAX)] = "",
        csrf: Annotated[str, Form(max_length=200)] = "",
        confirm: Annotated[str, Form(max_length=10)] = "",
    ) -> Response:
        # Async for the write slot alone: the checks and the confirm page read the ledger in a
        # worker thread, as every other page does, and the append waits for one of the write
        # slots the API's appends and fails take (holding no thread while it waits).
        confirmed = await run_in_threadpool(fail_form, request, run_id, reason, csrf, confirm)
        if isinstance(confirmed, Response):
            return confirmed
        viewer, reason = confirmed
        actor = operator_actor(viewer.name)  # as the CLI records --actor

        def fail_it() -> int:
            require_current_schema(state.ledger)
            return fail_run(state.ledger, run_id, reason, actor, connectors=viewer.connectors)

        position = await state.write(fail_it)
        log.warning("web: run %d failed by %s at position %d", run_id, actor, position)
        return RedirectResponse(
            link(f"/runs/{run_id}", notice="failed", failed_at=position), status_code=303
        )

    def fail_form(
        request: Request, run_id: int, reason: str, csrf: str, confirm: str
    ) -> Response | tuple[Viewer, str]:
        """The fail form's checks: its confirm page, or the viewer and reason to fail it with."""
        viewer = operator(request, csrf)
        reason = reason.strip()
        if not says_something(reason):
            raise LedgerErrorPage(400, "Invalid request", "give a reason for failing the run")
        if confirm == "yes":
            return viewer, reason
        # Refused here as the append would refuse it (a closed run, another connector's), and
        # the run's row shown only to a token that may read it: the confirm step must not tell
        # a token with only `operate` what the runs are.
        failable_run(state.ledger, run_id, viewer.connectors)
        row = find_run(state.ledger, run_id).row if pages.may_read(viewer, request) else None
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


def fail_notice(
    ledger: Ledger, notice: str | None, failed_at: int | None, viewer: Viewer | None, run_id: int
) -> str | None:
    """The notice the fail form's redirect asks for, only when it is true: the link is a URL
    anyone can send, and "the run was failed" on a run that succeeded would be a forged claim
    on a page auditors trust. The redirect names the position of the RunTimedOut it appended
    (``failed_at``); the notice shows when that event is there, of this run, and the viewing
    operator's. (The timeline's part on the page may not hold it: a run of more than a part's
    events shows its first events first.)"""
    text = NOTICES.get(notice or "")
    if text is None or viewer is None or failed_at is None:
        return None
    found = ledger.read_page(failed_at - 1, 1, up_to=failed_at)
    true = bool(found) and (found[0].type, found[0].run_id, found[0].actor) == (
        "RunTimedOut",
        run_id,
        operator_actor(viewer.name),
    )
    return text if true else None
