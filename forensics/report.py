"""``ledger report``: the proof report the seed file tried to be, computed, never typed.

Sections: A schema (the live catalogue against the legacy shape), B status distribution,
C latest runs, D where status transitions come from, E stuck runs (from the ledger), F stop
conditions, each PASS or FAIL. Rendered as text, Markdown or JSON by
:mod:`forensics.report_render`.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import reduce
from typing import Any

from sqlalchemy import Connection, and_, func, select

from forensics.anchors import Anchor, AnchorCheck, check_anchors
from forensics.chain import verify_chain
from forensics.dialects import live_shape, types_comparable
from forensics.legacy_shape import compare, expected_shape
from forensics.verify import Problem, VerifyReport, verify_all
from ledger import Ledger, StuckRun, stuck_runs, stuck_runs_as_of
from ledger.clock import format_utc_seconds, isoformat_utc, labelled_utc
from ledger.dialects import exact_text
from ledger.durations import format_duration
from ledger.events import actor_kind
from ledger.stuck import Thresholds
from ledger.text import ABSENT, quoted, shown_name
from ledger.urls import mask_url
from projections.as_of import judged_moment, replay_until_poison
from projections.checkpoints import Skip
from projections.errors import PoisonEventError
from projections.queries import RunFilter, list_runs, runs_by_status
from projections.schema import (
    RECORD_COUNTER_COLUMNS,
    RUN_STATUSES,
    ingestion_run_transitions,
    ingestion_runs,
    record_counts,
)
from projections.status import ProjectionStatus, ledger_status

# Stuck after 60 minutes of silence, whatever the run time (``ledger stuck``'s defaults).
DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Condition:
    name: str
    passed: bool
    detail: str


def build_report(
    ledger: Ledger,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    latest: int = 5,
    at_position: int | None = None,
    at: datetime | None = None,
    anchors: Sequence[Anchor] = (),
    overrides: Mapping[str | tuple[str, int], Thresholds] | None = None,
) -> dict[str, Any]:
    """Every section as plain data (what ``--format json`` prints), every time in it ISO-8601
    UTC as in every JSON result: ``isoformat_utc``'s, but for the latest runs' ``started`` and
    ``completed``, the legacy TIMESTAMP's whole seconds (``2026-01-28T03:00:07Z``) as
    ``ledger runs`` gives them. :func:`for_people` shows them as the text forms do.

    With ``at_position`` or ``at``, the report as the ledger stood then: runs, transitions and
    stuck runs replayed from the events up to that position (by default the last one recorded
    by ``at``), the chain verified up to it, judged at ``at`` (by default when the event at
    that position was recorded; a time ahead of the ledger's clock is now, as on the web's Proof
    page). The schema is the live table's, and whether the projection
    is in sync, like what else ``ledger verify`` checks, is a question about now: those
    conditions are left out (``as_of`` in the report
    says so).

    ``anchors`` (``ledger anchor`` lines kept outside the database) are checked as ``ledger
    verify --anchor`` checks them, in the chain's condition. Stuck runs are judged by
    ``thresholds`` and each connector's own ``overrides`` (a serve config's, as ``ledger
    stuck --config`` and the web's Stuck page judge them)."""
    ledger.check_schema()  # "run `ledger migrate`", not a traceback
    if at_position is not None or at is not None:
        # Where `ledger stuck --as-of` and the web's pages stand, judged as they judge (a future
        # time is now): the one rule, judged_moment.
        at_position, at = judged_moment(ledger, at, at_position)
    expected = expected_shape()
    # Every read of the projection's tables here is one that a rebuild's swap through another
    # node of a Galera cluster may abort (1213): each is read again (Ledger.read_in_snapshot).
    live = ledger.read_in_snapshot("report", live_shape)
    mismatches = compare(expected, live, exact_types=types_comparable(ledger))
    rule = _StuckRule(thresholds, dict(overrides or {}))
    facts = (
        _live_facts(ledger, rule, latest, anchors)
        if at_position is None
        else _facts_as_of(ledger, rule, latest, at_position, at, anchors)
    )
    conditions = [
        facts.stuck_condition or _stuck_condition(facts.stuck, rule),
        _latest_condition(facts.latest_rows[0] if facts.latest_rows else None),
        *facts.conditions,
        Condition(
            "a completed run with non-zero counters",
            facts.completed_with_counts > 0,
            f"{facts.completed_with_counts} run(s) succeeded or were partial with records",
        ),
    ]
    transitions: dict[str, dict[str, int]] = {}
    for actor, to_status, count in facts.transitions:
        kind = actor_kind(actor)
        transitions.setdefault(kind, {})
        transitions[kind][to_status] = transitions[kind].get(to_status, 0) + int(count)
    generated_at = facts.generated_at
    return {
        "generated_at": isoformat_utc(generated_at),
        "as_of": facts.as_of,
        "database": _masked(ledger),
        "schema": {
            "table": "ingestion_runs",
            "columns": [
                {"name": c.name, "type": c.type, "nullable": c.nullable} for c in live.columns
            ],
            "indexes": live.indexes,
            "mismatches": mismatches,
        },
        "status_distribution": facts.status_distribution,
        "latest_runs": [_run_summary(row) for row in facts.latest_rows],
        "transitions": transitions,
        "stuck_runs": [
            {
                "run_id": r.run_id,
                "source_id": r.source_id,
                "connector_name": r.connector_name,
                "started_at": isoformat_utc(r.started_at),
                "last_event_at": isoformat_utc(r.last_event_at),
                "silent_for": format_duration(generated_at - r.last_event_at),
                "rule": r.rule,
            }
            for r in facts.stuck
        ],
        "conditions": [vars(c) for c in conditions],
    }


