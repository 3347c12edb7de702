"""The facts a legacy ``ingestion_runs`` row stands for (``ledger import-legacy``): RunStarted
with the row's id (``metadata.imported``), one RunProgressed with its counters unless all are 0,
and a RunFinished unless it is ``running``, all dated from the row and acted by
``import:legacy``; their event ids derived from the row id, so that a second import appends
nothing.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pydantic

from forensics.legacy_table import JSON_NULL, legacy_count
from ledger import (
    EventModel,
    RunFinished,
    RunProgressed,
    RunStarted,
    ValidationError,
)
from ledger.events import IMPORT_PREFIX, RECORDED_NAMES, TERMINAL_STATUSES
from ledger.limits import MAX_JSON_DEPTH, json_depth
from ledger.mapper import describe_pydantic_errors
from ledger.text import clip, quoted
from projections.fold import Row
from projections.schema import COUNTER_COLUMNS

IMPORT_ACTOR = f"{IMPORT_PREFIX}legacy"
_NAMESPACE = uuid.UUID("0b3c33f6-56a5-4c9c-9d0e-3f51c1a3f0d1")
_LEGACY_STATUSES = ("running", *TERMINAL_STATUSES)  # the legacy ENUM's values


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


def fact_event_id(row_id: int, kind: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"legacy-run-{row_id}-{kind}")


def fact_kinds(row: Row) -> list[str]:
    """Which facts a legacy row stands for (:func:`facts_for`), by the kind its event id is
    derived from (:func:`fact_event_id`): its start, its counters unless all are 0, its end unless
    it is ``running``."""
    kinds = ["started"]
    if any(legacy_count(row, column) for column in COUNTER_COLUMNS.values()):
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
                    "event_id": fact_event_id(row["id"], "started"),
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
        kinds = fact_kinds(row)
        if "counters" in kinds:
            counters = {f: legacy_count(row, column) for f, column in COUNTER_COLUMNS.items()}
            events.append(
                RunProgressed(
                    event_id=fact_event_id(row["id"], "counters"),
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
                    event_id=fact_event_id(row["id"], "finished"),
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
