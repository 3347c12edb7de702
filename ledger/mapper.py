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
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
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
    ACTOR_NAME_MAX,
    CONNECTOR_NAME_MAX,
    COUNTER_FIELDS,
    COUNTER_LIMIT,
    EARLIEST_TIME,
    EVENT_TYPES,
    MAX_RUN_ID,
    REASON_MAX,
    RECORDED_NAMES,
    TERMINAL_STATUSES,
    EventModel,
    event_adapter,
)
from ledger.text import clip  # also for projections: one clipping helper

# Fields stored in their own columns; everything else a model holds is the payload.
ENVELOPE_FIELDS = frozenset(
    {"event_id", "type", "run_id", "run_ref", "occurred_at", "actor", "schema_version"}
)

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

# (event type, schema_version it reads) -> function returning the payload at schema_version + 1.
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}
# The schema_version each type is written with today.
CURRENT_SCHEMA_VERSIONS: dict[str, int] = {name: 1 for name in EVENT_TYPES}


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


# ---------------------------------------------------------------------- events as written
#
# A stored event at its type's current schema_version, written by this ledger, holds every field
# of its model in the form canonical JSON gave it. Validating it again (dict -> pydantic, with
# the models' Python validators) is most of the cost of reading history; instead its values are
# checked here against the models' constraints and taken as they are. Anything these checks do
# not accept exactly as it stands (a field missing or extra, a value of another type or out of
# range, text in another form) goes through validation, which decides: an event that no longer
# validates stays a ValidationError (a poison event for the projector).
# tests/ledger/test_written_fields.py proves, over the accepted domain and beyond it, that the
# values taken here are, field for field, those of the model validation builds.

_REFUSED = object()
_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIME_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
# How the models turn the event id into a UUID (pydantic's own validator, without its wrapper).
_uuid_from_text = pydantic.TypeAdapter(uuid.UUID).validator.validate_python


def _valid_unicode(text: str) -> bool:
    """pydantic refuses a lone surrogate in a string with a length limit."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(longest: int) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        fits = type(value) is str and 1 <= len(value) <= longest and _valid_unicode(value)
        return value if fits else _REFUSED

    return check


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def _counter(value: Any) -> Any:
    return value if type(value) is int and 0 <= value < COUNTER_LIMIT else _REFUSED


def _plain_text(value: Any) -> Any:
    return value if type(value) is str else _REFUSED


def _json_object(value: Any) -> Any:
    if type(value) is not dict or not all(type(key) is str for key in value):
        return _REFUSED
    return dict(value)  # a new dict, as validation gives


def _status(value: Any) -> Any:
    return value if type(value) is str and value in TERMINAL_STATUSES else _REFUSED


def _time(value: Any) -> Any:
    if type(value) is not str or _TIME_TEXT.fullmatch(value) is None:
        return _REFUSED
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return _REFUSED
    return moment if moment.tzinfo is UTC and moment >= EARLIEST_TIME else _REFUSED


def _threshold(value: Any) -> Any:
    return value if type(value) is int and value >= 0 else _REFUSED


# Each type's payload fields other than counters, and how each is checked and converted.
_OTHER_FIELDS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "RunStarted": {
        "source_id": _counter,
        "connector_name": _text(CONNECTOR_NAME_MAX),
        "metadata": _optional(_json_object),
    },
    "RunProgressed": {},
    "RunFinished": {
        "status": _status,
        "error_message": _optional(_plain_text),
        "error_details": _optional(_json_object),
    },
    "RunTimedOut": {
        "reason": _text(REASON_MAX),
        "threshold_seconds": _optional(_threshold),
        "last_event_at": _optional(_time),
        "detected_by": _text(ACTOR_NAME_MAX),
    },
}
_WITH_COUNTERS = frozenset({"RunProgressed", "RunFinished"})
_PAYLOAD_KEYS = {
    name: frozenset(others) | (frozenset(COUNTER_FIELDS) if name in _WITH_COUNTERS else frozenset())
    for name, others in _OTHER_FIELDS.items()
}
_actor = _optional(_text(ACTOR_NAME_MAX))
# Each model's fields in its own order (the order of a validated model's __dict__).
_FIELD_ORDER = {name: tuple(model.model_fields) for name, model in EVENT_TYPES.items()}
# The fields validation reports as set: the payload's and the envelope's (never run_ref).
_FIELDS_SET = {name: frozenset(_FIELD_ORDER[name]) - {"run_ref"} for name in EVENT_TYPES}


def written_fields(
    event_type: str,
    schema_version: int,
    payload: Mapping[str, Any],
    event_id: str,
    run_id: int,
    occurred_at: datetime,
    actor: str | None,
) -> dict[str, Any] | None:
    """The field values of a stored event as this ledger writes it, or None when only
    validation can say (see above)."""
    written = written_check(
        event_type, schema_version, payload, event_id, run_id, occurred_at, actor
    )
    if written is None:
        return None
    # In the model's field order (its __dict__'s, which model_from_fields takes as it is):
    # every field None (run_ref stays so), then the payload's values and the envelope's.
    values = dict.fromkeys(written.fields)
    values.update(payload)  # its keys are the type's payload fields (written_envelope)
    values["type"] = event_type
    values["event_id"] = _uuid_from_text(event_id)
    values["run_id"] = run_id
    values["occurred_at"] = occurred_at
    values["actor"] = actor
    values["schema_version"] = schema_version
    for name, check in written.others:
        value = values[name] = check(payload[name])
        if value is _REFUSED:
            return None
    return values


def written_check(
    event_type: str,
    schema_version: int,
    payload: Any,
    event_id: str,
    run_id: int,
    occurred_at: datetime,
    actor: str | None,
) -> _Written | None:
    """Every check of :func:`written_fields` but those of its type's other fields
    (``_Written.others``, which convert values too): what its type needs when they pass, else
    None. A type without other fields (``RunProgressed``) whose check passes is as written,
    its payload values (the counters) the model's."""
    written = written_envelope(
        event_type, schema_version, payload, event_id, run_id, occurred_at, actor
    )
    if written is None:
        return None
    for name in written.counters:
        value = payload[name]
        if type(value) is not int or not 0 <= value < COUNTER_LIMIT:
            return None
    return written


