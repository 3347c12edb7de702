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

import hashlib
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pydantic
from sqlalchemy import Connection, MetaData, Table, select
from sqlalchemy.exc import NoSuchTableError
from sqlalchemy.sql import Select

from forensics.dialects import legacy_text_read
from ledger import (
    ConfigurationError,
    DatabaseNotFoundError,
    EventModel,
    Ledger,
    RunFinished,
    RunProgressed,
    RunStarted,
    SchemaError,
    StorageError,
    StreamError,
    ValidationError,
)
from ledger.batch_checks import MAX_CLOCK_SKEW, event_problems
from ledger.clock import isoformat_utc, parse_utc
from ledger.events import IMPORT_PREFIX, RECORDED_NAMES, TERMINAL_STATUSES
from ledger.limits import MAX_JSON_DEPTH, json_depth
from ledger.mapper import canonical_json, describe_pydantic_errors, payload_json
from ledger.reads import read_head, read_runs, run_states
from ledger.recorded import LedgerHead, RecordedEvent
from ledger.rules import OPEN, RunState, apply_event
from ledger.schema import LEGACY_TABLE
from ledger.text import clip, quoted, visible
from ledger.urls import mask_url, sqlite_file_or_none
from projections.as_of import run_as_of
from projections.fold import RESERVED_DETAIL_KEYS, Row, callers_details, whole_seconds
from projections.projector import Projector
from projections.queries import rows_by_id
from projections.schema import COUNTER_COLUMNS

IMPORT_ACTOR = f"{IMPORT_PREFIX}legacy"
_NAMESPACE = uuid.UUID("0b3c33f6-56a5-4c9c-9d0e-3f51c1a3f0d1")
DEFAULT_SAME_DB_TABLE = LEGACY_TABLE  # where `ledger migrate` put the old table
DEFAULT_OTHER_DB_TABLE = "ingestion_runs"
# Legacy rows a page holds: what the import keeps in memory at once, with their facts.
DEFAULT_PAGE_ROWS = 1000
# The columns an import cannot do without (the others default, as in the legacy table).
LEGACY_KEY_COLUMNS = ("id", "sourceId", "connectorName", "startedAt", "status")


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
    with _legacy_table(ledger, source_url, table, page_rows) as legacy:
        checked = _check_every_row(ledger, legacy)  # pass 1: before anything is written
        result = ImportResult(table=table, rows=checked.rows)
        if checked.rows:
            _reserve_legacy_run_ids(ledger, legacy, checked)
        for _, batches in legacy.pages_as_checked(checked.digests):  # pass 2
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
    kinds = _fact_kinds(legacy)
    if state.version <= len(kinds):
        return projected.get(run_id)
    history = ledger.read_run(run_id)
    imported = {str(_event_id(legacy["id"], kind)) for kind in kinds}
    last = max(event.position for event in history if event.event_id in imported)
    return run_as_of(ledger, run_id, last, history)[0]


class LegacyTableChangedError(StorageError):
    """The legacy table was not, when the import read it again, what its first pass checked
    (a row added, removed or changed meanwhile): the import stops before appending the page
    (CLI exit 3). What it appended were the table's own facts, idempotent: running it again,
    once the table is left alone, is safe."""


@dataclass
class _Checked:
    """What pass 1 keeps of the whole table: never its rows."""

    head: LedgerHead | None  # read before the first look at the ledger's runs
    rows: int = 0
    highest: int = 0  # the highest legacy id
    latest: datetime | None = None  # the latest occurred_at of the import's facts
    digests: list[bytes] = field(default_factory=list)  # one a page


