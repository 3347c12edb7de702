"""``ledger append FILE`` on both databases: the shipped sample appended once (again, every
event a duplicate); a file with bad lines appends nothing and names every bad line and its
field (wrong types, not JSON, not UTF-8, a stream rule, an undefined run_ref, clock skew,
values no column can store, deep nesting, huge lines); a byte order mark is fine; an empty file
still checks the database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger import Ledger
from tests.service.support import SAMPLE, lines, run
from tests.support import sqlite_without_schema


def test_migrate_then_append_the_shipped_sample(db_url: str) -> None:
    result = run("migrate", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "already at" in result.output
    result = run("append", str(SAMPLE), "--db", db_url)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary == {
        "appended": 7,
        "duplicates": 0,
        "first_position": 1,
        "last_position": 7,
        "allocated_run_ids": [1, 2],
        "run_refs": {"nightly-source-1": 1, "nightly-source-2": 2},
    }
    again = json.loads(run("append", str(SAMPLE), "--db", db_url).stdout)
    assert (again["appended"], again["duplicates"], again["run_refs"]) == (
        0,
        7,
        {"nightly-source-1": 1, "nightly-source-2": 2},
    )


def test_one_bad_line_writes_nothing_and_is_named(ledger: Ledger, db_url: str) -> None:
    text = lines(
        {"type": "RunStarted", "run_ref": "r", "source_id": 1, "connector_name": "SOURCE_1"},
        {"type": "RunProgressed", "run_ref": "r", "records_fetched": 3},
        {"type": "RunProgressed", "run_ref": "r", "records_fetched": -3},
        {"type": "RunFinished", "run_ref": "r", "status": "success"},
    )
    result = run("append", "-", "--db", db_url, input=text)
    assert result.exit_code == 2
    assert "line 3: records_fetched: Input should be greater than or equal to 0" in result.stderr
    assert "line 1" not in result.stderr
    assert "nothing was appended" in result.stderr
    assert ledger.head().last_position == 0


def test_every_bad_line_is_reported(ledger: Ledger, db_url: str) -> None:
    raw = (
        b'{"type": "RunStarted", "source_id": 1, "connector_name": "S"}\n'
        b"not json\n"
        b"\n"
        b'{"type": "RunProgressed", "run_id": 1, "records_fetched": "12"}\n'
        b'["a", "list"]\n'
        b'{"type": "RunProgressed", "run_id": 1, "note": "\xff\xfe"}\n'
        b'{"type": "RunFinished", "run_id": 1, "status": "done", '
        b'"occurred_at": "2026-01-01T00:00"}\n'
        b'{"type": "Whatever", "run_id": 1}\n'
    )
    result = run("append", "-", "--db", db_url, input=raw)
    assert result.exit_code == 2
    err = result.stderr
    assert "line 2: not valid JSON" in err
    assert "line 4: records_fetched: Input should be a valid integer" in err
    assert "line 5: expected a JSON object" in err
    assert "line 6: not valid UTF-8" in err
    assert "line 7: status:" in err
    assert "line 7: occurred_at:" in err
    assert "line 8: type: unknown event type 'Whatever'" in err
    assert ledger.head().last_position == 0


def test_a_refusal_shows_the_input_as_json_not_python(ledger: Ledger, db_url: str) -> None:
    """``{"type": null}`` was "unknown event type None", and a naive occurred_at came with
    pydantic's "Value error, " before the reason."""
    text = lines(
        {"type": None},
        {"type": True, "run_id": 1},
        {"type": {"a": 1}},
        {"type": "RunStarted", "source_id": 1, "connector_name": "c", "occurred_at": "2026-01-01"},
    )
    result = run("append", "-", "--db", db_url, input=text)
    assert result.exit_code == 2
    err = result.stderr
    assert "line 1: type: unknown event type null; expected one of RunStarted" in err
    assert "line 2: type: unknown event type true;" in err
    assert 'line 3: type: unknown event type {"a": 1};' in err
    assert "line 4: occurred_at: occurred_at must carry a time zone" in err
    for python in ("None", "True", "{'a'", "Value error"):
        assert python not in err, err
    assert ledger.head().last_position == 0


