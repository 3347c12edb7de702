"""``ledger import-legacy``: adopt an existing ``ingestion_runs`` table into the ledger.

Each legacy row becomes facts with ``actor = import:legacy`` and the row's own timestamps:
RunStarted with the same id (``metadata.imported = true``), one RunProgressed with its counters,
and for a terminal status a RunFinished with the legacy status, completedAt, errorMessage and
errorDetails. A ``running`` row stays open, for the sweeper. Event ids are derived from the row
id, so a second import appends nothing. Every row, and whatever an append of it could refuse,
is checked before anything is written, the run id reservation included.
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

import json
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pydantic
from sqlalchemy import Connection, MetaData, Table, select
from sqlalchemy.exc import NoSuchTableError

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
    StreamError,
    ValidationError,
)
from ledger.batch_checks import MAX_CLOCK_SKEW, event_problems
from ledger.clock import isoformat_utc, parse_utc
from ledger.events import IMPORT_PREFIX, RECORDED_NAMES, TERMINAL_STATUSES
from ledger.limits import MAX_JSON_DEPTH, json_depth
from ledger.mapper import canonical_json, describe_pydantic_errors, payload_json
from ledger.reads import read_head, read_run, run_states
from ledger.recorded import LedgerHead, RecordedEvent
from ledger.rules import OPEN, RunState, apply_event
from ledger.schema import LEGACY_TABLE
from ledger.text import clip, quoted, visible
from ledger.urls import mask_url, sqlite_file_or_none
from projections.as_of import run_as_of
from projections.fold import RESERVED_DETAIL_KEYS, Row, callers_details, whole_seconds
from projections.projector import Projector
from projections.queries import all_rows
from projections.schema import COUNTER_COLUMNS

IMPORT_ACTOR = f"{IMPORT_PREFIX}legacy"
_NAMESPACE = uuid.UUID("0b3c33f6-56a5-4c9c-9d0e-3f51c1a3f0d1")
DEFAULT_SAME_DB_TABLE = LEGACY_TABLE  # where `ledger migrate` put the old table
DEFAULT_OTHER_DB_TABLE = "ingestion_runs"
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
) -> ImportResult:
    table = table or (DEFAULT_OTHER_DB_TABLE if source_url else DEFAULT_SAME_DB_TABLE)
    legacy_rows = read_legacy_rows(ledger, source_url, table)
    result = ImportResult(table=table, rows=len(legacy_rows))
    batches = [facts_for(row) for row in legacy_rows]  # validates every row first
    _refuse_repeated_ids(table, batches)
    _refuse_unstorable(legacy_rows, batches)
    if legacy_rows:
        _reserve_legacy_run_ids(ledger, legacy_rows, batches)
    for start in range(0, len(batches), rows_per_batch):
        chunk = batches[start : start + rows_per_batch]
        appended = ledger.append([event for events in chunk for event in events])
        new_runs = {e.run_id for e in appended.new_events if e.type == "RunStarted"}
        result.imported += len(new_runs)
        result.already_imported += len(chunk) - len(new_runs)
    Projector(ledger).run_once()
    states = {state.run_id: state for state in ledger.runs()}
    # From the ledger, not the legacy status: a run the sweeper (or an operator) closed since
    # an earlier import is no longer open, whatever the legacy row still says.
    result.open_runs = [row["id"] for row in legacy_rows if states[row["id"]].state == OPEN]
    projected = all_rows(ledger)
    for row, facts in zip(legacy_rows, batches, strict=True):
        _compare(row, _as_imported(ledger, facts, states[row["id"]], projected), result)
    return result


def _as_imported(
    ledger: Ledger, facts: list[EventModel], state: RunState, projected: dict[int, Row]
) -> Row | None:
    """The run's row as of the import's own last fact for it: what the legacy row is compared
    with. A fact appended after (the sweeper timing out a run left open, a late report) is a
    later part of the run's history, not a difference from the legacy table; such a run is
    replayed up to the import's last fact. Other runs hold only the import's facts (their
    version is the number of facts), and their projected row is that row already."""
    run_id = state.run_id
    if state.version <= len(facts):
        return projected.get(run_id)
    history = ledger.read_run(run_id)
    imported = {str(event.event_id) for event in facts}
    last = max(event.position for event in history if event.event_id in imported)
    return run_as_of(ledger, run_id, last, history)[0]


def _refuse_repeated_ids(table: str, batches: list[list[EventModel]]) -> None:
    """Refuse, before anything is written, a legacy id that more than one row holds (a table
    without its primary key): one run cannot be two rows. They were appended as far as the
    second row's facts, which reuse the first's event ids: a half-made import (the batches
    before it appended, the allocator raised for good) stopped by an error naming an event id
    instead of the legacy rows, and every re-run stopped there again."""
    counts = Counter(events[0].run_id for events in batches)  # each a legacy id: facts_for
    repeated = sorted(run_id for run_id, count in counts.items() if count > 1 and run_id)
    if not repeated:
        return
    shown = ", ".join(f"{run_id} ({counts[run_id]} rows)" for run_id in repeated[:10])
    more = f" and {len(repeated) - 10} more" if len(repeated) > 10 else ""
    raise ValidationError(
        f"table {table!r}: more than one legacy row has the id {shown}{more}; a legacy id "
        "becomes the id of one run: remove or renumber the repeated rows; nothing was imported"
    )


def _refuse_unstorable(legacy_rows: list[Row], batches: list[list[EventModel]]) -> None:
    """Refuse, before anything is written, a fact the append would refuse whatever the ledger
    holds (a payload over the limits of one event, say), naming its legacy row: in a later
    batch it would stop the import half-way."""
    problems = [
        f"legacy row id {row['id']}: {problem}"
        for row, events in zip(legacy_rows, batches, strict=True)
        for event in events
        for problem in event_problems(event, None)[1]
    ]
    if problems:
        raise ValidationError("; ".join(problems) + "; nothing was appended", problems=problems)


def _reserve_legacy_run_ids(
    ledger: Ledger, legacy_rows: list[Row], batches: list[list[EventModel]]
) -> None:
    """Make the run id allocator continue above the highest legacy id, before the appends: a
    run started meanwhile (or after an import killed half-way) must not take a legacy id this
    import has not reached yet.

    A reservation is for good (the allocator never goes back), so every check that could
    refuse one of the import's appends runs before it: the legacy ids against the ledger's
    runs, and, under the reservation's own head lock, the clock skew guard against the
    ledger's time; what they raise rolls the reservation back. The run checks are done
    without the lock, and again under it only if something was appended in between (a run
    that took a legacy id or closed meanwhile), so the lock is not held for a scan of every
    legacy run."""
    with ledger.connect("check the legacy run ids") as conn:
        checked = read_head(conn)  # first: an append after it moves the position
        _refuse_what_the_appends_would(conn, legacy_rows, batches)

    def under_the_lock(conn: Connection, head: LedgerHead, now: datetime) -> None:
        _refuse_ahead_of(now, legacy_rows, batches)
        if checked is None or head.last_position != checked.last_position:
            _refuse_what_the_appends_would(conn, legacy_rows, batches)

    ledger.reserve_run_ids(max(row["id"] for row in legacy_rows), check=under_the_lock)


def _refuse_ahead_of(
    now: datetime, legacy_rows: list[Row], batches: list[list[EventModel]]
) -> None:
    """The append's clock skew guard (DESIGN.md I10), for every fact of the import at once: a
    legacy time more than :data:`MAX_CLOCK_SKEW` ahead of the ledger's time ``now``."""
    ahead = [
        (row["id"], event.occurred_at)
        for row, events in zip(legacy_rows, batches, strict=True)
        for event in events
        if event.occurred_at > now + MAX_CLOCK_SKEW
    ]
    if not ahead:
        return
    row_id, when = ahead[0]
    others = {other for other, _ in ahead} - {row_id}
    more = f" (and {len(others)} other row(s))" if others else ""
    raise ValidationError(
        f"legacy row id {row_id}{more}: occurred_at: {isoformat_utc(when)} is more than "
        f"{int(MAX_CLOCK_SKEW.total_seconds() // 60)} minutes ahead of the ledger clock "
        f"({isoformat_utc(now)}); nothing was appended"
    )