def _check_every_row(ledger: Ledger, legacy: _LegacyTable) -> _Checked:
    """Pass 1: every row, and whatever an append of it could refuse, checked page by page
    before anything is written, the errors in the order a whole-table check gives them: a
    value that is not one (:func:`_normalise`), a row that cannot be a fact (the first in id
    order), repeated ids, facts over the limits of one event, then what the ledger's runs
    would refuse. The clock skew guard is the reservation's (:func:`_reserve_legacy_run_ids`)."""
    with ledger.connect("check the legacy run ids") as conn:
        checked = _Checked(head=read_head(conn))  # first: an append after it moves the position
    not_a_fact: ValidationError | None = None
    repeated = _RepeatedIds(legacy.name)
    unstorable: list[str] = []
    runs = _AppendChecks()
    for page in legacy.pages():
        checked.digests.append(_digest(page))
        legacy_rows = [_normalise(row) for row in page]
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


def _reserve_legacy_run_ids(ledger: Ledger, legacy: _LegacyTable, checked: _Checked) -> None:
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
            for legacy_rows, batches in legacy.pages_as_checked(checked.digests):
                runs.check(conn, legacy_rows, batches)
            runs.refuse()

    try:
        ledger.reserve_run_ids(checked.highest, check=under_the_lock)
    except _AheadOfTheClock as ahead:
        _refuse_ahead_of(ahead.now, legacy, checked.digests)
        raise legacy.changed() from None  # the pages as checked hold that fact: not reached


def _refuse_ahead_of(now: datetime, legacy: _LegacyTable, digests: list[bytes]) -> None:
    """The append's clock skew guard (DESIGN.md I10), for every fact of the import at once: a
    legacy time more than :data:`MAX_CLOCK_SKEW` ahead of the ledger's time ``now``, naming the
    first such row and how many others there are."""
    first: tuple[int, datetime] | None = None
    others = 0
    for legacy_rows, batches in legacy.pages_as_checked(digests):
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


@contextmanager
def _legacy_table(
    ledger: Ledger, source_url: str | None, table: str, page_rows: int
) -> Iterator[_LegacyTable]:
    """The legacy table ``table`` (in ``source_url``'s database, or the ledger's own), to be
    read in pages; its database is closed when the block ends."""
    if page_rows < 1:
        raise ConfigurationError(f"page_rows: {page_rows} is not a positive number of rows")
    # Only read: a mistyped SQLite path must not become an empty file.
    source = ledger
    if source_url:
        try:
            source = Ledger.from_url(source_url, create=False)
        except DatabaseNotFoundError:
            # Not the generic advice ("`ledger migrate` creates a new ledger"): this is the
            # legacy system's database, which nothing here can create.
            path = visible(str(sqlite_file_or_none(source_url)))
            raise DatabaseNotFoundError(
                f"--from-url: no SQLite database at {path} ({mask_url(source_url)}): check the "
                "legacy database's URL"
            ) from None
        except ConfigurationError as error:  # with --db beside it: say which URL is wrong
            raise ConfigurationError(f"--from-url: {error}") from None
    try:
        with source.connect("read legacy table") as conn:
            try:
                legacy = Table(table, MetaData(), autoload_with=conn)
            except NoSuchTableError:
                raise SchemaError(_no_legacy_table_message(source, source_url, table)) from None
            missing = [name for name in LEGACY_KEY_COLUMNS if name not in legacy.c]
            if missing:
                raise SchemaError(
                    f"table {table!r} in {mask_url(source.url)} is not a legacy ingestion_runs "
                    f"table: it has no {', '.join(missing)} column"
                )
            # Times and text as text (SQLite: its bytes), decoded and parsed by _normalise,
            # which names the row of a value that is not UTF-8 or not a time instead of failing
            # inside the driver layer (exit 1, naming no row).
            columns = [
                legacy_text_read(conn, column)
                if column.name in (*_TEXT_COLUMNS, *_TEXT_READ_COLUMNS)
                else column
                for column in legacy.c
            ]
        yield _LegacyTable(source, table, legacy.c.id, select(*columns), page_rows)
    finally:
        if source_url:
            source.close()


