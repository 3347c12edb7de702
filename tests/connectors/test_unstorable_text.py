"""Text the ledger cannot store, handed over by a data source, on SQLite and on MariaDB.

A lone surrogate (a ``\\ud800`` escape in JSON Lines or an HTTP JSON body, or the ``\\udcfe`` a
file name that is not UTF-8 decodes to) in a field name, a value or a path: the SDK refused
nothing, the ledger refused the run's RunFinished for good, the spool then raised
UnicodeEncodeError keeping it, and the run stayed ``running`` with no counts, its outcome lost
with two tracebacks (``finish()`` and the exit hook). A value the database cannot store failed
the whole http-json run with nothing counted. Now each such text is stored as its escape
(``ledger.text.storable``), each such record is an error of that record, and the run ends
``partial`` with its counts.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from connectors import CsvConnector, RunContext, Spool, SpoolError
from connectors.refusal import log_lost
from ledger import Ledger, RunFinished
from ledger.text import storable
from projections import Projector
from service.cli import cli
from tests.connectors.support import finished, run_events, totals, write
from tests.net_support import JsonServer
from tests.projection_support import table_rows


def items(records: list[Any]) -> Any:
    def route(_query: dict[str, str], _call: int) -> tuple[int, Any]:
        return 200, {"items": records}  # json.dumps writes "\ud800" as its JSON escape

    return route


@pytest.fixture
def api() -> Any:
    routes = {
        "/field-name": items([{"id": "1"}, {"\ud800": 2}]),
        "/value": items([{"id": "1", "v": "\udfff"}, {"id": "2"}]),
        "/key": items([{"id": "\ud800"}, {"id": "2"}]),
    }
    with JsonServer(routes) as server:
        yield server


def run_cli(args: list[str], db_url: str, tmp_path: Path) -> Result:
    return CliRunner().invoke(
        cli, ["run", *args, "--spool-dir", str(tmp_path / "spool"), "--db", db_url]
    )


def assert_closed_partial(
    ledger: Ledger,
    result: Result,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    counts: tuple[int, int, int],
) -> dict[str, Any]:
    """The run ended ``partial`` (exit 1, the README's code for it) with its counts and
    errors recorded and projected, no traceback, nothing refused, nothing left open."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    summary = json.loads(result.stdout)
    run_id = summary["run_id"]
    fetched, created, errors = counts
    assert (summary["status"], summary["records_fetched"], summary["records_created"]) == (
        "partial",
        fetched,
        created,
    )
    assert summary["error_count"] == errors
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not [c for c in RunContext._open if c.result and c.result.run_id == run_id]
    assert Spool(tmp_path / "spool").status().rejected == 0
    outcome = finished(ledger, run_id)
    assert outcome["status"] == "partial"
    assert totals(ledger, run_id)["records_fetched"] == fetched
    Projector(ledger).run_once()
    row = table_rows(ledger)[run_id]
    assert (row["status"], row["recordsFetched"], row["recordsCreated"]) == (
        "partial",
        fetched,
        created,
    )
    assert row["completedAt"] is not None
    return outcome


def messages(outcome: dict[str, Any]) -> list[str]:
    return [error["message"] for error in outcome["error_details"]["errors"]]


def test_a_lone_surrogate_in_a_json_lines_field_name_ends_the_run_partial(
    ledger: Ledger, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = write(tmp_path / "items.jsonl", '{"id":"1"}\n{"\\ud800x":2}\n{"id":"3"}\n')
    result = run_cli(["csv", "--source-id", "5", "--path", str(data)], db_url, tmp_path)
    outcome = assert_closed_partial(ledger, result, caplog, tmp_path, (3, 2, 1))
    # The field name as its escape: readable, storable, and the same on both databases.
    assert messages(outcome) == [
        "line 2: missing key 'id' (the record has \\ud800x; --key names the field that "
        "identifies a record)"
    ]


def test_a_lone_surrogate_in_an_http_json_field_name_ends_the_run_partial(
    ledger: Ledger, db_url: str, tmp_path: Path, api: JsonServer, caplog: pytest.LogCaptureFixture
) -> None:
    args = ["http-json", "--source-id", "3", "--url", f"{api.base}/field-name"]
    result = run_cli([*args, "--records-path", "items", "--single-page"], db_url, tmp_path)
    outcome = assert_closed_partial(ledger, result, caplog, tmp_path, (2, 1, 1))
    assert messages(outcome) == [
        "page 1 record 1: missing key 'id' (the record has \\ud800; --key names the field "
        "that identifies a record)"
    ]


def test_a_csv_file_name_that_is_not_utf8_ends_the_run_partial(
    ledger: Ledger, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The file name's byte 0xFE is the surrogate U+DCFE in Python, and the path is in every
    # error's details.
    data = tmp_path / os.fsdecode(b"\xfe.csv")
    data.write_bytes(b"id,v\n1\n2,3\n")
    result = run_cli(["csv", "--source-id", "5", "--path", str(data)], db_url, tmp_path)
    outcome = assert_closed_partial(ledger, result, caplog, tmp_path, (2, 1, 1))
    [error] = outcome["error_details"]["errors"]
    assert error["message"] == "line 2: expected 2 fields, got 1"
    assert error["details"]["path"] == storable(str(data))
    assert error["details"]["path"].endswith("/\\udcfe.csv")


def test_a_run_that_fails_naming_a_file_that_is_not_utf8_ends_failed(
    ledger: Ledger, spool: Spool, tmp_path: Path
) -> None:
    # The exception's message and traceback name the path: the RunFinished failed was refused.
    data = tmp_path / os.fsdecode(b"\xfd.csv")
    data.write_bytes(b"x,v\n1,2\n")
    connector = CsvConnector(5, data)
    result, failure = connector.record(connector.context(ledger, spool=spool))
    assert failure is not None
    assert result.status == "failed"
    outcome = finished(ledger, result.run_id)
    assert outcome["status"] == "failed"
    assert outcome["error_message"] == f"ValueError: {storable(str(data))}: no 'id' column in " + (
        "the header (x, v); --key names the column that identifies a record"
    )
    assert "\\udcfd.csv" in outcome["error_details"]["traceback"]


def test_a_value_the_database_cannot_store_is_an_error_of_its_record(
    ledger: Ledger, db_url: str, tmp_path: Path, api: JsonServer, caplog: pytest.LogCaptureFixture
) -> None:
    # One such value failed the whole http-json run: `failed`, nothing counted,
    # "UnicodeEncodeError".
    for source_id, route, expected in [
        ("9", "/value", "page 1 record 0: not storable: U+DFFF (a surrogate) in its fields"),
        ("10", "/key", "page 1 record 0: not storable: U+D800 (a surrogate) in its key"),
    ]:
        args = ["http-json", "--source-id", source_id, "--url", f"{api.base}{route}"]
        result = run_cli([*args, "--records-path", "items", "--single-page"], db_url, tmp_path)
        outcome = assert_closed_partial(ledger, result, caplog, tmp_path, (2, 1, 1))
        [message] = messages(outcome)
        assert message.startswith(expected), message


def test_json_lines_records_the_database_cannot_store_are_errors_of_their_line(
    ledger: Ledger, spool: Spool, tmp_path: Path
) -> None:
    data = write(
        tmp_path / "odd.jsonl",
        '{"id":"1","v":"\\udfff"}\n{"id":"\\ud800"}\n{"id":"3","v":NaN}\n{"id":"4"}\n',
    )
    result = CsvConnector(1, data).run(ledger, spool=spool)
    assert (result.status, result.totals["records_fetched"], result.totals["records_created"]) == (
        "partial",
        4,
        1,
    )
    found = messages(finished(ledger, result.run_id))
    assert found[0].startswith("line 1: not storable: U+DFFF (a surrogate) in its fields")
    assert '\\udfff"' in found[0]  # where: the value, as its escape
    assert found[1].startswith("line 2: not storable: U+D800 (a surrogate) in its key")
    assert found[2] == "line 3: not storable as JSON (Out of range float values are not JSON " + (
        "compliant)"
    )


def test_the_sdk_stores_a_connectors_text_with_surrogates_as_escapes(
    ledger: Ledger, spool: Spool
) -> None:
    with RunContext(ledger, 1, "odd", metadata={"file": "\udcfe.csv"}, spool=spool) as run:
        run.error("bad \ud800 field", {"\udcff": ["\ud800"], "ok": "é"})
    assert run.result is not None
    assert run.result.status == "partial"
    events = run_events(ledger, run.run_id)
    assert events[0].payload_data["metadata"]["file"] == "\\udcfe.csv"
    outcome = events[-1].payload_data
    assert outcome["error_message"] == "1 error(s); first: bad \\ud800 field"
    assert outcome["error_details"]["errors"] == [
        {"message": "bad \\ud800 field", "details": {"\\udcff": ["\\ud800"], "ok": "é"}}
    ]


def test_storable_writes_each_surrogate_as_its_escape() -> None:
    assert storable("a\ud800b\udcfe") == "a\\ud800b\\udcfe"
    assert storable("café \U0001f600 \\ud800") == "café \U0001f600 \\ud800"  # kept as it is


def test_a_spool_that_cannot_keep_an_event_says_so_with_a_spool_error(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    # sqlite3 raised UnicodeEncodeError, which the SDK's `except SpoolError` did not catch: it
    # escaped finish() and the exit hook as a traceback, and the run stayed open.
    event = RunFinished(run_id=1, status="partial", error_message="\ud800")
    with pytest.raises(SpoolError, match="cannot be kept"):
        spool.set_aside([event], "refused")
    with pytest.raises(SpoolError, match="cannot be kept"):
        spool.put([event])
    status = spool.status()
    assert (status.pending, status.rejected) == (0, 0)
    # ...and the log that keeps such events instead shows them as JSON any handler can write.
    log_lost(1, [event], SpoolError("cannot be kept"))
    [line] = [r.getMessage() for r in caplog.records if "refused event of run 1" in r.getMessage()]
    body = line.split(": ", 1)[1]
    assert storable(body) == body  # no surrogate left in the line
    assert json.loads(body)["error_message"] == "\ud800"
