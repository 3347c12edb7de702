"""``ledger import-legacy``: adopt an existing ``ingestion_runs`` table into the ledger.

Each legacy row becomes facts with ``actor = import:legacy`` and the row's own timestamps:
RunStarted with the same id (``metadata.imported = true``), one RunProgressed with its counters,
and for a terminal status a RunFinished with the legacy status, completedAt, errorMessage and
errorDetails. A ``running`` row stays open, for the sweeper. Event ids are derived from the row
id, so a second import appends nothing. Every row, and whatever an append of it could refuse,
is checked before anything is written, the run id reservation included. The table is never
held whole: it is read in pages by id, checked in a first pass that keeps a digest a page, then
appended and compared page by page, each page verified against its digest first (a table that
changed meanwhile stops the import: :class:`LegacyTableChangedError`).
Afterwards each legacy row is compared, column by column (timestamps to the second), with its
run as of the import's own last fact for it, so that what happened to the run since (the sweeper
timing out a run left open) is not taken for a difference: ``duration`` filled in where the
legacy row had a completedAt but no duration is reported as repaired; legacy ``errorDetails``
keys that the ledger reserves for its own bookkeeping (``reason``, ``late``, ...) are kept under
``errorDetails.reported`` and reported as such, as are details that are not an object a fact
holds as it is (kept under ``legacy_error_details``); any other difference is reported as a
mismatch, the JSON text ``null`` included (a fact cannot hold it apart from no details).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from forensics.legacy_facts import adopted_details, fact_event_id, fact_kinds, facts_for
from forensics.legacy_table import (
    DEFAULT_SAME_DB_TABLE,
    JSON_NULL,
    LegacyTable,
    normalise,
    open_legacy_table,
    page_digest,
)
from ledger import (
    EventModel,
    Ledger,
    StreamError,
    ValidationError,
)
from ledger.batch_checks import MAX_CLOCK_SKEW, event_problems
from ledger.clock import isoformat_utc
from ledger.mapper import canonical_json, payload_json
from ledger.reads import read_head, read_runs, run_states
from ledger.recorded import LedgerHead, RecordedEvent
from ledger.rules import OPEN, RunState, apply_event
from ledger.text import clip
from projections.as_of import run_as_of
from projections.fold import RESERVED_DETAIL_KEYS, Row, callers_details, whole_seconds
from projections.projector import Projector
from projections.queries import rows_by_id

DEFAULT_OTHER_DB_TABLE = "ingestion_runs"
# Legacy rows a page holds: what the import keeps in memory at once, with their facts.
DEFAULT_PAGE_ROWS = 1000


@dataclass
class ImportResult:
    table: str
    rows: int = 0
    imported: int = 0
    already_imported: int = 0
    open_runs: list[int] = field(default_factory=list)
    repaired: list[int] = field(default_factory=list)  # duration filled in
    # details kept apart: keys the ledger reserves for itself (under errorDetails.reported),
    # or not an object a fact holds as it is (under errorDetails.legacy_error_details)
    details_kept_apart: list[int] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The import as JSON, under the names ``ledger import-legacy`` prints."""
        return {_JSON_NAMES.get(name, name): value for name, value in asdict(self).items()}


_JSON_NAMES = {"open_runs": "left_open", "repaired": "duration_repaired"}


