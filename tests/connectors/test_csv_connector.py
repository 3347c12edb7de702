"""The csv connector (``CsvConnector`` and ``ledger run csv``), on SQLite and on MariaDB: real
records ingested with non-zero counters, a rerun that skips what did not change and counts what
did, malformed rows making a partial run that lists them, JSON Lines input, and record keys
compared exactly on both databases."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from connectors import SAMPLE_CSV, CsvConnector, Spool, csv_connector
from connectors.csv_connector import Batch
from connectors.schema import source_records
from ledger import Ledger
from projections import Projector
from service.cli import cli
from tests.connectors.support import finished, run_events, write
from tests.projection_support import table_rows


def test_csv_run_ingests_real_records_with_non_zero_counters(ledger: Ledger, spool: Spool) -> None:
    """The seed's objective 4, met by a real connector on a real file."""
    result = CsvConnector(1, SAMPLE_CSV).run(ledger, spool=spool)
    assert result.status == "success"
    assert result.totals["records_fetched"] == result.totals["records_created"] == 20
    with ledger.engine.connect() as conn:
        stored = conn.execute(
            select(source_records.c.external_id, source_records.c.payload).where(
                source_records.c.source_id == 1
            )
        ).all()
    assert len(stored) == 20
    assert json.loads(dict(stored)["ST-0003"])["city"] == "Faro"
    Projector(ledger).run_once()
    row = table_rows(ledger)[result.run_id]
    assert (row["status"], row["connectorName"], row["recordsFetched"], row["recordsCreated"]) == (
        "success",
        "csv",
        20,
        20,
    )
    assert row["completedAt"] is not None
    assert row["duration"] is not None
    metadata = run_events(ledger, result.run_id)[0].payload_data["metadata"]
    assert set(metadata) == {"host", "pid", "connector_version", "trigger"}


def test_csv_rerun_skips_unchanged_and_counts_changes(
    ledger: Ledger, spool: Spool, tmp_path: Path
) -> None:
    data = write(tmp_path / "a.csv", "id,name\n1,a\n2,b\n3,c\n")
    CsvConnector(5, data).run(ledger, spool=spool)
    again = CsvConnector(5, data).run(ledger, spool=spool)
    assert again.totals["records_created"] == 0
    assert again.totals["records_skipped"] == 3
    write(data, "id,name\n1,a\n2,B\n3,c\n4,d\n")
    third = CsvConnector(5, data).run(ledger, spool=spool)
    assert {
        k: third.totals[k]
        for k in ("records_fetched", "records_created", "records_updated", "records_skipped")
    } == {"records_fetched": 4, "records_created": 1, "records_updated": 1, "records_skipped": 2}
    assert CsvConnector(6, data).run(ledger, spool=spool).totals["records_created"] == 4


def test_malformed_rows_make_a_partial_run_that_lists_them(
    ledger: Ledger, spool: Spool, tmp_path: Path
) -> None:
    data = write(tmp_path / "bad.csv", "id,name,city\n1,a,x\n2,b\n3,c,y,extra\n,d,z\n5,e,w\n")
    result = CsvConnector(1, data).run(ledger, spool=spool)
    assert (result.status, result.error_count) == ("partial", 3)
    assert (result.totals["records_fetched"], result.totals["records_created"]) == (5, 2)
    payload = finished(ledger, result.run_id)
    assert payload["status"] == "partial"
    assert payload["error_message"] == "3 error(s); first: line 3: expected 3 fields, got 2"
    messages = [e["message"] for e in payload["error_details"]["errors"]]
    assert messages == [
        "line 3: expected 3 fields, got 2",
        "line 4: expected 3 fields, got 4",
        "line 5: empty key 'id'",
    ]


def test_json_lines_input(ledger: Ledger, spool: Spool, tmp_path: Path) -> None:
    data = write(tmp_path / "r.jsonl", '{"id": 1, "v": 1}\n{"v": 2}\nnot json\n\n{"id": 3}\n')
    result = CsvConnector(1, data).run(ledger, spool=spool)
    assert (result.status, result.error_count, result.totals["records_created"]) == (
        "partial",
        2,
        2,
    )


