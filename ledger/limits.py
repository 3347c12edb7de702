"""What an event's payload may hold so that the projection can always store it.

These rules are checked when an event is appended (:func:`ledger.batch_checks.prepare_batch`),
not when a stored event is read back: history written before a rule existed still replays, and
the fold stores such old values in a form the legacy columns hold (:mod:`projections.fold`).

* JSON values (``metadata``, ``error_details``) nest at most :data:`MAX_JSON_DEPTH` levels.
  MariaDB's JSON columns refuse 32 levels (``json_valid``), and the projection puts a caller's
  value one level further down when it keeps it under ``reported``; 20 leaves room for both and
  is far beyond any real error report.
* ``RunStarted.metadata`` keys the projection reads are typed: ``imported`` is a boolean and
  ``legacy_created_at`` an ISO-8601 time with a zone that the legacy ``TIMESTAMP`` column holds.
  ``imported: true`` is the import's own mark (the projection then takes ``createdAt`` from
  the metadata), so only an import's actor (``import:…``) may write it: a connector writing it
  could date its run's ``createdAt`` anywhere from 1970 to 2038.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ledger.clock import isoformat_utc, parse_utc
from ledger.errors import InputProblem
from ledger.events import EARLIEST_TIME, IMPORT_PREFIX, EventModel
from ledger.text import clip

MAX_JSON_DEPTH = 20
# The range of MySQL's TIMESTAMP, the type of the legacy ingestion_runs time columns.
EARLIEST_LEGACY_TIME = EARLIEST_TIME
LATEST_LEGACY_TIME = datetime(2038, 1, 19, 3, 14, 7, tzinfo=UTC)
# The payload fields that hold free-form JSON.
JSON_FIELDS = ("metadata", "error_details")
# RunStarted.metadata keys that the projection reads (the legacy import writes them).
IMPORTED_KEY = "imported"
LEGACY_CREATED_AT_KEY = "legacy_created_at"


def json_depth(value: object) -> int:
    """Levels of objects and arrays in ``value``: 0 for a scalar, 1 for ``{}`` or ``[1]``.

    Iterative, so a hostile 100,000-level value costs memory, not a RecursionError.
    """
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_legacy_time(value: object) -> datetime:
    """``legacy_created_at`` as an aware UTC datetime; ValueError says why it is not one."""
    if not isinstance(value, str):
        raise ValueError(f"must be ISO-8601 text with a zone, got {type(value).__name__}")
    try:
        # A lowercase z too: appends have always taken it, and stored events must still project.
        parsed = parse_utc(value.replace("z", "Z"), naive="refuse")
    except ValueError as exc:
        raise ValueError(f"{clip(value, 60)!r} {exc}") from None
    if not EARLIEST_LEGACY_TIME <= parsed <= LATEST_LEGACY_TIME:
        raise ValueError(
            f"{isoformat_utc(parsed)} is outside the legacy TIMESTAMP range "
            f"({isoformat_utc(EARLIEST_LEGACY_TIME)} to {isoformat_utc(LATEST_LEGACY_TIME)})"
        )
    return parsed


def payload_problems(event: EventModel) -> list[InputProblem]:
    """Problems of an event's JSON fields; empty when storable."""
    problems: list[InputProblem] = []
    # The model's fields by name: getattr of a field this event type lacks costs an exception.
    fields = vars(event)
    for name in JSON_FIELDS:
        value = fields.get(name)
        if value is not None:
            depth = json_depth(value)
            if depth > MAX_JSON_DEPTH:
                problems.append(
                    InputProblem(
                        name, f"nested {depth:,} levels deep; the limit is {MAX_JSON_DEPTH}"
                    )
                )
    metadata = fields.get("metadata")
    if isinstance(metadata, Mapping):
        if IMPORTED_KEY in metadata and not isinstance(metadata[IMPORTED_KEY], bool):
            problems.append(InputProblem(f"metadata.{IMPORTED_KEY}", "must be true or false"))
        elif metadata.get(IMPORTED_KEY) is True and not (event.actor or "").startswith(
            IMPORT_PREFIX
        ):
            problems.append(
                InputProblem(
                    f"metadata.{IMPORTED_KEY}",
                    f"true is written by an import only (actor {IMPORT_PREFIX}…), got "
                    + (f"actor {event.actor!r}" if event.actor else "no actor"),
                )
            )
        if LEGACY_CREATED_AT_KEY in metadata:
            try:
                parse_legacy_time(metadata[LEGACY_CREATED_AT_KEY])
            except ValueError as exc:
                problems.append(InputProblem(f"metadata.{LEGACY_CREATED_AT_KEY}", str(exc)))
    return problems
