"""The proof report (also as Markdown) and the integrity page."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response

from forensics.anchors import Anchor, anchor_at, current_anchor
from forensics.chain import ChainReport, verify_chain
from forensics.report import build_report
from forensics.report_render import for_people, render_text
from ledger.clock import utcnow
from service.web.integrity import VerifyOutcome
from service.web.pages import Pages
from service.web.state import Moment, WebState


def add_proof_routes(app: FastAPI, state: WebState, pages: Pages) -> None:
    """``/proof``, ``/proof.md``, ``/integrity``."""
    reader, moment_of, render = pages.reader, pages.moment_of, pages.render

    @app.get("/proof")
    def proof_page(request: Request) -> Response:
        viewer = reader(request)
        moment = moment_of(request)
        report = proof_report(moment, pages.public(viewer))
        return render(
            request,
            "proof.html",
            viewer=viewer,
            moment=moment,
            page="proof",
            report=for_people(report),  # its times as the Markdown download shows them
            passed=all(c["passed"] for c in report["conditions"]),
        )

    @app.get("/proof.md")
    def proof_markdown(request: Request) -> Response:
        viewer = reader(request)
        report = proof_report(moment_of(request), pages.public(viewer))
        return Response(
            render_text(report, markdown=True),
            media_type="text/markdown; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="ledger-proof.md"'},
        )

    def proof_report(moment: Moment, public: bool) -> dict[str, Any]:
        with state.expensive("the proof report", public=public):
            report = build_report(
                state.ledger,
                thresholds=state.config.thresholds.to_thresholds(),
                overrides=state.config.overrides(),  # as the Stuck page judges them
                at_position=moment.position,
                at=moment.as_of,  # None for a position alone: when its event was recorded
            )
        # Read over the network, by anyone when the view is public: the database's kind, as
        # /v1/status names it, never its URL, user, host or file (the CLI's report shows that).
        return {**report, "database": state.ledger.database_kind}

    @app.get("/integrity")
    def integrity_page(request: Request) -> Response:
        viewer = reader(request)
        moment = moment_of(request)
        outcome: VerifyOutcome | None = None
        chain: ChainReport | None = None
        if moment.live:
            with state.expensive("verify", public=pages.public(viewer)):
                outcome = state.verify.refresh()
            # As for a past moment: no anchor of a head whose chain verify just found broken.
            anchor: Anchor | None = None if _chain_broken(outcome) else current_anchor(state.ledger)
        else:
            # What verify could say then: the chain up to that position, and the head as it
            # stood (the other checks compare the tables as they are now); the anchor only for
            # a chain that holds up to it: an altered row's hash is nothing to anchor to.
            assert moment.position is not None
            with state.expensive("verify as of a past moment", public=pages.public(viewer)):
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


def _chain_broken(outcome: VerifyOutcome) -> bool:
    """Did this verify find the hash chain itself broken (an altered, missing or moved row)?"""
    report = outcome.report
    return report is not None and bool(report.by_check("chain"))
