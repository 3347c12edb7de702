"""``ledger report``: the proof report the seed file tried to be, computed, never typed.

Sections: A schema (the live catalogue against the legacy shape), B status distribution,
C latest runs, D where status transitions come from, E stuck runs (from the ledger), F stop
conditions, each PASS or FAIL. Rendered as text, Markdown or JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from forensics.dialects import live_shape, types_comparable
from forensics.legacy_shape import compare, expected_shape
from forensics.verify import VerifyReport, verify_all
from ledger import Ledger, stuck_runs
from ledger.clock import format_utc_seconds, isoformat_utc
from ledger.dialects import exact_text
from ledger.durations import format_duration
from ledger.text import markdown_cell, visible
from ledger.urls import mask_url
from projections.checkpoints import Skip
from projections.queries import RunFilter, list_runs, runs_by_status
from projections.schema import ingestion_run_transitions, ingestion_runs
from projections.status import ProjectionStatus, ledger_status

ABSENT = "—"


@dataclass(frozen=True)
class Condition:
    name: str
    passed: bool
    detail: str


def build_report(
    ledger: Ledger, stuck_after: timedelta = timedelta(minutes=60), latest: int = 5
) -> dict[str, Any]:
    """Every section as plain data (what ``--format json`` prints)."""
    generated_at = ledger.clock()  # the clock the ledger records by
    ledger.check_schema()  # "run `ledger migrate`", not a traceback
    expected = expected_shape()
    with ledger.connect("report") as conn:
        live = live_shape(conn)
    mismatches = compare(expected, live, exact_types=types_comparable(ledger))
    with ledger.connect("report") as conn:
        status_distribution = runs_by_status(conn)
        actor = ingestion_run_transitions.c.actor
        exact_actor = exact_text(actor, conn)  # "Sweeper" is not the sweeper
        sources = conn.execute(
            select(func.min(actor), ingestion_run_transitions.c.to_status, func.count()).group_by(
                exact_actor, ingestion_run_transitions.c.to_status
            )
        ).all()
        completed_with_counts = conn.execute(
            select(func.count())
            .select_from(ingestion_runs)
            .where(
                ingestion_runs.c.completedAt.is_not(None),
                ingestion_runs.c.status.in_(("success", "partial")),
                (
                    ingestion_runs.c.recordsFetched
                    + ingestion_runs.c.recordsCreated
                    + ingestion_runs.c.recordsUpdated
                    + ingestion_runs.c.recordsSkipped
                )
                > 0,
            )
        ).scalar_one()
    transitions: dict[str, dict[str, int]] = {}
    for actor, to_status, count in sources:
        kind = actor_kind(actor)
        transitions.setdefault(kind, {})
        transitions[kind][to_status] = transitions[kind].get(to_status, 0) + int(count)
    latest_rows = list_runs(ledger, RunFilter(limit=latest))
    stuck = stuck_runs(ledger, older_than=stuck_after, now=generated_at)
    status = ledger_status(ledger)
    projection = status.projections[0]
    verification = verify_all(ledger)
    conditions = [
        Condition(
            "no stuck runs",
            not stuck,
            f"{len(stuck)} open run(s) silent for more than {format_duration(stuck_after)}"
            if stuck
            else f"no open run silent for more than {format_duration(stuck_after)}",
        ),
        _latest_condition(latest_rows[0] if latest_rows else None),
        _in_sync_condition(projection, status.head_position, verification),
        Condition(
            "hash chain verifies",
            not verification.by_check("chain"),
            f"{verification.events} event(s) checked"
            if not verification.by_check("chain")
            else verification.by_check("chain")[0].message
            + f" at position {verification.by_check('chain')[0].position}",
        ),
        Condition(
            "a completed run with non-zero counters",
            completed_with_counts > 0,
            f"{completed_with_counts} run(s) succeeded or were partial with records",
        ),
    ]
    return {
        "generated_at": isoformat_utc(generated_at),
        "database": _masked(ledger),
        "schema": {
            "table": "ingestion_runs",
            "columns": [
                {"name": c.name, "type": c.type, "nullable": c.nullable} for c in live.columns
            ],
            "indexes": live.indexes,
            "mismatches": mismatches,
        },
        "status_distribution": status_distribution,
        "latest_runs": [_run_summary(row) for row in latest_rows],
        "transitions": transitions,
        "stuck_runs": [
            {
                "run_id": r.run_id,
                "source_id": r.source_id,
                "connector_name": r.connector_name,
                "started_at": _utc(r.started_at),
                "last_event_at": _utc(r.last_event_at),
                "silent_for": format_duration(generated_at - r.last_event_at),
                "rule": r.rule,
            }
            for r in stuck
        ],
        "conditions": [vars(c) for c in conditions],
    }


def report_passed(report: dict[str, Any]) -> bool:
    return all(condition["passed"] for condition in report["conditions"])


def actor_kind(actor: str | None) -> str:
    if not actor:
        return "unknown"
    if actor.startswith("connector:"):
        return "connectors"
    if actor == "sweeper":
        return "sweeper"
    if actor.startswith("operator:"):
        return "operators"
    if actor.startswith("import:"):
        return "import"
    return "other"


def _skipped_detail(verification: VerifyReport, skips: list[Skip]) -> str:
    """Every event the projection skips (as the projector reads them): the table does not show
    it, whoever decided so. A skip is not hash-chained, so a forged one that matches the ledger
    looks like an operator's: naming each is what lets an auditor tell."""
    if not skips:
        return ""
    runs = {skip.position: skip.run_id for skip in verification.skips}
    return f"; {len(skips)} skipped event(s) not in the table: " + "; ".join(
        f"position {skip.position} ({skip.event_type}"
        + (f", run {runs[skip.position]}" if runs.get(skip.position) is not None else "")
        + f") skipped by {skip.actor}: {skip.reason}"
        for skip in skips
    )