def import_legacy(
    ledger: Ledger,
    source_url: str | None = None,
    table: str | None = None,
    rows_per_batch: int = 200,
    page_rows: int = DEFAULT_PAGE_ROWS,
) -> ImportResult:
    """Import the legacy table in pages of ``page_rows`` rows (id order), so that memory does
    not grow with the table: pass 1 checks every page and keeps only counts, the highest id,
    the latest time and a digest of each page; the reservation; pass 2 appends page by page,
    each page's digest verified first; then the projector, and pass 3 compares page by page.
    A page that is not as pass 1 read it stops the import (:class:`LegacyTableChangedError`)."""
    table = table or (DEFAULT_OTHER_DB_TABLE if source_url else DEFAULT_SAME_DB_TABLE)
    with open_legacy_table(ledger, source_url, table, page_rows) as legacy:
        checked = _check_every_row(ledger, legacy)  # pass 1: before anything is written
        result = ImportResult(table=table, rows=checked.rows)
        if checked.rows:
            _reserve_legacy_run_ids(ledger, legacy, checked)
        for _, batches in _pages_as_checked(legacy, checked.digests):  # pass 2
            for start in range(0, len(batches), rows_per_batch):
                chunk = batches[start : start + rows_per_batch]
                appended = ledger.append([event for events in chunk for event in events])
                new_runs = {e.run_id for e in appended.new_events if e.type == "RunStarted"}
                result.imported += len(new_runs)
                result.already_imported += len(chunk) - len(new_runs)
        Projector(ledger).run_once()
        for legacy_rows in legacy.rows_as_checked(checked.digests):  # pass 3
            run_ids = [row["id"] for row in legacy_rows]
            with ledger.connect("compare the imported runs") as conn:
                states = run_states(conn, run_ids)
                projected = rows_by_id(conn, run_ids)
            # From the ledger, not the legacy status: a run the sweeper (or an operator) closed
            # since an earlier import is no longer open, whatever the legacy row still says.
            result.open_runs.extend(
                row["id"] for row in legacy_rows if states[row["id"]].state == OPEN
            )
            for row in legacy_rows:
                _compare(row, _as_imported(ledger, row, states[row["id"]], projected), result)
    return result


def _pages_as_checked(
    legacy: LegacyTable, digests: list[bytes]
) -> Iterator[tuple[list[Row], list[list[EventModel]]]]:
    """:meth:`rows_as_checked`, each page with its rows' facts."""
    for legacy_rows in legacy.rows_as_checked(digests):
        yield legacy_rows, [facts_for(row) for row in legacy_rows]


def _as_imported(
    ledger: Ledger, legacy: Row, state: RunState, projected: dict[int, Row]
) -> Row | None:
    """The run's row as of the import's own last fact for it: what the legacy row is compared
    with. A fact appended after (the sweeper timing out a run left open, a late report) is a
    later part of the run's history, not a difference from the legacy table; such a run is
    replayed up to the import's last fact. Other runs hold only the import's facts (their
    version is the number of facts), and their projected row is that row already. The facts
    are the legacy row's (:func:`facts_for`), known by their kinds: not built again."""
    run_id = state.run_id
    kinds = fact_kinds(legacy)
    if state.version <= len(kinds):
        return projected.get(run_id)
    history = ledger.read_run(run_id)
    imported = {str(fact_event_id(legacy["id"], kind)) for kind in kinds}
    last = max(event.position for event in history if event.event_id in imported)
    return run_as_of(ledger, run_id, last, history)[0]


@dataclass
class _Checked:
    """What pass 1 keeps of the whole table: never its rows."""

    head: LedgerHead | None  # read before the first look at the ledger's runs
    rows: int = 0
    highest: int = 0  # the highest legacy id
    latest: datetime | None = None  # the latest occurred_at of the import's facts
    digests: list[bytes] = field(default_factory=list)  # one a page