def _refuse_what_the_appends_would(
    conn: Connection, legacy_rows: list[Row], batches: list[list[EventModel]]
) -> None:
    """Refuse, before anything is appended, legacy ids that runs of the ledger already use,
    and rows whose runs cannot take the facts they now stand for.

    A run of this very import (a re-run) holds the very facts the import would append now
    (their event_ids derive from the legacy id); any other run with the id, even one with the
    same source, connector and start, or a legacy row changed since it was imported, would
    make the import fail half-way ("RunStarted may appear only once per run", an event_id
    reused for another fact). A run of this import may also have been closed since (by an
    operator): a legacy row that ended, or counted, since cannot be added to it.
    """
    facts = {row["id"]: events for row, events in zip(legacy_rows, batches, strict=True)}
    taken: list[int] = []
    closed: list[str] = []
    for run_id, state in sorted(run_states(conn, sorted(facts)).items()):
        stored = {recorded.event_id: recorded for recorded in read_run(conn, run_id)}
        if not _imported_as_now(stored, facts[run_id]):
            taken.append(run_id)
            continue
        problem = _stream_problem(state, facts[run_id], stored)
        if problem is not None:
            closed.append(f"legacy row id {run_id} changed since it was imported: {problem}")
    if taken:
        raise ValidationError(taken_run_ids_message(taken))
    if closed:
        raise ValidationError("; ".join(closed) + "; nothing was appended", problems=closed)


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


def taken_run_ids_message(run_ids: list[int]) -> str:
    shown = ", ".join(str(run_id) for run_id in run_ids[:10])
    more = f" and {len(run_ids) - 10} more" if len(run_ids) > 10 else ""
    return (
        f"legacy run id(s) {shown}{more} already exist in the ledger as other runs; nothing "
        "was appended. Import into a fresh ledger: `ledger migrate --db NEW_URL`, then "
        "`ledger import-legacy --from-url LEGACY_URL --db NEW_URL` (the legacy ids are kept, "
        "so they cannot be offset)"
    )


def read_legacy_rows(ledger: Ledger, source_url: str | None, table: str) -> list[Row]:
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
            query = select(*columns).order_by(legacy.c.id)
            rows = [dict(row) for row in conn.execute(query).mappings()]
    finally:
        if source_url:
            source.close()
    return [_normalise(row) for row in rows]


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
        counters = {field: _count(row, column) for field, column in COUNTER_COLUMNS.items()}
        if any(counters.values()):
            events.append(
                RunProgressed(
                    event_id=_event_id(row["id"], "counters"),
                    run_id=row["id"],
                    occurred_at=started_at,
                    actor=IMPORT_ACTOR,
                    **counters,
                )
            )
        if row["status"] != "running":
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
