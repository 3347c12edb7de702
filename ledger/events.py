"""Event models: the facts a run is made of (DESIGN.md §5).

Models are pydantic v2, frozen, ``extra="forbid"``; :data:`LedgerEvent` is a discriminated union
on ``type``. A model holds what the *writer* knows; what the ledger assigns on append (position,
version, recorded_at, hashes) lives on :class:`ledger.recorded.RecordedEvent`.
"""

from __future__ import annotations

import unicodedata
import uuid
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ledger.clock import ensure_utc, isoformat_utc, utcnow
from ledger.confusables import skeleton
from ledger.text import SHOWN_AS_ESCAPES, describe_char, is_invisible

# The legacy ingestion_runs columns are INT(11): a run id, a source id, a counter delta and a
# counter total must each stay below this.
COUNTER_LIMIT = 2**31
MAX_RUN_ID = COUNTER_LIMIT - 1
TerminalStatus = Literal["success", "partial", "failed"]
TERMINAL_STATUSES: tuple[str, ...] = get_args(TerminalStatus)

# Ingestion runs did not happen before the Unix epoch; older values are typos or zero dates.
# One second after it: the earliest value the legacy TIMESTAMP columns can hold on MySQL.
EARLIEST_TIME = datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
# The longest text each kind of field holds (characters): the models' limits, which the mapper's
# decoding of recorded events checks too.
CONNECTOR_NAME_MAX = 100
ACTOR_NAME_MAX = 200
REASON_MAX = 2000


