"""``ledger verify``: everything that can be checked against the ledger itself.

1. the hash chain over all events (I6);
2. the stream rules (I5) and contiguous versions, on the stored data;
3. each projection against a fresh in-memory replay up to its checkpoint, row by row;
4. the write-side run registry against what the events imply;
5. every projection skip: it names a stored event, with that event's type, a reason and an
   actor, and was recorded after the event;
6. the immutability triggers of ``ledger_events``, against their definitions;
7. the anchors given (``--anchor FILE``, ``--expect-head``): the ledger still holds each.

It catches an event altered with the triggers dropped (1), a deleted event (1, 2), an
``ingestion_runs`` row edited by hand, such as the legacy "audit cleanup" UPDATE (3), a forged
skip that does not match the ledger (5), a dropped or redefined trigger (6), and a tail cut
off the ledger with the head and registry set back to match (7, given an anchor kept outside).
A skip forged with the right type, a reason, an actor and a plausible time cannot be told from
an operator's (a skip is not hash-chained): ``ledger report`` names every skipped event.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar, get_args

from sqlalchemy import Connection, select

from forensics.anchors import Anchor, AnchorCheck, check_anchors
from forensics.chain import events_at, verify_chain
from forensics.triggers import TriggerCheck, check_triggers
from ledger import Ledger, LedgerError, RecordedEvent, ValidationError
from ledger.batch_checks import head_ahead_of_clock
from ledger.clock import isoformat_utc
from ledger.errors import StoredRowError
from ledger.reads import find_runs, read_head
from ledger.recorded import LedgerHead
from ledger.rules import RunState, replay_event
from ledger.text import clip
from projections.as_of import replay_as_of
from projections.checkpoints import Skip, swapped_in
from projections.fold import Row, Transition
from projections.queries import all_rows
from projections.schema import (
    PROJECTION_NAME,
    ingestion_run_transitions,
    projection_checkpoints,
    projection_skips,
)

A = TypeVar("A")
B = TypeVar("B")

MAX_DIFFERENCES = 50  # per check: the first ones are what an auditor needs
# A skip's time comes from the operator's clock: allow it what the append clock guard allows.
SKIP_CLOCK_SLACK = timedelta(minutes=5)


# The checks a problem is found by (``Problem.check``), named once: ``transitions`` is part of
# the projection's (3), ``anchor`` the anchors' (7).
Check = Literal[
    "chain", "streams", "registry", "projection", "transitions", "skips", "triggers", "anchor"
]
CHECKS: tuple[Check, ...] = get_args(Check)


@dataclass(frozen=True)
class Problem:
    check: Check
    message: str
    position: int | None = None
    run_id: int | None = None
    column: str | None = None  # a table's column; a trigger's name for ``triggers``

    def where(self) -> list[tuple[str, int | str]]:
        """Where the problem is, for a reader: (``position``, 3), (``run``, 1), (``column``,
        "status"), those known; none for ``triggers``, whose message names its trigger."""
        if self.check == "triggers":
            return []
        found = (("position", self.position), ("run", self.run_id), ("column", self.column))
        return [(name, value) for name, value in found if value is not None]


@dataclass(frozen=True)
class SkippedEvent:
    """A ``projection_skips`` row of any projection: the projection it names (checked: a row
    written around the command may name one that does not exist), the skip, and the run of the
    event it names (None if there is none)."""

    name: str
    skip: Skip
    run_id: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.skip.to_dict(), "run_id": self.run_id}


@dataclass
class VerifyReport:
    events: int = 0
    runs: int = 0
    problems: list[Problem] = field(default_factory=list)
    head: LedgerHead | None = None  # the head the chain was checked against
    skips: list[SkippedEvent] = field(default_factory=list)
    triggers: TriggerCheck | None = None  # None: not looked at (--chain-only)
    anchors: list[AnchorCheck] = field(default_factory=list)
    chain_only: bool = False  # streams, registry, projection, skips, triggers not looked at
    # The head's recorded_at ahead of the ledger's clock beyond the skew guard: said, not a
    # problem (the chain is sound; like triggers NOT CHECKED, it does not change the verdict).
    clock_warning: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def by_check(self, check: Check) -> list[Problem]:
        return [p for p in self.problems if p.check == check]

    def to_dict(self) -> dict[str, Any]:
        """The verdict as JSON: counts (runs None when not looked at), the head checked, the
        triggers, the skips (None when not looked at), the anchors and every problem."""
        head = self.head
        triggers = self.triggers
        return {
            "ok": self.ok,
            "events": self.events,
            "runs": None if self.chain_only else self.runs,
            "head": None if head is None else head.to_dict(),
            "triggers": None
            if triggers is None
            else {
                "checked": triggers.checked,
                "unchecked_reason": triggers.unchecked_reason,
                "expected": triggers.expected,
                "found": triggers.found,
            },
            "skips": None if self.chain_only else [skipped.to_dict() for skipped in self.skips],
            "anchors": [
                {
                    "source": check.anchor.source,
                    "position": check.anchor.position,
                    "hash": check.anchor.hash,
                    "found_hash": check.found_hash,
                    "ok": check.ok,
                }
                for check in self.anchors
            ],
            "problems": [vars(p) for p in self.problems],
            "clock_warning": self.clock_warning,
        }


def verify_all(
    ledger: Ledger, anchors: Sequence[Anchor] = (), chain_only: bool = False
) -> VerifyReport:
    """Every check (or the chain alone), then the ``anchors`` given."""
    report = VerifyReport(chain_only=chain_only)
    chain = verify_chain(ledger)
    report.events = chain.checked
    report.head = chain.head
    if chain.head is not None:
        report.clock_warning = head_ahead_of_clock(chain.head.last_recorded_at, ledger.clock())
    if not chain.ok:
        report.problems.append(
            Problem("chain", chain.problem or "chain broken", position=chain.first_bad_position)
        )
    if not chain_only:
        states, replayed_to, read_to_the_end = _check_streams(ledger, report)
        if read_to_the_end:  # else the registry cannot be compared with what events imply
            with _unreadable_row_is_a_problem("registry", report):
                _check_registry(ledger, states, replayed_to, report)
        report.runs = len(states)
        with _unreadable_row_is_a_problem("projection", report):
            _check_projection(ledger, report)
        _check_skips(ledger, report)
        report.triggers = check_triggers(ledger)
        for trigger, message in report.triggers.problems:
            report.problems.append(Problem("triggers", message, column=trigger))
    if anchors:
        report.anchors = check_anchors(ledger, anchors)
        for anchored in report.anchors:
            if anchored.problem is not None:
                report.problems.append(
                    Problem("anchor", anchored.problem, position=anchored.anchor.position)
                )
    return report


@contextmanager
def _unreadable_row_is_a_problem(check: Check, report: VerifyReport) -> Iterator[None]:
    """A row of ``ledger_runs`` or ``ingestion_runs`` with a time no write stores (edited by
    hand) is one problem of ``check``, which stops there; the other checks still run (it
    ended the whole verify, so the chain's and the triggers' findings went unsaid)."""
    try:
        yield
    except StoredRowError as exc:
        run_id = exc.key if isinstance(exc.key, int) and exc.table != "ledger_head" else None
        report.problems.append(
            Problem(check, f"{exc}; the {check} was checked no further", run_id=run_id)
        )


def _check_streams(ledger: Ledger, report: VerifyReport) -> tuple[dict[int, RunState], int, bool]:
    """Replay the write-side rules over stored events; returns the run states they imply, the
    last position replayed, and whether every stored row could be read."""
    states: dict[int, RunState] = {}
    last = 0
    found = 0
    try:
        for event in ledger.read_all(batch_size=5000):
            if found >= MAX_DIFFERENCES:
                break
            found += _replay(states, event, report)
            last = event.position
    except ValidationError as exc:  # a row no append writes (a time that is no time): tampered
        report.problems.append(
            Problem(
                "streams",
                f"{exc}; the streams were checked up to position {last} only and the "
                "registry not at all",
            )
        )
        return states, last, False
    return states, last, True


def _replay(states: dict[int, RunState], event: RecordedEvent, report: VerifyReport) -> int:
    """Apply one stored event to the run states; returns how many problems it showed."""
    found = 0
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
    # The ledger's one rule of a replay: an event that cannot be applied is a problem, and
    # the run's version and activity still count past it (its state unchanged).
    state, error = replay_event(current, event)
    if state is not None:
        states[event.run_id] = state
    if error is not None:
        report.problems.append(
            Problem("streams", str(error), position=event.position, run_id=event.run_id)
        )
        found += 1
    return found


# Every column of the registry but its key, so a column added later is checked too: each is a
# field of the RunState the events imply (a RunState is one ledger_runs row).
_REGISTRY_COLUMNS = tuple(name for name in RunState.__dataclass_fields__ if name != "run_id")


def _check_registry(
    ledger: Ledger, states: dict[int, RunState], replayed_to: int, report: VerifyReport
) -> None:
    # The registry and the head from one snapshot: an append commits both together.
    def read_registry(conn: Connection) -> tuple[LedgerHead | None, dict[int, RunState]]:
        return read_head(conn), {state.run_id: state for state in find_runs(conn)}

    head_row, stored = ledger.read_in_snapshot("verify", read_registry)
    head = head_row.last_position if head_row else 0
    # The registry was read at a later moment than the events were replayed: bring the states
    # up to that moment (committed events never change, so reading them now is safe).
    if head > replayed_to:
        # Problems past the stream check's cap are not reported (the cap is what the stream
        # check promises); the states are still brought up to date.
        shown, unreported = len(report.by_check("streams")), VerifyReport()
        for event in ledger.read_all(after=replayed_to, limit=head - replayed_to):
            shown += _replay(states, event, report if shown < MAX_DIFFERENCES else unreported)
    found = _Findings(report)
    for run_id, row, state in _side_by_side(stored, states, found):
        if row is None or state is None:
            where = "ledger_runs has no row" if row is None else "no event implies this row"
            found.add(Problem("registry", f"run {run_id}: {where}", run_id=run_id))
            continue
        for column in _REGISTRY_COLUMNS:
            if getattr(row, column) != getattr(state, column):
                found.add(
                    Problem(
                        "registry",
                        f"run {run_id}: ledger_runs.{column} is {_show(getattr(row, column))}, "
                        f"the events imply {_show(getattr(state, column))}",
                        run_id=run_id,
                        column=column,
                    )
                )


def _check_skips(ledger: Ledger, report: VerifyReport) -> None:
    """Each skip must name a stored event, with its type, a reason and an actor, and be
    recorded after the event (``ledger project --skip-position`` checks all that when it
    records one): a row that does not was written around it."""
    with ledger.connect("verify") as conn:
        rows = list(
            conn.execute(
                select(projection_skips).order_by(
                    projection_skips.c.name, projection_skips.c.position
                )
            ).mappings()
        )
    ledger_head = ledger.head()
    head = ledger_head.last_position
    stored = events_at(ledger, (row["position"] for row in rows))
    # The ledger's time as a skip records it (never behind the last recorded_at, which a
    # clock set back leaves ahead of the clock): an honest skip made then is not "future".
    now = ledger.clock()
    recorded = ledger_head.last_recorded_at
    latest = (now if recorded is None else max(now, recorded)) + SKIP_CLOCK_SLACK
    found = _Findings(report)
    for row in rows:
        ref = stored.get(row["position"])
        name, skip, run_id = row["name"], Skip.of_row(row), ref.run_id if ref else None
        report.skips.append(SkippedEvent(name, skip, run_id))
        where = f"projection_skips {name} position {skip.position}"
        wrong = []
        if name != PROJECTION_NAME:
            # Only the operator command writes skips, always under a projection's own name;
            # MariaDB's collation would let a near miss ("INGESTION_RUNS", a trailing space)
            # count for the projector all the same.
            wrong.append(f"it names projection {name!r}, which does not exist")
        if ref is None:
            wrong.append(f"no event is stored at that position (the ledger head is at {head})")
        elif ref.type != skip.event_type:
            wrong.append(
                f"it records type {skip.event_type!r}, the event stored there is {ref.type} "
                f"(run {ref.run_id})"
            )
        if not (skip.reason or "").strip():
            wrong.append("it has no reason")
        if not (skip.actor or "").strip():
            wrong.append("it has no actor")
        if ref is not None and skip.skipped_at < ref.recorded_at:
            wrong.append(
                f"it was skipped at {isoformat_utc(skip.skipped_at)}, before the event was "
                f"recorded ({isoformat_utc(ref.recorded_at)})"
            )
        if skip.skipped_at > latest:
            wrong.append(f"it was skipped at {isoformat_utc(skip.skipped_at)}, in the future")
        for message in wrong:
            if found.full:
                return
            found.add(Problem("skips", f"{where}: {message}", skip.position, run_id))


def _check_projection(ledger: Ledger, report: VerifyReport) -> None:
    # The checkpoint and the rows from one snapshot: a projector batch committing meanwhile
    # moves both together, never one without the other. On a Galera cluster a rebuild's swap
    # through another node aborts the snapshot (1213): it is read again, not a finding.
    checkpoint, actual, stored_transitions = ledger.read_in_snapshot("verify", _projection_state)
    try:
        expected, transitions = replay_as_of(ledger, checkpoint or 0)
    except LedgerError as exc:
        report.problems.append(Problem("projection", f"{PROJECTION_NAME}: cannot replay: {exc}"))
        return
    _check_transitions(transitions, stored_transitions, report)
    found = _Findings(report)
    for run_id, want, have in _side_by_side(expected, actual, found):
        for column, message in _row_differences(want, have):
            found.add(
                Problem(
                    "projection",
                    f"ingestion_runs id {run_id}: {message}",
                    run_id=run_id,
                    column=column,
                )
            )


def _projection_state(
    conn: Connection,
) -> tuple[int | None, dict[int, Row], dict[int, dict[str, Any]]]:
    """The projection's checkpoint, its rows by run id and its transitions by position."""
    marks = conn.execute(
        select(projection_checkpoints.c.position, projection_checkpoints.c.rebuild_position).where(
            projection_checkpoints.c.name == PROJECTION_NAME
        )
    ).one_or_none()
    checkpoint = None if marks is None else marks.position
    if marks is not None and swapped_in(conn, marks.rebuild_position):
        # A rebuild killed between its RENAME and the checkpoint's move: the live tables hold
        # the marked position, which the next projector settles on.
        checkpoint = marks.rebuild_position
    rows = all_rows(conn)
    transitions = {
        row["position"]: dict(row)
        for row in conn.execute(select(ingestion_run_transitions)).mappings()
    }
    return checkpoint, rows, transitions