@dataclass(frozen=True)
class _StuckRule:
    """When a run counts as stuck in the report: the thresholds, and each connector's own."""

    thresholds: Thresholds
    overrides: dict[str | tuple[str, int], Thresholds]


@dataclass(frozen=True)
class _Facts:
    """What the report's sections are made of, read live or replayed as of a position."""

    generated_at: datetime
    as_of: dict[str, Any] | None
    status_distribution: dict[str, int]
    latest_rows: list[dict[str, Any]]
    transitions: list[tuple[str | None, str, int]]  # (actor, to status, how many)
    stuck: list[StuckRun]
    completed_with_counts: int
    conditions: list[Condition]  # the chain's and the projection's (between latest and counts)
    stuck_condition: Condition | None = None  # None: judged from ``stuck`` alone


def _live_facts(ledger: Ledger, rule: _StuckRule, latest: int, anchors: Sequence[Anchor]) -> _Facts:
    generated_at = ledger.clock()  # the clock the ledger records by
    status_distribution, sources, completed_with_counts = ledger.read_in_snapshot(
        "report", _projection_counts
    )
    latest_rows = list_runs(ledger, RunFilter(limit=latest))
    stuck = stuck_runs(
        ledger,
        older_than=rule.thresholds.stale_after,
        max_runtime=rule.thresholds.max_runtime,
        now=generated_at,
        overrides=rule.overrides,
    )
    status = ledger_status(ledger)
    verification = verify_all(ledger, anchors)
    # Section E is read from the run registry, a table the DBA can edit like any other: a
    # registry that disagrees with the events makes "no stuck runs" unproven.
    stuck_condition = _registry_caveat(
        _stuck_condition(stuck, rule), verification.by_check("registry")
    )
    return _Facts(
        generated_at,
        None,
        status_distribution,
        latest_rows,
        sources,
        stuck,
        completed_with_counts,
        [
            _in_sync_condition(status.projections[0], status.head_position, verification),
            _chain_condition(
                verification.events,
                next(((p.message, p.position) for p in verification.by_check("chain")), None),
                verification.anchors,
            ),
            _verify_condition(verification),
        ],
        stuck_condition,
    )


def _projection_counts(
    conn: Connection,
) -> tuple[dict[str, int], list[tuple[str | None, str, int]], int]:
    """Runs by status, transitions by actor and status, and completed runs with records."""
    status_distribution = runs_by_status(conn)
    actor = ingestion_run_transitions.c.actor
    exact_actor = exact_text(actor, conn)  # "Sweeper" is not the sweeper
    sources = conn.execute(
        select(func.min(actor), ingestion_run_transitions.c.to_status, func.count()).group_by(
            exact_actor, ingestion_run_transitions.c.to_status
        )
    )
    completed_with_counts = conn.execute(
        select(func.count()).select_from(ingestion_runs).where(_COMPLETED_WITH_COUNTS)
    ).scalar_one()
    return (
        status_distribution,
        [(actor, str(to_status), int(count)) for actor, to_status, count in sources],
        int(completed_with_counts),
    )


