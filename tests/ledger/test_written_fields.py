"""Reading stored events without validating them again (ledger.written.written_fields).

An event as the ledger writes it is taken from its stored values after checks that mirror the
models' constraints; anything else is validated. These properties prove that whatever the
checks accept is, field for field and type for type, what validation builds, over the accepted
domain and over values just outside it; and that every event the ledger accepts takes the
quick way.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import RunFinished, RunProgressed, RunStarted, RunTimedOut, ValidationError
from ledger import mapper as mapper_module
from ledger import recorded as recorded_module
from ledger.clock import isoformat_utc
from ledger.dialects import stored_time_reader
from ledger.events import (
    ACTOR_NAME_MAX,
    CONNECTOR_NAME_MAX,
    COUNTER_FIELDS,
    COUNTER_LIMIT,
    EVENT_TYPES,
    MAX_RUN_ID,
    REASON_MAX,
    EventModel,
    actor_problem,
    name_problem,
)
from ledger.mapper import (
    ENVELOPE_FIELDS,
    canonical_json,
    decode_payload,
    event_from_stored,
    payload_json,
    payload_of,
    validated_event,
)
from ledger.reads import events_from_driver
from ledger.recorded import RecordedEvent
from ledger.written import written_fields

# Text of every kind (lone surrogates, other planes, control characters), and around limits.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
good_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)


def sized(longest: int) -> st.SearchStrategy[str]:
    """Text of valid Unicode at and around the limits of a field of ``longest`` characters."""
    return good_text | st.sampled_from([1, longest - 1, longest]).map(lambda n: "é𝄞"[n % 2] * n)


def oversized(longest: int) -> st.SearchStrategy[str]:
    """Text such a field cannot hold: empty, too long, a lone surrogate within the length."""
    return st.sampled_from(["", "x" * (longest + 1), "a\ud800", "\udfff" * longest])


counters = st.integers(0, COUNTER_LIMIT - 1) | st.sampled_from([0, COUNTER_LIMIT - 1])
odd_values = st.sampled_from([None, True, False, 1.0, "1", "", [], {}, {1: "a"}, -1, COUNTER_LIMIT])
objects = st.dictionaries(any_text, st.none() | st.integers() | any_text, max_size=3)
moments = st.datetimes(
    min_value=datetime(1970, 1, 1, 0, 0, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
early = st.datetimes(
    min_value=datetime(1969, 12, 31),
    max_value=datetime(1970, 1, 1, 0, 0, 1),
    timezones=st.just(UTC),
)

# For each field: values an event as written holds, and values just outside (or in another form).
VALID: dict[str, st.SearchStrategy[Any]] = {
    **dict.fromkeys(COUNTER_FIELDS, counters),
    "source_id": counters,
    "connector_name": sized(CONNECTOR_NAME_MAX),
    "metadata": st.none() | objects,
    "status": st.sampled_from(["success", "partial", "failed"]),
    "error_message": st.none() | any_text,
    "error_details": st.none() | objects,
    "reason": sized(REASON_MAX),
    "threshold_seconds": st.none() | st.integers(0, 10**12),
    "last_event_at": st.none() | moments.map(isoformat_utc),
    "detected_by": sized(ACTOR_NAME_MAX),
    "event_id": st.uuids().map(str),
    "run_id": st.integers(1, MAX_RUN_ID) | st.just(MAX_RUN_ID),
    "occurred_at": moments,
    "actor": st.none() | sized(ACTOR_NAME_MAX),
}
OUTSIDE: dict[str, st.SearchStrategy[Any]] = {
    **dict.fromkeys(COUNTER_FIELDS, odd_values | st.integers()),
    "source_id": odd_values | st.integers(),
    "connector_name": oversized(CONNECTOR_NAME_MAX) | odd_values,
    "metadata": odd_values,
    "status": st.sampled_from(["running", "Success", "success "]) | odd_values,
    "error_message": odd_values,
    "error_details": odd_values,
    "reason": oversized(REASON_MAX) | odd_values,
    "threshold_seconds": odd_values | st.integers(max_value=-1),
    "last_event_at": odd_values
    | early.map(isoformat_utc)
    | moments.map(lambda m: m.isoformat())
    | moments.map(lambda m: isoformat_utc(m)[:19] + "Z")
    | moments.map(lambda m: m.strftime("%Y%m%dT%H%M%S.%fZ"))  # Python reads it, pydantic not
    | st.sampled_from(["0000-01-01T00:00:00.000000Z", "2026-02-30T00:00:00.000000Z"]),
    "detected_by": oversized(ACTOR_NAME_MAX) | odd_values,
    "event_id": st.uuids().map(lambda u: str(u).upper())
    | st.uuids().map(lambda u: u.hex)
    | st.uuids().map(lambda u: "{" + str(u) + "}")
    | any_text
    | odd_values,
    "run_id": st.sampled_from([0, MAX_RUN_ID + 1, True, None, 1.0, "1"]),
    "occurred_at": early
    | moments.map(lambda m: m.astimezone(timezone(timedelta(hours=-14))))
    | moments.map(lambda m: m.replace(tzinfo=None))
    | st.just("2026-01-01T00:00:00Z"),
    "actor": oversized(ACTOR_NAME_MAX) | odd_values,
}


ENVELOPE = ("event_id", "run_id", "occurred_at", "actor")
PERTURBED = [*sorted({*VALID} - {*ENVELOPE}), *ENVELOPE, "payload", "schema_version", "type"]


@st.composite
def stored_events(draw: st.DrawFn, perturbed: str) -> dict[str, Any]:
    """A stored event's parts, each as written but one: ``perturbed``, just outside what the
    model holds or in another form (a field, or the payload's keys, the schema, the type)."""
    types = [t for t, m in EVENT_TYPES.items() if perturbed in m.model_fields] or list(EVENT_TYPES)
    event_type = draw(st.sampled_from(types))
    names = [name for name in EVENT_TYPES[event_type].model_fields if name not in ENVELOPE_FIELDS]
    parts = {name: draw(VALID[name]) for name in [*names, *ENVELOPE]}
    if perturbed in parts:
        parts[perturbed] = draw(OUTSIDE[perturbed])
    payload = {name: parts.pop(name) for name in names}
    schema_version = 1
    if perturbed == "payload":
        if draw(st.booleans()):
            payload.pop(draw(st.sampled_from(names)))
        else:
            payload[draw(st.sampled_from(["extra", "run_id", "event_id", "type"]))] = 1
    elif perturbed == "schema_version":
        schema_version = draw(st.sampled_from([0, 2]))
    elif perturbed == "type":
        event_type = draw(st.sampled_from([*EVENT_TYPES, "RunPaused"]))
    return {
        "event_type": event_type,
        "schema_version": schema_version,
        "payload": payload,
        **parts,
    }


def assert_same_model(taken: EventModel, validated: EventModel) -> None:
    """Equal as pydantic sees a model (its whole state), and each value of the same type."""
    assert taken.__getstate__() == validated.__getstate__()
    assert list(vars(taken)) == list(vars(validated))  # same order: repr, iteration
    for name, value in vars(validated).items():
        assert type(vars(taken)[name]) is type(value), name
        if isinstance(value, datetime):
            assert vars(taken)[name].tzinfo is value.tzinfo, name
    assert repr(taken) == repr(validated)
    assert taken.model_dump() == validated.model_dump()


@pytest.mark.parametrize("perturbed", ["nothing", *PERTURBED])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_what_the_checks_take_is_what_validation_builds(
    perturbed: str, data: st.DataObject
) -> None:
    stored = data.draw(stored_events(perturbed))
    fields = written_fields(**stored)
    try:
        validated: EventModel | None = validated_event(**stored)
    except (ValidationError, ValueError):  # UnknownEventTypeError is a ValidationError
        validated = None
    if perturbed == "nothing":
        assert fields is not None, "an event as written was validated again"
    if fields is None:
        return  # validation decides, as before
    assert validated is not None, "taken as written, but validation refuses it"
    assert fields == vars(validated)
    taken = event_from_stored(**stored)
    assert_same_model(taken, validated)
    for name, value in stored["payload"].items():  # new dicts where validation makes them
        assert (vars(taken)[name] is value) == (vars(validated)[name] is value), name


def stored_form(event: EventModel, run_id: int) -> dict[str, Any]:
    """The parts of ``event`` as the ledger stores and reads them back (SQLite's text)."""
    occurred_at = event.occurred_at.astimezone(UTC).replace(tzinfo=None)
    read_time = stored_time_reader
    return {
        "event_type": event.type,
        "schema_version": event.schema_version,
        "payload": decode_payload(payload_json(event)),
        "event_id": str(event.event_id),
        "run_id": run_id,
        "occurred_at": read_time(occurred_at.strftime("%Y-%m-%d %H:%M:%S.%f")),
        "actor": event.actor,
    }


names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).filter(
    lambda s: name_problem(s) is None
)
actors = names.filter(lambda s: actor_problem(s) is None)  # the actor's own rules too
all_counters = st.fixed_dictionaries(
    {name: st.integers(0, COUNTER_LIMIT - 1) for name in COUNTER_FIELDS}
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
recent = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
accepted_events = st.one_of(
    st.builds(
        RunStarted,
        run_id=st.integers(1, MAX_RUN_ID),
        source_id=st.integers(0, COUNTER_LIMIT - 1),
        connector_name=names,
        metadata=st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=3),
        occurred_at=recent,
        actor=st.none() | actors,
    ),
    all_counters.flatmap(
        lambda c: st.builds(
            RunProgressed,
            run_id=st.integers(1, MAX_RUN_ID),
            occurred_at=recent,
            **{k: st.just(v) for k, v in c.items()},
        )
    ),
    st.builds(
        RunFinished,
        run_id=st.integers(1, MAX_RUN_ID),
        status=st.sampled_from(["success", "partial", "failed"]),
        error_message=st.none() | st.text(),
        error_details=st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=3),
        records_fetched=st.integers(0, COUNTER_LIMIT - 1),
        occurred_at=recent,
        actor=st.none() | actors,
    ),
    st.builds(
        RunTimedOut,
        run_id=st.integers(1, MAX_RUN_ID),
        reason=names,
        threshold_seconds=st.none() | st.integers(0, 10**9),
        last_event_at=st.none() | recent,
        detected_by=actors,
        occurred_at=recent,
    ),
)