@dataclass
class _LegacyTable:
    """A legacy table read in pages of about ``page_rows`` rows in id order, each page in a
    short read of its own: rows of NULL id first (ORDER BY id puts them there), then by id
    (``WHERE id > last``), a page taking every row of its last id (rows of one id stay on one
    page, where the check of repeated ids finds them)."""

    source: Ledger
    name: str
    id_column: Any
    query: Select[Any]
    page_rows: int

    def pages(self) -> Iterator[list[dict[str, Any]]]:
        """The rows, page by page, as the driver gives them (:func:`_normalise` them)."""
        skipped = 0
        while True:  # NULL ids: no key to page by; few (the first of them is refused)
            with self.source.connect("read legacy table") as conn:
                query = self.query.where(self.id_column.is_(None))
                page = self._read(conn, query.limit(self.page_rows).offset(skipped))
            if page:
                yield page
            if len(page) < self.page_rows:
                break
            skipped += len(page)
        last: Any = None
        while True:
            with self.source.connect("read legacy table") as conn:
                query = self.query.where(self.id_column.is_not(None)).order_by(self.id_column)
                if last is not None:
                    query = query.where(self.id_column > last)
                page = self._read(conn, query.limit(self.page_rows))
                full = len(page) == self.page_rows
                if full:  # and every row of its last id
                    last = page[-1]["id"]
                    while page and page[-1]["id"] == last:
                        page.pop()
                    page.extend(self._read(conn, self.query.where(self.id_column == last)))
            if page:
                yield page
            if not full:
                return

    @staticmethod
    def _read(conn: Connection, query: Select[Any]) -> list[dict[str, Any]]:
        return [dict(row) for row in conn.execute(query).mappings()]

    def rows_as_checked(self, digests: list[bytes]) -> Iterator[list[Row]]:
        """The rows again, page by page, normalised; each page verified first against the
        digest pass 1 kept of it (``digests``): a table that is no longer what was checked
        raises :class:`LegacyTableChangedError`."""
        index = -1
        for index, page in enumerate(self.pages()):
            if index >= len(digests) or _digest(page) != digests[index]:
                raise self.changed()
            yield [_normalise(row) for row in page]
        if index + 1 != len(digests):
            raise self.changed()

    def pages_as_checked(
        self, digests: list[bytes]
    ) -> Iterator[tuple[list[Row], list[list[EventModel]]]]:
        """:meth:`rows_as_checked`, each page with its rows' facts."""
        for legacy_rows in self.rows_as_checked(digests):
            yield legacy_rows, [facts_for(row) for row in legacy_rows]

    def changed(self) -> LegacyTableChangedError:
        """The error of a table that is no longer what pass 1 checked."""
        return LegacyTableChangedError(
            f"table {self.name!r} in {mask_url(self.source.url)} changed during the import "
            "(rows added, removed or changed since it was checked); nothing was appended from "
            "the rows that changed. Running `ledger import-legacy` again is safe: what was "
            "appended are the table's own facts, and a second import appends none twice"
        )


def _digest(page: list[dict[str, Any]]) -> bytes:
    """A page's rows as read, in a digest: pass 1 keeps one a page, not the rows."""
    digest = hashlib.blake2b(digest_size=16)
    for row in page:
        digest.update(repr(tuple(row.items())).encode("utf-8", "backslashreplace"))
        digest.update(b"\n")
    return digest.digest()


def _no_legacy_table_message(source: Ledger, source_url: str | None, table: str) -> str:
    where = f"no legacy table {table!r} in {mask_url(source.url)}"
    if source_url:
        return f"{where}: give the legacy table's name with --table"
    return (
        f"{where}: `ledger migrate` renames an existing ingestion_runs to "
        f"{DEFAULT_SAME_DB_TABLE}; for a table elsewhere give --from-url URL and --table NAME"
    )