def _facts_as_of(
    ledger: Ledger,
    rule: _StuckRule,
    latest: int,
    position: int,
    at: datetime | None,
    anchors: Sequence[Anchor],
) -> _Facts:
    position = max(0, min(position, ledger.head().last_position))
    generated_at = at or ledger.recorded_at(position) or ledger.clock()
    rows, replayed, poison = replay_until_poison(ledger, position)
    status_distribution = {status: 0 for status in RUN_STATUSES}
    for row in rows.values():
        status_distribution[row["status"]] += 1
    counted: dict[tuple[str | None, str], int] = {}
    for transition in replayed:
        key = (transition.actor, transition.to_status)
        counted[key] = counted.get(key, 0) + 1
    chain = verify_chain(ledger, 1, position)
    return _Facts(
        generated_at,
        {"position": position, "at": isoformat_utc(generated_at)},
        status_distribution,
        sorted(rows.values(), key=lambda row: row["id"], reverse=True)[:latest],
        [(actor, to_status, count) for (actor, to_status), count in counted.items()],
        stuck_runs_as_of(
            ledger,
            position,
            at=generated_at,
            older_than=rule.thresholds.stale_after,
            max_runtime=rule.thresholds.max_runtime,
            overrides=rule.overrides,
        ),
        sum(1 for row in rows.values() if _completed_with_counts(row)),
        [
            *_replay_condition(position, poison),
            _chain_condition(
                chain.checked,
                None if chain.ok else (chain.problem, chain.first_bad_position),
                check_anchors(ledger, anchors) if anchors else (),
            ),
        ],
    )


# A run that succeeded (or partly) with records counted: the report's last condition.
_WITH_DATA = ("success", "partial")
_COMPLETED_WITH_COUNTS = and_(
    ingestion_runs.c.completedAt.is_not(None),
    ingestion_runs.c.status.in_(_WITH_DATA),
    reduce(operator.add, (ingestion_runs.c[name] for name in RECORD_COUNTER_COLUMNS)) > 0,
)


def _completed_with_counts(row: dict[str, Any]) -> bool:
    return (
        row["completedAt"] is not None
        and row["status"] in _WITH_DATA
        and sum(row[name] for name in RECORD_COUNTER_COLUMNS) > 0
    )


def _stuck_condition(stuck: list[StuckRun], rule: _StuckRule) -> Condition:
    judged = f"silent for more than {format_duration(rule.thresholds.stale_after)}"
    if rule.thresholds.max_runtime is not None:
        judged += f" or running for more than {format_duration(rule.thresholds.max_runtime)}"
    if rule.overrides:  # the count of connectors, never their names: a name is anyone's text
        judged += f" (or by its connector's own thresholds: {len(rule.overrides)} set)"
    return Condition(
        "no stuck runs",
        not stuck,
        f"{len(stuck)} open run(s) {judged}" if stuck else f"no open run {judged}",
    )


def _registry_caveat(condition: Condition, registry: list[Problem]) -> Condition:
    """``condition`` (stuck runs, read from ``ledger_runs``) failed when that registry
    disagrees with the events: a run set to ``finished`` by hand is stuck all the same."""
    if not registry:
        return condition
    return Condition(
        condition.name,
        False,
        f"{condition.detail}; but the run registry they are read from "
        f"disagrees with the events: {_first_problems(registry)}",
    )


def _verify_condition(verification: VerifyReport) -> Condition:
    """Everything ``ledger verify`` checks, so that the report never passes what verify
    fails: the registry, the transitions, the stream rules and the immutability triggers have
    no section of their own (a dropped trigger, an edited transition, passed 5/5)."""
    name = "ledger verify finds no problem"
    if not verification.ok:
        return Condition(name, False, _first_problems(verification.problems))
    detail = (
        f"{verification.events} event(s), {verification.runs} run(s): chain, stream rules, "
        "projection, registry, skips and triggers checked"
    )
    triggers = verification.triggers
    if triggers is not None and not triggers.checked:
        detail += f"; triggers NOT CHECKED: {triggers.unchecked_reason}"
    return Condition(name, True, detail)


_PROBLEMS_SHOWN = 3  # in a condition's detail; `ledger verify` lists every one


