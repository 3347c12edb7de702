"""``ledger events`` on both databases: its JSON Lines export appends again as is (every event
a duplicate), and its filters (a run, after a position, a limit) and table."""

from __future__ import annotations

import json

from ledger import Ledger
from tests.service.support import SAMPLE, run


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
