"""Stored events as this ledger writes them, read without validating them again.

A stored event at its type's current schema_version, written by this ledger, holds every field
of its model in the form canonical JSON gave it. Validating it again (dict -> pydantic, with
the models' Python validators) is most of the cost of reading history; instead its values are
checked here against the models' constraints and taken as they are. Anything these checks do
not accept exactly as it stands (a field missing or extra, a value of another type or out of
range, text in another form) goes through validation, which decides: an event that no longer
validates stays a ValidationError (a poison event for the projector).
tests/ledger/test_written_fields.py proves, over the accepted domain and beyond it, that the
values taken here are, field for field, those of the model validation builds.

The mapper's fast path (:func:`ledger.mapper.event_from_stored`), :class:`ledger.RecordedEvent`'s
fields and the replay's folding of driver rows (:func:`projections.fold.fold_rows`) take these.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pydantic

from ledger.events import (
    ACTOR_NAME_MAX,
    CONNECTOR_NAME_MAX,
    COUNTER_FIELDS,
    COUNTER_LIMIT,
    CURRENT_SCHEMA_VERSIONS,
    EARLIEST_TIME,
    EVENT_TYPES,
    MAX_RUN_ID,
    REASON_MAX,
    TERMINAL_STATUSES,
    EventModel,
)

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