_TIME_COLUMNS = ("startedAt", "completedAt", "createdAt")
# errorDetails as its text too: a JSON column's type would decode the JSON text null into
# None, which is SQL NULL.
_TEXT_READ_COLUMNS = (*_TIME_COLUMNS, "errorDetails")
_TEXT_COLUMNS = ("connectorName", "status", "errorMessage")
_LEGACY_STATUSES = ("running", *TERMINAL_STATUSES)  # the legacy ENUM's values


class _JsonNull:
    """A legacy ``errorDetails`` holding the JSON text ``null``, which is not SQL NULL. A fact
    cannot hold it apart from no details (``error_details`` None), so its run projects NULL
    and the comparison reports the difference."""

    def __repr__(self) -> str:
        return "JSON_NULL"


JSON_NULL = _JsonNull()


def _normalise(row: dict[str, Any]) -> Row:
    # A table without completedAt still has its runs' ends compared (NULL: the ledger dates a
    # RunFinished at the start), one without createdAt has nothing to compare: that column
    # stays absent (it was reported as "createdAt was null", exit 1, for every row).
    row.setdefault("completedAt", None)
    for column in (*_TEXT_COLUMNS, *_TEXT_READ_COLUMNS):
        if isinstance(row.get(column), bytes):
            row[column] = _text(row, column)
    for column in _TIME_COLUMNS:
        if column not in row:
            continue
        value = row[column]
        if isinstance(value, str):
            written = value
            try:
                # No zone: UTC, as the sessions run. An offset the text gives is kept: the
                # time goes into legacy_created_at as it was written (see facts_for).
                value = parse_utc(written, naive="utc", keep_offset=True)
            except ValueError:
                raise _not_a(row, column, written, "time") from None
        elif value is not None and not isinstance(value, datetime):
            # A number or bytes a SQLite column holds whatever its declared type: it was
            # an AttributeError's traceback (createdAt) or a confusing message later.
            raise _not_a(row, column, value, "time")
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # sessions run in UTC
        row[column] = value
    for column in COUNTER_COLUMNS.values():
        if row.get(column) is not None:  # refused here, before anything is appended; NULL
            row[column] = _count(row, column)  # stays NULL: it is compared as it was
    details = row.get("errorDetails")
    if isinstance(details, str | bytes):
        try:
            decoded = json.loads(details)
        except ValueError:
            decoded = {"legacy_error_details": details}
        row["errorDetails"] = JSON_NULL if decoded is None else decoded
    return row


def _text(row: dict[str, Any], column: str) -> str:
    """A legacy text column's bytes (a BLOB, a binary column) as the text they encode: the
    fact holds that text, and the comparison compares it (bytes were a TypeError traceback
    after the import, when the comparison quoted them); bytes that are not UTF-8 name the row
    and column."""
    value: bytes = row[column]
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"legacy row id {row.get('id')}: {column}: {quoted(clip(repr(value), 60))} is not "
            f"UTF-8 text (byte {exc.start + 1}); nothing was imported"
        ) from None