def _latest_condition(row: dict[str, Any] | None) -> Condition:
    name = "latest run terminal with completedAt"
    if row is None:
        return Condition(name, False, "there are no runs")
    passed = row["status"] != "running" and row["completedAt"] is not None
    return Condition(
        name,
        passed,
        f"run {row['id']} is {row['status']}, completedAt {_utc(row['completedAt']) or ABSENT}",
    )


def _run_summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "source_id": row["sourceId"],
        "connector": row["connectorName"],
        "status": row["status"],
        "started": _utc(row["startedAt"]),
        "completed": _utc(row["completedAt"]),
        "duration": None if row["duration"] is None else format_duration(row["duration"]),
        "fetched_created_updated_skipped": (
            f"{row['recordsFetched']}/{row['recordsCreated']}/{row['recordsUpdated']}/"
            f"{row['recordsSkipped']}"
        ),
        "error": row["errorMessage"],
    }


def _utc(value: datetime | None) -> str | None:
    return None if value is None else f"{format_utc_seconds(value)} UTC"


def _masked(ledger: Ledger) -> str:
    return mask_url(ledger.url)


# ---------------------------------------------------------------------- rendering


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)


def render_text(report: dict[str, Any], markdown: bool = False) -> str:
    """The report for people. Every value from the database goes through ``show``: made visible
    (a newline in an error message cannot start a fake section) and, in Markdown, escaped (a
    ``|`` cannot break the table, ``[x](…)`` cannot become a link)."""
    out: list[str] = []

    def show(value: object) -> str:
        text = str(value)
        return markdown_cell(text) if markdown else visible(text)

    def heading(text: str) -> None:
        out.append(f"\n## {text}\n" if markdown else f"\n{text}\n{'-' * len(text)}")

    def line(text: str = "") -> None:
        out.append(text)

    item = "- " if markdown else "  "
    title = "ingestion_runs proof report"
    line(f"# {title}" if markdown else f"{title.upper()}\n{'=' * len(title)}")
    # Two list items in Markdown: two plain lines would join into one paragraph.
    about = "- " if markdown else ""
    line(f"{about}Generated: {show(report['generated_at'])} (UTC)")
    line(f"{about}Database:  {show(report['database'])}")
    schema = report["schema"]
    heading("A. Schema: live ingestion_runs against the legacy shape")
    for column in schema["columns"]:
        line(
            f"{item}{show(column['name'])} {show(column['type'])} "
            f"{'NULL' if column['nullable'] else 'NOT NULL'}"
        )
    # Markdown: a blank line first, or the line would continue the last column's list item.
    line(("\n" if markdown else "") + "Mismatches: " + ("none" if not schema["mismatches"] else ""))
    for problem in schema["mismatches"]:
        line(f"  - {show(problem)}")
    heading("B. Status distribution")
    for status, count in report["status_distribution"].items():
        line(f"{item}{show(status)}: {count}")
    heading(f"C. Latest {len(report['latest_runs'])} run(s), times in UTC")
    if markdown:
        line(
            "| id | connector | status | started | completed | duration | "
            "fetched/created/updated/skipped | error |"
        )
        line("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in report["latest_runs"]:
        values = [
            show(value or ABSENT)
            for value in (
                run["id"],
                run["connector"],
                run["status"],
                run["started"],
                run["completed"],
                run["duration"],
                run["fetched_created_updated_skipped"],
                run["error"],
            )
        ]
        if markdown:
            line("| " + " | ".join(values) + " |")
        else:
            line(
                f"  run {values[0]} ({values[1]}): {values[2]}; started {values[3]}; "
                f"completed {values[4]}; duration {values[5]}; "
                f"fetched/created/updated/skipped {values[6]}; error {values[7]}"
            )
    heading("D. Where status transitions come from")
    if not report["transitions"]:
        line("  none")
    for kind, by_status in sorted(report["transitions"].items()):
        line(
            f"{item}{show(kind)}: "
            + ", ".join(f"{count} to {show(status)}" for status, count in sorted(by_status.items()))
        )
    heading("E. Stuck runs (from the ledger)")
    if not report["stuck_runs"]:
        line("  none")
    for run in report["stuck_runs"]:
        line(
            f"{item}run {run['run_id']} ({show(run['connector_name'])}, "
            f"source {run['source_id']}): started {show(run['started_at'])}, silent for "
            f"{show(run['silent_for'])} ({show(run['rule'])})"
        )
    heading("F. Stop conditions")
    for condition in report["conditions"]:
        verdict = "PASS" if condition["passed"] else "FAIL"
        line(f"{item}{verdict}  {show(condition['name'])}: {show(condition['detail'])}")
    passed = sum(c["passed"] for c in report["conditions"])
    line(
        f"\nResult: {passed}/{len(report['conditions'])} conditions pass"
        + ("" if passed == len(report["conditions"]) else " — FAIL")
    )
    return "\n".join(out) + "\n"


def _in_sync_condition(
    projection: ProjectionStatus, head_position: int, verification: VerifyReport
) -> Condition:
    checkpoint = projection.checkpoint
    differences = len(verification.by_check("projection"))
    detail = (
        f"checkpoint {checkpoint.position} of {head_position}; "
        f"{differences} row difference(s) from a replay"
    )
    if checkpoint.error_position is not None:
        detail += (
            f"; stopped at position {checkpoint.error_position} ({checkpoint.error_type}): "
            f"{checkpoint.error_message}"
        )
    detail += _skipped_detail(verification, projection.skips)
    in_sync = (
        projection.lag_events == 0
        and not differences
        and checkpoint.error_position is None
        and not projection.skips
    )
    return Condition("projection in sync with the ledger", in_sync, detail)