def test_ledger_run_csv_cli(ledger: Ledger, db_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["run", "csv", "--source-id", "4", "--spool-dir", str(tmp_path), "--db", db_url]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["records_created"]) == ("success", 20)
    bad = write(tmp_path / "bad.csv", "id,name\n1\n")
    partial = runner.invoke(
        cli, ["run", "csv", "--path", str(bad), "--spool-dir", str(tmp_path), "--db", db_url]
    )
    assert partial.exit_code == 1
    assert json.loads(partial.stdout)["status"] == "partial"
    help_text = runner.invoke(cli, ["run", "csv", "--help"]).output
    assert "by default the sample the package ships" in " ".join(help_text.split())


def test_ledger_run_csv_says_why_a_run_is_partial(db_url: str, tmp_path: Path) -> None:
    # Exit 1 with only an error count left the reader to project and `runs show` to learn why.
    data = write(tmp_path / "stations.jsonl", '{"station_id": "S1"}\n{"station_id": "S2"}\n')
    result = CliRunner().invoke(
        cli, ["run", "csv", "--path", str(data), "--spool-dir", str(tmp_path), "--db", db_url]
    )
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["error_count"]) == ("partial", 2)
    # ...and a --key the file does not have names the fields it does (the CSV header is named
    # the same way): "missing key 'id'" alone left the reader to open the file.
    assert summary["error"] == (
        "2 error(s); first: line 1: missing key 'id' (the record has station_id; "
        "--key names the field that identifies a record)"
    )
    empty = write(tmp_path / "empty-key.jsonl", '{"id": "", "name": "x"}\n')
    result = CliRunner().invoke(
        cli, ["run", "csv", "--path", str(empty), "--spool-dir", str(tmp_path), "--db", db_url]
    )
    assert json.loads(result.stdout)["error"] == "1 error(s); first: line 1: empty key 'id'"


def test_record_keys_are_case_sensitive_on_both_databases(ledger: Ledger, tmp_path: Path) -> None:
    data = tmp_path / "keys.csv"
    data.write_text("id,v\nabc,1\nABC,2\nabc ,3\n")
    result = CsvConnector(1, data).run(ledger, spool=Spool(tmp_path))
    # "abc" and "ABC" are two records everywhere; "abc " is "abc" (the CSV connector trims its
    # keys: a cell's padding is layout, not identity), here with a new value.
    assert (result.status, result.totals["records_created"], result.totals["records_updated"]) == (
        "success",
        2,
        1,
    )


def test_json_lines_that_python_cannot_read_are_errors_of_their_line(
    ledger: Ledger, spool: Spool, tmp_path: Path
) -> None:
    # A Latin-1 byte, a 5,000-digit number, 100,000 nested lists: each failed the whole run
    # with a UnicodeDecodeError, ValueError or RecursionError naming no line, where an invalid
    # line is an error of that line and the run goes on.
    path = tmp_path / "odd.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"id": "a"}\r\n'
        + b'{"id": "caf\xe9"}\n'
        + b'{"id": 1'
        + b"0" * 5000
        + b"}\n"
        + b"[" * 100_000
        + b"]" * 100_000
        + b'\n{"id": "b"}\n'
    )
    result = CsvConnector(1, path).run(ledger, spool=spool)
    assert (result.status, result.totals["records_created"], result.error_count) == (
        "partial",
        2,
        3,
    )
    messages = [e["message"] for e in finished(ledger, result.run_id)["error_details"]["errors"]]
    assert messages[0] == "line 2: not UTF-8 (byte 12 of the line)"
    assert messages[1].startswith("line 3: not valid JSON (Exceeds the limit")
    assert messages[2].startswith("line 4: not valid JSON (maximum recursion depth")


def test_a_csv_file_python_cannot_read_fails_the_run_naming_the_line(
    ledger: Ledger, spool: Spool, tmp_path: Path
) -> None:
    # It said "UnicodeDecodeError: … in position 8197" (a position in a read buffer) or
    # "Error: field larger than field limit (131072)", naming neither file nor line.
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(b"id,v\r\n" + b"1,ok\r\n" * 2000 + b"2,caf\xe9\r\n")
    huge = tmp_path / "huge.csv"
    huge.write_bytes(b"\xef\xbb\xbfid,v\n1,ok\n2," + b"x" * 200_000 + b"\n")
    for path, expected in [
        (latin1, "line 2002 is not UTF-8 (byte 6 of the line): save the file as UTF-8"),
        (huge, "line 3: field larger than field limit (131072)"),
    ]:
        connector = CsvConnector(1, path)
        result, failure = connector.record(connector.context(ledger, spool=spool))
        assert result.status == "failed"
        assert str(failure) == f"{path}: {expected}"


