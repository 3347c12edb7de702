"""How events change an ``ingestion_runs`` row: one pure function, shared by the projector, the
rebuild, point-in-time queries, the audit and verify's replay, so all give the same rows (I8).

Rows are dicts keyed by the legacy column names. Timestamps are truncated to whole seconds, as
the legacy ``TIMESTAMP`` columns hold them, so a row folded in memory equals the row read back
(:func:`normalise`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Integer

from ledger import LedgerError, RecordedEvent
from ledger.clock import format_utc_seconds, isoformat_utc
from ledger.durations import format_duration
from ledger.events import COUNTER_FIELDS, COUNTER_LIMIT
from ledger.limits import IMPORTED_KEY, LEGACY_CREATED_AT_KEY, json_depth, parse_legacy_time
from ledger.mapper import canonical_json, decode_payload
from ledger.reads import as_event_fields, events_from_driver
from ledger.written import written_envelope, written_fields
from projections.errors import PoisonEventError
from projections.schema import COUNTER_COLUMNS, ingestion_runs

Row = dict[str, Any]
# Every column of ingestion_runs in table order, with the value a new run starts from.
EMPTY_ROW: Row = {
    column.name: (0 if column.name in COUNTER_COLUMNS.values() else None)
    for column in ingestion_runs.columns
}
INT_MAX = COUNTER_LIMIT - 1  # the legacy counters are INT(11)
# The event types that carry counter deltas (the others' are all zero).
COUNTED_TYPES = frozenset({"RunProgressed", "RunFinished"})
LEGACY_TEXT_BYTES = 65_535  # errorMessage is TEXT on MySQL
# Late RunProgressed entries listed in errorDetails.late; later ones are only counted.
MAX_LATE_PROGRESS_LISTED = 100
# MariaDB's json_valid refuses 32 levels of nesting.
MAX_PROJECTED_JSON_DEPTH = 31
# The errorDetails keys the ledger writes itself (README: "errorDetails"); a connector's value
# under one of them is kept under REPORTED_KEY.
REPORTED_KEY = "reported"
RESERVED_DETAIL_KEYS = frozenset(
    {
        "counter_overflow",
        "late",
        "late_heartbeats",
        "late_omitted",
        "reason",
        "threshold_seconds",
        "last_event_at",
        "detected_by",
        REPORTED_KEY,
    }
)


@dataclass(frozen=True)
class Transition:
    """A status change, for ``ingestion_run_transitions``."""

    position: int
    run_id: int
    from_status: str | None
    to_status: str
    at: datetime
    actor: str | None

    def as_row(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "run_id": self.run_id,
            "from_status": self.from_status,
            "to_status": self.to_status,
            "at": self.at,
            "actor": self.actor,
        }


@dataclass
class BatchOutcome:
    """What one batch did: events processed (applied or skipped), the last position processed,
    and the poison event that stopped it, if any."""

    processed: int = 0
    last_position: int | None = None
    poison: PoisonEventError | None = None
    transitions: list[Transition] = field(default_factory=list)


def fold_events(
    rows: dict[int, Row], events: Iterable[RecordedEvent], skipped: set[int]
) -> BatchOutcome:
    """Fold ``events`` into ``rows`` (changed in place); stop at the first poison event."""
    outcome = BatchOutcome()
    for event in events:
        if event.position not in skipped:
            try:
                row, transition = fold(rows.get(event.run_id), event)
            except PoisonEventError as poison:
                outcome.poison = poison
                return outcome
            rows[event.run_id] = row
            if transition is not None:
                outcome.transitions.append(transition)
        outcome.processed += 1
        outcome.last_position = event.position
    return outcome


def fold_rows(
    rows: dict[int, Row],
    page: Sequence[Sequence[Any]],
    skipped: set[int],
    read_time: Callable[[Any], datetime],
) -> BatchOutcome:
    """:func:`fold_events` of ``events_from_driver(page, read_time)``: driver rows
    (:func:`ledger.reads.read_rows_page`) folded into ``rows``, which are changed in place.

    A rebuild's hot path. The common event, a ``RunProgressed`` of a running run with no
    bookkeeping of its own in ``errorDetails``, whose row passes every check of an event as
    written (:func:`ledger.written.written_check`: it has no field those checks convert) and
    whose counters stay within the legacy columns, has its counters added straight from the
    row, without a :class:`RecordedEvent` or its fields dict. Any other row that is as written
    (:func:`ledger.written.written_fields` of the row's values, what
    :meth:`RecordedEvent.read_fields` returns) is folded by :func:`fold_fields` from those
    fields, without the event. The rest, and any row in doubt, is made an event and folded by
    :func:`fold`: a payload that no longer validates is the same poison event, and a row that
    cannot be read raises the same error. tests/projections/test_fold_rows.py proves the
    routes give the same rows, transitions and outcome.
    """
    outcome = BatchOutcome()
    transitions = outcome.transitions
    counters = _COUNTER_PAIRS
    stored_at: Any = None
    recorded_at: Any = None
    # Each row's columns by name (as_event_fields): the ledger's order of them is its own.
    for index, (
        position,
        event_id,
        run_id,
        version,
        type_,
        schema,
        payload,
        occurred,
        recorded,
        actor,
        _prev_hash,
        _hash,
    ) in enumerate(as_event_fields(page)):
        stored: Stored | None = None
        fields: Mapping[str, Any] | None = None
        if (
            type(position) is int
            and type(run_id) is int
            and type(version) is int
            and type(schema) is int
            and type(payload) is str
            and position not in skipped
        ):
            try:
                # As events_from_driver reads them: a row it cannot read takes the long way
                # below, which raises its error.
                if recorded != stored_at or recorded_at is None:
                    recorded_at = read_time(recorded)
                    stored_at = recorded
                occurred_at = read_time(occurred)
                data = decode_payload(payload)
            except (ValueError, TypeError, OverflowError, RecursionError):
                data = None
            if data is not None:
                row = rows.get(run_id)
                if (
                    type_ == "RunProgressed"
                    and row is not None
                    and row["status"] == "running"
                    and row["errorDetails"] is None
                    and written_envelope(type_, schema, data, event_id, run_id, occurred_at, actor)
                    is not None
                ):
                    # Each counter checked as written_check checks it (the envelope and the
                    # payload's keys were), and added only when every one is as written and
                    # every total fits (else fold decides, or records the overflow): the row
                    # is untouched until then.
                    totals = {}
                    for name, column in counters:
                        delta = data[name]
                        if type(delta) is not int or not 0 <= delta < COUNTER_LIMIT:
                            break
                        if delta:
                            total = totals[column] = row[column] + delta
                            if total > INT_MAX:
                                break
                    else:
                        row.update(totals)
                        outcome.processed += 1
                        outcome.last_position = position
                        continue
                # What RecordedEvent.read_fields gives for this row, without the event.
                fields = written_fields(type_, schema, data, event_id, run_id, occurred_at, actor)
                if fields is not None:
                    stored = StoredFacts(position, run_id, type_, occurred_at, recorded_at)
        if stored is None:  # the long way: the event, which validation decides
            stored = event = events_from_driver((page[index],), read_time)[0]
        if stored.position not in skipped:
            try:
                if fields is None:
                    row, transition = fold(rows.get(stored.run_id), event)
                else:
                    row, transition = fold_fields(rows.get(stored.run_id), stored, fields)
            except PoisonEventError as poison:
                # Reading the page as events would have raised for a row after it that
                # cannot be read, before folding any: so does this.
                events_from_driver(page[index + 1 :], read_time)
                outcome.poison = poison
                return outcome
            rows[stored.run_id] = row
            if transition is not None:
                transitions.append(transition)
        outcome.processed += 1
        outcome.last_position = stored.position
    return outcome


# (field, column) of each counter, in COUNTER_COLUMNS order (the order _add_counters adds).
_COUNTER_PAIRS = tuple(COUNTER_COLUMNS.items())


# The whole-number columns of a row. SQLite stores any value in any column: a hand-run UPDATE
# that wrote text into one ('many' records fetched) was read as that text, and the fold's sum
# raised a TypeError (a traceback from `ledger project`, the follower dead), as did every table
# of runs. MariaDB's INT columns refuse it.
_WHOLE_NUMBER_COLUMNS = tuple(
    column.name
    for column in ingestion_runs.columns
    if isinstance(column.type, Integer) and not column.primary_key
)


def normalise(row: Any) -> Row:
    """A row read back from the database, in the form the fold produces. Raises TypeError for
    a whole-number column holding anything else (inside :func:`ledger.stored_rows.named_rows`,
    the :class:`ledger.StoredRowError` naming the row)."""
    found = {name: row[name] for name in row.keys()}  # noqa: SIM118 (RowMapping)
    for column in _WHOLE_NUMBER_COLUMNS:
        value = found.get(column)
        if value is not None and type(value) is not int:
            raise TypeError(f"{column} holds {value!r}, not a whole number")
    return found


def whole_seconds(value: datetime) -> datetime:
    return value.replace(microsecond=0)


def fold(row: Row | None, recorded: RecordedEvent) -> tuple[Row, Transition | None]:
    """The row after ``recorded``, and the status change it caused (if any).

    Raises :class:`PoisonEventError` when the event cannot be applied: an unknown type, a
    payload that no longer validates, or an event that contradicts the row.

    The event is read as its model's field values (:meth:`RecordedEvent.read_fields`), which
    is what the model holds, without building the model for an event as the ledger writes it.
    """
    try:
        event = recorded.read_fields()
    except LedgerError as exc:
        raise PoisonEventError(recorded.position, recorded.type, str(exc)) from exc
    return fold_fields(row, recorded, event)


class Stored(Protocol):
    """What :func:`fold_fields` reads of a stored event besides its fields: a
    :class:`RecordedEvent`, or a :class:`StoredFacts` of a driver row."""

    @property
    def position(self) -> int: ...
    @property
    def run_id(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def recorded_at(self) -> datetime: ...


class StoredFacts:
    """:class:`Stored` of a driver row whose fields were checked as written
    (:func:`fold_rows`)."""

    __slots__ = ("occurred_at", "position", "recorded_at", "run_id", "type")

    def __init__(
        self, position: int, run_id: int, type_: str, occurred_at: datetime, recorded_at: datetime
    ) -> None:
        self.position = position
        self.run_id = run_id
        self.type = type_
        self.occurred_at = occurred_at
        self.recorded_at = recorded_at


def fold_fields(
    row: Row | None, recorded: Stored, event: Mapping[str, Any]
) -> tuple[Row, Transition | None]:
    """:func:`fold` of an event whose field values (``event``) were read."""
    event_type = recorded.type
    if event_type == "RunStarted":
        if row is not None:
            raise PoisonEventError(
                recorded.position, recorded.type, f"run {recorded.run_id} already has a row"
            )
        started: Row = {
            "id": recorded.run_id,
            "sourceId": event["source_id"],
            "connectorName": event["connector_name"],
            "startedAt": whole_seconds(event["occurred_at"]),
            "status": "running",
            "createdAt": whole_seconds(_created_at(event["metadata"], recorded)),
        }
        # In the table's column order, so JSON output reads like the legacy table.
        new_row = {column: started.get(column, EMPTY_ROW[column]) for column in EMPTY_ROW}
        return new_row, _transition(recorded, None, "running", event["actor"])
    if row is None:
        raise PoisonEventError(
            recorded.position,
            recorded.type,
            f"run {recorded.run_id} has no row (was its RunStarted skipped?)",
        )
    row = dict(row)
    row["errorDetails"] = _own_details(row["errorDetails"])
    if event_type in COUNTED_TYPES:
        _add_counters(row, event)
    if event_type == "RunProgressed":
        if row["status"] != "running":
            _record_late(row, recorded, event)
        return row, None
    if event_type == "RunFinished":
        if row["status"] != "running":  # the first terminal status wins (DESIGN.md §5)
            _record_late(row, recorded, event)
            return row, None
        _close(row, event["occurred_at"])
        row["status"] = event["status"]
        row["errorMessage"] = legacy_text(event["error_message"], recorded.position)
        row["errorDetails"] = _with_callers_details(row["errorDetails"], event["error_details"])
        return row, _transition(recorded, "running", event["status"], event["actor"])
    if event_type == "RunTimedOut":
        if row["status"] != "running":
            raise PoisonEventError(
                recorded.position,
                recorded.type,
                f"run {recorded.run_id} is already {row['status']}",
            )
        _close(row, event["occurred_at"])
        row["status"] = "failed"
        row["errorMessage"] = legacy_text(timeout_message(event), recorded.position)
        row["errorDetails"] = {
            **(row["errorDetails"] or {}),
            "reason": event["reason"],
            "threshold_seconds": event["threshold_seconds"],
            "last_event_at": _iso(event["last_event_at"]),
            "detected_by": event["detected_by"],
        }
        return row, _transition(
            recorded, "running", "failed", event["actor"] or event["detected_by"]
        )
    raise PoisonEventError(recorded.position, recorded.type, "no projection rule")


def _created_at(metadata: dict[str, Any] | None, recorded: Stored) -> datetime:
    """When the row was created: when the ledger learned of the run, except for a run
    imported from the legacy table, which keeps its original ``createdAt``.

    Appends check ``legacy_created_at`` (ledger.limits); a value stored before that check that
    the legacy column cannot hold falls back to the recorded time instead of stopping the
    projection.
    """
    metadata = metadata or {}
    if metadata.get(IMPORTED_KEY) is True and LEGACY_CREATED_AT_KEY in metadata:
        try:
            return parse_legacy_time(metadata[LEGACY_CREATED_AT_KEY])
        except ValueError:
            pass
    return recorded.recorded_at


def timeout_message(event: Mapping[str, Any]) -> str:
    """The sentence a reader of ``errorMessage`` sees: who, why, threshold, last activity
    (``event``: a RunTimedOut's fields)."""
    last_event_at = event["last_event_at"]
    last = (
        f"last activity {format_utc_seconds(last_event_at)} UTC"
        if last_event_at
        else "no activity recorded"
    )
    if event["threshold_seconds"] is not None:
        threshold = format_duration(event["threshold_seconds"])
        return (
            f"Timed out by {event['detected_by']} after the {threshold} threshold "
            f"({event['reason']}); {last}."
        )
    return f"Marked failed by {event['detected_by']}: {event['reason']}; {last}."


def _close(row: Row, completed_at: datetime) -> None:
    row["completedAt"] = whole_seconds(completed_at)
    row["duration"] = max(0, int((row["completedAt"] - row["startedAt"]).total_seconds()))


def _add_counters(row: Row, event: Mapping[str, Any]) -> None:
    """Add the counter deltas of ``event`` (a RunProgressed's or RunFinished's fields)."""
    details = row["errorDetails"]
    for name, column in COUNTER_COLUMNS.items():
        delta = event[name]
        if not delta:
            continue
        if not details or "counter_overflow" not in details:  # no overflow recorded: the total
            total = row[column] + delta  # is the column (the common case, quicker)
        else:
            earlier = _own_entry(row, "counter_overflow", dict).get(column)
            total = (earlier if isinstance(earlier, int) else row[column]) + delta
        if total <= INT_MAX:
            row[column] = total
            continue
        # The legacy INT(11) cannot hold it: the column stays at its maximum and the true total
        # goes to errorDetails, so no reader is told a wrong number silently.
        row[column] = INT_MAX
        overflow = _own_entry(row, "counter_overflow", dict)
        details = row["errorDetails"] = {
            **(row["errorDetails"] or {}),
            "counter_overflow": {**overflow, column: total},
        }


def _record_late(row: Row, recorded: Stored, event: Mapping[str, Any]) -> None:
    """A fact that arrived after the run was timed out: kept, but the status does not flip
    (``event``: a RunProgressed's or RunFinished's fields)."""
    details = dict(row["errorDetails"] or {})
    counters = {name: event[name] for name in COUNTER_FIELDS if event[name]}
    progressed = recorded.type == "RunProgressed"
    if progressed and not counters:  # a heartbeat
        count = _own_entry(row, "late_heartbeats", dict).get("count")
        details["late_heartbeats"] = {
            "count": (count if isinstance(count, int) else 0) + 1,
            "last_at": _iso(event["occurred_at"]),
        }
    else:
        entry: dict[str, Any] = {
            "type": recorded.type,
            "position": recorded.position,
            "occurred_at": _iso(event["occurred_at"]),
            "recorded_at": _iso(recorded.recorded_at),
        }
        if counters:
            entry["counters"] = counters
        if not progressed:
            entry["status"] = event["status"]
            if event["error_message"]:
                entry["error_message"] = event["error_message"]
        late = _own_entry(row, "late", list)
        progress_listed = sum(
            1 for e in late if isinstance(e, dict) and e.get("type") == "RunProgressed"
        )
        if progressed and progress_listed >= MAX_LATE_PROGRESS_LISTED:
            # A zombie connector reporting for days after its timeout would otherwise grow the
            # row past what the database accepts in one statement, and stop the projection.
            # Its counters are still added; only the listing stops.
            omitted = _own_entry(row, "late_omitted", dict).get("count")
            details["late_omitted"] = {
                "count": (omitted if isinstance(omitted, int) else 0) + 1,
                "last_at": _iso(event["occurred_at"]),
                "last_position": recorded.position,
            }
        else:
            details["late"] = [*late, entry]
    row["errorDetails"] = details


def _own_details(details: object) -> dict[str, Any] | None:
    """``errorDetails`` as the fold reads it: an object, or None. Another JSON value (a
    string, an array, a number) was written outside the projector (a hand-run UPDATE of the
    legacy days, a legacy writer still pointed at the table): it holds none of the ledger's own
    entries, and the ledger's details replace it, as a replay of the run has them. Read as an
    object, it stopped the projection with a TypeError at every retry."""
    return details if isinstance(details, dict) else None


def _own_entry(row: Row, key: str, kind: type[Any]) -> Any:
    """The ledger's own bookkeeping under ``errorDetails[key]``, or an empty one. Callers cannot
    write these keys (see :func:`_with_callers_details`); the type check keeps a row written
    before that rule from stopping the projection."""
    value = (row["errorDetails"] or {}).get(key)
    return value if isinstance(value, kind) else kind()


def _with_callers_details(
    current: dict[str, Any] | None, reported: dict[str, Any] | None
) -> dict[str, Any] | None:
    """``errorDetails`` with a connector's details merged in. The keys the ledger writes itself
    are reserved: a connector's value under one of them is kept under ``reported`` instead, so
    it can neither erase nor forge the ledger's own bookkeeping. Empty details (``{}``) are
    details: they stay ``{}``, as the legacy system kept them, not NULL."""
    if reported is None:
        return dict(current) if current else None
    callers = {k: v for k, v in reported.items() if k not in RESERVED_DETAIL_KEYS}
    kept_apart = {k: v for k, v in reported.items() if k in RESERVED_DETAIL_KEYS}
    if kept_apart:
        callers[REPORTED_KEY] = kept_apart
    return fit_json_depth({**(current or {}), **callers})


def callers_details(reported: dict[str, Any] | None) -> dict[str, Any] | None:
    """How a connector's ``error_details`` appear in ``errorDetails`` on a row with no details
    of the ledger's own yet (the legacy import compares with it)."""
    return _with_callers_details(None, reported)


def fit_json_depth(details: dict[str, Any]) -> dict[str, Any]:
    """``details`` with anything nested deeper than MariaDB's JSON columns hold replaced by its
    JSON text. Appends refuse such values (ledger.limits); this keeps events stored before that
    rule projectable."""
    if json_depth(details) <= MAX_PROJECTED_JSON_DEPTH:
        return details
    clipped: dict[str, Any] = _clip_depth(details, MAX_PROJECTED_JSON_DEPTH)
    return clipped


def _clip_depth(value: Any, levels_left: int) -> Any:
    """``value`` with at most ``levels_left`` levels; deeper containers become JSON text."""
    if not isinstance(value, dict | list):
        return value
    if levels_left <= 1:
        return value if json_depth(value) <= 1 else canonical_json(value)
    if isinstance(value, dict):
        return {k: _clip_depth(v, levels_left - 1) for k, v in value.items()}
    return [_clip_depth(v, levels_left - 1) for v in value]


def legacy_text(text: str | None, position: int) -> str | None:
    """``text`` as the legacy ``TEXT`` column holds it: at most 65,535 bytes of UTF-8. Longer
    text is cut on a character boundary and says so; the whole text stays in the ledger."""
    if text is None:
        return None
    data = text.encode("utf-8")
    if len(data) <= LEGACY_TEXT_BYTES:
        return text
    marker = (
        f" … [truncated: {len(data):,} bytes; the full text is in the ledger, position {position}]"
    )
    room = LEGACY_TEXT_BYTES - len(marker.encode("utf-8"))
    return data[:room].decode("utf-8", errors="ignore") + marker


def _transition(
    recorded: Stored, from_status: str | None, to_status: str, actor: str | None
) -> Transition:
    return Transition(
        recorded.position, recorded.run_id, from_status, to_status, recorded.occurred_at, actor
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else isoformat_utc(value)