def test_a_line_the_append_refuses_is_reported_with_the_other_bad_lines(
    ledger: Ledger, db_url: str
) -> None:
    # The audit's case: line 1 passes the model but not the append's payload checks, line 2
    # does not pass the model. Only line 2 was named; fixed, the next attempt named line 1.
    text = lines(
        {
            "type": "RunStarted",
            "run_ref": "r",
            "source_id": 1,
            "connector_name": "SOURCE_1",
            "metadata": {"imported": "x"},
        },
        {"type": "RunProgressed", "run_ref": "r", "records_fetched": -1},
    )
    result = run("append", "-", "--db", db_url, input=text)
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: invalid input, nothing was appended:\n"
        "  line 1: metadata.imported: must be true or false\n"
        "  line 2: records_fetched: Input should be greater than or equal to 0\n"
    )
    assert ledger.head().last_position == 0


def test_a_file_s_errors_name_the_file(ledger: Ledger, db_url: str, tmp_path: Path) -> None:
    # "line 1: ..." alone did not say which file, in a script appending several.
    ledger.start_run(1, "SOURCE_1")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines({"type": "RunProgressed", "run_id": 1, "records_fetched": -3}))
    result = run("append", str(bad), "--db", db_url)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {bad}: invalid input, nothing was appended:\n")
    refused = tmp_path / "refused.jsonl"
    refused.write_text(
        lines({"type": "RunStarted", "run_id": 1, "source_id": 1, "connector_name": "S"})
    )
    result = run("append", str(refused), "--db", db_url)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {refused}: line 1: run 1: RunStarted may appear")
    assert ledger.head().last_position == 1


def test_stream_rule_violation_names_the_line(ledger: Ledger, db_url: str) -> None:
    ledger.start_run(1, "SOURCE_1")
    text = lines(
        {"type": "RunProgressed", "run_id": 1, "records_fetched": 3},
        {"type": "RunFinished", "run_id": 1, "status": "success"},
        {"type": "RunProgressed", "run_id": 1},
    )
    result = run("append", "-", "--db", db_url, input=text)
    assert result.exit_code == 2
    assert "line 3: run 1: RunProgressed after RunFinished" in result.stderr
    assert ledger.head().last_position == 1


def test_a_file_holding_its_own_retry_appends_each_event_once(ledger: Ledger, db_url: str) -> None:
    """A file of events with their event_ids, a run started by run_ref among them, followed by
    the same lines again (``cat batch.jsonl batch.jsonl``): each event is stored once. It was
    exit 2, "line 3: run_ref: 'nightly' is started twice", with nothing appended (review 27)."""
    batch = lines(
        {
            "type": "RunStarted",
            "event_id": "6f1c8a52-1f0e-4c55-9b7e-0d6b1f3f2a01",
            "run_ref": "nightly",
            "source_id": 1,
            "connector_name": "SOURCE_1",
        },
        {
            "type": "RunProgressed",
            "event_id": "6f1c8a52-1f0e-4c55-9b7e-0d6b1f3f2a02",
            "run_ref": "nightly",
            "records_fetched": 3,
        },
    )
    result = run("append", "-", "--db", db_url, input=batch + batch)
    assert result.exit_code == 0, result.output
    assert ledger.head().last_position == 2
    assert [(e.type, e.run_id) for e in ledger.read_all()] == [
        ("RunStarted", 1),
        ("RunProgressed", 1),
    ]


def test_unresolved_run_ref_and_clock_skew_name_the_line(ledger: Ledger, db_url: str) -> None:
    text = lines(
        {"type": "RunProgressed", "run_ref": "nope"},
        {
            "type": "RunStarted",
            "source_id": 1,
            "connector_name": "S",
            "occurred_at": "2999-01-01T00:00:00Z",
        },
    )
    result = run("append", "-", "--db", db_url, input=text)
    assert result.exit_code == 2
    assert "line 1: run_ref: 'nope' names no RunStarted" in result.stderr
    assert "line 2: occurred_at: 2999-01-01" in result.stderr
    assert ledger.head().last_position == 0


