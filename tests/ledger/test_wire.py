"""``ledger/wire.py``: JSON Lines read into events with structured problems, appended naming
the line of each event the ledger refuses, and written back in the wire form."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from ledger import (
    InputProblem,
    Ledger,
    LedgerError,
    RunFinished,
    StreamError,
    ValidationError,
)
from ledger.wire import MAX_LISTED_PROBLEMS, append_lines, read_array, read_lines, wire_line


def jsonl(*events: dict[str, object]) -> list[bytes]:
    return [json.dumps(event).encode() + b"\n" for event in events]


STARTED = {"type": "RunStarted", "source_id": 1, "connector_name": "S"}


def test_lines_are_read_with_their_numbers_blank_lines_and_a_bom_skipped() -> None:
    source = [b"\xef\xbb\xbf" + jsonl(STARTED)[0], b"\n", b"  \r\n", *jsonl(STARTED)]
    batch = read_lines(source)
    assert [event.type for event in batch.events] == ["RunStarted", "RunStarted"]
    assert batch.line_numbers == [1, 4]


def test_every_bad_line_is_one_structured_problem_none_is_appended() -> None:
    source = [
        *jsonl(STARTED),
        b"not json\n",
        b'{"a": 1, "a": 2}\n',
        b"\xff\n",
        b"[1]\n",
        *jsonl({"type": "RunProgressed", "run_id": 1, "records_fetched": -1}),
    ]
    with pytest.raises(ValidationError) as caught:
        read_lines(source)
    found = [(p.line, p.field) for p in caught.value.details]
    assert found == [(2, None), (3, "a"), (4, None), (5, None), (6, "records_fetched")]
    assert caught.value.problems[1] == "line 3: a: given more than once in one object"
    assert str(caught.value).startswith("invalid input, nothing was appended:\n  line 2: ")


def test_a_valid_event_the_append_would_refuse_is_named_with_the_bad_lines() -> None:
    # The append's checks of one event (ledger.limits.payload_problems, the payload size) ran
    # only once every line was a valid event: line 1 was named only after line 2 was fixed.
    deep: dict[str, object] = {}
    for _ in range(25):
        deep = {"d": deep}
    source = jsonl(
        {**STARTED, "run_ref": "a", "metadata": {"imported": "x"}},
        {"type": "RunProgressed", "run_id": 1, "records_fetched": -1},
        {"type": "RunFinished", "run_id": 1, "status": "failed", "error_details": deep},
        STARTED,
        {"type": "RunProgressed", "run_id": 1, "records_fetched": 2, "schema_version": 0},
    )
    with pytest.raises(ValidationError) as caught:
        read_lines(source)
    found = [(p.line, p.field) for p in caught.value.details]
    assert found == [
        (1, "metadata.imported"),
        (2, "records_fetched"),
        (3, "error_details"),
        (5, "schema_version"),
    ]
    assert caught.value.problems[0] == "line 1: metadata.imported: must be true or false"
    with pytest.raises(ValidationError) as caught:
        read_array(b"[" + b",".join(line.strip() for line in source) + b"]")
    assert [(p.unit, p.line, p.field) for p in caught.value.details] == [
        ("item", line, field) for line, field in found
    ]


def test_an_array_that_is_not_json_says_where_on_which_line_and_in_which_item() -> None:
    """A request's array of events is often written one event per line: "at column 37" named
    no place in it, and a key given twice named no item (review 56). JSON Lines and a one-line
    body read as before."""
    pretty = b'[\n  {"type": "RunStarted"},\n  {"type": "RunProgressed" "run_id": 1}\n]'
    with pytest.raises(ValidationError) as caught:
        read_array(pretty)
    assert "not valid JSON (Expecting ',' delimiter at line 3, column 28)" in str(caught.value)
    repeated = b'[{"type": "RunProgressed"}, {"run_id": 1, "metadata": {"a": 1, "a": 2}}]'
    with pytest.raises(ValidationError) as caught:
        read_array(repeated)
    assert caught.value.problems == ["item 2: a: given more than once in one object"]
    assert [(p.unit, p.line, p.field) for p in caught.value.details] == [("item", 2, "a")]
    with pytest.raises(ValidationError) as caught:
        read_array(b'[{"run_id": 1} {"run_id": 1}]')
    assert "not valid JSON (Expecting ',' delimiter at column 16)" in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        read_lines([*jsonl(STARTED), b'[{"a": 1, "a": 2}]\n'])
    assert caught.value.problems == ["line 2: a: given more than once in one object"]


def test_the_message_lists_the_first_problems_each_on_one_line() -> None:
    source = [b"nope\n"] * (MAX_LISTED_PROBLEMS + 3) + jsonl({"type": "X", "a\nline 1: ok": 1})
    with pytest.raises(ValidationError) as caught:
        read_lines(source)
    lines = str(caught.value).splitlines()
    assert len(lines) == 1 + MAX_LISTED_PROBLEMS + 1
    assert lines[-1] == "  … and 4 more problem(s)"
    assert len(caught.value.details) == MAX_LISTED_PROBLEMS + 4


def test_problems_of_the_batch_checks_name_their_lines(ledger: Ledger) -> None:
    batch = read_lines(
        [
            *jsonl({**STARTED, "schema_version": 2}),
            b"\n",
            *jsonl({"type": "RunProgressed", "run_ref": "nope"}),
        ]
    )
    with pytest.raises(ValidationError) as caught:
        append_lines(ledger, batch)
    assert caught.value.details == (
        InputProblem("schema_version", "RunStarted is written at schema_version 1, got 2", 0, 1),
        InputProblem("run_ref", "'nope' names no RunStarted earlier in this batch", 1, 3),
    )
    assert isinstance(caught.value.__cause__, ValidationError)
    assert ledger.head().last_position == 0


def test_a_stream_rule_names_the_line_and_the_field_that_names_the_run(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "S")
    ledger.append([RunFinished(run_id=run_id, status="success")])
    batch = read_lines(jsonl(STARTED, {"type": "RunProgressed", "run_id": run_id}))
    with pytest.raises(ValidationError) as caught:
        append_lines(ledger, batch)
    (problem,) = caught.value.details
    assert (problem.line, problem.field, problem.index) == (2, "run_id", 1)
    assert str(caught.value).startswith(f"line 2: run {run_id}: RunProgressed after RunFinished")
    assert str(caught.value).endswith("; field: run_id")
    assert isinstance(caught.value.__cause__, StreamError)
    assert ledger.head().last_position == 2


def test_every_line_ahead_of_the_ledger_clock_is_named(ledger: Ledger) -> None:
    ahead = {**STARTED, "occurred_at": "2999-01-01T00:00:00Z"}
    batch = read_lines([*jsonl(ahead), *jsonl(STARTED), *jsonl(ahead)])
    with pytest.raises(ValidationError) as caught:
        append_lines(ledger, batch)
    assert [(p.line, p.field) for p in caught.value.details] == [
        (1, "occurred_at"),
        (3, "occurred_at"),
    ]
    assert ledger.head().last_position == 0


# The ledger's clock before and after it stepped back an hour (an NTP correction): the last
# append's recorded_at stays at the later time.
CLOCK_AHEAD = datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
CLOCK_STEPPED_BACK = CLOCK_AHEAD - timedelta(hours=1)


def _progress_at(run_id: int, when: datetime) -> dict[str, object]:
    return {
        "type": "RunProgressed",
        "run_id": run_id,
        "event_id": str(uuid.uuid4()),
        "occurred_at": when.isoformat(),
    }


def test_lines_ahead_of_a_clock_stepped_back_are_named_against_the_clock(
    ledger: Ledger,
) -> None:
    """The lock's guard measures against the clock itself, and met line 1 (half an hour
    ahead of it, behind the last recorded_at): the refusal named only line 2, against the last
    recorded_at called "the ledger clock"."""
    with freeze_time(CLOCK_AHEAD):
        run_id = ledger.start_run(1, "S")
    with freeze_time(CLOCK_STEPPED_BACK):
        batch = read_lines(
            jsonl(
                _progress_at(run_id, CLOCK_STEPPED_BACK + timedelta(minutes=30)),
                _progress_at(run_id, CLOCK_AHEAD + timedelta(hours=1)),
            )
        )
        with pytest.raises(ValidationError) as caught:
            append_lines(ledger, batch)
    assert [(p.line, p.field) for p in caught.value.details] == [
        (1, "occurred_at"),
        (2, "occurred_at"),
    ]
    assert "ahead of the ledger clock (2026-03-01T12:00:00" in str(caught.value)
    assert ledger.head().last_position == 1


def test_a_stored_line_ahead_of_a_clock_stepped_back_is_not_named(ledger: Ledger) -> None:
    """A line stored before the clock stepped back is taken back as it is (I3), its time not
    measured: the refusal of its batch names the line that is refused, not that one."""
    with freeze_time(CLOCK_AHEAD):
        run_id = ledger.start_run(1, "S")
        stored = _progress_at(run_id, CLOCK_AHEAD)
        append_lines(ledger, read_lines(jsonl(stored)))
    with freeze_time(CLOCK_STEPPED_BACK):
        batch = read_lines(jsonl(stored, {**STARTED, "run_id": run_id}))
        with pytest.raises(ValidationError) as caught:
            append_lines(ledger, batch)
    assert [(p.line, p.field) for p in caught.value.details] == [(2, "run_id")]
    assert isinstance(caught.value.__cause__, StreamError)
    assert ledger.head().last_position == 2


def test_the_wire_form_appends_again_as_a_duplicate(ledger: Ledger) -> None:
    first = append_lines(ledger, read_lines(jsonl(STARTED)))
    assert first.to_dict()["appended"] == 1
    exported = [wire_line(event).encode() + b"\n" for event in ledger.read_all()]
    again = append_lines(ledger, read_lines(exported))
    assert (again.appended, again.duplicates) == (0, 1)


def test_an_empty_batch_still_reads_the_head() -> None:
    unmigrated = Ledger.from_url("sqlite://")
    with pytest.raises(LedgerError, match="ledger migrate"):
        append_lines(unmigrated, read_lines([b"\n"]))
