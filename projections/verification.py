"""``ledger verify``: everything that can be checked against the ledger itself.

1. the hash chain over all events (I6);
2. the stream rules (I5) and contiguous versions, on the stored data;
3. each projection against a fresh in-memory replay up to its checkpoint, row by row;
4. the write-side run registry against what the events imply.

It catches an event altered with the triggers dropped (1), a deleted event (1, 2), and an
``ingestion_runs`` row edited by hand, such as the legacy "audit cleanup" UPDATE (3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from ledger import Ledger, LedgerError, verify_chain
from ledger.database import translate_errors
from ledger.rules import RunState, apply_event
from ledger.schema import ledger_runs
from projections.as_of import runs_as_of
from projections.fold import Row
from projections.projector import Projector
from projections.queries import all_rows
from projections.schema import PROJECTION_NAME

MAX_DIFFERENCES = 50  # per check: the first ones are what an auditor needs


@dataclass(frozen=True)
class Problem:
    check: str  # chain | streams | projection | registry
    message: str
    position: int | None = None
    run_id: int | None = None
    column: str | None = None


@dataclass
class VerifyReport:
    events: int = 0
    runs: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def by_check(self, check: str) -> list[Problem]:
        return [p for p in self.problems if p.check == check]


def verify_all(ledger: Ledger) -> VerifyReport:
    report = VerifyReport()
    chain = verify_chain(ledger)
    report.events = chain.checked
    if not chain.ok:
        report.problems.append(
            Problem("chain", chain.problem or "chain broken", position=chain.first_bad_position)
        )
    states = _check_streams(ledger, report)
    report.runs = len(states)
    _check_registry(ledger, states, report)
    _check_projection(ledger, report)
    return report


def _check_streams(ledger: Ledger, report: VerifyReport) -> dict[int, RunState]:
    """Replay the write-side rules over stored events; returns the run states they imply."""
    states: dict[int, RunState] = {}
    found = 0
    for event in ledger.read_all(batch_size=5000):
        if found >= MAX_DIFFERENCES:
            break
        current = states.get(event.run_id)
        expected_version = (current.version if current else 0) + 1
        if event.version != expected_version:
            report.problems.append(
                Problem(
                    "streams",
                    f"run {event.run_id}: version {event.version} where "
                    f"{expected_version} was due (an event is missing or out of place)",
                    position=event.position,
                    run_id=event.run_id,
                )
            )
            found += 1
        try:
            states[event.run_id] = apply_event(
                current, event.event, event.run_id, event.recorded_at
            )
        except LedgerError as exc:
            report.problems.append(
                Problem("streams", str(exc), position=event.position, run_id=event.run_id)
            )
            found += 1
            if current is not None:  # keep counting versions past the bad event
                states[event.run_id] = RunState(**{**vars(current), "version": event.version})
    return states


# Every column of the registry but its key, so a column added later is checked too: each is a
# field of the RunState the events imply.
_REGISTRY_COLUMNS = tuple(c.name for c in ledger_runs.columns if c.name != "run_id")


def _check_registry(ledger: Ledger, states: dict[int, RunState], report: VerifyReport) -> None:
    with translate_errors(ledger.url, "verify"), ledger.engine.connect() as conn:
        stored = {row["run_id"]: row for row in conn.execute(select(ledger_runs)).mappings()}
    found = 0
    for run_id in sorted(set(stored) | set(states)):
        if found >= MAX_DIFFERENCES:
            return
        row, state = stored.get(run_id), states.get(run_id)
        if row is None or state is None:
            where = "ledger_runs has no row" if row is None else "no event implies this row"
            report.problems.append(Problem("registry", f"run {run_id}: {where}", run_id=run_id))
            found += 1
            continue
        for column in _REGISTRY_COLUMNS:
            if row[column] != getattr(state, column):
                report.problems.append(
                    Problem(
                        "registry",
                        f"run {run_id}: ledger_runs.{column} is {row[column]!r}, the "
                        f"events imply {getattr(state, column)!r}",
                        run_id=run_id,
                        column=column,
                    )
                )
                found += 1


def _check_projection(ledger: Ledger, report: VerifyReport) -> None:
    checkpoint = Projector(ledger).checkpoint().position
    try:
        expected = runs_as_of(ledger, checkpoint)
    except LedgerError as exc:
        report.problems.append(Problem("projection", f"{PROJECTION_NAME}: cannot replay: {exc}"))
        return
    actual = all_rows(ledger)
    found = 0
    for run_id in sorted(set(expected) | set(actual)):
        if found >= MAX_DIFFERENCES:
            return
        differences = _row_differences(expected.get(run_id), actual.get(run_id))
        for column, message in differences:
            report.problems.append(
                Problem(
                    "projection",
                    f"ingestion_runs id {run_id}: {message}",
                    run_id=run_id,
                    column=column,
                )
            )
            found += 1


def _row_differences(expected: Row | None, actual: Row | None) -> list[tuple[str | None, str]]:
    if expected is None:
        return [(None, "row exists but no event created it")]
    if actual is None:
        return [(None, "row is missing (the events create it)")]
    return [
        (column, f"{column} is {_show(actual.get(column))}, the events give {_show(value)}")
        for column, value in expected.items()
        if actual.get(column) != value
    ]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