def test_a_line_over_the_limit_is_an_error_of_its_line_never_held_whole(
    ledger: Ledger, spool: Spool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A line was read whole, then decoded: a 2 GB line took some 5 GB of memory (a 400 MB
    # line under a 1 GB limit failed the run as a bare "MemoryError: ", naming nothing). The
    # limit (64 MiB) set to 1 MiB here, so that a 16 MiB line stands for the 2 GB one.
    monkeypatch.setattr(csv_connector, "MAX_LINE_BYTES", 2**20)
    long_line = b"x" * 16 * 2**20
    too_long = "longer than 1 MiB, the longest line read"
    csv_path, jsonl_path = tmp_path / "long.csv", tmp_path / "long.jsonl"
    csv_path.write_bytes(b"id,v\n1,a\n2," + long_line + b"\n3,c\n")
    jsonl_path.write_bytes(b'{"id": "1"}\n{"id": "2", "v": "' + long_line + b'"}\n{"id": "3"}\n')
    outcomes = []
    for path in (csv_path, jsonl_path):
        connector = CsvConnector(1, path)
        tracemalloc.start()
        try:
            result, failure = connector.record(connector.context(ledger, spool=spool))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < len(long_line) // 2, path.name
        outcomes.append((result.status, result.totals["records_created"], str(failure)))
    assert outcomes[0] == ("failed", 0, f"{csv_path}: line 3 is {too_long}")
    assert outcomes[1] == ("partial", 2, "None")
    errors = finished(ledger, result.run_id)["error_details"]["errors"]
    assert [e["message"] for e in errors] == [f"line 2: {too_long}"]


class _RewrittenAfterItsFirstBatch(CsvConnector):
    """A csv connector whose file an exporter rewrites in place (``open(path, "w")``) once
    the first batch was read."""

    def __init__(self, path: Path, content: bytes) -> None:
        super().__init__(1, path, batch_size=100)
        self.content = content

    def batches(self) -> Iterator[Batch]:
        for number, batch in enumerate(super().batches()):
            yield batch
            if number == 0:
                with self.path.open("r+b") as handle:  # the same file, as "w" rewrites it
                    handle.truncate(0)
                    handle.write(self.content)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_file_rewritten_while_read_fails_the_run_naming_it(
    ledger: Ledger, spool: Spool, tmp_path: Path, suffix: str
) -> None:
    # It was read on at the old offset: 331 rows of the old file, then the new one from its
    # 187th row, and the run ended success with records of two versions.
    def rows(first: int, name: str) -> bytes:
        if suffix == ".csv":
            return b"id,name\n" + b"".join(
                b"%d,%s-%d\n" % (i, name.encode(), i) for i in range(first, first + 5000)
            )
        return b"".join(
            b'{"id": "%d", "name": "%s-%d"}\n' % (i, name.encode(), i)
            for i in range(first, first + 5000)
        )

    path = tmp_path / f"export{suffix}"
    old = rows(1, "name")
    path.write_bytes(old)
    connector = _RewrittenAfterItsFirstBatch(path, rows(100001, "renamed"))
    result, failure = connector.record(connector.context(ledger, spool=spool))
    assert (result.status, result.totals["records_created"]) == ("failed", 100)
    assert str(failure) == (
        f"{path}: the file changed while it was read ({len(old):,} bytes when opened, "
        f"{path.stat().st_size:,} now): what was read since cannot be trusted; write the file "
        "elsewhere and rename it into place, then run again"
    )
    with ledger.engine.connect() as conn:
        names = conn.execute(select(source_records.c.external_id)).scalars().all()
    assert sorted(names, key=int) == [str(i) for i in range(1, 101)]


def test_a_batch_size_that_is_not_a_whole_number_is_refused_by_config_check(
    tmp_path: Path,
) -> None:
    # `batch_size = "500"` passed `config check`, then every scheduled run failed with a
    # TypeError comparing a count with text.
    config = tmp_path / "ledger.toml"
    config.write_text(
        f'database_url = "sqlite:///{tmp_path / "l.db"}"\n'
        "[[connectors]]\n"
        'name = "stations"\n'
        'type = "csv"\n'
        "source_id = 3\n"
        'schedule = { interval = "5m" }\n'
        f'options = {{ path = "{SAMPLE_CSV}", batch_size = "500" }}\n'
    )
    result = CliRunner().invoke(cli, ["config", "check", str(config)])
    assert result.exit_code == 2, result.output
    assert "batch_size: expected a whole number >= 1, got '500'" in result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # csv.DictReader kept the last column of a repeated name: "a" was dropped silently,
        # and with `id,id` the second id keyed the record.
        ("id,name,name\n1,a,b\n", "line 1: the header repeats 'name' (columns 2, 3)"),
        ("id,id\n1,2\n", "line 1: the header repeats 'id' (columns 1, 2)"),
        # An unterminated quote swallowed the rest of the file into one field: success, 1
        # record whose name held "Smith, J\n2,Jones\n3,Brown\n".
        (
            'id,name\n1,"Smith, J\n2,Jones\n3,Brown\n',
            "line 2: a quote opened in this row is never closed (the file ends inside it, at "
            "line 4)",
        ),
        ('id,name\n1,a\n\n\n2,"b\n', "line 5: a quote opened in this row is never closed"),
        # Text after a closing quote was glued to the field ("Smith" Jr read as Smith Jr).
        ('id,name\n1,a\n2,"Smith" Jr\n', "line 3: ',' expected after '\"'"),
        # 0 bytes ended success with 0 records (a file of blank lines failed, naming no line).
        ("", "the file is empty (no header row)"),
        ("\n\nid\n1\n", "line 1 is blank: the header row, naming the columns, must be"),
    ],
)
def test_a_csv_file_the_reader_would_misread_fails_the_run_naming_file_and_line(
    ledger: Ledger, spool: Spool, tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path / "input.csv", text)
    connector = CsvConnector(1, path)
    result, failure = connector.record(connector.context(ledger, spool=spool))
    assert (result.status, result.totals["records_created"]) == ("failed", 0)
    assert str(failure).startswith(f"{path}: {expected}")
    assert finished(ledger, result.run_id)["error_message"].startswith(
        f"ValueError: {path}: {expected}"
    )


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        # The JSON Lines message said which option names the key; the CSV one did not.
        (
            "stations.csv",
            "station_id,name\nS1,a\n",
            "no 'id' column in the header (station_id, name); --key names the column that "
            "identifies a record",
        ),
        # JSON in a file not named .jsonl was read as CSV: "no 'id' column in the header
        # ({"station_id": 1})", the JSON shown as a header.
        (
            "stations.json",
            '{"station_id": 1, "name": "a"}\n',
            "the file holds JSON, read as CSV here: only a file named .jsonl or .ndjson is "
            "read as JSON Lines",
        ),
        ("export.csv", '[{"id": 1}]\n', "the file holds JSON, read as CSV here"),
    ],
)
def test_a_file_without_the_key_column_says_how_to_read_it(
    ledger: Ledger, spool: Spool, tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = write(tmp_path / name, text)
    connector = CsvConnector(1, path)
    result, failure = connector.record(connector.context(ledger, spool=spool))
    assert result.status == "failed"
    assert str(failure).startswith(f"{path}: {expected}"), str(failure)


def test_every_rfc_4180_form_and_a_quote_inside_a_bare_field_still_read(
    ledger: Ledger, spool: Spool, tmp_path: Path
) -> None:
    """Strict parsing refuses only an unclosed quote and text after a closing one."""
    path = tmp_path / "valid.csv"
    path.write_bytes(
        b'id,name,note\r\n1,"Smith, J","say ""hi"""\r\n2,"two\r\nlines",\r\n'
        b'3,Smith "J",""\r\n"4",plain,"a,b"'
    )
    connector = CsvConnector(1, path)
    result = connector.run(ledger, spool=spool)
    assert (result.status, result.totals["records_created"]) == ("success", 4)
    with ledger.engine.connect() as conn:
        stored = dict(
            conn.execute(select(source_records.c.external_id, source_records.c.payload)).all()
        )
    assert json.loads(stored["1"]) == {"id": "1", "name": "Smith, J", "note": 'say "hi"'}
    assert json.loads(stored["2"])["name"] == "two\r\nlines"
    assert json.loads(stored["3"]) == {"id": "3", "name": 'Smith "J"', "note": ""}
    assert json.loads(stored["4"])["note"] == "a,b"