def _check_every_row(ledger: Ledger, legacy: LegacyTable) -> _Checked:
    """Pass 1: every row, and whatever an append of it could refuse, checked page by page
    before anything is written, the errors in the order a whole-table check gives them: a
    value that is not one (:func:`forensics.legacy_table.normalise`), a row that cannot be a
    fact (the first in id order), repeated ids, facts over the limits of one event, then what
    the ledger's runs would refuse. The clock skew guard is the reservation's
    (:func:`_reserve_legacy_run_ids`)."""
    with ledger.connect("check the legacy run ids") as conn:
        checked = _Checked(head=read_head(conn))  # first: an append after it moves the position
    not_a_fact: ValidationError | None = None
    repeated = _RepeatedIds(legacy.name)
    unstorable: list[str] = []
    runs = _AppendChecks()
    for page in legacy.pages():
        checked.digests.append(page_digest(page))
        legacy_rows = [normalise(row) for row in page]
        checked.rows += len(legacy_rows)
        if not_a_fact is not None:
            continue  # normalised still: a value that is not one is named first, as it was
        try:
            batches = [facts_for(row) for row in legacy_rows]
        except ValidationError as exc:
            not_a_fact = exc
            continue
        checked.highest = max(checked.highest, *(row["id"] for row in legacy_rows))
        latest = max(event.occurred_at for events in batches for event in events)
        checked.latest = latest if checked.latest is None else max(checked.latest, latest)
        repeated.count(batches)
        if repeated.found:
            continue
        unstorable.extend(_unstorable(legacy_rows, batches))
        if unstorable:
            continue
        with ledger.connect("check the legacy run ids") as conn:
            runs.check(conn, legacy_rows, batches)
    if not_a_fact is not None:
        raise not_a_fact
    repeated.refuse()
    if unstorable:
        raise ValidationError("; ".join(unstorable) + "; nothing was appended", problems=unstorable)
    runs.refuse()
    return checked