@settings(max_examples=1000, deadline=None)
@given(event=accepted_events)
def test_every_event_the_ledger_accepts_is_taken_as_written(event: EventModel) -> None:
    assert event.run_id is not None
    stored = stored_form(event, event.run_id)
    fields = written_fields(**stored)
    assert fields is not None, "an accepted event was validated again"
    assert_same_model(event_from_stored(**stored), validated_event(**stored))
    # And it reads back as the event that was appended (to the microsecond, in UTC).
    assert json.loads(canonical_json(vars(event_from_stored(**stored)))) == json.loads(
        canonical_json(vars(event))
    )


def test_a_recorded_event_reads_fields_and_model_alike() -> None:
    event = RunFinished(run_id=7, status="failed", error_details={"k": [1]}, records_fetched=3)
    stored = stored_form(event, 7)
    recorded = RecordedEvent(
        1,
        stored["event_id"],
        7,
        2,
        event.type,
        1,
        payload_json(event),
        stored["occurred_at"],
        stored["occurred_at"],
        None,
        "0" * 64,
        "1" * 64,
    )
    assert (
        recorded.fields
        == vars(recorded.event)
        == vars(event) | {"occurred_at": stored["occurred_at"]}
    )
    assert recorded.payload_data == json.loads(recorded.payload)


