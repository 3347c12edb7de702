"""What the ledger hands back: events as stored, with what the ledger assigned to them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.clock import isoformat_utc
from ledger.errors import StoredEventError
from ledger.events import EventModel
from ledger.mapper import decode_payload, event_from_stored
from ledger.written import written_fields


@dataclass(frozen=True)
class RecordedEvent:
    """One ``ledger_events`` row. ``payload`` is the stored canonical JSON text."""

    position: int
    event_id: str
    run_id: int
    version: int
    type: str
    schema_version: int
    payload: str
    occurred_at: datetime
    recorded_at: datetime
    actor: str | None
    prev_hash: str
    hash: str

    def as_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    # Computed once and kept in the instance's __dict__, as functools.cached_property would,
    # without the lock it takes on Python 3.11 (a sixth of the time of reading history).

    @property
    def payload_data(self) -> dict[str, Any]:
        """The payload, decoded (a new dict the first time, the same one after)."""
        data: dict[str, Any] | None = self.__dict__.get("_payload_data")
        if data is None:
            data = self.__dict__["_payload_data"] = self._decoded()
        return data

    @property
    def event(self) -> EventModel:
        """The event as the current model (upcast if it was written under an older schema).

        Raises :class:`ledger.errors.UnknownEventTypeError` for a type this code does not know,
        and :class:`ledger.errors.ValidationError` for a payload that no longer validates.
        """
        stored = self.__dict__
        event: EventModel | None = stored.get("_event")
        if event is None:
            # Built afresh, not from _fields: the model gets JSON objects of its own.
            event = stored["_event"] = event_from_stored(*self._stored())
        return event

    @property
    def fields(self) -> Mapping[str, Any]:
        """The field values of :attr:`event` (``vars(self.event)``), with the same errors, without
        building the model when the event is as this ledger writes it: what a replay reads."""
        stored = self.__dict__
        fields: Mapping[str, Any] | None = stored.get("_fields")
        if fields is None:
            fields = self._as_written()
            if fields is None:
                fields = vars(self.event)  # validated (or its error raised)
            stored["_fields"] = fields
        return fields

    def read_fields(self) -> Mapping[str, Any]:
        """:attr:`fields`, without keeping them in the event: for a replay, which reads each
        event once. A kept dict holds a UUID, so the garbage collector would track it (and the
        event's own dict) for as long as the page of events lives."""
        fields = self.__dict__.get("_fields") or self._as_written()
        return self.fields if fields is None else fields

    # Both read the instance's __dict__ directly: they run for every event of a replay.

    def _payload(self) -> Any:
        payload = self.__dict__.get("_payload_data")
        return self._decoded() if payload is None else payload

    def _decoded(self) -> Any:
        """The stored payload decoded; text that is not JSON (a row no append of this ledger
        wrote) is a :class:`ValidationError`, as a payload that no longer validates is."""
        try:
            return decode_payload(self.__dict__["payload"])
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to read
            raise StoredEventError(
                f"stored {self.type} {self.event_id} has a payload that is not JSON: {exc}"
            ) from exc

    def _as_written(self) -> dict[str, Any] | None:
        """The field values as this ledger writes them, or None (:func:`written_fields`)."""
        return written_fields(*self._stored())

    def _stored(self) -> tuple[str, int, Any, str, int, datetime, str | None]:
        """What the mapper reads of a stored event, in :data:`STORED_EVENT_KEYS` order."""
        stored = self.__dict__
        return (
            stored["type"],
            stored["schema_version"],
            self._payload(),
            stored["event_id"],
            stored["run_id"],
            stored["occurred_at"],
            stored["actor"],
        )


_RECORDED_FIELDS = tuple(RecordedEvent.__dataclass_fields__)


def recorded_event(*columns: Any) -> RecordedEvent:
    """``RecordedEvent(*columns)``, the twelve columns in field order, as its ``__init__``
    makes it (the same ``__dict__``, in the same order), in one dict rather than twelve
    frozen-dataclass setattr calls: the append makes one for every event it writes."""
    event = object.__new__(RecordedEvent)
    object.__setattr__(event, "__dict__", dict(zip(_RECORDED_FIELDS, columns, strict=True)))
    return event


@dataclass(frozen=True)
class StoredRef:
    """What identifies a stored event, read raw (no model, so an unknown type reads too)."""

    position: int
    run_id: int
    type: str
    hash: str
    recorded_at: datetime
    prev_hash: str  # what the event was chained to: the next event's check of this one


@dataclass(frozen=True)
class LedgerHead:
    """The last position and hash of the chain, and the highest run id ever used."""

    last_position: int
    last_hash: str
    last_run_id: int
    last_recorded_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """The head as JSON, as an anchor names it: position, hash, when (UTC ISO-8601)."""
        when = self.last_recorded_at
        return {
            "position": self.last_position,
            "hash": self.last_hash,
            "recorded_at": None if when is None else isoformat_utc(when),
        }


@dataclass(frozen=True)
class AppendResult:
    """The outcome of one :meth:`ledger.Ledger.append`.

    ``events`` has one entry per submitted event, in submission order: the stored row, which for
    a duplicate ``event_id`` is the row stored earlier (I3). ``new_events`` are those this call
    stored.
    """

    events: list[RecordedEvent]
    new_events: list[RecordedEvent]
    run_refs: dict[str, int] = field(default_factory=dict)
    allocated_run_ids: list[int] = field(default_factory=list)

    @property
    def appended(self) -> int:
        return len(self.new_events)

    @property
    def duplicates(self) -> int:
        return len(self.events) - len(self.new_events)

    @property
    def first_position(self) -> int | None:
        """Position of the first event this call stored; None when all were duplicates."""
        return self.new_events[0].position if self.new_events else None

    @property
    def last_position(self) -> int | None:
        return self.new_events[-1].position if self.new_events else None

    def to_dict(self) -> dict[str, Any]:
        """The outcome as JSON: counts, positions, run ids allocated and run_refs resolved."""
        return {name: getattr(self, name) for name in _SUMMARY}


_SUMMARY = (
    "appended",
    "duplicates",
    "first_position",
    "last_position",
    "allocated_run_ids",
    "run_refs",
)
