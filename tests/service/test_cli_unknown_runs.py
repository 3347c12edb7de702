"""One rule for a run id that names no run (issue 12, item 10): every command that takes one
exits 2, the caller's mistake, with the same message; on both databases."""

from __future__ import annotations

import pytest
from click.testing import CliRunner, Result

from forensics.audit import audit_run
from ledger import Ledger, RunFinished, UnknownRunError
from projections import Projector, run_as_of
from projections.queries import get_run
from service.cli import cli

UNKNOWN = "999"
COMMANDS = [
    ("runs", "show", UNKNOWN),
    ("runs", "show", UNKNOWN, "--format", "json"),
    ("runs", "show", UNKNOWN, "--at-position", "1"),
    ("runs", "show", UNKNOWN, "--as-of", "2999-01-01T00:00:00Z"),
    ("runs", "fail", UNKNOWN, "--reason", "gone"),
    ("audit", UNKNOWN),
    ("audit", UNKNOWN, "--format", "json"),
    ("events", "--run", UNKNOWN),
    ("events", "--run", UNKNOWN, "--format", "jsonl"),
]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_taking_a_run_id_exits_2_for_a_run_that_does_not_exist(
    ledger: Ledger, db_url: str, command: tuple[str, ...]
) -> None:
    ledger.start_run(1, "SOURCE_1")  # a ledger with a run, just not this one
    result = run(*command, "--db", db_url)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"Error: run {UNKNOWN} does not exist"
    assert result.stdout == ""


def test_the_library_raises_one_error_for_an_unknown_run(ledger: Ledger) -> None:
    ledger.start_run(1, "SOURCE_1")
    for read in (
        lambda: get_run(ledger, 999),
        lambda: run_as_of(ledger, 999, 1),
        lambda: audit_run(ledger, 999),
    ):
        with pytest.raises(UnknownRunError, match="run 999 does not exist") as caught:
            read()
        assert caught.value.run_id == 999


def test_a_known_run_not_projected_yet_is_a_problem_not_a_caller_mistake(
    ledger: Ledger, db_url: str
) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    lagging = run("runs", "show", str(run_id), "--db", db_url)
    assert lagging.exit_code == 1, lagging.output
    assert "not yet in ingestion_runs" in lagging.stderr
    Projector(ledger).run_once()
    assert run("runs", "show", str(run_id), "--db", db_url).exit_code == 0
    assert run("events", "--run", str(run_id), "--db", db_url).exit_code == 0
    assert run("audit", str(run_id), "--db", db_url).exit_code == 0


def test_a_run_that_started_after_the_moment_asked_exits_2(ledger: Ledger, db_url: str) -> None:
    first = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunFinished(run_id=first, status="success")])
    later = ledger.start_run(1, "SOURCE_1")
    result = run("runs", "show", str(later), "--at-position", "2", "--db", db_url)
    assert result.exit_code == 2, result.output
    assert f"run {later} did not exist yet as of position 2" in result.stderr
    shown = run("runs", "show", str(later), "--at-position", "3", "--db", db_url)
    assert shown.exit_code == 0, shown.output
