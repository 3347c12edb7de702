"""What the API answers with, as its OpenAPI document shows it: the JSON response class and
the documented shapes of its bodies."""

import json
from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ledger.rules import RUN_STATES
from ledger.text import says_something
from projections.schema import RUN_STATUSES

RunStatus = Literal[RUN_STATUSES]  # type: ignore[valid-type]
RunStateName = Literal[RUN_STATES]  # type: ignore[valid-type]


class LedgerJSON(JSONResponse):
    """JSON with every non-ASCII character escaped: values come back exactly as stored, and a
    U+2028 or U+202E in them reaches no client raw."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


class Problem(BaseModel):
    """An error (RFC 9457); ``errors`` lists each problem of invalid input with its field and
    line (NDJSON) or item (JSON array)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None
    run_id: int | None = None
    rule: str | None = None
    expected_version: int | None = None
    actual_version: int | None = None


class AppendSummary(BaseModel):
    appended: int
    duplicates: int
    first_position: int | None
    last_position: int | None
    allocated_run_ids: list[int]
    run_refs: dict[str, int]


UtcSeconds = Annotated[
    str, Field(json_schema_extra={"format": "date-time"}, examples=["2026-01-28T03:00:07Z"])
]
UtcMicros = Annotated[
    str,
    Field(json_schema_extra={"format": "date-time"}, examples=["2026-01-28T03:00:07.123456Z"]),
]


class IngestionRun(BaseModel):
    """One ``ingestion_runs`` row, the legacy columns as they are (times in whole seconds).

    Spelled out, typed, as clients read it; tests/service/test_api_reads.py holds its fields
    equal, in order, to the table's columns (``projections.schema.ingestion_runs``)."""

    id: int
    sourceId: int
    connectorName: str
    startedAt: UtcSeconds
    completedAt: UtcSeconds | None
    duration: int | None = Field(description="Seconds from startedAt to completedAt")
    status: RunStatus
    recordsFetched: int
    recordsCreated: int
    recordsUpdated: int
    recordsSkipped: int
    claimsCreated: int
    errorMessage: str | None
    errorDetails: Any = Field(description="A JSON object, or null")
    coverageCellsUpdated: int
    createdAt: UtcSeconds


class LedgerRunState(BaseModel):
    """A run's write-side state (``ledger_runs``): what appends check against."""

    run_id: int
    source_id: int
    connector_name: str
    version: int = Field(description="Its number of events: the next append's expected_version")
    state: RunStateName
    started_at: UtcMicros
    last_event_at: UtcMicros = Field(description="The latest occurred_at: its last activity")
    opened_at: UtcMicros
    updated_at: UtcMicros


class RunDetail(BaseModel):
    """A run: its legacy row and its write-side state, live or as of a position."""

    run_id: int
    as_of_position: int | None = Field(description="null: live; else the position replayed to")
    row: IngestionRun | None = Field(description="null while the projection is behind")
    ledger: LedgerRunState
    projected: bool
    note: str | None = Field(description="Why row is null, when it is")


class FailRequest(BaseModel):
    # A field it does not know is refused, as the events' are: {"reason": …, "operator": "bob"}
    # would otherwise be recorded as the token's name without a word.
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=10_000)]

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, reason: str) -> str:
        # As "" is (invalid-request naming the field): only spaces reached the library, whose
        # refusal was an invalid-input naming none.
        if not says_something(reason):
            raise ValueError("must say why the run failed, not only spaces or invisible characters")
        return reason


class FailResult(BaseModel):
    run_id: int
    position: int
    actor: str
    reason: str