def test_every_line_ahead_of_the_clock_is_named_in_a_batch_otherwise_good(
    ledger: Ledger, db_url: str
) -> None:
    """The append reads the clock under its lock, where it meets the first line ahead; the
    refusal still names every one (the clock is read again only for a refused batch)."""
    start = {"type": "RunStarted", "source_id": 1, "connector_name": "S"}
    text = lines(
        start,
        {**start, "occurred_at": "2999-01-01T00:00:00Z"},
        {**start, "occurred_at": "2998-01-01T00:00:00Z"},
    )
    result = run("append", "-", "--db", db_url, input=text)
    assert result.exit_code == 2, result.output
    assert "line 2: occurred_at: 2999-01-01" in result.stderr
    assert "line 3: occurred_at: 2998-01-01" in result.stderr
    assert "line 1" not in result.stderr
    assert ledger.head().last_position == 0


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            b'{"type": "RunStarted", "source_id": 1, "connector_name": "S", '
            b'"metadata": {"x": NaN}}',
            "line 1: not valid JSON (NaN is not a JSON number)",
        ),
        (
            b'{"type": "RunStarted", "source_id": 1, "connector_name": "S", '
            b'"metadata": {"x": "\\ud800"}}',
            "line 1: payload: not storable as JSON",
        ),
        (
            b'{"type": "RunStarted", "source_id": 1, "connector_name": "S", '
            b'"occurred_at": "0001-01-01T00:00:00+01:00"}',
            "line 1: occurred_at:",
        ),
        (
            b'{"type": "RunStarted", "source_id": 1, "connector_name": "S", '
            b'"occurred_at": "1969-12-31T23:59:59Z"}',
            "line 1: occurred_at:",
        ),
        (
            b'{"type": "RunStarted", "source_id": 1, "connector_name": "S", "schema_version": 2}',
            "line 1: schema_version:",
        ),
    ],
)
def test_unstorable_values_are_input_errors(
    ledger: Ledger, db_url: str, line: bytes, expected: str
) -> None:
    result = run("append", "-", "--db", db_url, input=line + b"\n")
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert "Traceback" not in result.output
    assert ledger.head().last_position == 0


def test_a_byte_order_mark_opens_a_file_fine(ledger: Ledger, db_url: str) -> None:
    line = '{"type": "RunStarted", "source_id": 1, "connector_name": "S"}\n'
    result = run("append", "-", "--db", db_url, input=b"\xef\xbb\xbf" + line.encode())
    assert result.exit_code == 0, result.output
    assert ledger.head().last_position == 1


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_a_utf16_file_is_one_problem_saying_how_to_convert_it(
    ledger: Ledger, db_url: str, tmp_path: Path, encoding: str
) -> None:
    """PowerShell's `>` writes UTF-16: its every line was a problem of its own ("line 1: not
    valid UTF-8 (byte 0)", then "not valid JSON" for each line after), none naming the
    encoding."""
    text = SAMPLE.read_text(encoding="utf-8")
    bom = "\ufeff" if encoding == "utf-16-be" else ""  # Python's utf-16 writes its own
    source = tmp_path / "events.jsonl"
    source.write_bytes((bom + text).encode(encoding))
    result = run("append", str(source), "--db", db_url)
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"Error: {source}: invalid input, nothing was appended:\n"
        "  line 1: the input is UTF-16 (it starts with a UTF-16 byte order mark); JSON Lines "
        "are UTF-8: convert it first (`iconv -f UTF-16 -t UTF-8`)\n"
    )
    assert ledger.head().last_position == 0


