"""Bad input is refused whole, named, and harmless (issue 8, item 4).

What this file proves, on SQLite and on MariaDB:

* ``ledger append FILE``: hypothesis writes JSON Lines files of valid events (new runs, progress
  of open runs, late progress of a timed-out run, a retried stored event, blank lines, CRLF)
  around invalid lines, each built from a known defect: wrong types, negative and huge
  counters, out-of-range strings, unknown types, missing and unknown fields, repeated keys, bad
  timestamps, invalid UTF-8, lines that are not JSON or not an object, future and unsupported
  events, undefined run_refs, payloads too big or not storable, unknown run ids and every stream
  rule (after RunFinished, a second RunStarted or RunTimedOut, a reused event_id). Every such
  file exits 2 with a message naming each invalid line (``line N:``) and its field (or saying
  the line is not UTF-8 / not JSON), naming no valid line, without a traceback; and the store
  keeps exactly the rows and head it had (every table's row count; the head's position, hash
  and run-id allocator).
* Each file without its defects' lines is then appended (exit 0, as many events as it holds):
  the refusal was the defects' doing, not the generator's.
* Hand-made extremes: 10 MB lines (a 10 MB field, 10 MB of garbage, a 10-million-digit
  counter), invalid UTF-8 in the middle of a file, empty, blank and BOM-opened files, a
  5,000-line file with its bad line near the end.
* ``ledger config check FILE``: hypothesis writes config files with one defect (wrong types,
  unknown keys and connector options, zero or negative intervals, bad durations, database URLs,
  crontabs and ranges, invalid TOML, invalid UTF-8); each exits 2 naming the key
  (``connectors[0].schedule.interval``) or, for TOML and UTF-8 errors, the line.
* ``ledger serve --config BAD`` exits 2 the same way before it touches the database.

Stages, which decide what one file can report (see ``ledger append`` and ledger/wire.py): lines
are first read and validated one by one (READ: every bad line is reported), then checked as a
batch without the database (BATCH: every bad line is reported, if no line failed to read), then
appended under the head lock (STORE: the append stops at the first event that breaks a rule).
So a generated file holds one to three defects of the READ or BATCH stage, or one STORE defect.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, inspect, select, table

from ledger import Ledger, RunFinished, RunProgressed, RunStarted, RunTimedOut
from ledger.database import create_ledger_engine
from ledger.events import (
    COUNTER_FIELDS,
    EVENT_TYPES,
    MAX_RUN_ID,
    TERMINAL_STATUSES,
    name_problem,
)
from ledger.recorded import LedgerHead
from ledger.store import MAX_PAYLOAD_BYTES
from ledger.text import BLANK_LETTERS, INVISIBLE_CATEGORIES
from service.cli import cli
from tests.reliability.summary import Summary

REPO = Path(__file__).resolve().parents[2]
# 2,500 generated files in all; MariaDB commits the control appends more slowly.
APPEND_EXAMPLES = {"sqlite": 1500, "mysql": 1000}
CONFIG_EXAMPLES = 400
TEN_MB = 10 * 1024 * 1024

READ, BATCH, STORE = "read", "batch", "store"

# ---------------------------------------------------------------------- the seeded store

# Seeded by ``seed``: two open runs, a finished one and a timed-out one, so every stream rule
# can be broken; valid lines only ever do what stays valid (progress of the open runs, late
# progress of the timed-out one, new runs of their own).
OPEN_RUNS = (1, 2)
FINISHED_RUN = 3
TIMED_OUT_RUN = 4
SEEDED_RUNS = (*OPEN_RUNS, FINISHED_RUN, TIMED_OUT_RUN)
STORED_PROGRESS_ID = "5d0c6f0e-8a53-4f57-9d0b-6f4c35a1c001"
STORED_PROGRESS = {
    "type": "RunProgressed",
    "event_id": STORED_PROGRESS_ID,
    "run_id": 1,
    "records_fetched": 10,
    "occurred_at": "2025-03-01T08:05:00+00:00",
}
UNKNOWN_RUN_IDS = st.integers(100_000, MAX_RUN_ID)


def seed(ledger: Ledger) -> None:
    started_at = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    result = ledger.append(
        RunStarted(source_id=n, connector_name=f"seed-{n}", occurred_at=started_at)
        for n in SEEDED_RUNS
    )
    assert result.allocated_run_ids == list(SEEDED_RUNS)
    ledger.append(
        [
            RunProgressed.model_validate(STORED_PROGRESS),
            RunFinished(run_id=FINISHED_RUN, status="success"),
            RunTimedOut(run_id=TIMED_OUT_RUN, reason="silent for 2h", detected_by="sweeper"),
        ]
    )


@dataclass(frozen=True)
class StoreState:
    """What a refused append must leave exactly as it was."""

    rows: tuple[tuple[str, int], ...]
    head: LedgerHead


@functools.cache
def table_names(url: str) -> tuple[str, ...]:
    """Every table of the migrated database (the same for each test of a backend)."""
    engine = create_ledger_engine(url)
    try:
        return tuple(sorted(inspect(engine).get_table_names()))
    finally:
        engine.dispose()


def store_state(ledger: Ledger) -> StoreState:
    with ledger.engine.connect() as conn:
        rows = tuple(
            (name, conn.execute(select(func.count()).select_from(table(name))).scalar_one())
            for name in table_names(ledger.url)
        )
    return StoreState(rows, ledger.head())


# ---------------------------------------------------------------------- running the CLI


def run_cli(*args: str) -> Result:
    runner = CliRunner(env={"LEDGER_DATABASE_URL": None})
    return runner.invoke(cli, list(args), catch_exceptions=False)


def messages_by_line(stderr: str) -> dict[int, list[str]]:
    """What the output says about each input line it names: ``{N: [text after "line N: "]}``."""
    named: dict[int, list[str]] = {}
    for output_line in stderr.splitlines():
        match = re.match(r"(?:Error: |\s+)line (\d+): (.*)", output_line)
        if match:
            named.setdefault(int(match.group(1)), []).append(match.group(2))
    return named


def assert_refused_naming(result: Result, bad_lines: dict[int, tuple[str, ...]]) -> None:
    """Exit 2, each bad line named with every expected word, no other line, no traceback."""
    assert result.exit_code == 2, result.output[:2000]
    assert "Traceback" not in result.output
    assert result.stdout == ""
    named = messages_by_line(result.stderr)
    assert set(named) == set(bad_lines), (sorted(named), sorted(bad_lines), result.stderr[:2000])
    for number, words in bad_lines.items():
        assert any(all(word in message for word in words) for message in named[number]), (
            number,
            words,
            named[number],
        )


# ---------------------------------------------------------------------- JSON lines

# Markers for what json.dumps cannot write, replaced in the text: a 5,000-digit integer
# (beyond Python's int-to-text limit), 1e400, NaN, bytes that are not UTF-8.
GIANT = "@@giant@@"
NEGATIVE_GIANT = "@@-giant@@"
GIANT_DIGITS = "9" * 5000


def json_line(event: Any, *, ascii_only: bool = False) -> bytes:
    text = json.dumps(event, ensure_ascii=ascii_only, allow_nan=False)
    text = text.replace(f'"{GIANT}"', GIANT_DIGITS)
    text = text.replace(f'"{NEGATIVE_GIANT}"', "-" + GIANT_DIGITS)
    return text.encode("utf-8")


def with_raw(line: bytes, marker: str, raw: bytes) -> bytes:
    """``line`` with the JSON string ``"marker"`` replaced by raw bytes."""
    quoted = json.dumps(marker).encode()
    assert quoted in line
    return line.replace(quoted, raw)


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


ACTORS = valid_names(200)
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
            "detected_by": valid_names(50),
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

TEMPLATES: dict[str, dict[str, Any]] = {
    "RunStarted": {
        "type": "RunStarted",
        "source_id": 7,
        "connector_name": "stations",
        "metadata": {"region": "north"},
    },
    "RunProgressed": {"type": "RunProgressed", "run_id": 1, "records_fetched": 5},
    "RunFinished": {
        "type": "RunFinished",
        "run_id": 1,
        "status": "partial",
        "error_message": "3 rows skipped",
        "error_details": {"rows": [4, 9, 12]},
    },
    "RunTimedOut": {
        "type": "RunTimedOut",
        "run_id": 2,
        "reason": "silent for 2h",
        "detected_by": "sweeper",
        "threshold_seconds": 3600,
        "last_event_at": "2025-03-01T09:00:00Z",
    },
}
ENVELOPE = {
    "event_id": "0b7e3a5c-1d2f-4e6a-8b9c-0d1e2f3a4b5c",
    "occurred_at": "2025-06-01T12:00:00+00:00",
    "actor": "connector:stations@host:42",
}

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
FINITE_FLOATS = st.floats(allow_nan=False, allow_infinity=False)
SMALL_LISTS = st.lists(st.integers(-9, 9), max_size=2)
SMALL_OBJECTS = st.dictionaries(st.text(max_size=3), st.integers(-9, 9), max_size=2)
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


def template(event_type: str) -> dict[str, Any]:
    """A valid event of that type, every field given, to break one field of."""
    return copy.deepcopy(TEMPLATES[event_type] | ENVELOPE)


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


INVALID_UTF8 = st.sampled_from(
    [
        b"\xff",
        b"\xfe\xff",
        b"\xc0\xaf",  # overlong "/"
        b"\xed\xa0\x80",  # an encoded surrogate
        b"\xf4\x90\x80\x80",  # above U+10FFFF
        b"\xe2\x82",  # truncated
        b"\x80",  # a lone continuation byte
        b"\xf8\x88\x80\x80\x80",
    ]
)


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


HYPOTHESIS_SETTINGS = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
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


# ---------------------------------------------------------------------- hand-made extremes


VALID_PROGRESS = json_line({"type": "RunProgressed", "run_id": 1, "records_fetched": 1})


def file_of(*lines: bytes) -> bytes:
    return b"\n".join(lines) + b"\n"


@dataclass(frozen=True)
class Extreme:
    name: str
    content: bytes
    bad_lines: dict[int, tuple[str, ...]]  # empty: the file is valid and appends every event
    appended: int = 0


def extremes() -> Iterator[Extreme]:
    ten_mb = "x" * TEN_MB
    around = (VALID_PROGRESS, VALID_PROGRESS)
    yield Extreme(
        "10 MB error_message",
        file_of(*around, json_line(template("RunFinished") | {"error_message": ten_mb})),
        {3: ("payload", "error_message")},
    )
    yield Extreme(
        "10 MB metadata",
        file_of(json_line(template("RunStarted") | {"metadata": {"blob": ten_mb}}), *around),
        {1: ("payload", "metadata")},
    )
    yield Extreme(
        "10 MB actor",
        file_of(VALID_PROGRESS, json_line(template("RunProgressed") | {"actor": ten_mb})),
        {2: ("actor",)},
    )
    yield Extreme(
        "10 MB type",
        file_of(VALID_PROGRESS, json_line(template("RunProgressed") | {"type": ten_mb})),
        {2: ("type",)},
    )
    yield Extreme(
        "10 MB unknown key",
        file_of(json_line(template("RunProgressed") | {ten_mb: 1})),
        {1: ("xxxxxxxxxx",)},
    )
    yield Extreme(
        "10-million-digit counter",
        file_of(
            b'{"type": "RunProgressed", "run_id": 1, "records_fetched": ' + b"7" * TEN_MB + b"}"
        ),
        {1: ("records_fetched",)},
    )
    yield Extreme("10 MB of x", file_of(*around, b"x" * TEN_MB), {3: ("JSON",)})
    every_byte_but_newline = bytes(range(11, 256))
    garbage = every_byte_but_newline * (TEN_MB // len(every_byte_but_newline))
    yield Extreme("10 MB of every byte", file_of(VALID_PROGRESS, garbage), {2: ("UTF-8",)})
    yield Extreme(
        "invalid UTF-8 mid-file",
        file_of(
            *around, VALID_PROGRESS.replace(b'"RunProgressed"', b'"Run\xe9Progressed"'), *around
        ),
        {3: ("UTF-8",)},
    )
    yield Extreme(
        "nested 100,000 deep",
        file_of(
            VALID_PROGRESS,
            b'{"type": "RunStarted", "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        ),
        {2: ("nested too deeply",)},
    )
    yield Extreme(
        "BOM on line 2",
        file_of(VALID_PROGRESS, b"\xef\xbb\xbf" + VALID_PROGRESS),
        {2: ("JSON",)},
    )
    long_file = [VALID_PROGRESS] * 5000
    long_file[4990] = json_line(template("RunProgressed") | {"records_updated": -1})
    yield Extreme("5,000 lines, line 4,991 bad", file_of(*long_file), {4991: ("records_updated",)})
    yield Extreme("empty file", b"", {})
    yield Extreme("blank lines only", b"\n  \n\t\r\n\n", {})
    yield Extreme("a BOM only", b"\xef\xbb\xbf", {})
    yield Extreme("BOM, then two events", b"\xef\xbb\xbf" + file_of(*around), {}, appended=2)
    just_under = {"blob": "x" * (MAX_PAYLOAD_BYTES - 200)}  # the rest of the payload fits
    yield Extreme(
        "an event just under the 1 MiB payload limit",
        file_of(
            json_line(
                {
                    "type": "RunStarted",
                    "source_id": 1,
                    "connector_name": "big",
                    "metadata": just_under,
                }
            )
        ),
        {},
        appended=1,
    )


def test_extreme_files_are_refused_or_appended_whole(
    ledger: Ledger, db_url: str, backend: str, tmp_path: Path, reliability: Summary
) -> None:
    seed(ledger)
    source = tmp_path / "extreme.jsonl"
    cases = list(extremes())
    for case in cases:
        before = store_state(ledger)
        source.write_bytes(case.content)
        result = run_cli("append", str(source), "--db", db_url)
        assert len(result.output) < 20_000, (case.name, len(result.output))  # no echoed MBs
        if case.bad_lines:
            assert_refused_naming(result, case.bad_lines)
            assert store_state(ledger) == before, case.name
        else:
            assert result.exit_code == 0, (case.name, result.output[:2000])
            assert json.loads(result.stdout)["appended"] == case.appended, case.name
            assert ledger.head().last_position == before.head.last_position + case.appended
    reliability.record(
        "bad input: ledger append extremes",
        backend,
        f"{len(cases)} hand-made files: 10 MB lines (a field, garbage, every byte, a 10-million-"
        "digit counter), mid-file invalid UTF-8, 100,000-deep nesting, BOMs, empty and blank "
        "files, a 5,000-line file bad at line 4,991, a 1 MiB event",
        "each bad one exit 2 naming its line and field in under 20 KB of output, store "
        "unchanged; the valid ones (empty, blank, BOM, 1 MiB) exit 0 appending exactly their "
        "events",
    )


# ---------------------------------------------------------------------- config files


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(
            ch
            if ch not in '"\\' and (ch == "\t" or ord(ch) >= 0x20) and ord(ch) != 0x7F
            else f"\\u{ord(ch):04x}"
            for ch in value
        )
        return f'"{escaped}"'
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_lines(config: dict[str, Any]) -> list[str]:
    """The config as TOML, one statement a line: scalars, [tables], [[connectors]]."""
    lines = [f"{toml_value(k)} = {toml_value(v)}" for k, v in config.items() if not _is_table(v)]
    for key, value in config.items():
        if isinstance(value, dict):
            lines.append(f"[{toml_value(key)}]")
            lines += [f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()]
        elif _is_table(value):
            for item in value:
                lines.append(f"[[{toml_value(key)}]]")
                lines += [f"{toml_value(k)} = {toml_value(v)}" for k, v in item.items()]
    return lines


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(i, dict) for i in value)
    )


def base_config(database_url: str) -> dict[str, Any]:
    """A valid config using every section (examples/ledger.toml's shape)."""
    return {
        "database_url": database_url,
        "thresholds": {"stale_after": "60m", "max_runtime": "6h"},
        "sweeper": {"interval": "15m"},
        "projector": {"interval": "1s", "batch_size": 1000},
        "spool": {"dir": "spool", "flush_interval": "1m"},
        "serve": {
            "grace_period": "30s",
            "metrics_port": 9464,
            "progress_interval": "5s",
            "heartbeat_interval": "60s",
        },
        "connectors": [
            {
                "name": "stations-csv",
                "type": "csv",
                "source_id": 1,
                "schedule": {"interval": "15m"},
                "options": {"path": "stations.csv", "key": "id"},
                "thresholds": {"stale_after": "30m"},
                "enabled": True,
            },
            {
                "name": "stations-api",
                "type": "http-json",
                "source_id": 2,
                "schedule": {"cron": "*/30 * * * *"},
                "options": {"url": "https://api.example.com/stations", "retries": 3},
                "thresholds": {"stale_after": "20m", "max_runtime": "2h"},
                "enabled": False,
            },
        ],
    }


def key_name(path: tuple[str | int, ...]) -> str:
    """How a config problem names a key: ``connectors[0].schedule.interval``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def set_at(config: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    parent: Any = config
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value


KeyPath = tuple[str | int, ...]
TYPED_KEYS: dict[KeyPath, str] = {
    ("database_url",): "str",
    ("thresholds",): "table",
    ("thresholds", "stale_after"): "duration",
    ("thresholds", "max_runtime"): "duration",
    ("sweeper",): "table",
    ("sweeper", "interval"): "duration",
    ("projector", "interval"): "duration",
    ("projector", "batch_size"): "int",
    ("spool", "dir"): "str",
    ("spool", "flush_interval"): "duration",
    ("serve", "grace_period"): "duration",
    ("serve", "metrics_port"): "int",
    ("serve", "progress_interval"): "duration",
    ("serve", "heartbeat_interval"): "duration",
    ("connectors",): "list",
    ("connectors", 0): "table",
    ("connectors", 0, "name"): "str",
    ("connectors", 0, "type"): "str",
    ("connectors", 0, "source_id"): "int",
    ("connectors", 0, "schedule"): "table",
    ("connectors", 0, "schedule", "interval"): "duration",
    ("connectors", 0, "options"): "table",
    ("connectors", 0, "thresholds", "stale_after"): "duration",
    ("connectors", 0, "enabled"): "bool",
    ("connectors", 1, "schedule", "cron"): "str",
    ("connectors", 1, "source_id"): "int",
    ("connectors", 1, "enabled"): "bool",
    ("connectors", 1, "thresholds", "max_runtime"): "duration",
}
DURATION_KEYS = [path for path, kind in TYPED_KEYS.items() if kind == "duration"]
INT64 = st.integers(-(2**63), 2**63 - 1)  # TOML's integers
TOML_DATES = st.one_of(st.datetimes(timezones=st.none() | st.just(UTC)), st.dates(), st.times())
CONFIG_WRONG_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "int": st.one_of(
        st.text(max_size=8), FINITE_FLOATS, st.booleans(), SMALL_LISTS, SMALL_OBJECTS, TOML_DATES
    ),
    "str": st.one_of(
        INT64,
        FINITE_FLOATS,
        st.booleans(),
        SMALL_LISTS,
        SMALL_OBJECTS,
        TOML_DATES,
    ),
    "duration": st.one_of(
        INT64,
        FINITE_FLOATS,
        st.booleans(),
        SMALL_LISTS,
        SMALL_OBJECTS,
        TOML_DATES,
    ),
    "bool": st.one_of(
        st.integers(0, 1), st.sampled_from(["true", "yes", "on"]), FINITE_FLOATS, SMALL_LISTS
    ),
    "table": st.one_of(INT64, st.text(max_size=8), st.booleans(), SMALL_LISTS),
    "list": st.one_of(INT64, st.text(max_size=8), st.booleans(), SMALL_OBJECTS),
}
_DURATION = re.compile(r"(?:\d+[smhdw])+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def is_valid_duration(text: str) -> bool:
    """The README's durations: ``90s``, ``15m``, ``1h30m``; above zero, at most ten years."""
    compact = text.strip().lower().replace(" ", "")
    if not _DURATION.fullmatch(compact):
        return False
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in re.findall(r"(\d+)([smhdw])", compact))
    return 0 < seconds <= 3650 * 86400


