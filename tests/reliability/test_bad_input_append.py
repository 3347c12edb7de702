"""``ledger append FILE`` refuses every generated bad file whole, naming each invalid line and
its field, and leaves the store as it was; on SQLite and on MariaDB.

Hypothesis writes JSON Lines files of valid events (new runs, progress of open runs, late
progress of a timed-out run, a retried stored event, blank lines, CRLF) around invalid lines,
each built from a known defect: wrong types, negative and huge counters, out-of-range strings,
unknown types, missing and unknown fields, repeated keys, bad timestamps, invalid UTF-8, lines
that are not JSON or not an object, future and unsupported events, undefined run_refs, payloads
too big or not storable, unknown run ids and every stream rule (after RunFinished, a second
RunStarted or RunTimedOut, a reused event_id). Every such file exits 2 with a message naming
each invalid line (``line N:``) and its field (or saying the line is not UTF-8 / not JSON),
naming no valid line, without a traceback; and the store keeps exactly the rows and head it had
(every table's row count; the head's position, hash and run-id allocator). Each file without
its defects' lines is then appended (exit 0, as many events as it holds): the refusal was the
defects' doing, not the generator's.

Stages, which decide what one file can report (see ``ledger append`` and ledger/wire.py): lines
are first read and validated one by one (READ: every bad line is reported), then checked as a
batch without the database (BATCH: every bad line is reported, if no line failed to read), then
appended under the head lock (STORE: the append stops at the first event that breaks a rule).
So a generated file holds one to three defects of the READ or BATCH stage, or one STORE defect.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import Ledger
from ledger.batch_checks import MAX_PAYLOAD_BYTES
from ledger.events import (
    COUNTER_FIELDS,
    EVENT_TYPES,
    MAX_RUN_ID,
    TERMINAL_STATUSES,
    actor_problem,
    name_problem,
)
from ledger.text import BLANK_LETTERS, INVISIBLE_CATEGORIES
from tests.reliability.bad_input_support import (
    FINISHED_RUN,
    FINITE_FLOATS,
    GIANT,
    HYPOTHESIS_SETTINGS,
    INVALID_UTF8,
    NEGATIVE_GIANT,
    OPEN_RUNS,
    SEEDED_RUNS,
    SMALL_LISTS,
    SMALL_OBJECTS,
    STORED_PROGRESS,
    TEMPLATES,
    TIMED_OUT_RUN,
    assert_refused_naming,
    json_line,
    run_cli,
    seed,
    store_state,
    template,
)
from tests.reliability.summary import Summary

# Generated files per backend (MariaDB commits the control appends more slowly): sized for CI's
# 30 minutes; LEDGER_RELIABILITY_BAD_FILES=N runs N on each (docs/RELIABILITY.md's table: a run
# of 1,500 and 1,000).
_BAD_FILES = os.environ.get("LEDGER_RELIABILITY_BAD_FILES")
APPEND_EXAMPLES = (
    {"sqlite": 600, "mysql": 400}
    if _BAD_FILES is None
    else dict.fromkeys(("sqlite", "mysql"), int(_BAD_FILES))
)

READ, BATCH, STORE = "read", "batch", "store"
UNKNOWN_RUN_IDS = st.integers(100_000, MAX_RUN_ID)


def with_raw(line: bytes, marker: str, raw: bytes) -> bytes:
    """``line`` with the JSON string ``"marker"`` replaced by raw bytes."""
    quoted = json.dumps(marker).encode()
    assert quoted in line
    return line.replace(quoted, raw)


# ---------------------------------------------------------------------- valid lines

ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=5, minutes=30))]
)
PAST_TIMES = st.datetimes(
    min_value=datetime(2001, 1, 1), max_value=datetime(2025, 12, 31), timezones=ZONES
).map(datetime.isoformat)
COUNTS = st.integers(0, 100_000)
SHORT_TEXT = st.text(max_size=30)


def valid_names(max_size: int) -> st.SearchStrategy[str]:
    """Valid names (connector names, actors): any script, nothing invisible, no whitespace at
    either end, no combining mark first."""
    letters = st.characters(
        exclude_categories=tuple(INVISIBLE_CATEGORIES),  # type: ignore[arg-type]
        exclude_characters="".join(BLANK_LETTERS),
    )
    return st.text(letters, min_size=1, max_size=max_size).filter(
        lambda name: name_problem(name) is None
    )


def valid_actors(max_size: int) -> st.SearchStrategy[str]:
    """Valid actors: valid names the actor's own rules accept too (no spelling of a reserved
    actor such as ``OPERATOR:``, no operator without a name)."""
    return valid_names(max_size).filter(lambda name: actor_problem(name) is None)


ACTORS = valid_actors(200)
# Names that could pass for another: refused, naming the field.
LOOKALIKE_NAMES = st.sampled_from(
    ["SOURCE_1 ", "\u00a0SOURCE_1", "SOU\u202eRCE", "S\u200b", "S\x1b[2J"]
)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), SHORT_TEXT)
METADATA = st.dictionaries(st.text(max_size=10), JSON_SCALARS, max_size=3)
COUNTER_DELTAS = {name: COUNTS for name in COUNTER_FIELDS}


def progress(run: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"type": st.just("RunProgressed"), **{k: st.just(v) for k, v in run.items()}},
        optional={**COUNTER_DELTAS, "actor": ACTORS, "occurred_at": PAST_TIMES},
    )


def started(label: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "type": st.just("RunStarted"),
            "run_ref": st.just(label),
            "source_id": st.integers(0, 2**31 - 1),
            "connector_name": valid_names(100),
        },
        optional={"metadata": METADATA, "actor": ACTORS, "occurred_at": PAST_TIMES},
    )


def finished(label: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "type": st.just("RunFinished"),
            "run_ref": st.just(label),
            "status": st.sampled_from(TERMINAL_STATUSES),
        },
        optional={"error_message": SHORT_TEXT, "error_details": METADATA, **COUNTER_DELTAS},
    )


def timed_out(label: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "type": st.just("RunTimedOut"),
            "run_ref": st.just(label),
            "reason": st.text(min_size=1, max_size=100),
            "detected_by": valid_actors(50),
        },
        optional={"threshold_seconds": st.integers(0, 10**9), "last_event_at": PAST_TIMES},
    )


@st.composite
def new_run(draw: st.DrawFn, label: str) -> list[dict[str, Any]]:
    """A run started, reported on and perhaps ended within the file, by its run_ref."""
    events = [draw(started(label)), *draw(st.lists(progress({"run_ref": label}), max_size=3))]
    ending = draw(st.sampled_from(["open", "finished", "timed out", "timed out, finished late"]))
    if ending.startswith("timed out"):
        events.append(draw(timed_out(label)))
    if ending.endswith("finished") or ending.endswith("late"):
        events.append(draw(finished(label)))
    return events


@dataclass(frozen=True)
class Defect:
    kind: str
    stage: str
    names: tuple[str, ...]  # what the message about the line must contain


@dataclass(frozen=True)
class Block:
    """Lines that go together into a file; ``defect`` says what is wrong with the last one."""

    lines: tuple[bytes, ...]
    defect: Defect | None = None


@dataclass(frozen=True)
class Bad:
    """What a defect strategy draws: lines (the last one invalid) and what its message names."""

    lines: tuple[bytes, ...]
    names: tuple[str, ...]


@st.composite
def valid_blocks(draw: st.DrawFn) -> list[Block]:
    """Valid lines against the seeded store; each event with an explicit event_id or not."""
    blocks: list[Block] = []
    for index in range(draw(st.integers(1, 6))):
        choice = draw(st.sampled_from(["open run", "timed-out run", "new run", "retry"]))
        if choice == "open run":
            events = [draw(progress({"run_id": draw(st.sampled_from(OPEN_RUNS))}))]
        elif choice == "timed-out run":  # late progress is still recorded
            events = [draw(progress({"run_id": TIMED_OUT_RUN}))]
        elif choice == "new run":
            events = draw(new_run(f"new-{index}"))
        else:
            events = [dict(STORED_PROGRESS)]  # the same fact again: a duplicate, not an error
        for event in events:
            if "event_id" not in event and draw(st.booleans()):
                event["event_id"] = str(uuid.uuid4())  # fresh: the valid files get appended
        blocks.append(Block(tuple(json_line(event) for event in events)))
    return blocks


# ---------------------------------------------------------------------- defects

# What each field holds, as the README documents it (not as the models say it).
FIELD_KINDS: dict[str, str] = {
    "event_id": "uuid",
    "run_id": "int",
    "run_ref": "str",
    "occurred_at": "timestamp",
    "actor": "str",
    "schema_version": "int",
    "source_id": "int",
    "connector_name": "str",
    "metadata": "object",
    **dict.fromkeys(COUNTER_FIELDS, "int"),
    "status": "status",
    "error_message": "str",
    "error_details": "object",
    "reason": "str",
    "detected_by": "str",
    "threshold_seconds": "int",
    "last_event_at": "timestamp",
}
FIELDS_OF: dict[str, list[str]] = {
    name: [field for field in model.model_fields if field != "type"]
    for name, model in EVENT_TYPES.items()
}
REQUIRED: dict[str, list[str]] = {
    "RunStarted": ["type", "source_id", "connector_name"],
    "RunProgressed": ["type", "run_id"],
    "RunFinished": ["type", "run_id", "status"],
    "RunTimedOut": ["type", "run_id", "reason", "detected_by"],
}
NOT_STRINGS = st.one_of(st.integers(), FINITE_FLOATS, st.booleans(), SMALL_LISTS, SMALL_OBJECTS)
BAD_TIMESTAMP_TEXT = [
    "yesterday",
    "",
    "2025-13-01T00:00:00Z",
    "2025-02-30T00:00:00Z",
    "2025-01-01T25:00:00Z",
    "01/02/2025 10:00",
    "2025-01-01",  # no time, no zone
    "2025-01-01T10:00:00",  # no zone: which one is a guess
    "1969-12-31T23:59:59Z",  # before the epoch
    "0001-01-01T00:00:00+01:00",  # out of range in UTC
    "9999-12-31T23:59:59-01:00",
    "2025",  # a year, which would read as 2,025 seconds after 1970
    "1700000000",
    "1.5e9",
]


def _not_a_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return True
    return False


WRONG_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "int": st.one_of(
        st.text(max_size=10), FINITE_FLOATS, st.booleans(), SMALL_LISTS, SMALL_OBJECTS
    ),
    "str": NOT_STRINGS,
    "object": st.one_of(st.integers(), st.text(max_size=10), st.booleans(), SMALL_LISTS),
    "uuid": st.one_of(NOT_STRINGS, st.text(max_size=40).filter(_not_a_uuid)),
    "timestamp": st.one_of(
        NOT_STRINGS,
        st.sampled_from(BAD_TIMESTAMP_TEXT),
        st.integers(-(10**10), 10**10).map(str),
    ),
    "status": st.one_of(
        NOT_STRINGS, st.text(max_size=12).filter(lambda s: s not in TERMINAL_STATUSES)
    ),
}
TOO_BIG_COUNTS = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=2**31),
    st.sampled_from([2**31, 2**63, 2**64, 10**30, GIANT, NEGATIVE_GIANT]),
)
OUT_OF_RANGE: dict[str, st.SearchStrategy[Any]] = {
    **dict.fromkeys(COUNTER_FIELDS, TOO_BIG_COUNTS),
    "source_id": TOO_BIG_COUNTS,
    "run_id": st.one_of(
        st.integers(max_value=0), st.integers(min_value=MAX_RUN_ID + 1), st.just(GIANT)
    ),
    "schema_version": st.integers(max_value=0),
    "threshold_seconds": st.integers(max_value=-1),
    "connector_name": st.one_of(st.just(""), st.text(min_size=101, max_size=140), LOOKALIKE_NAMES),
    "actor": st.one_of(st.just(""), st.text(min_size=201, max_size=240), LOOKALIKE_NAMES),
    "detected_by": st.one_of(st.just(""), st.text(min_size=201, max_size=240), LOOKALIKE_NAMES),
    "run_ref": st.one_of(st.just(""), st.text(min_size=201, max_size=240), LOOKALIKE_NAMES),
    "reason": st.one_of(st.just(""), st.text(min_size=2001, max_size=2040)),
}
ALL_FIELDS = {"type", *FIELD_KINDS}
UNKNOWN_KEYS = st.text(
    st.characters(categories=["Ll", "Lu", "Nd"], max_codepoint=0x3FF) | st.sampled_from("_-"),
    min_size=1,
    max_size=30,
).filter(lambda key: key not in ALL_FIELDS)
EVENT_TYPE_NAMES = st.sampled_from(list(TEMPLATES))


def one_line(names: tuple[str, ...], line: bytes) -> Bad:
    return Bad((line,), names)


@st.composite
def wrong_type(draw: st.DrawFn) -> Bad:
    event_type = draw(EVENT_TYPE_NAMES)
    field = draw(st.sampled_from(FIELDS_OF[event_type]))
    event = template(event_type) | {field: draw(WRONG_VALUES[FIELD_KINDS[field]])}
    return one_line((field,), json_line(event))


@st.composite
def out_of_range(draw: st.DrawFn) -> Bad:
    event_type = draw(EVENT_TYPE_NAMES)
    field = draw(st.sampled_from([f for f in FIELDS_OF[event_type] if f in OUT_OF_RANGE]))
    event = template(event_type) | {field: draw(OUT_OF_RANGE[field])}
    if field == "run_ref":
        event.pop("run_id", None)
    return one_line((field,), json_line(event))


@st.composite
def unknown_type(draw: st.DrawFn) -> Bad:
    value = draw(
        st.one_of(
            st.text(max_size=20).filter(lambda s: s not in EVENT_TYPES),
            st.sampled_from(["runstarted", "RunStarted ", "Run Started", "RunCancelled"]),
            st.none(),
            NOT_STRINGS,
        )
    )
    event = template(draw(EVENT_TYPE_NAMES)) | {"type": value}
    return one_line(("type",), json_line(event))


@st.composite
def missing_field(draw: st.DrawFn) -> Bad:
    event_type = draw(EVENT_TYPE_NAMES)
    field = draw(st.sampled_from(REQUIRED[event_type]))
    event = template(event_type)
    del event[field]
    return one_line((field,), json_line(event))


@st.composite
def unknown_field(draw: st.DrawFn) -> Bad:
    key = draw(UNKNOWN_KEYS)
    event = template(draw(EVENT_TYPE_NAMES)) | {key: draw(JSON_SCALARS)}
    return one_line((key,), json_line(event))


@st.composite
def repeated_key(draw: st.DrawFn) -> Bad:
    event = template(draw(EVENT_TYPE_NAMES))
    key = draw(st.sampled_from(sorted(event)))
    first = json.dumps(key) + ": " + json.dumps(draw(JSON_SCALARS)) + ", "
    line = b"{" + first.encode() + json_line(event)[1:]
    return one_line((key,), line)


@st.composite
def both_run_id_and_run_ref(draw: st.DrawFn) -> Bad:
    event = template(draw(st.sampled_from(["RunProgressed", "RunFinished", "RunTimedOut"])))
    event["run_ref"] = draw(valid_names(20))
    return one_line(("run_id", "run_ref"), json_line(event))


@st.composite
def invalid_utf8(draw: st.DrawFn) -> Bad:
    event = template(draw(EVENT_TYPE_NAMES)) | {"actor": "@@actor@@"}
    line = with_raw(json_line(event), "@@actor@@", b'"ab' + draw(INVALID_UTF8) + b'cd"')
    return one_line(("UTF-8",), line)


def _not_a_json_object(text: str) -> bool:
    try:
        return not isinstance(json.loads(text), dict)
    except ValueError:
        return True


@st.composite
def not_json(draw: st.DrawFn) -> Bad:
    valid = json_line(template(draw(EVENT_TYPE_NAMES)))
    line = draw(
        st.one_of(
            st.integers(1, len(valid) - 1).map(lambda cut: valid[:cut]),  # truncated
            st.sampled_from([b" x", b"}", b",", b" {}"]).map(lambda tail: valid + tail),
            st.just(repr(json.loads(valid)).encode()),  # Python's quotes, True and None
            # (no BOM: one opening line 1 is dropped, as a BOM opening a file)
            st.text(st.characters(codec="utf-8", exclude_characters="\n\ufeff"), max_size=30)
            .filter(lambda text: text.strip() != "" and _not_a_json_object(text))
            .map(str.encode),
        )
    )
    return one_line(("JSON",), line)


@st.composite
def not_an_object(draw: st.DrawFn) -> Bad:
    value = draw(st.one_of(JSON_SCALARS, st.lists(JSON_SCALARS, max_size=3), FINITE_FLOATS))
    return one_line(("JSON object",), json_line(value))


@st.composite
def not_a_number(draw: st.DrawFn) -> Bad:
    event = template("RunProgressed") | {"records_fetched": "@@constant@@"}
    constant = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"]))
    line = with_raw(json_line(event), "@@constant@@", constant)
    return one_line(("JSON",), line)


@st.composite
def future_event(draw: st.DrawFn) -> Bad:
    ahead = timedelta(seconds=draw(st.integers(600, 50 * 365 * 86400)))
    when = datetime.now(UTC) + ahead
    event = template(draw(EVENT_TYPE_NAMES)) | {"occurred_at": when.isoformat()}
    return one_line(("occurred_at",), json_line(event))


@st.composite
def unsupported_schema_version(draw: st.DrawFn) -> Bad:
    event = template(draw(EVENT_TYPE_NAMES)) | {"schema_version": draw(st.integers(2, 2**70))}
    return one_line(("schema_version",), json_line(event))


@st.composite
def undefined_run_ref(draw: st.DrawFn) -> Bad:
    event = template(draw(st.sampled_from(["RunProgressed", "RunFinished", "RunTimedOut"])))
    del event["run_id"]
    event["run_ref"] = "never-started-" + draw(st.just("") | valid_names(10))
    return one_line(("run_ref",), json_line(event))


@st.composite
def run_ref_started_twice(draw: st.DrawFn) -> Bad:
    label = "twice-" + draw(st.just("") | valid_names(10))
    first, second = template("RunStarted"), template("RunStarted")
    first["run_ref"] = second["run_ref"] = label
    del first["event_id"], second["event_id"]
    return Bad((json_line(first), json_line(second)), ("run_ref",))


@st.composite
def payload_too_large(draw: st.DrawFn) -> Bad:
    size = draw(st.integers(MAX_PAYLOAD_BYTES + 1, MAX_PAYLOAD_BYTES + 100_000))
    field = draw(st.sampled_from(["error_message", "error_details", "metadata"]))
    padding = "x" * size
    if field == "metadata":
        event = template("RunStarted") | {"metadata": {"blob": padding}}
    else:
        value = padding if field == "error_message" else {"blob": padding}
        event = template("RunFinished") | {field: value}
    return one_line(("payload", field), json_line(event))


@st.composite
def payload_not_storable(draw: st.DrawFn) -> Bad:
    field = draw(st.sampled_from(["error_details", "metadata"]))
    value = draw(st.sampled_from(["\ud800", "a\udfffb", GIANT, "@@1e400@@"]))
    event = template("RunStarted" if field == "metadata" else "RunFinished")
    event[field] = {"key": value}
    line = json_line(event, ascii_only=True).replace(b'"@@1e400@@"', b"1e400")
    return one_line(("payload", field), line)


@st.composite
def unknown_run(draw: st.DrawFn) -> Bad:
    event = template(draw(st.sampled_from(["RunProgressed", "RunFinished", "RunTimedOut"])))
    event["run_id"] = draw(UNKNOWN_RUN_IDS)
    return one_line(("run_id",), json_line(event))


@st.composite
def after_finish(draw: st.DrawFn) -> Bad:
    event = template(draw(st.sampled_from(["RunProgressed", "RunFinished", "RunTimedOut"])))
    event["run_id"] = FINISHED_RUN
    return one_line(("run_id",), json_line(event))


@st.composite
def second_start(draw: st.DrawFn) -> Bad:
    event = template("RunStarted") | {"run_id": draw(st.sampled_from(SEEDED_RUNS))}
    return one_line(("run_id",), json_line(event))


def second_timeout() -> st.SearchStrategy[Bad]:
    event = template("RunTimedOut") | {"run_id": TIMED_OUT_RUN}
    return st.just(one_line(("run_id",), json_line(event)))


@st.composite
def rule_broken_by_run_ref(draw: st.DrawFn) -> Bad:
    """A run started and finished in the file, then reported on again."""
    label = "closed-" + draw(st.just("") | valid_names(10))
    start = {"type": "RunStarted", "run_ref": label, "source_id": 9, "connector_name": "x"}
    finish = {"type": "RunFinished", "run_ref": label, "status": "success"}
    after = template(draw(st.sampled_from(["RunProgressed", "RunFinished", "RunTimedOut"])))
    del after["run_id"], after["event_id"]
    after["run_ref"] = label
    return Bad(tuple(json_line(e) for e in (start, finish, after)), ("run_ref",))


@st.composite
def stored_event_id_reused(draw: st.DrawFn) -> Bad:
    event = draw(
        st.sampled_from(
            [
                STORED_PROGRESS | {"run_id": 2},
                STORED_PROGRESS | {"records_fetched": 11},
                STORED_PROGRESS | {"type": "RunFinished", "status": "success"},
            ]
        )
    )
    return one_line(("event_id",), json_line(event))


@st.composite
def event_id_reused_in_file(draw: st.DrawFn) -> Bad:
    shared = str(draw(st.uuids()))
    first = {"type": "RunProgressed", "run_id": 1, "event_id": shared}
    second = first | draw(st.sampled_from([{"run_id": 2}, {"records_fetched": 1}]))
    return Bad((json_line(first), json_line(second)), ("event_id",))


DEFECTS: dict[str, tuple[str, Callable[[], st.SearchStrategy[Bad]]]] = {
    "wrong type": (READ, wrong_type),
    "out of range": (READ, out_of_range),
    "unknown type": (READ, unknown_type),
    "missing field": (READ, missing_field),
    "unknown field": (READ, unknown_field),
    "repeated key": (READ, repeated_key),
    "run_id and run_ref": (READ, both_run_id_and_run_ref),
    "invalid UTF-8": (READ, invalid_utf8),
    "not JSON": (READ, not_json),
    "not an object": (READ, not_an_object),
    "NaN": (READ, not_a_number),
    "future": (BATCH, future_event),
    "schema_version": (BATCH, unsupported_schema_version),
    "undefined run_ref": (BATCH, undefined_run_ref),
    "run_ref twice": (BATCH, run_ref_started_twice),
    "too large": (BATCH, payload_too_large),
    "not storable": (BATCH, payload_not_storable),
    "unknown run": (STORE, unknown_run),
    "after finish": (STORE, after_finish),
    "second start": (STORE, second_start),
    "second timeout": (STORE, second_timeout),
    "run_ref rule": (STORE, rule_broken_by_run_ref),
    "stored event_id": (STORE, stored_event_id_reused),
    "event_id in file": (STORE, event_id_reused_in_file),
}


@st.composite
def defect_blocks(draw: st.DrawFn) -> list[Block]:
    """One defect, plus up to two of other kinds of the same stage unless it is a STORE one
    (kinds differ, so two blocks never share a run_ref label)."""
    first = draw(st.sampled_from(sorted(DEFECTS)))
    stage = DEFECTS[first][0]
    kinds = [first]
    if stage != STORE:
        others = sorted(k for k, (s, _) in DEFECTS.items() if s == stage and k != first)
        kinds += draw(st.lists(st.sampled_from(others), max_size=2, unique=True))
    blocks = []
    for kind in kinds:
        stage, strategy = DEFECTS[kind]
        bad = draw(strategy())
        blocks.append(Block(bad.lines, Defect(kind, stage, bad.names)))
    return blocks


# ---------------------------------------------------------------------- whole files


@dataclass(frozen=True)
class Document:
    content: bytes
    bad_lines: dict[int, tuple[str, ...]]  # line number -> what its message must contain
    kinds: tuple[str, ...]
    without_defects: bytes  # the same file without the defects' blocks: must be appended
    valid_events: int  # event lines in ``without_defects``


BLANK_LINES = st.sampled_from([b"", b"   ", b"\t", b"\r"])


@st.composite
def documents(draw: st.DrawFn) -> Document:
    """Valid blocks with defect blocks among them, blank lines between some, LF or CRLF."""
    blocks = draw(valid_blocks())
    for defect in draw(defect_blocks()):
        blocks.insert(draw(st.integers(0, len(blocks))), defect)
    lines: list[bytes] = []
    valid_lines: list[bytes] = []
    bad_lines: dict[int, tuple[str, ...]] = {}
    for block in blocks:
        if draw(st.integers(0, 4)) == 0:
            blank = draw(BLANK_LINES)
            lines.append(blank)
            valid_lines.append(blank)
        lines.extend(block.lines)
        if block.defect is None:
            valid_lines.extend(block.lines)
        else:
            bad_lines[len(lines)] = block.defect.names
    ending = draw(st.sampled_from([b"\n", b"\r\n"]))
    last = ending if draw(st.booleans()) else b""
    return Document(
        content=ending.join(lines) + last,
        bad_lines=bad_lines,
        kinds=tuple(block.defect.kind for block in blocks if block.defect),
        without_defects=ending.join(valid_lines) + last,
        valid_events=sum(1 for line in valid_lines if line.strip()),
    )


def test_every_generated_bad_file_is_refused_by_line_and_field(
    ledger: Ledger, db_url: str, backend: str, tmp_path: Path, reliability: Summary
) -> None:
    """Each file is refused naming its bad lines and leaves the store as it was; then the same
    file without its defects is appended (the control: the refusal was the defects' doing)."""
    seed(ledger)
    source = tmp_path / "events.jsonl"
    tally: Counter[str] = Counter()

    @settings(HYPOTHESIS_SETTINGS, max_examples=APPEND_EXAMPLES[backend])
    @given(document=documents())
    def refused_then_appended_without_defects(document: Document) -> None:
        before = store_state(ledger)
        source.write_bytes(document.content)
        result = run_cli("append", str(source), "--db", db_url)
        assert_refused_naming(result, document.bad_lines)
        assert store_state(ledger) == before

        source.write_bytes(document.without_defects)
        control = run_cli("append", str(source), "--db", db_url)
        assert control.exit_code == 0, control.output[:2000]
        summary = json.loads(control.stdout)
        assert summary["appended"] + summary["duplicates"] == document.valid_events
        assert ledger.head().last_position == before.head.last_position + summary["appended"]

        tally["files"] += 1
        tally["bad lines"] += len(document.bad_lines)
        tally["appended"] += summary["appended"]
        tally.update(f"kind:{kind}" for kind in document.kinds)

    refused_then_appended_without_defects()
    kinds = [key for key in tally if key.startswith("kind:")]
    assert tally["files"] >= APPEND_EXAMPLES[backend]
    assert len(kinds) == len(DEFECTS), sorted(kinds)
    reliability.record(
        "bad input: ledger append",
        backend,
        f"{tally['files']:,} generated JSONL files holding {tally['bad lines']:,} invalid lines "
        f"of {len(kinds)} defect kinds among valid ones; then each without its invalid lines",
        f"{tally['files']:,} exit 2 naming each invalid line and its field (no valid line, no "
        "traceback), every table's row count and the head position/hash unchanged; without "
        f"the defects all {tally['files']:,} exit 0 ({tally['appended']:,} events appended)",
    )
