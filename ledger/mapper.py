"""The mapper: the one place that turns events into stored rows and back.

It owns the canonical JSON (sorted keys, no spaces, UTC timestamps with microseconds) that the
hash chain is computed over, and the upcasters that bring payloads written under an older
``schema_version`` up to the current model before it is validated.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import pydantic

from ledger.clock import isoformat_utc
from ledger.errors import InputProblem, UnknownEventTypeError, ValidationError
from ledger.events import EVENT_TYPES, RECORDED_NAMES, EventModel, event_adapter
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


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return isoformat_utc(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def canonical_json(value: object) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8 kept, UTC timestamps with microseconds."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_json_default,
    )


def payload_of(event: EventModel) -> dict[str, Any]:
    """The event's own fields (not the envelope), as plain Python values."""
    return event.model_dump(mode="python", exclude=set(ENVELOPE_FIELDS))


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
    while version < current:
        upcaster = _UPCASTERS.get((event_type, version))
        if upcaster is None:
            raise UnknownEventTypeError(
                f"no upcaster registered for {event_type} schema_version {version}"
            )
        payload = upcaster(payload)
        version += 1
    return payload


def event_from_stored(
    *,
    event_type: str,
    schema_version: int,
    payload: Mapping[str, Any],
    event_id: str,
    run_id: int,
    occurred_at: datetime,
    actor: str | None,
) -> EventModel:
    """Rebuild the current model of a stored event, upcasting its payload if needed."""
    data = upcast(event_type, schema_version, dict(payload))
    data.update(
        type=event_type,
        event_id=event_id,
        run_id=run_id,
        occurred_at=occurred_at,
        actor=actor,
        schema_version=CURRENT_SCHEMA_VERSIONS[event_type],
    )
    try:
        return event_adapter.validate_python(data, context=RECORDED_NAMES)
    except pydantic.ValidationError as exc:
        raise ValidationError(
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
        if location and location[0] in EVENT_TYPES:
            location = location[1:]
        field = clip(".".join(location)) or "event"  # an unknown key may be megabytes long
        message = error["msg"]
        if error["type"] == "union_tag_invalid":
            field = "type"
            message = (
                (
                    f"unknown event type {clip(repr(error['input'].get('type')))}; "
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