def test_deep_nesting_and_huge_lines_are_input_errors(ledger: Ledger, db_url: str) -> None:
    deep = (
        '{"type": "RunStarted", "source_id": 1, "connector_name": "S", "metadata": '
        + ('{"a": ' * 100_000)
        + "1"
        + ("}" * 100_000)
        + "}\n"
    )
    result = run("append", "-", "--db", db_url, input=deep)
    assert result.exit_code == 2, result.output[-500:]
    assert "line 1:" in result.stderr
    huge = (
        json.dumps(
            {
                "type": "RunStarted",
                "source_id": 1,
                "connector_name": "S",
                "metadata": {"blob": "x" * 20_000_000},
            }
        )
        + "\n"
    )
    result = run("append", "-", "--db", db_url, input=huge)
    assert result.exit_code == 2
    assert "line 1: payload:" in result.stderr
    assert "byte limit" in result.stderr
    assert ledger.head().last_position == 0


def test_an_empty_file_still_checks_the_database(tmp_path: Path) -> None:
    result = run("append", "-", "--db", "mysql+pymysql://u:pw-empty@127.0.0.1:1/x", input="\n\n")
    assert result.exit_code == 3
    assert "pw-empty" not in result.output
    # There, but never migrated (a missing one is made a ledger).
    unmigrated = run("append", "-", "--db", sqlite_without_schema(tmp_path / "new.db"), input="")
    assert unmigrated.exit_code == 1
    assert "ledger migrate" in unmigrated.stderr


def test_a_json_array_of_events_says_it_is_not_json_lines(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    # It said "line 1: expected a JSON object, got list": Python's name, and no way out.
    events = [{"type": "RunStarted", "source_id": 1, "connector_name": "SOURCE_1"}]
    array = tmp_path / "events.json"
    array.write_text(json.dumps(events, indent=None) + "\n")
    result = run("append", str(array), "--db", db_url)
    assert result.exit_code == 2, result.output
    assert (
        "line 1: expected a JSON object, got an array: JSON Lines holds one event object per "
        "line (`jq -c '.[]' FILE` turns an array of events into them)"
    ) in result.stderr
    scalar = run("append", "-", "--db", db_url, input='"RunStarted"\n')
    assert "line 1: expected a JSON object, got string" in scalar.stderr
    assert ledger.head().last_position == 0


def test_a_misspelt_field_is_named_with_the_field_meant(ledger: Ledger, db_url: str) -> None:
    """`"record_fetched": 3` said pydantic's "Extra inputs are not permitted"; the line says the
    field is unknown to that event type, and the one meant when one is close."""
    text = lines(
        {"type": "RunProgressed", "run_id": 1, "record_fetched": 3},
        {"type": "RunStarted", "source_id": 1, "conector_name": "SOURCE_1"},
        {"type": "RunFinished", "run_id": 1, "status": "success", "zzz": 1},
    )
    result = run("append", "-", "--db", db_url, input=text)
    assert result.exit_code == 2
    said = result.stderr
    assert "Extra inputs" not in said
    assert (
        "line 1: record_fetched: not a field of RunProgressed (did you mean records_fetched?)"
        in said
    )
    assert "line 2: conector_name: not a field of RunStarted (did you mean connector_name?)" in said
    assert "line 3: zzz: not a field of RunFinished; its fields: " in said
    assert "error_message" in said.splitlines()[-1]
    assert ledger.head().last_position == 0


def test_lines_ahead_of_the_clock_are_named_before_a_stream_rule_of_an_earlier_line(
    ledger: Ledger, db_url: str
) -> None:
    """The lock meets line 1's stream rule before line 2's time: the refusal still names the
    line ahead of the clock, as when the clock was read before the append (exit 2, not the
    stream rule alone)."""
    text = lines(
        {"type": "RunFinished", "run_id": 99, "status": "success"},
        {
            "type": "RunStarted",
            "source_id": 1,
            "connector_name": "S",
            "occurred_at": "2999-01-01T00:00:00Z",
        },
    )
    result = run("append", "-", "--db", db_url, input=text)
    assert result.exit_code == 2, result.output
    assert "line 2: occurred_at: 2999-01-01" in result.stderr
    assert ledger.head().last_position == 0