def _count(row: dict[str, Any], column: str) -> int:
    """A legacy counter as a whole number (absent: 0). Text of digits is one, as a VARCHAR
    column gives it; anything else (``'12 rows'``, bytes, ``1.5``) names the row and column:
    ``int()`` of it was a ValueError's traceback, or cut ``1.5`` to 1 without a word."""
    value = row.get(column)
    if value is None:
        return 0
    if isinstance(value, bool):  # an int to Python, never a count
        raise _not_a(row, column, value, "whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():  # not inf or NaN either
        return int(value)
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    raise _not_a(row, column, value, "whole number")


def _not_a(row: dict[str, Any], column: str, value: Any, kind: str) -> ValidationError:
    """The error of a legacy value that is not what its column should hold: the row, the
    column and the value, quoted JSON-style (it is data: a newline shows as ``\\n``, not as
    a line of the message, nor doubled as ``repr`` of the escape did), and that nothing was
    imported."""
    written = value if isinstance(value, str) else repr(value)
    return ValidationError(
        f"legacy row id {row.get('id')}: {column}: {quoted(clip(written, 60))} "
        f"is not a {kind}; nothing was imported"
    )


def adopted_details(details: Any) -> dict[str, Any] | None:
    """A legacy ``errorDetails`` as a fact can hold it: an object as it is; anything else (an
    array, a number) under ``legacy_error_details``, and an object nested deeper than the
    ledger takes as its JSON text there, so that no legacy row is refused for its details.
    The JSON text ``null`` is no details: a fact cannot hold it otherwise."""
    if details is None or details is JSON_NULL:
        return None
    if isinstance(details, dict) and json_depth(details) <= MAX_JSON_DEPTH:
        return details
    if json_depth(details) >= MAX_JSON_DEPTH:  # one level more under the key
        details = json.dumps(details, sort_keys=True)
    return {"legacy_error_details": details}


def _event_id(row_id: int, kind: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"legacy-run-{row_id}-{kind}")


def _fact_kinds(row: Row) -> list[str]:
    """Which facts a legacy row stands for (:func:`facts_for`), by the kind its event id is
    derived from (:func:`_event_id`): its start, its counters unless all are 0, its end unless
    it is ``running``."""
    kinds = ["started"]
    if any(_count(row, column) for column in COUNTER_COLUMNS.values()):
        kinds.append("counters")
    if row["status"] != "running":
        kinds.append("finished")
    return kinds


def facts_for(row: Row) -> list[EventModel]:
    """The facts a legacy row stands for; ValidationError names the row and the field."""
    started_at = row["startedAt"]
    if started_at is None:  # was an AttributeError's traceback (exit 1)
        raise ValidationError(
            f"legacy row id {row.get('id')}: startedAt is NULL: a run's facts are dated from "
            "its start; nothing was imported"
        )
    if row["status"] not in _LEGACY_STATUSES:  # was pydantic's list, without the value
        shown = "NULL" if row["status"] is None else quoted(clip(str(row["status"]), 60))
        raise ValidationError(
            f"legacy row id {row.get('id')}: status: {shown} is not a legacy status "
            f"({', '.join(_LEGACY_STATUSES)}); nothing was imported"
        )
    created_at = row.get("createdAt") or started_at
    try:
        events: list[EventModel] = [
            # The legacy name is adopted as it was recorded (the projection must give it back
            # exactly); the name rule is for names the ledger is the first to record.
            RunStarted.model_validate(
                {
                    "event_id": _event_id(row["id"], "started"),
                    "run_id": row["id"],
                    "source_id": row["sourceId"],
                    "connector_name": row["connectorName"],
                    "occurred_at": started_at,
                    "actor": IMPORT_ACTOR,
                    # isoformat(), not isoformat_utc: the text is part of the fact, and a
                    # re-import must give the very same event to be recognised as a retry
                    "metadata": {"imported": True, "legacy_created_at": created_at.isoformat()},
                },
                context=RECORDED_NAMES,
            )
        ]
        kinds = _fact_kinds(row)
        if "counters" in kinds:
            counters = {f: _count(row, column) for f, column in COUNTER_COLUMNS.items()}
            events.append(
                RunProgressed(
                    event_id=_event_id(row["id"], "counters"),
                    run_id=row["id"],
                    occurred_at=started_at,
                    actor=IMPORT_ACTOR,
                    **counters,
                )
            )
        if "finished" in kinds:
            details = adopted_details(row.get("errorDetails"))
            events.append(
                RunFinished(
                    event_id=_event_id(row["id"], "finished"),
                    run_id=row["id"],
                    status=row["status"],
                    occurred_at=row.get("completedAt") or started_at,
                    error_message=row.get("errorMessage"),
                    error_details=details,
                    actor=IMPORT_ACTOR,
                )
            )
    except pydantic.ValidationError as exc:
        problems = [f"legacy row id {row.get('id')}: {p}" for p in describe_pydantic_errors(exc)]
        raise ValidationError("; ".join(problems), problems=problems) from exc
    return events


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