def timestamp_text(value: object, field: str) -> object:
    """Refuse a number where a timestamp belongs: pydantic would read ``12345`` or ``"2026"``
    as seconds since 1970, silently. Timestamps are ISO-8601 text with a zone (or datetimes)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number or (isinstance(value, str) and _is_number(value)):
        raise ValueError(
            f"{field} {value!r} is a number; write it as ISO-8601 text with a zone, "
            "like 2026-01-01T00:00:00Z"
        )
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def plausible_time(value: datetime, field: str) -> datetime:
    value = ensure_utc(value, field)
    if value < EARLIEST_TIME:
        raise ValueError(f"{field} {isoformat_utc(value)} is before 1970-01-01T00:00:01Z")
    return value


Counter = Annotated[int, Field(ge=0, lt=COUNTER_LIMIT, strict=True)]
SourceId = Annotated[int, Field(ge=0, lt=COUNTER_LIMIT, strict=True)]
RunId = Annotated[int, Field(ge=1, le=MAX_RUN_ID, strict=True)]

# Validation context for names already recorded (a stored event read back, a legacy row
# adopted): they are taken as they are, so history written before the name rule still reads,
# replays and verifies. The rule applies to every new name.
RECORDED_NAMES: dict[str, bool] = {"recorded_names": True}


OPERATOR_PREFIX = "operator:"
# Who the ledger itself records acting (the report counts transitions by them, actor_kind): the
# sweeper, an operator (``operator:NAME``), an import (``import:legacy``), ``ledger serve``
# timing out a run past its max_run_time (``serve:HOST:PID``) and ``ledger run``'s watchdog doing
# so (``ledger-run:HOST:PID``). A connector reports under its own name
# (``connector:NAME@HOST:PID``, ``connectors.sdk.connector_actor``), which is not reserved.
SWEEPER_ACTOR = "sweeper"
IMPORT_PREFIX = "import:"
SERVE_PREFIX = "serve:"
RUN_WATCHDOG_PREFIX = "ledger-run:"
RESERVED_PREFIXES = (OPERATOR_PREFIX, IMPORT_PREFIX, SERVE_PREFIX, RUN_WATCHDOG_PREFIX)
CONNECTOR_PREFIX = "connector:"

# Whom an event's actor names, as the report counts status transitions (its section D).
ActorKind = Literal[
    "connectors", "sweeper", "operators", "import", "serve", "ledger-run", "other", "unknown"
]
_KIND_BY_PREFIX: tuple[tuple[str, ActorKind], ...] = (
    (CONNECTOR_PREFIX, "connectors"),
    (OPERATOR_PREFIX, "operators"),
    (IMPORT_PREFIX, "import"),
    (SERVE_PREFIX, "serve"),
    (RUN_WATCHDOG_PREFIX, "ledger-run"),
)


def actor_kind(actor: str | None) -> ActorKind:
    """The kind of actor ``actor`` is, by the prefix the ledger writes, spelled exactly (a
    look-alike, ``Sweeper`` recorded before the actor rule, is ``other``); ``unknown`` when
    the event names none."""
    if not actor:
        return "unknown"
    if actor == SWEEPER_ACTOR:
        return "sweeper"
    return next((kind for prefix, kind in _KIND_BY_PREFIX if actor.startswith(prefix)), "other")


def operator_actor(name: str) -> str:
    """The actor recorded for a decision a person made by hand (a run failed, a position
    skipped): ``operator:NAME``, and NAME as it is when it already says ``operator:``. The one
    rule, so an operator can neither pose as ``sweeper`` or ``import:legacy`` nor be recorded
    two ways by two commands."""
    return name if name.startswith(OPERATOR_PREFIX) else f"{OPERATOR_PREFIX}{name}"


def unnamed_operator_problem(actor: str) -> str | None:
    """Why ``actor`` cannot record an operator's act because it names no one: ``operator:``
    with nothing (or only whitespace) after it, as ``--actor ""`` made it; else None. The act
    is audited: whoever reads it must learn who decided."""
    if actor.startswith(OPERATOR_PREFIX) and not actor.removeprefix(OPERATOR_PREFIX).strip():
        return "no name after 'operator:': an operator's act records who decided it"
    return None


def operator_start_problem(actor: str) -> str | None:
    """Why the name after ``operator:`` in ``actor`` cannot start a name, or None: whitespace
    or a combining mark first, which :func:`name_problem` refuses at the start of a whole name.
    ``--actor " bob"`` was refused and ``--actor "operator: bob"`` recorded: a second operator
    that reads as ``operator:bob``."""
    name = actor.removeprefix(OPERATOR_PREFIX)
    if name == actor or not name:
        return None
    index = len(OPERATOR_PREFIX)
    if name[0].isspace():
        return (
            f"whitespace after 'operator:' ({describe_char(name[0])} at index {index}) is not "
            "allowed"
        )
    if unicodedata.category(name[0]) in ("Mn", "Mc", "Me"):
        return (
            f"{describe_char(name[0])} at index {index}: a name after 'operator:' cannot start "
            "with a combining mark"
        )
    return None


def reserved_actor(actor: str) -> str | None:
    """The reserved actor ``actor`` reads as (its :func:`ledger.confusables.skeleton`):
    ``sweeper`` or one of :data:`RESERVED_PREFIXES`; None for any other actor. ``Operator:all``,
    ``operator\uff1aall`` (a full-width colon) and ``operator\ua789all`` (a modifier letter
    colon) read as ``operator:``, as ``operator:all`` does; ``\u0455weeper`` (a Cyrillic dze)
    as ``sweeper``. A name in another script reads as none: only look-alikes of ASCII map."""
    key = skeleton(actor)
    if key == SWEEPER_ACTOR:
        return SWEEPER_ACTOR
    return next((prefix for prefix in RESERVED_PREFIXES if key.startswith(prefix)), None)


def disguised_actor_problem(actor: str) -> str | None:
    """Why ``actor`` cannot be an actor because it reads as a reserved one without being
    spelled as the ledger spells it (``Sweeper``, ``operator\uff1aall``, ``\u0455weeper``), or
    None. The ledger never writes such a spelling; the report would not count it as the actor
    it looks like, while a reader of the timeline would."""
    reserved = reserved_actor(actor)
    if (
        reserved is None
        or actor == reserved
        or (reserved != SWEEPER_ACTOR and actor.startswith(reserved))
    ):
        return None
    shown = reserved if reserved == SWEEPER_ACTOR else f"{reserved}\u2026"
    return (
        f"{actor!r} reads as the reserved actor {shown!r} (compared without case, Unicode "
        f"compatibility forms and look-alike characters) but is spelled otherwise"
        f"{_first_departure(actor, reserved)}: write {shown!r} exactly, or a name that does not "
        "look like it"
    )


def _first_departure(actor: str, reserved: str) -> str:
    """`` (U+0455 CYRILLIC SMALL LETTER DZE at index 0)``: the first character of ``actor`` that
    is not the one the ledger writes there, since a look-alike cannot be seen in the message."""
    # The actor is longer than a reserved prefix, or shorter than it once NFKC expanded it.
    pairs = enumerate(zip(actor, reserved, strict=False))
    index = next((i for i, (char, wanted) in pairs if char != wanted), len(reserved))
    if index >= len(actor):
        return ""
    return f" ({describe_char(actor[index])} at index {index})"


def operators_act(event: EventModel) -> str | None:
    """Why recording ``event`` is an operator's act rather than a connector's report, or None.

    A RunTimedOut declares a run dead (the sweeper's finding, or an operator's decision), and an
    actor that reads as one the ledger writes itself (:func:`reserved_actor`: the sweeper, an
    operator, an import, ``ledger serve``, ``ledger run``) claims their authority. Where the
    caller's rights are known (the HTTP API's scopes), such an event needs the right to
    operate: a connector's token cannot fail a run or pass for the sweeper in the report."""
    if event.type == "RunTimedOut":
        return "a RunTimedOut declares a run dead: the sweeper's finding or an operator's decision"
    if event.actor is not None and reserved_actor(event.actor) is not None:
        return (
            f"actor {event.actor!r} claims the authority of an actor the ledger writes itself "
            "(the sweeper, an operator, an import, ledger serve or ledger run)"
        )
    return None


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a name (a connector name, an actor), or None.

    A name must not be able to pass for another: no invisible character anywhere (control,
    format, line separator, unassigned: :func:`ledger.text.is_invisible`), no whitespace at
    either end (NBSP and the other Unicode spaces included), no combining mark first (it would
    join what is printed before it), and in Unicode's composed form NFC (a decomposed "é" is
    the same text as the composed one, and would be another name). Look-alike letters inside a
    name are not refused.
    """
    # Every invisible character is unprintable to str.isprintable (categories C* and Z* but
    # the ASCII space) or one of the blank letters and marks; most names are neither, and this
    # is checked in C before the loop that says which character and where.
    if not (value.isprintable() and SHOWN_AS_ESCAPES.isdisjoint(value)):
        for index, char in enumerate(value):
            if is_invisible(char):
                return f"{describe_char(char)} at index {index} is not allowed"
    if value[:1].isspace():
        return f"leading whitespace ({describe_char(value[0])} at index 0) is not allowed"
    if value[-1:].isspace():
        index = len(value) - 1
        return f"trailing whitespace ({describe_char(value[-1])} at index {index}) is not allowed"
    if value and unicodedata.category(value[0]) in ("Mn", "Mc", "Me"):
        return f"{describe_char(value[0])} at index 0: a name cannot start with a combining mark"
    if not unicodedata.is_normalized("NFC", value):
        # "e" + U+0301 and "é" (U+00E9), or U+212B ANGSTROM SIGN and "Å", are one text to Unicode
        # and to a reader, and two names to the database.
        composed = unicodedata.normalize("NFC", value)
        return (
            f"not in Unicode normal form NFC: it reads as {composed!r} yet is another name; "
            "write it composed (NFC)"
        )
    return None


# A check of a name: (error type, check), the check saying why a text fails it, or None.
NameCheck = tuple[str, Callable[[str], str | None]]

NAME_CHECK: NameCheck = ("name_character", name_problem)
UNNAMED_OPERATOR: NameCheck = ("unnamed_operator", unnamed_operator_problem)
OPERATOR_START: NameCheck = ("operator_name", operator_start_problem)
# What an actor must pass beyond the name rule (:data:`ActorName`), in order.
_ACTOR_CHECKS: tuple[NameCheck, ...] = (
    ("reserved_actor", disguised_actor_problem),
    UNNAMED_OPERATOR,
    OPERATOR_START,
)


def first_problem(*checks: tuple[NameCheck, str]) -> tuple[str, str] | None:
    """The first problem of ``checks`` (a check and the text it checks), as (error type,
    problem); None when every check passes."""
    for (error_type, check), value in checks:
        problem = check(value)
        if problem is not None:
            return error_type, problem
    return None


def _refuse(value: str, info: ValidationInfo, *checks: NameCheck) -> str:
    """``value``, or the first problem of ``checks`` as a validation error; names read back
    from storage (``RECORDED_NAMES``) are taken as they were written."""
    if info.context and info.context.get("recorded_names"):
        return value
    # first_problem's loop, written out: every name of every event built comes through here.
    for error_type, check in checks:
        problem = check(value)
        if problem is not None:
            raise PydanticCustomError(error_type, "{problem}", {"problem": problem})
    return value


def _refuse_unsafe_name(value: str, info: ValidationInfo) -> str:
    return _refuse(value, info, NAME_CHECK)


def actor_problem(actor: str) -> str | None:
    """Why ``actor`` cannot be an event's actor, or None: the name rule, then what an actor
    adds to it (a reserved actor spelled otherwise, an operator with no name or a blank one)."""
    found = first_problem(*((check, actor) for check in (NAME_CHECK, *_ACTOR_CHECKS)))
    return None if found is None else found[1]


def operator_problem(name: str) -> tuple[str, str] | None:
    """Why ``name``, an operator's as given (``alice``, or ``operator:alice`` as recorded),
    cannot record an operator's act (a run failed, a skip), as (error type, problem); None
    when it can. The one rule of an operator's name: an act by no one first
    (:data:`UNNAMED_OPERATOR`: nothing, or only whitespace, after ``operator:``), then the name
    rule on ``name`` as given (its indexes are the caller's), then the name after ``operator:``
    (:data:`OPERATOR_START`)."""
    actor = operator_actor(name)
    return first_problem((UNNAMED_OPERATOR, actor), (NAME_CHECK, name), (OPERATOR_START, actor))


def operator_name_problem(actor: str) -> str | None:
    """Why ``actor`` cannot record an operator's act (a run failed, a skip), or None: the
    message of :func:`operator_problem`."""
    found = operator_problem(actor)
    return None if found is None else found[1]


def _refuse_disguised_actor(value: str, info: ValidationInfo) -> str:
    return _refuse(value, info, *_ACTOR_CHECKS)


NAME_RULE = AfterValidator(_refuse_unsafe_name)
ConnectorName = Annotated[str, Field(min_length=1, max_length=CONNECTOR_NAME_MAX), NAME_RULE]
RunLabel = Annotated[str, Field(min_length=1, max_length=ACTOR_NAME_MAX), NAME_RULE]
ActorName = Annotated[RunLabel, AfterValidator(_refuse_disguised_actor)]


class EventModel(BaseModel):
    """Fields every event carries."""

    # revalidate_instances: an event given to validation (``model_validate``,
    # ``event_adapter.validate_python``) is validated again, not passed through as it is: the
    # after-validator below would mark a ``model_construct``-ed one validated, and an append
    # stored it as it stood, a poison event. A frozen event's copy is as good as the event.
    model_config = ConfigDict(
        frozen=True, extra="forbid", str_strip_whitespace=False, revalidate_instances="always"
    )

    type: str
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    run_id: RunId | None = None
    # A label that stands for a run started earlier in the same append (resolved by the ledger,
    # never stored): lets one file start a run and report on it without knowing its id.
    run_ref: RunLabel | None = None  # a label, but it names a run: the name rule
    occurred_at: datetime = Field(default_factory=utcnow)
    actor: ActorName | None = None
    schema_version: Annotated[int, Field(ge=1, strict=True)] = 1

    # For every timestamp of every event (RunTimedOut's last_event_at too).
    @field_validator("occurred_at", "last_event_at", mode="before", check_fields=False)
    @classmethod
    def _time_is_not_a_number(cls, value: object, info: ValidationInfo) -> object:
        return timestamp_text(value, str(info.field_name))

    @field_validator("occurred_at", "last_event_at", mode="after", check_fields=False)
    @classmethod
    def _time_is_utc(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        return None if value is None else plausible_time(value, str(info.field_name))

    @model_validator(mode="after")
    def _run_is_named(self) -> EventModel:
        if self.run_id is not None and self.run_ref is not None:
            raise ValueError("give run_id or run_ref, not both")
        if self.run_id is None and self.run_ref is None and not isinstance(self, RunStarted):
            raise ValueError(
                "run_id is required (or run_ref naming a run started in the same batch)"
            )
        mark_validated(self)  # the last check: a model that gets here passed them all
        return self


# The events validation built (by id, each with a weak reference to it, which drops the entry
# when the event goes): what an append takes as it is. Any other event (made with
# model_construct or model_copy(update=...), which skip validation, or a subclass's) is
# validated again by the append, as its type's model (:func:`is_validated`).
_VALIDATED: dict[int, weakref.ReferenceType[Any]] = {}


def mark_validated(event: EventModel) -> None:
    """Note ``event`` as one validation built. An event read back from the ledger without
    validation (:func:`ledger.written.model_from_fields`) is not noted: appended again, it is
    validated again, the name rule included (names read back are taken as recorded)."""
    mark = _Mark(event, _forget)
    mark.key = key = id(event)
    _VALIDATED[key] = mark


class _Mark(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to a validated event that knows its key in :data:`_VALIDATED` (a
    closure per event, as it was, cost a tenth of building one)."""

    __slots__ = ("key",)
    key: int


def _forget(mark: weakref.ReferenceType[Any]) -> None:
    key = mark.key  # type: ignore[attr-defined]
    if _VALIDATED.get(key) is mark:  # not the mark of a newer event at the same address
        _VALIDATED.pop(key, None)


def is_validated(event: EventModel) -> bool:
    """Whether ``event`` is one validation built as it stands: a registered event type's own
    model (not a subclass, whose payload a read could not decode), noted by
    :func:`mark_validated`."""
    mark = _VALIDATED.get(id(event))
    return mark is not None and mark() is event and type(event) in _EVENT_CLASSES


class RunStarted(EventModel):
    """A connector began a run. ``run_id`` absent: the ledger allocates the next id."""

    type: Literal["RunStarted"] = "RunStarted"
    source_id: SourceId
    connector_name: ConnectorName
    metadata: dict[str, Any] | None = None


class _Counters(BaseModel):
    """The counters of a run: the one list of their names (see :data:`COUNTER_FIELDS`)."""

    records_fetched: Counter = 0
    records_created: Counter = 0
    records_updated: Counter = 0
    records_skipped: Counter = 0
    claims_created: Counter = 0
    coverage_cells_updated: Counter = 0


COUNTER_FIELDS: tuple[str, ...] = tuple(_Counters.model_fields)


class RunProgressed(EventModel, _Counters):
    """Counter deltas since the last report; all zero is a heartbeat."""

    type: Literal["RunProgressed"] = "RunProgressed"


class RunFinished(EventModel, _Counters):
    """The connector's own verdict on its run (the first terminal status wins, DESIGN.md §5)."""

    type: Literal["RunFinished"] = "RunFinished"
    status: TerminalStatus
    error_message: str | None = None
    error_details: dict[str, Any] | None = None


class RunTimedOut(EventModel):
    """The run was declared dead: by the sweeper, or by an operator with a reason."""

    type: Literal["RunTimedOut"] = "RunTimedOut"
    reason: Annotated[str, Field(min_length=1, max_length=REASON_MAX)]
    threshold_seconds: Annotated[int, Field(ge=0, strict=True)] | None = None
    last_event_at: datetime | None = None
    detected_by: ActorName


LedgerEvent = Annotated[
    RunStarted | RunProgressed | RunFinished | RunTimedOut,
    Field(discriminator="type"),
]
EVENT_TYPES: dict[str, type[EventModel]] = {
    "RunStarted": RunStarted,
    "RunProgressed": RunProgressed,
    "RunFinished": RunFinished,
    "RunTimedOut": RunTimedOut,
}
# The schema_version each type is written with today (an upcaster registered in
# ledger.mapper reads older ones; the append refuses newer ones).
CURRENT_SCHEMA_VERSIONS: dict[str, int] = {name: 1 for name in EVENT_TYPES}

_EVENT_CLASSES = frozenset(EVENT_TYPES.values())

event_adapter: TypeAdapter[RunStarted | RunProgressed | RunFinished | RunTimedOut] = TypeAdapter(
    LedgerEvent
)
