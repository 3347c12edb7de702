"""``ledger stuck --limit N``: a table shows the 100 longest silent by default and says how
many more there are; JSON lists every one unless ``--limit`` is given; ``--limit 0`` is every
one. The exit code still says whether any run is stuck. On SQLite and on MariaDB."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner, Result
from freezegun import freeze_time

from ledger import Ledger
from service.cli import cli
from service.cli.runs import STUCK_TABLE_ROWS

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def stuck_runs_started(ledger: Ledger, count: int) -> list[int]:
    """``count`` runs, silent from 5 hours (the first) to a little less, all stuck at NOW."""
    runs = []
    for index in range(count):
        when = NOW - timedelta(hours=5) + index * timedelta(seconds=1)
        with freeze_time(when):
            runs.append(ledger.start_run(1, "SOURCE_1", occurred_at=when))
    return runs


def stuck_command(db_url: str, *options: str) -> Result:
    with freeze_time(NOW):
        return CliRunner().invoke(cli, ["stuck", *options, "--db", db_url, "--wide"])


def table_run_ids(output: str) -> list[int]:
    """The run ids in a table's first column."""
    firsts = [line.split()[0] for line in output.splitlines() if line.strip()]
    return [int(first) for first in firsts if first.isdigit()]


def test_a_table_shows_the_first_100_and_says_how_many_more(db_url: str, ledger: Ledger) -> None:
    runs = stuck_runs_started(ledger, STUCK_TABLE_ROWS + 3)
    shown = stuck_command(db_url)
    assert shown.exit_code == 1, shown.output
    assert f"stuck runs: {STUCK_TABLE_ROWS + 3} run(s)" in shown.output
    assert table_run_ids(shown.output) == runs[:STUCK_TABLE_ROWS]
    assert shown.output.rstrip().endswith("… and 3 more: --limit 0 shows every one")
    every = stuck_command(db_url, "--limit", "0")
    assert every.exit_code == 1
    assert table_run_ids(every.output) == runs
    assert "more" not in every.output


def test_a_limit_cuts_a_table_and_json_alike(db_url: str, ledger: Ledger) -> None:
    runs = stuck_runs_started(ledger, 5)
    table = stuck_command(db_url, "--limit", "2")
    assert table.exit_code == 1
    assert table_run_ids(table.output) == runs[:2]
    assert "stuck runs: 5 run(s)" in table.output
    assert "… and 3 more" in table.output
    cut = stuck_command(db_url, "--limit", "2", "--format", "json")
    assert cut.exit_code == 1
    assert [run["run_id"] for run in json.loads(cut.output)] == runs[:2]
    exact = stuck_command(db_url, "--limit", "5")
    assert "more" not in exact.output


def test_json_lists_every_stuck_run_by_default(db_url: str, ledger: Ledger) -> None:
    runs = stuck_runs_started(ledger, STUCK_TABLE_ROWS + 1)
    listed = stuck_command(db_url, "--format", "json")
    assert listed.exit_code == 1
    assert [run["run_id"] for run in json.loads(listed.output)] == runs


def test_no_stuck_run_exits_0_whatever_the_limit(db_url: str, ledger: Ledger) -> None:
    with freeze_time(NOW):
        ledger.start_run(1, "SOURCE_1")
    for options in ((), ("--limit", "1"), ("--limit", "0"), ("--format", "json", "--limit", "3")):
        result = stuck_command(db_url, *options)
        assert result.exit_code == 0, (options, result.output)
        assert "more" not in result.output


@pytest.mark.parametrize("limit", ["-1", "x", "1.5"])
def test_a_bad_limit_is_the_callers_mistake(db_url: str, limit: str) -> None:
    result = stuck_command(db_url, "--limit", limit)
    assert result.exit_code == 2, result.output
    assert "--limit" in result.output
    assert "Traceback" not in result.output
