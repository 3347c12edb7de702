"""``ledger events`` on both databases: its JSON Lines export appends again as is (every event
a duplicate), and its filters (a run, after a position, a limit) and table."""

from __future__ import annotations

import json

from sqlalchemy import text

from ledger import Ledger, RunFinished
from tests.service.support import SAMPLE, run
from tests.support import drop_triggers


def test_events_jsonl_can_be_appended_again_as_is(ledger: Ledger, db_url: str) -> None:
    run("append", str(SAMPLE), "--db", db_url)
    exported = run("events", "--format", "jsonl", "--db", db_url).stdout
    assert len(exported.splitlines()) == 7
    result = run("append", "-", "--db", db_url, input=exported)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["duplicates"] == 7
    assert ledger.head().last_position == 7


def test_events_filters_and_table(ledger: Ledger, db_url: str) -> None:
    run("append", str(SAMPLE), "--db", db_url)
    one_run = run("events", "--run", "2", "--format", "jsonl", "--db", db_url).stdout
    assert [json.loads(line)["type"] for line in one_run.splitlines()] == [
        "RunStarted",
        "RunProgressed",
        "RunTimedOut",
    ]
    page = run("events", "--after", "2", "--limit", "2", "--format", "jsonl", "--db", db_url)
    assert [json.loads(line)["run_id"] for line in page.stdout.splitlines()] == [1, 1]
    table = run("events", "--db", db_url).stdout
    assert "RunTimedOut" in table
    assert "7 event(s)" in table


def test_events_table_shows_payload_objects_as_json(ledger: Ledger, db_url: str) -> None:
    """Metadata and error details were shown as Python reprs (``{'a': 1}``, ``True``): now
    as compact JSON, with control and format characters still made visible."""
    run_id = ledger.start_run(
        1, "SOURCE_1", metadata={"a": 1, "ok": True, "none": None, "note": "x\x1by\u202ez"}
    )
    ledger.append([RunFinished(run_id=run_id, status="failed", error_details={"codes": [1, 2]})])
    table = run("events", "--wide", "--db", db_url).stdout
    assert 'metadata={"a":1,"none":null,"note":"x\\u001by\\u202ez","ok":true}' in table
    assert 'error_details={"codes":[1,2]}, status="failed"' in table
    assert "'a'" not in table
    assert "\u202e" not in table


def test_an_event_of_a_type_this_version_does_not_know_is_exported_raw(
    ledger: Ledger, db_url: str
) -> None:
    """A type a newer run-ledger wrote (here: a row edited to one): ``ledger events`` exports
    it as stored, as documented, instead of stopping there; an event that does not validate
    stops the export, exit 1 (a problem in the ledger, not the caller's mistake)."""
    run("append", str(SAMPLE), "--db", db_url)
    drop_triggers(ledger.engine)
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE ledger_events SET type = 'RunPaused' WHERE position = 2"))
    exported = run("events", "--format", "jsonl", "--db", db_url)
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(lines) == 7
    assert lines[1]["type"] == "RunPaused"
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE ledger_events SET payload = '[1]' WHERE position = 3"))
    stopped = run("events", "--format", "jsonl", "--db", db_url)
    assert stopped.exit_code == 1, stopped.output
    assert "position 3" in stopped.output or "not a JSON object" in stopped.output