def _first_problems(problems: list[Problem]) -> str:
    shown = "; ".join(f"[{p.check}] {p.message}" for p in problems[:_PROBLEMS_SHOWN])
    more = len(problems) - _PROBLEMS_SHOWN
    return (
        f"{len(problems)} problem(s): {shown}"
        + (f"; and {more} more" if more > 0 else "")
        + ": run `ledger verify`"
    )


def _replay_condition(position: int, poison: PoisonEventError | None) -> list[Condition]:
    """As of a position, the projection's own sync is not judged, but an event before it that
    the projection cannot apply (not skipped) stopped it then as it would now: a failing
    condition, with the rows before that event."""
    if poison is None:
        return []
    return [
        Condition(
            f"the projection replays to position {position}",
            False,
            f"stopped at position {poison.position}: {poison}",
        )
    ]


def _chain_condition(
    checked: int,
    failure: tuple[str | None, int | None] | None,
    anchors: Sequence[AnchorCheck] = (),
) -> Condition:
    """The hash chain's condition; ``failure``: the first problem found and its position;
    ``anchors``: the anchors checked. The chain alone cannot tell a history rewritten with
    every hash recomputed, or cut at its tail with the head set back, from the real one: the
    detail says so unless anchors kept outside the database were given and held."""
    name = "hash chain verifies"
    if failure is not None:
        message, position = failure
        return Condition(name, False, f"{message} at position {position}")
    lost = [check for check in anchors if not check.ok]
    if lost:
        more = f" (and {len(lost) - 1} more anchor(s) not held)" if len(lost) > 1 else ""
        return Condition(name, False, f"{checked} event(s) checked, but {lost[0].problem}{more}")
    if not anchors:
        return Condition(
            name,
            True,
            f"{checked} event(s) checked; no anchor given: a history rewritten with its "
            "hashes recomputed, or cut at its tail, would pass too (keep `ledger anchor` "
            "lines outside the database and give them with --anchor FILE)",
        )
    latest = max(check.anchor.position for check in anchors)
    return Condition(
        name,
        True,
        f"{checked} event(s) checked; {len(anchors)} anchor(s) held, the latest at position "
        f"{latest}",
    )


def report_passed(report: dict[str, Any]) -> bool:
    return all(condition["passed"] for condition in report["conditions"])


def _skipped_detail(verification: VerifyReport, skips: list[Skip]) -> str:
    """Every event the projection skips (as the projector reads them): the table does not show
    it, whoever decided so. A skip is not hash-chained, so a forged one that matches the ledger
    looks like an operator's: naming each is what lets an auditor tell."""
    if not skips:
        return ""
    runs = {skipped.skip.position: skipped.run_id for skipped in verification.skips}
    return f"; {len(skips)} skipped event(s) not in the table: " + "; ".join(
        f"position {skip.position} ({skip.event_type}"
        + (f", run {runs[skip.position]}" if runs.get(skip.position) is not None else "")
        + f") skipped by {shown_name(skip.actor)}: {quoted(skip.reason)}"
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
        "started": _row_time(row["startedAt"]),
        "completed": _row_time(row["completedAt"]),
        "duration": None if row["duration"] is None else format_duration(row["duration"]),
        "fetched_created_updated_skipped": record_counts(row),
        "error": row["errorMessage"],
    }


def _row_time(value: datetime | None) -> str | None:
    """A time of an ``ingestion_runs`` row as ``jsonable_row`` writes it (whole seconds)."""
    return None if value is None else format_utc_seconds(value, iso=True)


def _utc(value: datetime | None) -> str | None:
    return None if value is None else labelled_utc(value)


def _masked(ledger: Ledger) -> str:
    return mask_url(ledger.url)


def _in_sync_condition(
    projection: ProjectionStatus, head_position: int, verification: VerifyReport
) -> Condition:
    checkpoint = projection.checkpoint
    differences = len(verification.by_check("projection"))
    # Section D counts ingestion_run_transitions: an edited transition is out of sync too.
    transitions = verification.by_check("transitions")
    detail = (
        f"checkpoint {checkpoint.position} of {head_position}; "
        f"{differences} row difference(s) from a replay"
    )
    if transitions:
        detail += (
            f"; {len(transitions)} ingestion_run_transitions difference(s), the first: "
            f"{transitions[0].message}"
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
        and not transitions
        and checkpoint.error_position is None
        and not projection.skips
    )
    return Condition("projection in sync with the ledger", in_sync, detail)
