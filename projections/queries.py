"""Reads of the live read-model tables (what ``ledger runs`` shows without ``--as-of``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import Connection, func, select

from ledger import Ledger, UnknownRunError
from ledger.clock import format_utc_seconds
from ledger.dialects import same_text
from ledger.reads import chunks
from ledger.rules import RunState, state_as_of
from ledger.schema import MAX_POSITION
from ledger.stored_rows import named_rows
from projections.as_of import resolve_position, run_as_of, skips_up_to
from projections.checkpoints import skipped_positions
from projections.errors import PoisonEventError
from projections.fold import Row, Transition, fold_events, normalise
from projections.schema import (
    PROJECTION_NAME,
    RUN_STATUSES,
    ingestion_run_transitions,
    ingestion_runs,
)


@dataclass(frozen=True)
class RunFilter:
    status: str | None = None
    connector: str | None = None
    source_id: int | None = None
    limit: int = 50
    before: int | None = None  # only run ids below this one (the API's paging cursor)

    def matches(self, row: Row) -> bool:
        return (
            (self.before is None or row["id"] < self.before)
            and (self.status is None or row["status"] == self.status)
            and (self.connector is None or row["connectorName"] == self.connector)
            and (self.source_id is None or row["sourceId"] == self.source_id)
        )

    def apply(self, rows: list[Row]) -> list[Row]:
        """Matching rows, newest run id first, at most ``limit``."""
        kept = sorted((r for r in rows if self.matches(r)), key=lambda r: r["id"], reverse=True)
        return kept[: self.limit]


def list_runs(ledger: Ledger, run_filter: RunFilter) -> list[Row]:
    table = ingestion_runs
    # The page's ids first, from the filter's index alone, then their rows (a deferred join):
    # asked for whole rows, MariaDB read every run of a status below ``before`` through the
    # status index and sorted them (the second page of a status filter over 1,000,000 runs:
    # 0.3-2.5 s, reading up to 330,000 rows for 51); asked for ids, it reads the index's
    # (status, id) range backwards and stops after the page.
    ids = select(table.c.id).order_by(table.c.id.desc()).limit(run_filter.limit)
    if run_filter.status is not None:
        ids = ids.where(table.c.status == run_filter.status)
    if run_filter.connector is not None:
        # Exact on every backend, as it is for --as-of (RunFilter.matches).
        ids = ids.where(same_text(table.c.connectorName, run_filter.connector, ledger))
    if run_filter.source_id is not None:
        ids = ids.where(table.c.sourceId == run_filter.source_id)
    if run_filter.before is not None:
        ids = ids.where(table.c.id < run_filter.before)
    page = ids.subquery("page")
    query = select(table).join(page, table.c.id == page.c.id).order_by(table.c.id.desc())

    # Read again if a rebuild's swap through another Galera node aborts it (read_in_snapshot).
    def read(conn: Connection) -> list[Row]:
        with named_rows(conn, table):
            return [normalise(row) for row in conn.execute(query).mappings()]

    return ledger.read_in_snapshot("read", read)


def get_run(ledger: Ledger, run_id: int) -> tuple[Row | None, list[Transition]]:
    """One row of ``ingestion_runs`` and its status transitions, in order; no row when the run
    is not projected yet. Raises :class:`UnknownRunError` if the ledger has no such run."""

    def read(conn: Connection) -> tuple[Row | None, list[Transition]]:
        with named_rows(conn, ingestion_runs):
            found = (
                conn.execute(select(ingestion_runs).where(ingestion_runs.c.id == run_id))
                .mappings()
                .one_or_none()
            )
            row = None if found is None else normalise(found)
        transitions = [
            Transition(**{k: t[k] for k in Transition.__dataclass_fields__})
            for t in conn.execute(
                select(ingestion_run_transitions)
                .where(ingestion_run_transitions.c.run_id == run_id)
                .order_by(ingestion_run_transitions.c.position)
            ).mappings()
        ]
        return row, transitions

    # The row and its transitions from one moment, read again if a rebuild's swap through
    # another Galera node aborts the read (read_in_snapshot).
    row, transitions = ledger.read_in_snapshot("read", read)
    if row is None:
        if ledger.run(run_id) is None:
            raise UnknownRunError(run_id)
        return None, transitions
    return row, transitions


def all_rows(conn: Connection) -> dict[int, Row]:
    """Every row of ``ingestion_runs``, by id, on the caller's connection (``ledger verify``
    compares them with a replay in the snapshot it reads the checkpoint in)."""
    with named_rows(conn, ingestion_runs):
        return {
            row["id"]: normalise(row) for row in conn.execute(select(ingestion_runs)).mappings()
        }


def rows_by_id(conn: Connection, run_ids: Sequence[int]) -> dict[int, Row]:
    """The ``ingestion_runs`` rows of ``run_ids`` (those projected), by id: :func:`all_rows`
    for a page of runs, read in IN lists of :data:`ledger.reads.IN_CHUNK`."""
    found: dict[int, Row] = {}
    with named_rows(conn, ingestion_runs):
        for part in chunks(run_ids):
            query = select(ingestion_runs).where(ingestion_runs.c.id.in_(part))
            found.update((row["id"], normalise(row)) for row in conn.execute(query).mappings())
    return found


def runs_by_status(conn: Connection) -> dict[str, int]:
    """How many rows of ``ingestion_runs`` have each status, every status named (in
    :data:`projections.schema.RUN_STATUSES` order), on the caller's connection."""
    query = select(ingestion_runs.c.status, func.count()).group_by(ingestion_runs.c.status)
    counts = {str(status): int(count) for status, count in conn.execute(query)}
    return {status: counts.get(status, 0) for status in RUN_STATUSES}