def _check_transitions(
    expected: list[Transition], stored: dict[int, dict[str, Any]], report: VerifyReport
) -> None:
    """``ingestion_run_transitions`` against the replay, row by row (keyed by position)."""
    replayed = {t.position: t.as_row() for t in expected}
    found = _Findings(report)
    for position, want, have in _side_by_side(replayed, stored, found):
        if want is None or have is None:
            what = "is missing" if have is None else "has no event behind it"
            run_id = (want or have or {}).get("run_id")
            message = f"ingestion_run_transitions position {position} {what}"
            found.add(Problem("transitions", message, position, run_id))
            continue
        for column, value in want.items():
            if have[column] != value:
                found.add(
                    Problem(
                        "transitions",
                        f"ingestion_run_transitions position {position}: {column} is "
                        f"{_show(have[column])}, the events give {_show(value)}",
                        position,
                        want["run_id"],
                        column,
                    )
                )


@dataclass
class _Findings:
    """The problems one check adds to the report, counted: a check stops looking once it has
    found :data:`MAX_DIFFERENCES`."""

    report: VerifyReport
    count: int = 0

    @property
    def full(self) -> bool:
        return self.count >= MAX_DIFFERENCES

    def add(self, problem: Problem) -> None:
        self.report.problems.append(problem)
        self.count += 1


def _side_by_side(
    first: Mapping[int, A], second: Mapping[int, B], found: _Findings
) -> Iterator[tuple[int, A | None, B | None]]:
    """Every key of either side, in order, with what each side holds there (None: nothing),
    until the check has found enough."""
    for key in sorted(set(first) | set(second)):
        if found.full:
            return
        yield key, first.get(key), second.get(key)


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
    """A stored value as a message shows it: text quoted (its spaces visible), a time as
    ISO-8601 (naive times as stored, UTC ones with Z), NULL for None, clipped to 80."""
    if value is None:
        shown = "NULL"
    elif isinstance(value, datetime):
        shown = isoformat_utc(value) if value.tzinfo is not None else value.isoformat()
    elif isinstance(value, str | bytes):
        shown = repr(value)
    else:
        shown = str(value)
    return clip(shown, 80, ellipsis="...")