def written_envelope(
    event_type: str,
    schema_version: int,
    payload: Any,
    event_id: str,
    run_id: int,
    occurred_at: datetime,
    actor: str | None,
) -> _Written | None:
    """:func:`written_check` but for the counters (``_Written.counters``), each of which must
    then pass its check, ``type(value) is int and 0 <= value < COUNTER_LIMIT``: a replay
    that folds a ``RunProgressed`` straight from its row checks them as it adds them
    (:func:`projections.fold.fold_rows`)."""
    # Every event of a replay comes through here: one lookup for what its type needs, and
    # the checks written out rather than looped over where they are the same for all types.
    written = _WRITTEN.get(event_type)
    if (
        written is None
        # Read each time, not kept in _WRITTEN: a new schema version raises it at run time.
        or schema_version != CURRENT_SCHEMA_VERSIONS.get(event_type)
        or type(payload) is not dict
        or payload.keys() != written.keys
        or type(run_id) is not int
        or not 1 <= run_id <= MAX_RUN_ID
        or type(occurred_at) is not datetime
        or occurred_at.tzinfo is not UTC
        or occurred_at < EARLIEST_TIME
        or type(event_id) is not str
        or _UUID_TEXT.fullmatch(event_id) is None
        or (actor is not None and _actor(actor) is _REFUSED)
    ):
        return None
    return written


@dataclass(frozen=True)
class _Written:
    """What :func:`written_fields` checks of one event type."""

    keys: frozenset[str]
    counters: tuple[str, ...]
    others: tuple[tuple[str, Callable[[Any], Any]], ...]
    fields: tuple[str, ...]  # every field of the model, in its order


_WRITTEN = {
    name: _Written(
        _PAYLOAD_KEYS[name],
        COUNTER_FIELDS if name in _WITH_COUNTERS else (),
        tuple(_OTHER_FIELDS[name].items()),
        _FIELD_ORDER[name],
    )
    for name in _OTHER_FIELDS
}


def model_from_fields(event_type: str, fields: dict[str, Any]) -> EventModel:
    """The model holding ``fields`` (a new dict from :func:`written_fields`, every field in the
    model's order), as validation builds it: what ``model_construct`` does, without its
    per-field defaults and aliases (every field is given). ``fields`` becomes the model's own
    ``__dict__``, not copied: the caller gives it up. The state set is pydantic's own
    (``__getstate__``), which the tests compare."""
    event = object.__new__(EVENT_TYPES[event_type])
    object.__setattr__(event, "__dict__", fields)
    object.__setattr__(event, "__pydantic_fields_set__", set(_FIELDS_SET[event_type]))
    object.__setattr__(event, "__pydantic_extra__", None)
    object.__setattr__(event, "__pydantic_private__", None)
    return event


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