# --- runs live or as of a past moment, one call each (the CLI, the API and the web)


@dataclass(frozen=True)
class RunsView:
    """A page of rows of ``ingestion_runs``: the live table (``position`` None), or a replay
    of the ledger up to ``position``; ``more`` when further rows match after the page."""

    rows: list[Row]
    position: int | None
    more: bool = False

    @property
    def next_before(self) -> int | None:
        """The next page's ``RunFilter.before`` (the API's ``cursor``, the web view's
        ``before``): the last row's id; None on the last page."""
        return int(self.rows[-1]["id"]) if self.more else None

    def jsonable(self) -> list[dict[str, Any]]:
        return [jsonable_row(row) for row in self.rows]


def not_projected_message(run_id: int) -> str:
    """What a reader is told of a run the ledger has but ``ingestion_runs`` does not yet."""
    return (
        f"run {run_id} is in the ledger but not yet in ingestion_runs: the projection is behind "
        "(is a projector running? `ledger project` catches up)"
    )


def not_started_message(run_id: int, position: int) -> str:
    """What a reader is told of a run asked for as of a position before its RunStarted."""
    return f"run {run_id} did not exist yet as of position {position}"


def start_skipped_message(run_id: int, position: int | None) -> str:
    """What a reader is told of a run that had started (as of a position, or now: None) but
    has no row: the projection skips its RunStarted (an operator's skip)."""
    when = "" if position is None else f" as of position {position}"
    return (
        f"run {run_id} {'is' if position is None else 'was'} in the ledger{when} but not in "
        "ingestion_runs: the projection skips its RunStarted"
    )


@dataclass(frozen=True)
class RunView:
    """One run's row (None: not in the table yet, or not started yet at ``position``) and its
    status transitions: live (``position`` None), or replayed up to ``position``; and its
    write-side state (``ledger_runs``) at the same moment (None: not started yet then)."""

    row: Row | None
    transitions: list[Transition]
    position: int | None
    state: RunState | None = None
    start_skipped: bool = False  # live, no row: the projection skips its RunStarted

    @property
    def not_started(self) -> bool:
        """Asked as of a position before its RunStarted: the ledger had no such run then (the
        CLI's usage error, the API's 404)."""
        return self.position is not None and self.state is None

    def note(self, run_id: int) -> str | None:
        """Why the run has no row, None when it has one: the projection is behind (live), the
        run had not started yet (:attr:`not_started`), or the projection skips its RunStarted
        (as of a position). The one rule the CLI, the API and the web view tell it by."""
        if self.row is not None:
            return None
        if self.position is None:
            if self.start_skipped:
                return start_skipped_message(run_id, None)
            return not_projected_message(run_id)
        if self.state is None:
            return not_started_message(run_id, self.position)
        return start_skipped_message(run_id, self.position)

    def to_dict(self, run_id: int) -> dict[str, Any]:
        """The legacy row (null while the projection is behind), the write-side state and the
        position they are as of (null: live)."""
        return {
            "run_id": run_id,
            "as_of_position": self.position,
            "row": None if self.row is None else jsonable_row(self.row),
            "ledger": None if self.state is None else self.state.to_dict(),
            "projected": self.row is not None,
            "note": self.note(run_id),
        }


def find_runs(
    ledger: Ledger,
    run_filter: RunFilter,
    as_of: datetime | None = None,
    at_position: int | None = None,
) -> RunsView:
    """At most ``run_filter.limit`` of the rows it selects, newest first, and whether more
    follow: live, or as of a time or a position."""
    # One row more than the page, to know whether another page follows. A limit of
    # MAX_POSITION already exceeds any number of runs (their ids are below it), and one more
    # would overflow SQLite's 64-bit LIMIT.
    probe = replace(run_filter, limit=min(run_filter.limit + 1, MAX_POSITION))
    position = None
    if as_of is None and at_position is None:
        rows = list_runs(ledger, probe)
    else:
        position = resolve_position(ledger, as_of, at_position)
        rows = page_as_of(ledger, position, probe)
    more = len(rows) > run_filter.limit
    return RunsView(rows[: run_filter.limit], position, more)


