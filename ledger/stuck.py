"""Stuck detection (I10): a query over runs without a terminal event, on the ledger itself.

A run is stuck when it has no RunFinished and no RunTimedOut (``ledger_runs.state = 'open'``)
and either its last activity (the latest ``occurred_at`` of its events, heartbeats included) is
older than ``older_than``, or it started more than ``max_runtime`` ago. The write-side registry
is kept by every append in the same transaction as the events, so this works with the projector
stopped, and the ``(state, last_event_at)`` / ``(state, started_at)`` indexes make its cost
follow the number of open runs, not the length of history.

:func:`stuck_page` lists the same runs a page at a time, after a :class:`StuckCursor`: each
connector's thresholds are part of its SQL, so a page reads its own rows, not every stuck run
before it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any

from sqlalchemy import ColumnElement, and_, func, not_, or_, select

from ledger import arguments
from ledger.clock import isoformat_utc
from ledger.dialects import Bound, same_text
from ledger.durations import parse_duration
from ledger.errors import ValidationError
from ledger.rules import OPEN, RunState, replay_event
from ledger.schema import MAX_POSITION, ledger_runs
from ledger.store import Ledger
from ledger.stored_rows import named_rows

# The legacy cleanup job's rule, also as the CLI's options and the config file write it.
DEFAULT_STALE_AFTER_TEXT = "60m"
DEFAULT_STALE_AFTER = parse_duration(DEFAULT_STALE_AFTER_TEXT)


@dataclass(frozen=True)
class Thresholds:
    """When an open run counts as stuck. ``max_runtime`` None: no limit on total run time."""

    stale_after: timedelta = DEFAULT_STALE_AFTER
    max_runtime: timedelta | None = None

    def __post_init__(self) -> None:
        # ValidationErrors naming the field: a number of seconds or None was a TypeError,
        # a century and more an OverflowError out of the query.
        arguments.threshold(self.stale_after, "stale_after")
        if self.max_runtime is not None:
            arguments.threshold(self.max_runtime, "max_runtime")


@dataclass(frozen=True)
class StuckRun:
    run_id: int
    source_id: int
    connector_name: str
    started_at: datetime
    last_event_at: datetime
    version: int
    rule: str  # "stale" or "max_runtime"
    threshold: timedelta  # the threshold of that rule, for this run's connector

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON (times in UTC ISO-8601; the threshold is the caller's own)."""
        return {
            "run_id": self.run_id,
            "source_id": self.source_id,
            "connector_name": self.connector_name,
            "started_at": isoformat_utc(self.started_at),
            "last_event_at": isoformat_utc(self.last_event_at),
            "version": self.version,
            "rule": self.rule,
        }


def stuck_runs(
    ledger: Ledger,
    older_than: timedelta = DEFAULT_STALE_AFTER,
    max_runtime: timedelta | None = None,
    now: datetime | None = None,
    overrides: Mapping[str | tuple[str, int], Thresholds] | None = None,
    run_ids: Collection[int] | None = None,
) -> list[StuckRun]:
    """Open runs that are stuck, oldest activity first. ``overrides`` maps a connector name,
    or a (connector name, source id) pair, to its own thresholds; the pair wins over the name,
    and the defaults apply to every other run. ``run_ids``: only which of those runs are stuck
    (a page of runs asks about its own rows: every stuck run read for each page of 50 made
    its time grow with the number of stuck runs)."""
    default = Thresholds(older_than, max_runtime)
    overrides = _checked_overrides(overrides)
    if run_ids is not None:
        run_ids = arguments.run_ids(run_ids)
        if not run_ids:
            return []
    now = ledger.clock() if now is None else arguments.clock_time(now, "now")
    # One indexed scan of open runs with the loosest cut-offs; each run's own connector
    # thresholds are then applied to that short list.
    query = (
        select(ledger_runs)
        .where(ledger_runs.c.state == OPEN, _loosest_cutoffs(now, default, overrides or {}))
        .order_by(ledger_runs.c.last_event_at, ledger_runs.c.run_id)
    )
    if run_ids is not None:
        query = query.where(ledger_runs.c.run_id.in_(sorted(set(run_ids))))
    with ledger.connect("stuck query") as conn, named_rows(conn, ledger_runs):
        rows = conn.execute(query).mappings().all()
    return _stuck_among([RunState(**row) for row in rows], now, default, overrides or {})


