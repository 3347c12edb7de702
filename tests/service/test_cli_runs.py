"""``ledger runs list`` and ``ledger runs show`` on both databases: the projected rows in the
legacy shape, their filters (status, connector, source), as of a time or a position, and a
connector filter that compares names exactly (case, a trailing space)."""

from __future__ import annotations

import json

import pytest

from ledger import Ledger
from tests.service.support import SAMPLE, run
from tests.support import names_as_before_the_rule


def test_project_then_runs_list_and_show(db_url: str) -> None:
    run("append", str(SAMPLE), "--db", db_url)
    result = run("project", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "applied 7 event(s); checkpoint at 7"
    listed = json.loads(run("runs", "list", "--format", "json", "--db", db_url).stdout)
    assert [row["id"] for row in listed] == [2, 1]
    assert list(listed[1]) == [
        "id",
        "sourceId",
        "connectorName",
        "startedAt",
        "completedAt",
        "duration",
        "status",
        "recordsFetched",
        "recordsCreated",
        "recordsUpdated",
        "recordsSkipped",
        "claimsCreated",
        "errorMessage",
        "errorDetails",
        "coverageCellsUpdated",
        "createdAt",
    ]
    assert listed[1]["startedAt"] == "2026-01-28T01:12:44Z"
    assert (listed[1]["status"], listed[1]["duration"], listed[1]["recordsFetched"]) == (
        "success",
        57,
        15,
    )
    failed = json.loads(
        run("runs", "list", "--status", "failed", "--format", "json", "--db", db_url).stdout
    )
    assert [row["id"] for row in failed] == [2]
    assert (
        json.loads(
            run(
                "runs",
                "list",
                "--connector",
                "SOURCE_1",
                "--source",
                "1",
                "--format",
                "json",
                "--db",
                db_url,
            ).stdout
        )[0]["id"]
        == 1
    )
    shown = json.loads(run("runs", "show", "2", "--format", "json", "--db", db_url).stdout)
    assert shown["errorDetails"]["detected_by"] == "sweeper"
    table = run("runs", "show", "2", "--db", db_url).stdout
    assert "running" in table
    assert "4d22h20m59s" in table
    missing = run("runs", "show", "99", "--db", db_url)
    assert missing.exit_code == 2  # an unknown run is the caller's mistake (issue 12)
    assert "run 99 does not exist" in missing.stderr


def test_runs_as_of_and_at_position(db_url: str) -> None:
    run("append", str(SAMPLE), "--db", db_url)
    before = json.loads(
        run("runs", "show", "2", "--at-position", "6", "--format", "json", "--db", db_url).stdout
    )
    assert (before["status"], before["completedAt"]) == ("running", None)
    listed = json.loads(
        run(
            "runs", "list", "--as-of", "2999-01-01T00:00:00", "--format", "json", "--db", db_url
        ).stdout
    )
    assert {row["status"] for row in listed} == {"success", "failed"}
    early = run(
        "runs", "list", "--as-of", "2000-01-01T00:00:00Z", "--format", "json", "--db", db_url
    )
    assert json.loads(early.stdout) == []
    both = run("runs", "list", "--as-of", "2026-01-01", "--at-position", "3", "--db", db_url)
    assert both.exit_code == 2
    bad = run("runs", "list", "--as-of", "yesterday", "--db", db_url)
    assert bad.exit_code == 2
    assert "ISO-8601" in bad.stderr
    far = run("runs", "list", "--as-of", "2026-01-01T00:00:00+24:00", "--db", db_url)
    assert far.exit_code == 2
    assert "(the UTC offset must be between -23:59 and +23:59)" in far.stderr
    assert "timedelta" not in far.stderr


def test_runs_list_connector_filter_is_exact_on_every_backend(ledger: Ledger, db_url: str) -> None:
    ledger.start_run(1, "stations")
    ledger.start_run(2, "STATIONS")
    assert run("project", "--db", db_url).exit_code == 0
    for extra in ([], ["--at-position", "2"]):
        result = run(
            "runs", "list", "--connector", "stations", "--format", "json", *extra, "--db", db_url
        )
        assert result.exit_code == 0, result.output
        assert [r["connectorName"] for r in json.loads(result.output)] == ["stations"]


def test_names_that_differ_by_case_or_a_trailing_space_are_different_names(
    ledger: Ledger, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MariaDB's collations take "SOURCE_1 " and "source_1" for "SOURCE_1" (PAD SPACE, even in
    utf8mb4_bin); every name comparison is exact on both databases."""
    names = ["SOURCE_1", "source_1"]
    for name in names:
        ledger.start_run(1, name)
    names_as_before_the_rule(monkeypatch)  # a trailing space, as history may hold it
    names.append("SOURCE_1 ")
    ledger.start_run(1, "SOURCE_1 ")
    assert run("project", "--db", db_url).exit_code == 0
    for name in names:
        for extra in ([], ["--at-position", "3"], ["--as-of", "2999-01-01T00:00:00Z"]):
            result = run(
                "runs", "list", "--connector", name, "--format", "json", *extra, "--db", db_url
            )
            assert result.exit_code == 0, result.output
            assert [r["connectorName"] for r in json.loads(result.stdout)] == [name], extra


def test_runs_show_gives_a_duration_in_seconds_and_readable_when_they_differ(db_url: str) -> None:
    run("append", str(SAMPLE), "--db", db_url)
    run("project", "--db", db_url)
    short = run("runs", "show", "1", "--db", db_url).stdout
    assert "duration              57s " in short  # not "57s (57s)"
    assert "57s (57s)" not in short
    long = run("runs", "show", "2", "--db", db_url).stdout
    assert "duration              426059s (4d22h20m59s)" in long


@pytest.mark.parametrize("as_of", [[], ["--at-position", "3"]])
def test_runs_list_cut_at_its_limit_says_there_are_more(
    ledger: Ledger, db_url: str, as_of: list[str]
) -> None:
    """With 60 runs, `runs list` titled its table "ingestion_runs: 50 run(s)": the default
    --limit cut it and nothing said so, so a reader counted 50 runs."""
    for source in (1, 2, 3):
        ledger.start_run(source, "SOURCE")
    assert run("project", "--db", db_url).exit_code == 0
    cut = run("runs", "list", "--limit", "2", *as_of, "--db", db_url)
    assert cut.exit_code == 0, cut.output
    assert cut.stdout.splitlines()[-1] == (
        "the newest 2 shown; more runs match: a higher --limit shows them"
    )
    assert [line.split()[0] for line in cut.stdout.splitlines()[3:-1]] == ["3", "2"]
    whole = run("runs", "list", "--limit", "3", *as_of, "--db", db_url)
    assert ": 3 run(s), times in UTC" in whole.stdout
    assert "more" not in whole.stdout
    listed = json.loads(
        run("runs", "list", "--limit", "2", "--format", "json", "--db", db_url).stdout
    )
    assert [row["id"] for row in listed] == [3, 2]  # JSON: the rows, as before
