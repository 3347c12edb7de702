"""Event models and the mapper: validation, canonical JSON and upcasting (no database)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError as PydanticValidationError

from ledger import (
    RunFinished,
    RunProgressed,
    RunStarted,
    RunTimedOut,
    UnknownEventTypeError,
    ValidationError,
    canonical_json,
    mapper,
    parse_event,
)
from ledger.events import actor_problem, name_problem
from ledger.mapper import event_from_stored, payload_json
from ledger.text import SHOWN_AS_ESCAPES, is_invisible, markdown_cell, visible
from tests.support import is_heartbeat


def test_defaults_come_from_the_ledger_clock() -> None:
    with freeze_time("2026-01-28 01:12:44.123456"):
        event = RunStarted(source_id=1, connector_name="SOURCE_1")
    assert event.occurred_at == datetime(2026, 1, 28, 1, 12, 44, 123456, tzinfo=UTC)
    assert isinstance(event.event_id, uuid.UUID)
    assert event.run_id is None
    assert event.schema_version == 1


def test_models_are_frozen() -> None:
    event = RunProgressed(run_id=1, records_fetched=3)
    with pytest.raises(Exception, match="frozen"):
        event.records_fetched = 4  # type: ignore[misc]


def test_other_zones_are_converted_to_utc() -> None:
    plus_five = timezone(timedelta(hours=5))
    event = RunProgressed(run_id=1, occurred_at=datetime(2026, 1, 1, 5, 0, tzinfo=plus_five))
    assert event.occurred_at == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    assert event.occurred_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (
            {"type": "RunProgressed", "run_id": 1, "occurred_at": "2026-01-01T00:00:00"},
            "occurred_at",
        ),
        ({"type": "RunProgressed", "run_id": 1, "records_fetched": -1}, "records_fetched"),
        ({"type": "RunProgressed", "run_id": 1, "records_created": 2**31}, "records_created"),
        ({"type": "RunProgressed", "run_id": 1, "records_created": "5"}, "records_created"),
        ({"type": "RunProgressed", "run_id": 1, "records_created": 1.5}, "records_created"),
        ({"type": "RunProgressed", "run_id": 0}, "run_id"),
        ({"type": "RunProgressed"}, "run_id"),
        ({"type": "RunProgressed", "run_id": 1, "run_ref": "a"}, "run_ref"),
        ({"type": "RunProgressed", "run_id": 1, "surprise": 1}, "surprise"),
        ({"type": "RunStarted", "source_id": 1, "connector_name": ""}, "connector_name"),
        ({"type": "RunStarted", "source_id": 1, "connector_name": "x" * 101}, "connector_name"),
        ({"type": "RunStarted", "source_id": -1, "connector_name": "x"}, "source_id"),
        ({"type": "RunStarted", "connector_name": "x"}, "source_id"),
        ({"type": "RunFinished", "run_id": 1, "status": "running"}, "status"),
        (
            {"type": "RunFinished", "run_id": 1, "status": "success", "error_details": [1]},
            "error_details",
        ),
        ({"type": "RunTimedOut", "run_id": 1, "reason": "x"}, "detected_by"),
        ({"type": "RunExploded", "run_id": 1}, "type"),
        ({"run_id": 1}, "type"),
        ({"type": "RunProgressed", "run_id": 1, "event_id": "not-a-uuid"}, "event_id"),
    ],
)
def test_invalid_events_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_event(data)
    assert any(problem.startswith(field) or field in problem for problem in caught.value.problems)
    assert field in str(caught.value)


def test_unknown_type_lists_the_known_ones() -> None:
    with pytest.raises(ValidationError, match=r"unknown event type 'RunExploded'.*RunStarted"):
        parse_event({"type": "RunExploded", "run_id": 1})


def test_run_started_may_omit_run_id_others_may_use_run_ref() -> None:
    started = parse_event({"type": "RunStarted", "source_id": 0, "connector_name": "c"})
    assert started.run_id is None
    progressed = parse_event({"type": "RunProgressed", "run_ref": "r1"})
    assert progressed.run_ref == "r1"


def test_heartbeat_is_all_zero_progress() -> None:
    assert is_heartbeat(RunProgressed(run_id=1))
    assert not is_heartbeat(RunProgressed(run_id=1, claims_created=1))


def test_canonical_json_is_sorted_compact_and_utc_with_microseconds() -> None:
    value = {"b": 1, "a": datetime(2026, 1, 1, tzinfo=UTC), "c": "é"}
    assert canonical_json(value) == '{"a":"2026-01-01T00:00:00.000000Z","b":1,"c":"é"}'


def test_payload_holds_only_the_events_own_fields() -> None:
    event = RunTimedOut(
        run_id=7,
        reason="stale",
        threshold_seconds=3600,
        last_event_at=datetime(2026, 1, 28, 1, 14, tzinfo=UTC),
        detected_by="sweeper",
    )
    assert json.loads(payload_json(event)) == {
        "detected_by": "sweeper",
        "last_event_at": "2026-01-28T01:14:00.000000Z",
        "reason": "stale",
        "threshold_seconds": 3600,
    }


def test_stored_payload_round_trips_to_the_same_model() -> None:
    event = RunFinished(
        run_id=3,
        status="partial",
        error_message="2 rows bad",
        error_details={"rows": [4, 9]},
        records_skipped=2,
        actor="connector:x",
    )
    rebuilt = event_from_stored(
        event_type="RunFinished",
        schema_version=1,
        payload=json.loads(payload_json(event)),
        event_id=str(event.event_id),
        run_id=3,
        occurred_at=event.occurred_at,
        actor="connector:x",
    )
    assert rebuilt == event


def test_older_schema_versions_are_upcast(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend RunProgressed is at schema 2 today, and schema 1 called the counter "fetched".
    monkeypatch.setitem(mapper.CURRENT_SCHEMA_VERSIONS, "RunProgressed", 2)
    monkeypatch.setattr(mapper, "_UPCASTERS", {})

    @mapper.register_upcaster("RunProgressed", 1)
    def rename_fetched(payload: dict[str, object]) -> dict[str, object]:
        payload["records_fetched"] = payload.pop("fetched")
        return payload

    event = event_from_stored(
        event_type="RunProgressed",
        schema_version=1,
        payload={"fetched": 12},
        event_id=str(uuid.uuid4()),
        run_id=1,
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        actor=None,
    )
    assert isinstance(event, RunProgressed)
    assert event.records_fetched == 12
    assert event.schema_version == 2


def test_missing_upcaster_and_newer_schema_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(mapper.CURRENT_SCHEMA_VERSIONS, "RunProgressed", 2)
    monkeypatch.setattr(mapper, "_UPCASTERS", {})
    with pytest.raises(UnknownEventTypeError, match="no upcaster"):
        mapper.upcast("RunProgressed", 1, {})
    with pytest.raises(UnknownEventTypeError, match="newer"):
        mapper.upcast("RunProgressed", 3, {})
    with pytest.raises(UnknownEventTypeError, match="unknown event type"):
        mapper.upcast("RunExploded", 1, {})


@settings(max_examples=300, deadline=None)
@given(
    position=st.integers(1, 2**62),
    run_id=st.integers(1, 2**31 - 1),
    version=st.integers(1, 10**6),
    text=st.text(),
    actor=st.none() | st.text(),
    moment=st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
)
def test_the_fast_row_content_is_exactly_canonical_json(
    position: int, run_id: int, version: int, text: str, actor: str | None, moment: datetime
) -> None:
    """The hash input is assembled by hand for speed; it must be canonical JSON to the byte."""
    from ledger.clock import isoformat_utc
    from ledger.hashing import HASHED_COLUMNS, row_content

    row = {
        "position": position,
        "event_id": text,
        "run_id": run_id,
        "version": version,
        "type": text[::-1],
        "schema_version": 1,
        "payload": json.dumps({"t": text}),
        "occurred_at": moment,
        "recorded_at": moment,
        "actor": actor,
    }
    reference = {name: row[name] for name in HASHED_COLUMNS}
    reference["occurred_at"] = reference["recorded_at"] = isoformat_utc(moment)
    assert row_content(row) == canonical_json(reference)


# ---------------------------------------------------------------- names (issue 12, item 5)

NAME_FIELDS: dict[str, dict[str, object]] = {
    "connector_name": {"type": "RunStarted", "source_id": 1},
    "actor": {"type": "RunProgressed", "run_id": 1},
    "detected_by": {"type": "RunTimedOut", "run_id": 1, "reason": "stale", "actor": "sweeper"},
    "run_ref": {"type": "RunProgressed"},
}


@pytest.mark.parametrize("field", NAME_FIELDS)
@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("SOU\u202eRCE", "U+202E RIGHT-TO-LEFT OVERRIDE at index 3 is not allowed"),
        ("SOURCE_1 ", "trailing whitespace (U+0020 SPACE at index 8) is not allowed"),
        (" SOURCE_1", "leading whitespace (U+0020 SPACE at index 0) is not allowed"),
        ("\u00a0SOURCE_1", "leading whitespace (U+00A0 NO-BREAK SPACE at index 0)"),
        ("SOURCE_1\u3000", "trailing whitespace (U+3000 IDEOGRAPHIC SPACE at index 8)"),
        ("SOURCE\x00_1", "U+0000 (a control character) at index 6"),
        ("SOURCE\t1", "U+0009 (a control character) at index 6"),
        ("SOURCE_1\n", "U+000A (a control character) at index 8"),
        ("S\x1b[2J", "U+001B (a control character) at index 1"),
        ("S\x7f", "U+007F (a control character) at index 1"),
        ("S\x9b2J", "U+009B (a control character) at index 1"),
        ("SOURCE\u200b_1", "U+200B ZERO WIDTH SPACE at index 6"),
        ("\ufeffSOURCE_1", "U+FEFF ZERO WIDTH NO-BREAK SPACE at index 0"),
        ("SOURCE\u2066_1\u2069", "U+2066 LEFT-TO-RIGHT ISOLATE at index 6"),
        ("SOURCE\u00ad_1", "U+00AD SOFT HYPHEN at index 6"),
        ("SOURCE\u2028_1", "U+2028 LINE SEPARATOR at index 6"),
        ("SOURCE\u2029_1", "U+2029 PARAGRAPH SEPARATOR at index 6"),
        ("SOURCE\U000e0041", "U+E0041 TAG LATIN CAPITAL LETTER A at index 6"),
        ("SOURCE\u0378", "U+0378 (unassigned) at index 6"),
        ("SOURCE_1\u3164", "U+3164 HANGUL FILLER at index 8"),
        ("SOURCE_1\u034f", "U+034F COMBINING GRAPHEME JOINER at index 8"),
        ("SOURCE_1\ufe0f", "U+FE0F VARIATION SELECTOR-16 at index 8"),
        ("SOURCE_1\U000e0100", "U+E0100 VARIATION SELECTOR-17 at index 8"),
        ("sweeper\u180b", "U+180B MONGOLIAN FREE VARIATION SELECTOR ONE at index 7"),
        ("SOURCE\u17b4_1", "U+17B4 KHMER VOWEL INHERENT AQ at index 6"),
        ("SOURCE_1\u2800", "U+2800 BRAILLE PATTERN BLANK at index 8"),
        (
            "\u0338SOURCE_1",
            "U+0338 COMBINING LONG SOLIDUS OVERLAY at index 0: a name cannot start with a "
            "combining mark",
        ),
    ],
)
def test_names_refuse_invisible_characters_and_whitespace_at_either_end(
    field: str, name: str, problem: str
) -> None:
    """A name must not pass for another; the message names the field and the character."""
    with pytest.raises(ValidationError) as caught:
        parse_event({**NAME_FIELDS[field], field: name})
    [message] = caught.value.problems
    assert message.startswith(f"{field}: {problem}"), message


@pytest.mark.parametrize(
    "name",
    [
        "demo stations",  # a space inside is a space
        "Станции",
        "駅データ",
        "cafq\u0307",  # a combining mark after its letter (with no composed form: NFC)
        "caf\u00e9",  # the composed é; e + U+0301 is refused (not NFC: it reads as this)
        "SОURCE_1",  # Cyrillic О: look-alike letters are out of the rule's scope
        "operator:" + "q" + "\u0301" * 190,  # zalgo: visible, stays in its cell
        "\U0001f680 rockets",
        "a\u00a0b",  # NBSP inside: shown as a space, like the space it is
    ],
)
def test_names_of_any_script_are_accepted(name: str) -> None:
    assert parse_event({"type": "RunStarted", "source_id": 1, "connector_name": name[:100]})
    assert parse_event({"type": "RunProgressed", "run_id": 1, "actor": name})


def test_a_stored_name_from_before_the_rule_still_reads() -> None:
    """The rule is for new names: a stored event is read back as it was written, or old history
    would become events that can neither be read, projected nor verified. An actor that looks
    like a reserved one (a Cyrillic dze for the s of ``sweeper``) reads too."""
    for name in ("SOURCE_1 ", "S\x1b[2J\u202e", "\u0455weeper", "operator\ua789all"):
        event = event_from_stored(
            event_type="RunStarted",
            schema_version=1,
            payload={"source_id": 1, "connector_name": name, "metadata": None},
            event_id=str(uuid.uuid4()),
            run_id=1,
            occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
            actor=name,
        )
        assert isinstance(event, RunStarted)
        assert (event.connector_name, event.actor) == (name, name)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_visible_text_holds_no_invisible_character(text: str) -> None:
    shown = visible(text)
    assert not any(is_invisible(char) for char in shown)
    assert "\n" not in shown
    assert "\r" not in shown
    assert "\x1b" not in shown
    if name_problem(text) is None:  # a valid name shows as itself
        assert shown == text
    cell = markdown_cell(text)
    assert not any(is_invisible(char) for char in cell)
    # Every |, [, <, ` and * in the cell is escaped: an odd run of backslashes before it.
    for index, char in enumerate(cell):
        if char in "|[]<>`*_&~":
            run = len(cell[:index]) - len(cell[:index].rstrip("\\"))
            assert run % 2 == 1, (text, cell)


def test_visible_shows_each_escape_as_code_would_write_it() -> None:
    assert visible("a\nb\r\tc") == "a\\nb\\r\\tc"
    assert visible("\x1b]8;;http://evil\x1b\\link\x07") == "\\x1b]8;;http://evil\\x1b\\link\\x07"
    assert visible("\x9b2J\x7f") == "\\x9b2J\\x7f"
    assert visible("a\u202eb\u200b\u2066") == "a\\u202eb\\u200b\\u2066"
    assert visible("\U000e0041") == "\\U000e0041"
    assert visible("C:\\Users\\ops é 駅") == "C:\\Users\\ops é 駅"  # unchanged
    assert markdown_cell("a|b [x](http://e) <img> `c` *d* \\") == (
        "a\\|b \\[x\\](http://e) \\<img\\> \\`c\\` \\*d\\* \\\\"
    )


def test_marks_that_render_as_nothing_are_shown_as_escapes() -> None:
    assert visible("SOURCE_1\u034f\ufe0f\u2800") == "SOURCE_1\\u034f\\ufe0f\\u2800"


def test_the_first_second_of_1970_is_refused() -> None:
    with pytest.raises(ValidationError, match="before 1970-01-01T00:00:01Z"):
        parse_event(
            {
                "type": "RunStarted",
                "source_id": 1,
                "connector_name": "x",
                "occurred_at": "1970-01-01T00:00:00.5Z",
            }
        )


def test_the_quick_check_of_a_name_misses_no_invisible_character() -> None:
    # name_problem skips its per-character loop for a name that str.isprintable accepts and
    # that holds none of SHOWN_AS_ESCAPES: sound only if that covers every invisible one.
    missed = [
        f"U+{code:04X}"
        for code in range(0x110000)
        if is_invisible(chr(code)) and chr(code).isprintable() and chr(code) not in SHOWN_AS_ESCAPES
    ]
    assert missed == []
    assert name_problem("bench\u200bmark") == ("U+200B ZERO WIDTH SPACE at index 5 is not allowed")


def test_an_upcaster_editing_a_nested_object_leaves_the_stored_payload_as_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The decoded payload a RecordedEvent holds (what the audit and `ledger events` show)
    is the stored one, whatever an upcaster does to its own input."""
    from ledger.recorded import RecordedEvent

    monkeypatch.setitem(mapper.CURRENT_SCHEMA_VERSIONS, "RunStarted", 2)
    monkeypatch.setattr(mapper, "_UPCASTERS", {})

    @mapper.register_upcaster("RunStarted", 1)
    def rename_nested(payload: dict[str, object]) -> dict[str, object]:
        metadata = payload["metadata"]
        assert isinstance(metadata, dict)
        metadata["host"] = metadata.pop("hostname")
        return payload

    moment = datetime(2026, 1, 1, tzinfo=UTC)
    stored = RecordedEvent(
        position=1,
        event_id=str(uuid.uuid4()),
        run_id=1,
        version=1,
        type="RunStarted",
        schema_version=1,
        payload='{"connector_name":"c","metadata":{"hostname":"h1"},"source_id":1}',
        occurred_at=moment,
        recorded_at=moment,
        actor=None,
        prev_hash="0" * 64,
        hash="0" * 64,
    )
    assert stored.payload_data["metadata"] == {"hostname": "h1"}
    event = stored.event
    assert isinstance(event, RunStarted)
    assert event.metadata == {"host": "h1"}
    assert stored.payload_data["metadata"] == {"hostname": "h1"}


@settings(max_examples=300)
@given(
    actor=st.one_of(
        st.text(min_size=1, max_size=30),
        st.sampled_from(["OPERATOR:", "operator:", "Sweeper", "operator: bob", "operator:bob"]),
        st.builds(lambda name: "operator:" + name, st.text(max_size=10)),
    )
)
def test_actor_problem_is_the_rule_an_events_actor_is_held_to(actor: str) -> None:
    """``actor_problem`` says what the event models refuse in an actor, no more and no less:
    generated test events draw their actors with it (one drew ``OPERATOR:``, which only the
    model's own rule refuses, and a suite failed on a valid-looking line)."""
    try:
        RunProgressed(run_id=1, actor=actor)
    except PydanticValidationError:
        accepted = False
    else:
        accepted = True
    assert accepted == (actor_problem(actor) is None), actor