@dataclass(frozen=True)
class StuckCursor:
    """Where a page of stuck runs ends: the last run's place in the stuck query's order
    (``last_event_at``, ``run_id``). The time is carried, not looked up from the run: a run
    active again between two pages moves, and the next page would start from its new place.
    ``position``: for the pages as of a moment, the position they stand at (a time names the
    last position recorded by it, and an append in flight as it was read, recorded by then
    and committed after, would move the next page to another moment). ``judged``: when those
    pages are judged, the first page's time (a moment asked as a time ahead of a clock that
    stepped back is judged now, at a position no time names: pinned by its position alone, the
    later pages were judged at their own now, and a run the first page's count left out, stuck
    since, came on a later page)."""

    last_event_at: datetime
    run_id: int
    position: int | None = None
    judged: datetime | None = None

    def encode(self) -> str:
        """``MICROSECONDS-RUNID``: the last activity in microseconds since the Unix epoch (UTC),
        then the run id, then ``~POSITION`` for a page as of a moment, and ``-MICROSECONDS``
        when it is judged at a time of its own; ASCII digits (and ``-`` and ``~``, unreserved
        in a URL) only, so it goes in a URL as it is."""
        text = f"{_epoch_microseconds(self.last_event_at)}-{self.run_id}"
        if self.position is None:
            return text
        text = f"{text}~{self.position}"
        return text if self.judged is None else f"{text}-{_epoch_microseconds(self.judged)}"

    @classmethod
    def decode(cls, text: str) -> StuckCursor:
        """The cursor :meth:`encode` wrote; anything else is a :class:`ValidationError`."""
        text = arguments.text(text, "cursor")
        place, pinned, moment = text.partition("~")
        micros, _, run_id = place.partition("-")
        position, judged, judged_micros = moment.partition("-")
        stands_at = int(position) if pinned and _digits(position, 19) else None
        placed = _digits(micros, 18) and _digits(run_id, 10)
        well_pinned = not pinned or (stands_at is not None and stands_at <= MAX_POSITION)
        well_judged = not judged or _digits(judged_micros, 18)
        if placed and well_pinned and well_judged:
            try:
                return cls(
                    _EPOCH + timedelta(microseconds=int(micros)),
                    int(run_id),
                    stands_at,
                    _EPOCH + timedelta(microseconds=int(judged_micros)) if judged else None,
                )
            except OverflowError:  # past the year 9999
                pass
        raise ValidationError(
            f"cursor: not a cursor of the stuck runs' pages: {text[:40]!r} (give the one the "
            "previous page named)"
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_microseconds(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _digits(text: str, most: int) -> bool:
    """ASCII digits, one to ``most`` of them (``str.isdigit`` takes "²" and "٣")."""
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


@dataclass(frozen=True)
class StuckPage:
    """A page of stuck runs, in the stuck query's order. ``next``: where the following page
    starts (None on the last). ``total``: every stuck run's count, when it was asked for."""

    runs: list[StuckRun]
    next: StuckCursor | None
    total: int | None = None


def stuck_page(
    ledger: Ledger,
    limit: int,
    after: StuckCursor | None = None,
    older_than: timedelta = DEFAULT_STALE_AFTER,
    max_runtime: timedelta | None = None,
    now: datetime | None = None,
    overrides: Mapping[str | tuple[str, int], Thresholds] | None = None,
    count: bool = False,
) -> StuckPage:
    """At most ``limit`` of the runs :func:`stuck_runs` finds (same arguments), those after
    ``after`` in its order. Each page is judged at its own ``now``: between two pages a run
    that ended or was active again drops out, and one that became stuck since shows if its
    place is after the cursor; no run is listed twice unless its last activity moved past the
    cursor (a run stuck by ``max_runtime`` that was active again). ``count``: also count every
    stuck run (one COUNT in the database: no rows sent back)."""
    limit = arguments.whole_number(limit, "limit", least=None)
    if limit < 1:
        raise ValidationError(f"limit: must be 1 or more, got {limit}")
    if after is not None and not isinstance(after, StuckCursor):
        raise arguments.refused("after", "a StuckCursor (StuckCursor.decode reads its text)")
    if after is not None and after.position is not None:
        raise ValidationError(
            f"cursor: a cursor of the stuck runs as of position {after.position}: give the "
            "as_of or at_position of the page that named it"
        )
    default = Thresholds(older_than, max_runtime)
    overrides = _checked_overrides(overrides)
    now = ledger.clock() if now is None else arguments.clock_time(now, "now")
    with ledger.connect("stuck query") as conn, named_rows(conn, ledger_runs):
        stuck = and_(ledger_runs.c.state == OPEN, _stuck_condition(conn, now, default, overrides))
        query = select(ledger_runs).where(stuck)
        if after is not None:
            query = query.where(
                or_(
                    ledger_runs.c.last_event_at > after.last_event_at,
                    and_(
                        ledger_runs.c.last_event_at == after.last_event_at,
                        ledger_runs.c.run_id > after.run_id,
                    ),
                )
            )
        # One row more than the page: whether another page follows (MAX_POSITION is more
        # than any number of runs, and one more would overflow SQLite's 64-bit LIMIT).
        query = query.order_by(ledger_runs.c.last_event_at, ledger_runs.c.run_id)
        rows = conn.execute(query.limit(min(limit + 1, MAX_POSITION))).mappings().all()
        total = None
        if count:
            total = conn.execute(select(func.count()).where(stuck)).scalar_one()
    runs = _stuck_among([RunState(**row) for row in rows[:limit]], now, default, overrides)
    following = None
    if len(rows) > limit:
        last = rows[limit - 1]  # the last read, even if its own thresholds left it out
        following = StuckCursor(last["last_event_at"], last["run_id"])
    return StuckPage(runs, following, total)


def _stuck_condition(
    bind: Bound,
    now: datetime,
    default: Thresholds,
    overrides: Mapping[str | tuple[str, int], Thresholds],
) -> ColumnElement[bool]:
    """:func:`_stuck_among`'s rule in SQL: each run held to its (connector, source) pair's
    thresholds, else its connector name's, else ``default``; names compared exactly (MySQL's
    collation takes "CSV" for "csv", the mapping does not). The loosest cut-offs come first,
    for the ``(state, last_event_at)`` index."""
    connector, source = ledger_runs.c.connector_name, ledger_runs.c.source_id
    pairs = {key: limits for key, limits in overrides.items() if isinstance(key, tuple)}
    names = {key: limits for key, limits in overrides.items() if isinstance(key, str)}

    def pair_of(key: tuple[str, int]) -> ColumnElement[bool]:
        return and_(same_text(connector, key[0], bind), source == key[1])

    def name_of(name: str) -> ColumnElement[bool]:
        return same_text(connector, name, bind)

    branches = [and_(pair_of(key), _past(now, limits)) for key, limits in pairs.items()]
    for name, limits in names.items():
        own_pairs = [pair_of(key) for key in pairs if key[0] == name]
        branches.append(and_(name_of(name), *map(not_, own_pairs), _past(now, limits)))
    overridden = [*map(pair_of, pairs), *map(name_of, names)]
    branches.append(and_(*map(not_, overridden), _past(now, default)))
    return and_(_loosest_cutoffs(now, default, overrides), or_(*branches))


def _loosest_cutoffs(
    now: datetime, default: Thresholds, overrides: Mapping[str | tuple[str, int], Thresholds]
) -> ColumnElement[bool]:
    """What every stuck run passes, whatever its connector: silent longer than the shortest
    ``stale_after``, or started before the shortest ``max_runtime`` (an indexed scan)."""
    every = [default, *overrides.values()]
    conditions = [ledger_runs.c.last_event_at < now - min(t.stale_after for t in every)]
    runtimes = [t.max_runtime for t in every if t.max_runtime is not None]
    if runtimes:
        conditions.append(ledger_runs.c.started_at < now - min(runtimes))
    return or_(*conditions)


def _past(now: datetime, limits: Thresholds) -> ColumnElement[bool]:
    """A run past ``limits`` at ``now``: silent too long, or running too long."""
    stale = ledger_runs.c.last_event_at < now - limits.stale_after
    if limits.max_runtime is None:
        return stale
    return or_(stale, ledger_runs.c.started_at < now - limits.max_runtime)


def stuck_runs_as_of(
    ledger: Ledger,
    position: int,
    at: datetime | None = None,
    older_than: timedelta = DEFAULT_STALE_AFTER,
    max_runtime: timedelta | None = None,
    overrides: Mapping[str | tuple[str, int], Thresholds] | None = None,
    run_ids: Collection[int] | None = None,
) -> list[StuckRun]:
    """:func:`stuck_runs` as the ledger stood at ``position``: the runs' states replayed from
    their events up to it (the append's own rules, :func:`ledger.rules.replay_event`), judged
    at ``at`` (by default when the event at ``position`` was recorded). Only the runs that can
    have been open then are replayed (:meth:`Ledger.run_ids_open_at`, a pass down the
    registry), each from its own events (a run's state depends on them alone): not every
    event before ``position``. With ``run_ids``, only which of those runs were stuck: what a
    page of runs costs. A ``position`` past the head is the head when the read starts."""
    position = arguments.whole_number(position, "position")
    at = None if at is None else arguments.clock_time(at, "at")
    default = Thresholds(older_than, max_runtime)
    overrides = _checked_overrides(overrides)
    if run_ids is not None:
        run_ids = arguments.run_ids(run_ids)
    states: dict[int, RunState] = {}
    if position > 0:
        # A position past the head is the head as the read starts, as ``resolve_position``
        # makes it for the CLI, the API and the web: read past it, the runs would be those
        # open when the registry was read and their events those stored when they were read,
        # appends committing in between (a moment the ledger never stood at).
        position = min(position, ledger.head().last_position)
    if position > 0:
        if run_ids is None:
            run_ids = ledger.run_ids_open_at(position)
        for histories in ledger.read_runs_in_turn(run_ids, up_to=position):
            for event in chain.from_iterable(histories.values()):
                # An event this code cannot apply counts as the run's activity, its state
                # unchanged (the ledger's one rule of a replay, rules.replay_event).
                state, _ = replay_event(states.get(event.run_id), event)
                if state is not None:
                    states[event.run_id] = state
    if at is None and position > 0:
        at = ledger.recorded_at(position)
    moment = at or ledger.clock()
    open_runs = sorted(
        (state for state in states.values() if state.state == OPEN),
        key=lambda state: (state.last_event_at, state.run_id),
    )
    return _stuck_among(open_runs, moment, default, overrides)


def stuck_page_as_of(
    ledger: Ledger,
    position: int,
    limit: int,
    after: StuckCursor | None = None,
    at: datetime | None = None,
    older_than: timedelta = DEFAULT_STALE_AFTER,
    max_runtime: timedelta | None = None,
    overrides: Mapping[str | tuple[str, int], Thresholds] | None = None,
    count: bool = False,
) -> StuckPage:
    """:func:`stuck_page` as the ledger stood at ``position``, judged at ``at`` (what
    :func:`stuck_runs_as_of` finds, same arguments): at most ``limit`` of those runs after
    ``after`` in the same order, and a cursor that carries the position and ``at`` (a cursor
    carrying them stands and is judged there, ``position`` and ``at`` only bounding them: the
    pages of one moment are read at one, whatever the clock reads by the next page). The
    past does not change, so pages of one moment (the same position and ``at``) never miss or
    repeat a run; each page replays the runs open then (:func:`stuck_runs_as_of`'s bounded
    read, not every event before the position), so a page costs what the whole list as of that
    moment costs."""
    limit = arguments.whole_number(limit, "limit", least=None)
    if limit < 1:
        raise ValidationError(f"limit: must be 1 or more, got {limit}")
    if after is not None and not isinstance(after, StuckCursor):
        raise arguments.refused("after", "a StuckCursor (StuckCursor.decode reads its text)")
    position = arguments.whole_number(position, "position")
    if after is not None and after.position is not None:
        # The earlier of the two: the cursor's, unless edited past what ``position`` names.
        position = min(position, after.position)
    if after is not None and after.judged is not None:
        # Likewise the time judged: the first page's, which a later page's own now (that of a
        # time ahead of a clock stepped back, pinned by its position) has moved past.
        at = after.judged if at is None else min(arguments.clock_time(at, "at"), after.judged)
    if position > 0:
        position = min(position, ledger.head().last_position)  # as stuck_runs_as_of reads it
    every = stuck_runs_as_of(
        ledger, position, at, older_than=older_than, max_runtime=max_runtime, overrides=overrides
    )
    total = len(every)
    # In the stuck query's order already (last activity, then run id): the cursor's.
    if after is not None:
        every = [
            run
            for run in every
            if (run.last_event_at, run.run_id) > (after.last_event_at, after.run_id)
        ]
    runs = every[:limit]
    following = None
    if len(every) > limit:
        following = StuckCursor(runs[-1].last_event_at, runs[-1].run_id, position, at)
    return StuckPage(runs, following, total if count else None)


def _checked_overrides(
    overrides: object,
) -> Mapping[str | tuple[str, int], Thresholds]:
    """``overrides`` as :func:`stuck_runs` takes them, or a :class:`ValidationError` naming
    ``overrides`` (a threshold given as a number was an AttributeError out of the query)."""
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise arguments.refused("overrides", "a mapping of connector names to Thresholds")
    for key, value in overrides.items():
        pair = isinstance(key, tuple) and len(key) == 2
        if not (isinstance(key, str) or pair) or not isinstance(value, Thresholds):
            raise arguments.refused(
                "overrides",
                f"connector names (or (name, source id) pairs) to Thresholds, got {key!r}: "
                f"{type(value).__name__}",
            )
    return overrides


def _stuck_among(
    open_runs: list[RunState],
    now: datetime,
    default: Thresholds,
    overrides: Mapping[str | tuple[str, int], Thresholds],
) -> list[StuckRun]:
    """Which of ``open_runs`` are stuck at ``now``, each by its connector's own thresholds
    (a (connector, source) pair over a connector name over ``default``)."""
    stuck = []
    for run in open_runs:
        limits = overrides.get((run.connector_name, run.source_id)) or overrides.get(
            run.connector_name, default
        )
        if run.last_event_at < now - limits.stale_after:
            rule, threshold = "stale", limits.stale_after
        elif limits.max_runtime is not None and run.started_at < now - limits.max_runtime:
            rule, threshold = "max_runtime", limits.max_runtime
        else:
            continue
        stuck.append(
            StuckRun(
                run.run_id,
                run.source_id,
                run.connector_name,
                run.started_at,
                run.last_event_at,
                run.version,
                rule,
                threshold,
            )
        )
    return stuck