BAD_DURATIONS = st.one_of(
    st.sampled_from(
        [
            "0s",
            "0m",
            "0",
            "-5m",
            "-1s",
            "5 parsecs",
            "",
            "fast",
            "1.5h",
            "15",
            "m",
            "99999d",
            "3651d",
            "1h-5m",
            "PT5M",
            "∞",
        ]
    ),
    st.text(max_size=10).filter(lambda text: not is_valid_duration(text)),
)
BAD_URLS = st.sampled_from(
    [
        "",
        "not a url",
        "postgresql://app:secret@db/ledger",
        "mysql://app@db/ledger",
        "mysql+mysqlconnector://app@db/ledger",
        "oracle://app@db/ledger",
        "mysql+pymysql://app:p@ss@db/ledger",
        "mysql+pymysql://app@db:notaport/ledger",
        "sqlite//ledger.db",
        "sqlite+pysqlcipher:///ledger.db",
        "http://example.com/ledger",
        "://",
    ]
)
BAD_CRONTABS = st.sampled_from(
    [
        "* * *",
        "61 * * * *",
        "",
        "every day",
        "* * * * * *",
        "*/0 * * * *",
        "0 25 * * *",
        "0 0 32 * *",
        "0 0 * 13 *",
        "0 0 * * 8",
    ]
)
KNOWN_KEYS: dict[KeyPath, set[str]] = {
    (): {"database_url", "thresholds", "sweeper", "projector", "spool", "serve", "connectors"},
    ("thresholds",): {"stale_after", "max_runtime"},
    ("sweeper",): {"interval"},
    ("projector",): {"interval", "batch_size"},
    ("spool",): {"dir", "flush_interval"},
    ("serve",): {
        "grace_period",
        "metrics_port",
        "progress_interval",
        "heartbeat_interval",
        "run_at_start",
    },
    ("connectors", 0): {
        "name",
        "type",
        "source_id",
        "schedule",
        "options",
        "thresholds",
        "enabled",
    },
    ("connectors", 0, "schedule"): {"interval", "cron", "run_at_start"},
    ("connectors", 1, "thresholds"): {"stale_after", "max_runtime"},
    ("connectors", 0, "options"): {"path", "key", "batch_size"},
    ("connectors", 1, "options"): {
        "url",
        "key",
        "records_path",
        "page_param",
        "next_path",
        "first_page",
        "timeout",
        "retries",
        "backoff",
        "max_pages",
        "single_page",
    },
}
CONFIG_KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
BROKEN_TOML_LINES = [
    "broken = ",
    '"unterminated = 1',
    'broken = "unterminated',
    "[table",
    "= 5",
    "broken = 1 2",
    "broken = tru",
    "broken = 1979-13-45",
    "broken = {a = 1",
    "broken..key = 1",
    "broken = 0x",
    "broken = 'single",
]