def test_a_recorded_events_model_is_event_from_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The properties above prove ``event_from_stored``; ``RecordedEvent.event`` is built by
    it, for an event as written and for one only validation reads (it re-implemented the
    function inline, so the properties proved code production never ran)."""
    calls: list[tuple[Any, ...]] = []

    def spy(*stored: Any) -> EventModel:
        calls.append(stored)
        return event_from_stored(*stored)

    monkeypatch.setattr(recorded_module, "event_from_stored", spy)
    event = RunProgressed(run_id=7, records_fetched=3)
    stored = stored_form(event, 7)
    for payload in (payload_json(event), '{"records_fetched":3}'):  # as written, validated
        recorded = RecordedEvent(
            1,
            stored["event_id"],
            7,
            2,
            event.type,
            1,
            payload,
            stored["occurred_at"],
            stored["occurred_at"],
            None,
            "0" * 64,
            "1" * 64,
        )
        assert recorded.event.records_fetched == 3
        assert recorded.event is recorded.event  # built once
    assert len(calls) == 2
    assert [call[0] for call in calls] == ["RunProgressed", "RunProgressed"]


def test_other_stored_forms_are_validated() -> None:
    """Each departure from the written form goes to validation, which decides."""
    base = stored_form(RunProgressed(run_id=3, records_fetched=1), 3)
    assert written_fields(**base) is not None
    for change in (
        {"event_id": base["event_id"].upper()},
        {"payload": {**base["payload"], "records_fetched": 1.0}},
        {"payload": {"records_fetched": 1}},  # the others default: valid, but not as written
        {"schema_version": 0},
        {"occurred_at": base["occurred_at"].astimezone(timezone(timedelta(hours=1)))},
    ):
        assert written_fields(**(base | change)) is None, change
    assert uuid.UUID(base["event_id"]) == event_from_stored(**base).event_id


@settings(max_examples=500, deadline=None)
@given(
    text=moments.map(lambda m: m.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f"))
    | moments.map(lambda m: m.isoformat())
    | moments.map(lambda m: str(m.replace(tzinfo=None)))
    | any_text
)
def test_sqlite_times_read_as_before(text: str) -> None:
    """The stored text read with its zone spelt out gives what ``.replace(tzinfo=UTC)`` gave."""
    read_time = stored_time_reader
    try:
        before: datetime | None = datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        before = None
    if before is None:
        with pytest.raises(ValueError, match="isoformat"):
            read_time(text)
        return
    after = read_time(text)
    assert (after, after.tzinfo) == (before, before.tzinfo)


# ---------------------------------------------------------------------- payloads as written
# The append serialises each payload from the model's own field values, without model_dump,
# unless a JSON object field is set (model_dump may convert what such an object holds).


@settings(max_examples=500, deadline=None)
@given(event=accepted_events)
def test_the_payload_is_what_model_dump_gives(event: EventModel) -> None:
    dumped = event.model_dump(mode="python", exclude=set(ENVELOPE_FIELDS))
    assert payload_of(event) == dumped
    assert list(payload_of(event)) == list(dumped)  # the order the messages name fields in
    assert payload_json(event) == canonical_json(dumped)


def test_a_json_object_holding_a_model_is_stored_as_model_dump_stores_it() -> None:
    inner = RunProgressed(run_id=1, records_fetched=2)  # any pydantic model a caller puts in
    event = RunFinished(run_id=1, status="failed", error_details={"report": inner})
    assert payload_of(event)["error_details"]["report"] == inner.model_dump()
    assert json.loads(payload_json(event))["error_details"]["report"]["records_fetched"] == 2


def test_a_subclass_of_an_event_stores_its_own_fields_too() -> None:
    class Tagged(RunProgressed):
        tag: str = "x"

    assert payload_of(Tagged(run_id=1))["tag"] == "x"


def test_an_event_made_from_a_driver_row_is_the_one_its_constructor_makes() -> None:
    # events_from_driver fills the frozen dataclass's __dict__ directly (the replay's hot path).
    row = (7, str(uuid.uuid4()), 3, 2, "RunProgressed", 1, "{}", "2026-01-02 03:04:05.000006")
    row += ("2026-01-02 03:04:06.000000", None, "0" * 64, "1" * 64)
    (made,) = events_from_driver([row], stored_time_reader)
    built = RecordedEvent(
        7, row[1], 3, 2, "RunProgressed", 1, "{}", *map(stored_time_reader, row[7:9]), *row[9:]
    )
    assert made == built
    assert repr(made) == repr(built)
    assert hash(made) == hash(built)
    assert list(vars(made)) == list(vars(built))  # the fields, in their order, and nothing else
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.position = 8  # type: ignore[misc]


def test_a_model_made_without_validation_is_stored_as_model_dump_stores_it() -> None:
    """model_construct and model_copy(update=...) skip validation, and append does not
    validate again: their payload is what model_dump gives (or its error), never a guess."""
    inner = RunProgressed(run_id=1, records_fetched=2)
    ordered = RunStarted.model_construct(
        run_id=1, source_id=1, connector_name="c", metadata=OrderedDict(a=inner)
    )
    listed = RunStarted(run_id=1, source_id=1, connector_name="c").model_copy(
        update={"metadata": [{"a": inner}]}
    )
    for event in (ordered, listed):
        dumped = event.model_dump(mode="python", exclude=set(ENVELOPE_FIELDS))
        assert payload_of(event) == dumped
        assert payload_json(event) == canonical_json(dumped)
    missing = RunTimedOut.model_construct(run_id=1, detected_by="sweeper")  # no reason
    assert payload_of(missing) == missing.model_dump(mode="python", exclude=set(ENVELOPE_FIELDS))


# ------------------------------------------------- the append's shortcuts (2026-12-06 afternoon)

json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities too: refused alike
    | st.text(st.characters(codec=None, exclude_categories=()), max_size=8)
    | st.datetimes(timezones=st.just(UTC))
    | st.uuids(),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        | st.dictionaries(st.integers(-3, 3) | st.booleans() | st.none(), inner, max_size=3)
        | st.dictionaries(st.text(max_size=2) | st.integers(0, 2), inner, max_size=3)
    ),
    max_leaves=10,
)


def encoded_the_long_way(value: object) -> str | tuple[type[BaseException], str]:
    """What canonical_json gave before its encoder was built once: the text, or the error."""
    try:
        return mapper_module._CANONICAL_ENCODER.encode(value)
    except (ValueError, TypeError, RecursionError) as exc:
        return type(exc), str(exc)


def encoded(value: object) -> str | tuple[type[BaseException], str]:
    try:
        return canonical_json(value)
    except (ValueError, TypeError, RecursionError) as exc:
        return type(exc), str(exc)


@settings(max_examples=500, deadline=None)
@given(value=json_like)
def test_canonical_json_with_its_encoder_built_once_is_the_long_way(value: object) -> None:
    assert encoded(value) == encoded_the_long_way(value)


def test_canonical_json_refuses_what_the_long_way_refuses_with_its_words() -> None:
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    for value in (cycle, [cycle], deep, float("nan"), {"a": object()}, {1: 1, "b": 2}):
        assert encoded(value) == encoded_the_long_way(value)
        assert isinstance(encoded(value), tuple)
    assert encoded(cycle) == (ValueError, "Circular reference detected")
    # And the encoder kept no state from the failures: the next value encodes as before.
    assert canonical_json({"b": [1, 2.5], "a": "é"}) == '{"a":"é","b":[1,2.5]}'


recorded_columns = st.tuples(
    st.integers(),
    st.text(max_size=36),
    st.integers(),
    st.integers(),
    st.text(max_size=12),
    st.integers(),
    st.text(max_size=20),
    st.datetimes(timezones=st.just(UTC)),
    st.datetimes(timezones=st.just(UTC)),
    st.none() | st.text(max_size=8),
    st.text(max_size=64),
    st.text(max_size=64),
)


@settings(max_examples=200, deadline=None)
@given(columns=recorded_columns)
def test_recorded_event_is_what_the_constructor_makes(columns: tuple[Any, ...]) -> None:
    quick, constructed = recorded_module.recorded_event(*columns), RecordedEvent(*columns)
    assert type(quick) is RecordedEvent
    assert quick == constructed
    assert list(vars(quick).items()) == list(vars(constructed).items())  # the same order
    assert repr(quick) == repr(constructed)
    assert hash(quick) == hash(constructed)
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.position = 0  # type: ignore[misc]


def test_recorded_event_refuses_a_column_too_many_or_too_few() -> None:
    columns = (1, "e", 1, 1, "RunStarted", 1, "{}", datetime.now(UTC), datetime.now(UTC))
    with pytest.raises(ValueError, match="zip"):
        recorded_module.recorded_event(*columns, None, "0" * 64)
    with pytest.raises(ValueError, match="zip"):
        recorded_module.recorded_event(*columns, None, "0" * 64, "1" * 64, "extra")