class _RepeatedIds:
    """Refuse, before anything is written, a legacy id that more than one row holds (a table
    without its primary key): one run cannot be two rows. They were appended as far as the
    second row's facts, which reuse the first's event ids: a half-made import (the batches
    before it appended, the allocator raised for good) stopped by an error naming an event id
    instead of the legacy rows, and every re-run stopped there again.

    Rows of one id are adjacent in id order (a page ends with every row of its last id), so
    they are counted without a set of every id: the first 10 repeated ids are kept, with
    their row counts, and how many there are."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.shown: list[tuple[int, int]] = []
        self.more = 0
        self.run_id: int | None = None
        self.rows = 0

    @property
    def found(self) -> bool:
        return bool(self.shown)

    def count(self, batches: list[list[EventModel]]) -> None:
        for events in batches:
            run_id = events[0].run_id  # each a legacy id: facts_for
            if run_id == self.run_id:
                self.rows += 1
                continue
            self._close()
            self.run_id, self.rows = run_id, 1

    def _close(self) -> None:
        if self.rows > 1 and self.run_id:
            if len(self.shown) < 10:
                self.shown.append((self.run_id, self.rows))
            else:
                self.more += 1
        self.rows = 0

    def refuse(self) -> None:
        self._close()
        if not self.shown:
            return
        shown = ", ".join(f"{run_id} ({count} rows)" for run_id, count in self.shown)
        more = f" and {self.more} more" if self.more else ""
        raise ValidationError(
            f"table {self.table!r}: more than one legacy row has the id {shown}{more}; a legacy "
            "id becomes the id of one run: remove or renumber the repeated rows; nothing was "
            "imported"
        )


def _unstorable(legacy_rows: list[Row], batches: list[list[EventModel]]) -> list[str]:
    """A fact the append would refuse whatever the ledger holds (a payload over the limits of
    one event, say), naming its legacy row: in a later batch it would stop the import
    half-way; refused before anything is written."""
    return [
        f"legacy row id {row['id']}: {problem}"
        for row, events in zip(legacy_rows, batches, strict=True)
        for event in events
        for problem in event_problems(event, None)[1]
    ]


class _AheadOfTheClock(Exception):
    """Raised under the reservation's lock (rolling it back) when a fact of the import is more
    than :data:`MAX_CLOCK_SKEW` ahead of ``now``: the rows to name are found after the lock."""

    def __init__(self, now: datetime) -> None:
        super().__init__(now)
        self.now = now


def _reserve_legacy_run_ids(ledger: Ledger, legacy: LegacyTable, checked: _Checked) -> None:
    """Make the run id allocator continue above the highest legacy id, before the appends: a
    run started meanwhile (or after an import killed half-way) must not take a legacy id this
    import has not reached yet.

    A reservation is for good (the allocator never goes back), so every check that could
    refuse one of the import's appends runs before it: the legacy ids against the ledger's
    runs (pass 1), and, under the reservation's own head lock, the clock skew guard against
    the ledger's time; what they raise rolls the reservation back. The run checks are done
    without the lock, and again under it (reading the pages again, each verified against its
    digest) only if something was appended in between (a run that took a legacy id or
    closed meanwhile), so the lock is not held for a scan of every legacy run."""

    def under_the_lock(conn: Connection, head: LedgerHead, now: datetime) -> None:
        if checked.latest is not None and checked.latest > now + MAX_CLOCK_SKEW:
            raise _AheadOfTheClock(now)
        if checked.head is None or head.last_position != checked.head.last_position:
            runs = _AppendChecks()
            for legacy_rows, batches in _pages_as_checked(legacy, checked.digests):
                runs.check(conn, legacy_rows, batches)
            runs.refuse()

    try:
        ledger.reserve_run_ids(checked.highest, check=under_the_lock)
    except _AheadOfTheClock as ahead:
        _refuse_ahead_of(ahead.now, legacy, checked.digests)
        raise legacy.changed() from None  # the pages as checked hold that fact: not reached


def _refuse_ahead_of(now: datetime, legacy: LegacyTable, digests: list[bytes]) -> None:
    """The append's clock skew guard (DESIGN.md I10), for every fact of the import at once: a
    legacy time more than :data:`MAX_CLOCK_SKEW` ahead of the ledger's time ``now``, naming the
    first such row and how many others there are."""
    first: tuple[int, datetime] | None = None
    others = 0
    for legacy_rows, batches in _pages_as_checked(legacy, digests):
        for row, events in zip(legacy_rows, batches, strict=True):
            ahead = [e.occurred_at for e in events if e.occurred_at > now + MAX_CLOCK_SKEW]
            if not ahead:
                continue
            if first is None:
                first = (row["id"], ahead[0])
            else:
                others += 1
    if first is None:
        return
    row_id, when = first
    more = f" (and {others} other row(s))" if others else ""
    raise ValidationError(
        f"legacy row id {row_id}{more}: occurred_at: {isoformat_utc(when)} is more than "
        f"{int(MAX_CLOCK_SKEW.total_seconds() // 60)} minutes ahead of the ledger clock "
        f"({isoformat_utc(now)}); nothing was appended"
    )


class _AppendChecks:
    """Refuse, before anything is appended, legacy ids that runs of the ledger already use,
    and rows whose runs cannot take the facts they now stand for; checked page by page
    (:meth:`check`), refused once every page was (:meth:`refuse`).

    A run of this very import (a re-run) holds the very facts the import would append now
    (their event_ids derive from the legacy id); any other run with the id, even one with the
    same source, connector and start, or a legacy row changed since it was imported, would
    make the import fail half-way ("RunStarted may appear only once per run", an event_id
    reused for another fact). A run of this import may also have been closed since (by an
    operator): a legacy row that ended, or counted, since cannot be added to it.
    """

    def __init__(self) -> None:
        self.taken: list[int] = []  # the first 10
        self.taken_count = 0
        self.closed: list[str] = []

    def check(
        self, conn: Connection, legacy_rows: list[Row], batches: list[list[EventModel]]
    ) -> None:
        facts = {row["id"]: events for row, events in zip(legacy_rows, batches, strict=True)}
        states = run_states(conn, sorted(facts))
        histories = read_runs(conn, states)
        for run_id, state in sorted(states.items()):
            stored = {recorded.event_id: recorded for recorded in histories.get(run_id, [])}
            if not _imported_as_now(stored, facts[run_id]):
                self.taken_count += 1
                if len(self.taken) < 10:
                    self.taken.append(run_id)
                continue
            problem = _stream_problem(state, facts[run_id], stored)
            if problem is not None:
                self.closed.append(
                    f"legacy row id {run_id} changed since it was imported: {problem}"
                )

    def refuse(self) -> None:
        if self.taken:
            raise ValidationError(taken_run_ids_message(self.taken, self.taken_count))
        if self.closed:
            raise ValidationError(
                "; ".join(self.closed) + "; nothing was appended", problems=self.closed
            )


def _imported_as_now(stored: dict[str, RecordedEvent], events: list[EventModel]) -> bool:
    """Whether the run already holds these facts (``stored``, its events by event_id): the
    same RunStarted first, and each other fact either the same or not appended yet (a row
    that ended since the last import)."""
    first = stored.get(str(events[0].event_id))
    if first is None or first.version != 1:
        return False
    for event in events:
        recorded = stored.get(str(event.event_id))
        if recorded is not None and (
            recorded.type != event.type
            or recorded.payload != payload_json(event)
            or recorded.occurred_at != event.occurred_at
        ):
            return False
    return True


def _stream_problem(
    state: RunState, events: list[EventModel], stored: dict[str, RecordedEvent]
) -> str | None:
    """What the stream rules (DESIGN.md I5) would say of the facts not yet ``stored`` appended
    to the run at ``state``; None: nothing."""
    for event in events:
        if str(event.event_id) in stored:
            continue
        try:
            state = apply_event(state, event, state.run_id, state.updated_at)
        except StreamError as exc:
            return f"{exc.reason} (rule: {exc.rule})"
    return None


def taken_run_ids_message(run_ids: list[int], count: int | None = None) -> str:
    """The refusal of legacy ids the ledger's own runs use: the first 10 of ``run_ids``, and
    how many more of the ``count`` (default: all of ``run_ids``) there are."""
    count = len(run_ids) if count is None else count
    shown = ", ".join(str(run_id) for run_id in run_ids[:10])
    more = f" and {count - min(len(run_ids), 10)} more" if count > 10 else ""
    return (
        f"legacy run id(s) {shown}{more} already exist in the ledger as other runs; nothing "
        "was appended. Import into a fresh ledger: `ledger migrate --db NEW_URL`, then "
        "`ledger import-legacy --from-url LEGACY_URL --db NEW_URL` (the legacy ids are kept, "
        "so they cannot be offset)"
    )


def _compare(legacy: Row, row: Row | None, result: ImportResult) -> None:
    if row is None:
        result.mismatches.append(f"row {legacy['id']}: not projected")
        return
    for column, legacy_value in legacy.items():
        if column not in row:
            continue
        value = row[column]
        if isinstance(legacy_value, datetime):
            legacy_value = whole_seconds(legacy_value)
        if value == legacy_value:
            continue
        if column == "duration" and legacy_value is None and legacy["completedAt"]:
            result.repaired.append(legacy["id"])
            continue
        if column == "errorDetails" and legacy_value is JSON_NULL and value is None:
            result.mismatches.append(
                f"row {legacy['id']}: errorDetails was the JSON text null, the ledger gives "
                "SQL NULL (a fact cannot hold JSON null details)"
            )
            continue
        if (
            column == "errorDetails"
            and _set_apart(legacy_value)
            and value == callers_details(adopted_details(legacy_value))
        ):
            result.details_kept_apart.append(legacy["id"])
            continue
        result.mismatches.append(
            f"row {legacy['id']}: {column} was {_shown(legacy_value)}, "
            f"the ledger gives {_shown(value)}"
        )


def _set_apart(details: Any) -> bool:
    """Whether the import keeps legacy details apart: a key the ledger reserves for its own
    bookkeeping (kept under ``reported``), or details that are not an object a fact holds as
    it is (kept under ``legacy_error_details``). Any other difference is a mismatch."""
    adopted = adopted_details(details)
    if adopted is None:
        return False
    return adopted is not details or not RESERVED_DETAIL_KEYS.isdisjoint(adopted)


def _shown(value: Any) -> str:
    """A column's value as a mismatch quotes it: a time in ISO-8601 UTC, anything else as JSON
    (null, a number, a quoted text, an object), not as Python writes it; clipped, as an
    errorMessage may be 65,535 characters long."""
    if isinstance(value, datetime):
        return isoformat_utc(value)
    return clip(canonical_json(value), 200)
