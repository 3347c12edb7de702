"""The mapper: the one place that turns events into stored rows and back.

It owns the canonical JSON (sorted keys, no spaces, UTC timestamps with microseconds) that the
hash chain is computed over, and the upcasters that bring payloads written under an older
``schema_version`` up to the current model before it is validated.
"""

from __future__ import annotations

import _json
import copy
import difflib
import json
import json.scanner
import math
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypedDict, Unpack, cast

import pydantic

from ledger.clock import isoformat_utc
from ledger.errors import (
    InputProblem,
    StoredEventError,
    UnknownEventTypeError,
    ValidationError,
)
from ledger.events import (
    CURRENT_SCHEMA_VERSIONS,
    EVENT_TYPES,
    RECORDED_NAMES,
    EventModel,
    event_adapter,
)
from ledger.text import clip  # also for projections: one clipping helper
from ledger.written import model_from_fields, written_fields

# Fields stored in their own columns; everything else a model holds is the payload.
ENVELOPE_FIELDS = frozenset(
    {"event_id", "type", "run_id", "run_ref", "occurred_at", "actor", "schema_version"}
)

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

# (event type, schema_version it reads) -> function returning the payload at schema_version + 1.
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def register_upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register ``fn`` to upcast ``event_type`` payloads from ``from_version`` to the next one."""

    def decorator(fn: Upcaster) -> Upcaster:
        _UPCASTERS[(event_type, from_version)] = fn
        return fn

    return decorator


def readable_schema_versions(event_type: str) -> list[int]:
    """The schema_versions of ``event_type`` this code reads: its current one and each older
    one the registered upcasters bring up to it (a newer writer's is not among them)."""
    current = CURRENT_SCHEMA_VERSIONS.get(event_type)
    if current is None:
        return []
    readable = [current]
    while (event_type, readable[-1] - 1) in _UPCASTERS:
        readable.append(readable[-1] - 1)
    return sorted(readable)


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return isoformat_utc(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# What json.dumps builds on each call with these arguments, built once: every payload and
# every hashed row goes through it.
_CANONICAL_ENCODER = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    default=_json_default,
)


# The C encoder that _CANONICAL_ENCODER.encode builds afresh on every call, built once: without
# the circular-reference check, whose dict of the containers being encoded is the one state
# it keeps between calls. A value that fails here (a cycle, a number JSON cannot hold, a type
# it does not know) is encoded again the long way, which raises its own error.
_ENCODE_ONCE = _json.make_encoder(
    None,  # no markers: no circular-reference check
    _json_default,
    json.encoder.encode_basestring,
    None,  # no indent
    ":",
    ",",
    True,  # sort_keys
    False,  # skipkeys
    False,  # allow_nan
)


def canonical_json(value: object) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8 kept, UTC timestamps with microseconds."""
    try:
        return "".join(_ENCODE_ONCE(value, 0))
    except (ValueError, TypeError, RecursionError):
        # The long way says what is wrong (a cycle: "Circular reference detected").
        return _CANONICAL_ENCODER.encode(value)


def payload_of(event: EventModel) -> dict[str, Any]:
    """The event's own fields (not the envelope), as plain Python values."""
    names = _PAYLOAD_FIELDS.get(type(event))
    if names is not None:
        fields = vars(event)
        payload = {name: fields.get(name, _MISSING) for name in names}
        # An int, str, datetime or None is what model_dump gives back as it is. Anything else
        # (a JSON object, which may hold values model_dump converts; a value or a missing
        # field of a model made without validation, model_construct) goes through model_dump.
        if all(type(value) in _AS_DUMPED for value in payload.values()):
            return payload
    return event.model_dump(mode="python", exclude=set(ENVELOPE_FIELDS))


_MISSING = object()
_AS_DUMPED = frozenset({int, str, datetime, type(None)})


# Each event class's payload fields, in model order (a subclass of one takes model_dump).
_PAYLOAD_FIELDS: dict[type[EventModel], tuple[str, ...]] = {
    model: tuple(name for name in model.model_fields if name not in ENVELOPE_FIELDS)
    for model in EVENT_TYPES.values()
}


def payload_json(event: EventModel) -> str:
    return canonical_json(payload_of(event))


def upcast(event_type: str, schema_version: int, payload: dict[str, Any]) -> dict[str, Any]:
    """Bring a stored payload up to the current schema version of its type."""
    current = CURRENT_SCHEMA_VERSIONS.get(event_type)
    if current is None:
        raise UnknownEventTypeError(f"unknown event type {event_type!r}")
    if schema_version > current:
        raise UnknownEventTypeError(
            f"{event_type} schema_version {schema_version} is newer than this run-ledger "
            f"understands (at most {current})"
        )
    version = schema_version
    if version < current:
        # The upcasters get a copy of their own: one that edits a nested object in place must
        # not change the stored payload a caller holds decoded (RecordedEvent.payload_data).
        payload = copy.deepcopy(payload)
    while version < current:
        upcaster = _UPCASTERS.get((event_type, version))
        if upcaster is None:
            raise UnknownEventTypeError(
                f"no upcaster registered for {event_type} schema_version {version}"
            )
        # An upcaster is code outside the ledger's control running over stored history: what it
        # raises or returns that is not a JSON object makes this event unreadable (a poison
        # event for the projector, a problem for verify), never a crash of whoever reads it.
        name = getattr(upcaster, "__qualname__", repr(upcaster))
        try:
            upcast_payload: object = upcaster(payload)
        except Exception as exc:
            raise ValidationError(
                f"the upcaster {name} of {event_type} schema_version {version} failed: "
                f"{type(exc).__name__}: {clip(str(exc))}"
            ) from exc
        if not isinstance(upcast_payload, Mapping):
            raise ValidationError(
                f"the upcaster {name} of {event_type} schema_version {version} returned "
                f"{type(upcast_payload).__name__}, not a JSON object"
            )
        payload = dict(upcast_payload)
        version += 1
    return payload


def decode_payload(text: str) -> Any:
    """``json.loads(text)``, quicker for the canonical JSON the ledger stores (no whitespace
    around it): the scanner ``json.loads`` itself uses, without its wrappers."""
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        value, end = None, -1
    return value if end == len(text) else json.loads(text)  # json.loads says what is wrong


# The context typeshed asks for is any object with a decoder's settings.
_scan_json = json.scanner.make_scanner(cast(Any, json.JSONDecoder()))


class StoredEvent(TypedDict):
    """What the mapper reads of a stored event: its columns, the payload decoded."""

    event_type: str
    schema_version: int
    payload: Mapping[str, Any]
    event_id: str
    run_id: int
    occurred_at: datetime
    actor: str | None


# StoredEvent's keys in order: the positional order of written_fields, the hot path.
STORED_EVENT_KEYS = tuple(StoredEvent.__annotations__)


def event_from_stored(
    event_type: str,
    schema_version: int,
    payload: Any,
    event_id: str,
    run_id: int,
    occurred_at: datetime,
    actor: str | None,
) -> EventModel:
    """Rebuild the current model of a stored event (the arguments in
    :data:`STORED_EVENT_KEYS` order, or by name), upcasting its payload if needed: its field
    values taken as they are when it is as this ledger writes it (:func:`written_fields`),
    else validated (:func:`validated_event`). What :attr:`ledger.RecordedEvent.event` is."""
    fields = written_fields(
        event_type, schema_version, payload, event_id, run_id, occurred_at, actor
    )
    if fields is not None:
        return model_from_fields(event_type, fields)
    return validated_event(
        event_type=event_type,
        schema_version=schema_version,
        payload=payload,
        event_id=event_id,
        run_id=run_id,
        occurred_at=occurred_at,
        actor=actor,
    )


def validated_event(**stored: Unpack[StoredEvent]) -> EventModel:
    """:func:`event_from_stored` by validation alone: upcast, then validate the model."""
    event_type, event_id, payload = stored["event_type"], stored["event_id"], stored["payload"]
    if not isinstance(payload, Mapping):  # JSON, but not an object: no append wrote it
        raise StoredEventError(
            f"stored {event_type} {event_id} has a payload that is not a JSON object "
            f"(a JSON {type(payload).__name__})"
        )
    try:
        data = upcast(event_type, stored["schema_version"], dict(payload))
    except UnknownEventTypeError as exc:  # kept apart: its raw form can still be exported
        raise UnknownEventTypeError(f"stored {event_type} {event_id}: {exc}") from exc
    except ValidationError as exc:
        raise StoredEventError(f"stored {event_type} {event_id}: {exc}") from exc
    data.update(
        type=event_type,
        event_id=event_id,
        run_id=stored["run_id"],
        occurred_at=stored["occurred_at"],
        actor=stored["actor"],
        schema_version=CURRENT_SCHEMA_VERSIONS[event_type],
    )
    try:
        return event_adapter.validate_python(data, context=RECORDED_NAMES)
    except pydantic.ValidationError as exc:
        raise StoredEventError(
            f"stored {event_type} {event_id} does not validate: {exc.error_count()} problem(s)",
            problems=describe_pydantic_errors(exc),
        ) from exc


def describe_pydantic_errors(exc: pydantic.ValidationError) -> list[str]:
    """One readable line per pydantic error: ``field: reason``."""
    return [str(problem) for problem in pydantic_problems(exc)]


def pydantic_problems(exc: pydantic.ValidationError) -> list[InputProblem]:
    """One problem per pydantic error: the field (its dotted location) and the reason.

    The discriminated union prefixes locations with the model name (``RunStarted.source_id``);
    that prefix is dropped because the type is already known to the reader.
    """
    problems: list[InputProblem] = []
    for error in exc.errors(include_url=False):
        location = [str(part) for part in error["loc"]]
        event_type = location[0] if location and location[0] in EVENT_TYPES else None
        if event_type is not None:
            location = location[1:]
        field = clip(".".join(location)) or "event"  # an unknown key may be megabytes long
        # A validator's ValueError comes back as "Value error, <its message>": pydantic's
        # wording, not the reader's business.
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden" and event_type is not None and len(location) == 1:
            message = _not_a_field(event_type, location[0])
        elif error["type"] == "union_tag_invalid":
            field = "type"
            message = (
                (
                    f"unknown event type {_shown_type(error['input'].get('type'))}; "
                    "expected one of " + ", ".join(EVENT_TYPES)
                )
                if isinstance(error.get("input"), dict)
                else message
            )
        elif error.get("input") in (math.inf, -math.inf):
            # An integer too long to convert is read as infinity (as JSON's 1e400 is).
            message = f"the number is far too large ({message})"
        elif error["type"] == "union_tag_not_found":
            field = "type"
            message = "missing; expected one of " + ", ".join(EVENT_TYPES)
        problems.append(InputProblem(field, message))
    return problems


def _shown_type(value: object) -> str:
    """An event's ``type`` that names no event type, as the reader wrote it: a string quoted,
    anything else as JSON (``null``, ``true``, ``{"a": 1}``), not as Python (``None``)."""
    if isinstance(value, str):
        return clip(repr(value))
    try:
        return clip(json.dumps(value, ensure_ascii=False, default=str))
    except (TypeError, ValueError):  # not JSON at all (a library caller's object)
        return clip(repr(value))


def _not_a_field(event_type: str, key: str) -> str:
    """A key the event type does not have (pydantic: "Extra inputs are not permitted"): the
    field meant when one is close (a typo, ``record_fetched``), else the type's fields."""
    fields = list(EVENT_TYPES[event_type].model_fields)
    close = difflib.get_close_matches(key[:200], fields, n=1, cutoff=0.75)
    if close:
        return f"not a field of {event_type} (did you mean {close[0]}?)"
    return f"not a field of {event_type}; its fields: {', '.join(fields)}"


def parse_event(data: object) -> EventModel:
    """Validate one decoded JSON object as an event; raise :class:`ValidationError` if invalid."""
    try:
        return event_adapter.validate_python(data)
    except pydantic.ValidationError as exc:
        problems = pydantic_problems(exc)
        raise ValidationError("; ".join(map(str, problems)), details=problems) from exc


def event_to_wire(event: EventModel) -> dict[str, Any]:
    """The JSON Lines form of an event (what ``ledger append`` reads), canonical values."""
    data: dict[str, Any] = json.loads(canonical_json(event.model_dump(mode="python")))
    if data.get("run_ref") is None:
        data.pop("run_ref", None)
    return data