# How many runs a page as of a position folds at first; each further read doubles it, up to
# the IN-list chunk, when a filter on the runs' status there passes few of them.
_FIRST_RUNS = 64
_MOST_RUNS = 4096


def page_as_of(ledger: Ledger, position: int, run_filter: RunFilter) -> list[Row]:
    """``run_filter.apply`` of every run's row as of ``position`` (what
    :func:`projections.as_of.runs_as_of` replays from the whole history), from the events up
    to it of the newest runs that existed then, some runs at a time, until the page is full: a
    page as of any moment reads about its own runs' events (a run's row depends on its own
    events only), not the millions before it. Raises the :class:`PoisonEventError` of the first
    event of those runs that cannot be applied (one of another run stops no page of these)."""
    if position <= 0:
        return []
    skipped = skips_up_to(ledger, position)
    rows: list[Row] = []
    before, size = run_filter.before, _FIRST_RUNS
    while len(rows) < run_filter.limit:
        ids = ledger.run_ids_started_by(
            position,
            connector_name=run_filter.connector,
            source_id=run_filter.source_id,
            before=before,
            limit=size,
        )
        if not ids:
            break
        folded: dict[int, Row] = {}
        poisons: list[PoisonEventError] = []
        # Some runs' events at a time, each read folded before the next: thousands of runs
        # with long histories (a heartbeat a minute) would not fit in memory at once.
        for histories in ledger.read_runs_in_turn(ids, up_to=position):
            # In position order, as the projector folds them: a read's first poison is its
            # earliest, and the earliest of them all is the one the projector stopped at.
            events = sorted(
                (e for run in histories.values() for e in run), key=attrgetter("position")
            )
            outcome = fold_events(folded, events, skipped)
            if outcome.poison is not None:
                poisons.append(outcome.poison)
        if poisons:
            raise min(poisons, key=attrgetter("position"))
        rows += run_filter.apply(list(folded.values()))  # below the ids of the rows before
        before, size = ids[-1], min(2 * size, _MOST_RUNS)
    return rows[: run_filter.limit]


def find_run(
    ledger: Ledger, run_id: int, as_of: datetime | None = None, at_position: int | None = None
) -> RunView:
    """One run, its transitions and its write-side state: live, or as of a time or a
    position. Raises :class:`UnknownRunError` if the ledger has no such run."""
    if as_of is None and at_position is None:
        row, transitions = get_run(ledger, run_id)
        state = ledger.run(run_id)
        skipped = row is None and state is not None and _start_skipped(ledger, run_id)
        return RunView(row, transitions, None, state, skipped)
    position = resolve_position(ledger, as_of, at_position)
    # Its events up to the position only: a run's heartbeats after it (tens of thousands in a
    # long run) were read and decoded to be dropped.
    history = ledger.read_runs([run_id], up_to=position).get(run_id, [])
    if not history:
        if not ledger.read_run(run_id, limit=1):
            raise UnknownRunError(run_id)
        return RunView(None, [], position, None)  # it started after the position
    row, transitions = run_as_of(ledger, run_id, position, history)
    return RunView(row, transitions, position, state_as_of(history, position))


def _start_skipped(ledger: Ledger, run_id: int) -> bool:
    """Does the projection skip this run's RunStarted (so it has no row however far the
    projector goes)? Asked only of a run the ledger has and the table does not."""
    first = ledger.read_run(run_id, limit=1)
    if not first:
        return False
    position = first[0].position
    with ledger.connect() as conn:
        return bool(skipped_positions(conn, PROJECTION_NAME, position, position))


def jsonable_row(row: Row) -> dict[str, Any]:
    """A row keyed by the legacy column names; times as UTC ISO-8601 in whole seconds (what
    the legacy TIMESTAMP columns hold)."""
    return {
        key: (format_utc_seconds(value, iso=True) if isinstance(value, datetime) else value)
        for key, value in row.items()
    }


# --- what the web view's pages count


def status_counts_by_day(ledger: Ledger, since: datetime) -> dict[str, dict[str, int]]:
    """How many runs started on each UTC day from ``since`` on, by status: ``{"2026-01-28":
    {"success": 3, …}}``, days in order (an indexed range on ``startedAt``)."""
    day = func.date(ingestion_runs.c.startedAt)
    query = (
        select(day, ingestion_runs.c.status, func.count())
        .where(ingestion_runs.c.startedAt >= since)
        .group_by(day, ingestion_runs.c.status)
    )
    counts: dict[str, dict[str, int]] = {}
    rows = ledger.read_in_snapshot("read", lambda conn: conn.execute(query).all())
    for when, status, count in rows:
        key = str(when)[:10]
        counts.setdefault(key, {s: 0 for s in RUN_STATUSES})[str(status)] = int(count)
    return dict(sorted(counts.items()))