@dataclass(frozen=True)
class BadConfig:
    kind: str
    content: bytes
    names: tuple[str, ...]  # each must appear in the message
    line: int | None = None  # for TOML and UTF-8 errors: the line the message must name


Config = dict[str, Any]
# A defect of the config's values: changes the config, returns what the message must contain.
ValueDefect = Callable[[st.DrawFn, Config], tuple[str, ...]]


def key_problem(path: KeyPath) -> str:
    """The start of a problem about one key, as ``ledger config check`` lists it."""
    return key_name(path) + ":"


def wrong_type_in_config(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    path = draw(st.sampled_from(sorted(TYPED_KEYS, key=str)))
    set_at(config, path, draw(CONFIG_WRONG_VALUES[TYPED_KEYS[path]]))
    return (key_problem(path),)


def unknown_key_in_config(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    table_path = draw(st.sampled_from(sorted(KNOWN_KEYS, key=str)))
    key = draw(CONFIG_KEYS.filter(lambda k: k not in KNOWN_KEYS[table_path]))
    set_at(config, (*table_path, key), draw(INT64 | st.text(max_size=5)))
    if table_path[-1:] == ("options",):  # a connector's options: its constructor's arguments
        return (key_problem(table_path), key)
    return (key_problem((*table_path, key)),)


def missing_key_in_config(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    field = draw(st.sampled_from(["name", "type", "source_id", "schedule"]))
    del config["connectors"][0][field]
    return (key_problem(("connectors", 0, field)),)


def bad_duration_in_config(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    path = draw(st.sampled_from(DURATION_KEYS))
    durations = BAD_DURATIONS
    if path == ("serve", "progress_interval"):  # zero is allowed there: every call reports
        durations = BAD_DURATIONS.filter(lambda v: v.strip().rstrip("smhdw") != "0")
    set_at(config, path, draw(durations))
    return (key_problem(path),)


def bad_url_in_config(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    config["database_url"] = draw(BAD_URLS)
    return (key_problem(("database_url",)),)


RANGES: dict[KeyPath, st.SearchStrategy[int]] = {
    ("connectors", 0, "source_id"): st.integers(-(2**63), -1) | st.integers(2**31, 2**63 - 1),
    ("projector", "batch_size"): st.integers(-(2**63), 0) | st.integers(100_001, 2**63 - 1),
    ("serve", "metrics_port"): st.integers(-(2**63), 0) | st.integers(65_536, 2**63 - 1),
}


def out_of_range_in_config(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    path = draw(st.sampled_from(sorted(RANGES, key=str)))
    set_at(config, path, draw(RANGES[path]))
    return (key_problem(path),)


def bad_cron_in_config(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    config["connectors"][1]["schedule"]["cron"] = draw(BAD_CRONTABS)
    return (key_problem(("connectors", 1, "schedule", "cron")),)


def bad_schedule_shape(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    both = {"interval": "5m", "cron": "*/5 * * * *"}
    config["connectors"][0]["schedule"] = draw(st.sampled_from([{}, both]))
    return (key_problem(("connectors", 0, "schedule")), "exactly one")


def bad_connector_type(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    known = ("csv", "http-json")
    config["connectors"][0]["type"] = draw(st.text(max_size=10).filter(lambda t: t not in known))
    return (key_problem(("connectors", 0, "type")),)


def bad_connector_name(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    config["connectors"][0]["name"] = draw(st.just("") | st.text(min_size=101, max_size=120))
    return (key_problem(("connectors", 0, "name")),)


def duplicate_connector(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    config["connectors"][1] = copy.deepcopy(config["connectors"][0])
    return (key_problem(("connectors",)), "configured twice")


def nul_in_csv_path(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    config["connectors"][0]["options"]["path"] = draw(st.sampled_from(["\0", "a\0.csv"]))
    return (key_problem(("connectors", 0, "options", "path")),)


VALUE_DEFECTS: dict[str, ValueDefect] = {
    "wrong type": wrong_type_in_config,
    "unknown key or option": unknown_key_in_config,
    "missing key": missing_key_in_config,
    "bad duration": bad_duration_in_config,
    "bad database URL": bad_url_in_config,
    "out of range": out_of_range_in_config,
    "bad crontab": bad_cron_in_config,
    "interval and cron": bad_schedule_shape,
    "unknown connector type": bad_connector_type,
    "bad connector name": bad_connector_name,
    "connector twice": duplicate_connector,
    "NUL in a path": nul_in_csv_path,
}


def toml_syntax_error(draw: st.DrawFn, lines: list[bytes]) -> tuple[tuple[str, ...], int]:
    index = draw(st.integers(0, len(lines)))
    lines.insert(index, draw(st.sampled_from(BROKEN_TOML_LINES)).encode())
    return ("not valid TOML",), index + 1


def toml_key_twice(draw: st.DrawFn, lines: list[bytes]) -> tuple[tuple[str, ...], int]:
    index = draw(st.sampled_from([i for i, line in enumerate(lines) if b" = " in line]))
    lines.insert(index + 1, lines[index])
    return ("not valid TOML",), index + 2


def config_not_utf8(draw: st.DrawFn, lines: list[bytes]) -> tuple[tuple[str, ...], int]:
    index = draw(st.sampled_from([i for i, line in enumerate(lines) if b'= "' in line]))
    lines[index] = lines[index].replace(b'= "', b'= "' + draw(INVALID_UTF8), 1)
    return ("UTF-8",), index + 1


TextDefect = Callable[[st.DrawFn, list[bytes]], tuple[tuple[str, ...], int]]
TEXT_DEFECTS: dict[str, TextDefect] = {
    "TOML syntax": toml_syntax_error,
    "TOML key twice": toml_key_twice,
    "invalid UTF-8": config_not_utf8,
}
CONFIG_DEFECT_KINDS = sorted([*VALUE_DEFECTS, *TEXT_DEFECTS])


@st.composite
def bad_configs(draw: st.DrawFn, database_url: str) -> BadConfig:
    """The valid base config with one defect of its values, or of its text."""
    config = base_config(database_url)
    kind = draw(st.sampled_from(CONFIG_DEFECT_KINDS))
    if kind in VALUE_DEFECTS:
        names = VALUE_DEFECTS[kind](draw, config)
        return BadConfig(kind, toml_text(config), names)
    lines = [line.encode() for line in toml_lines(config)]
    names, line = TEXT_DEFECTS[kind](draw, lines)
    return BadConfig(kind, b"\n".join(lines) + b"\n", names, line)


def toml_text(config: Config) -> bytes:
    return "\n".join(toml_lines(config)).encode() + b"\n"


def assert_config_refused(output: str, exit_code: int, bad: BadConfig) -> None:
    assert exit_code == 2, output[:2000]
    assert "Traceback" not in output
    for name in bad.names:
        assert name in output, (name, output[:2000])
    if bad.line is not None:
        assert re.search(rf"\bat line {bad.line}\b", output), (bad.line, output[:2000])


def test_every_generated_bad_config_is_refused_by_key(tmp_path: Path, reliability: Summary) -> None:
    database_url = f"sqlite:///{tmp_path / 'never-created.db'}"
    path = tmp_path / "ledger.toml"
    path.write_bytes(toml_text(base_config(database_url)))
    (tmp_path / "stations.csv").write_text("id\n1\n")  # config check looks for the csv file
    valid = run_cli("config", "check", str(path))
    assert valid.exit_code == 0, valid.output  # the base is valid: each refusal is the defect's
    checked: Counter[str] = Counter()

    @settings(HYPOTHESIS_SETTINGS, max_examples=CONFIG_EXAMPLES)
    @given(bad=bad_configs(database_url))
    def check_is_refused(bad: BadConfig) -> None:
        path.write_bytes(bad.content)
        result = run_cli("config", "check", str(path))
        assert_config_refused(result.stderr, result.exit_code, bad)
        assert result.stdout == ""
        checked[bad.kind] += 1

    check_is_refused()
    assert not (tmp_path / "never-created.db").exists()
    assert set(checked) == set(CONFIG_DEFECT_KINDS)
    files = sum(checked.values())
    reliability.record(
        "bad input: config check",
        "—",
        f"{files:,} generated config files, {len(checked)} defect kinds (wrong types, unknown "
        "keys and connector options, zero/negative/garbage durations, bad URLs, crontabs and "
        "ranges, invalid TOML, invalid UTF-8)",
        f"{files:,} exit 2 naming the key (or the line), no traceback, no database created",
    )


SERVE_CASES: dict[str, tuple[KeyPath, Any, tuple[str, ...]]] = {
    "wrong type": (("projector", "batch_size"), "1000", ("projector.batch_size:",)),
    "unknown key": (("sweeper", "intervall"), "5m", ("sweeper.intervall:",)),
    "zero interval": (("sweeper", "interval"), "0s", ("sweeper.interval:",)),
    "negative interval": (
        ("connectors", 0, "schedule", "interval"),
        "-5m",
        ("connectors[0].schedule.interval:",),
    ),
    "unknown option": (("connectors", 0, "options", "pth"), "x.csv", ("connectors[0].options:",)),
    "bad URL": (("database_url",), "postgresql://app:secret@db/ledger", ("database_url:",)),
    "bad crontab": (
        ("connectors", 1, "schedule", "cron"),
        "61 * * * *",
        ("connectors[1].schedule.cron:",),
    ),
}


def serve_once(config: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "LEDGER_DATABASE_URL"}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from service.cli import main; main()",
            "serve",
            "--config",
            str(config),
        ],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,  # a serve that started despite the bad config
        check=False,
    )


def test_serve_refuses_a_bad_config_before_touching_the_database(
    ledger: Ledger, db_url: str, backend: str, tmp_path: Path, reliability: Summary
) -> None:
    seed(ledger)
    before = store_state(ledger)
    fresh = tmp_path / "fresh.db"
    path = tmp_path / "ledger.toml"
    bad_configs: list[BadConfig] = []
    for kind, (key, value, names) in SERVE_CASES.items():
        for database_url in (db_url, f"sqlite:///{fresh}"):
            config = base_config(database_url)
            set_at(config, key, value)
            bad_configs.append(BadConfig(kind, toml_text(config), names))
    url_line = f'database_url = "{db_url}"\n'.encode()
    bad_configs += [
        BadConfig("invalid TOML", url_line + b"[sweeper\n", ("not valid TOML",), 2),
        BadConfig("invalid UTF-8", url_line + b'x = "\xff"\n', ("UTF-8",), 2),
    ]
    for bad in bad_configs:
        path.write_bytes(bad.content)
        result = serve_once(path)
        assert_config_refused(result.stderr, result.returncode, bad)
        assert store_state(ledger) == before, bad.kind
        assert not fresh.exists(), bad.kind
    reliability.record(
        "bad input: serve --config",
        backend,
        f"{len(bad_configs)} `ledger serve` processes on bad configs ({len(SERVE_CASES)} kinds "
        "on this database and on a SQLite file not yet created; invalid TOML; invalid UTF-8)",
        f"{len(bad_configs)} exit 2 naming the key or line, no traceback; every table's row "
        "count and the head unchanged, the new SQLite file never created",
    )
