"""What ``status --format json``, ``verify --chain-only`` and the Markdown report say
(issue 15, from issue 14): the database in the JSON as in the table, no count of what was not
checked, one line each for "Generated:" and "Database:" in rendered Markdown. One vocabulary
(issue 13): a time is ``isoformat_utc`` in every JSON result, and a skip is one shape and one
line of text in ``status`` and ``verify`` alike."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result
from freezegun import freeze_time
from markdown_it import MarkdownIt
from sqlalchemy import text

from ledger import Ledger
from ledger.clock import isoformat_utc
from ledger.urls import mask_url
from projections.schema import PROJECTION_NAME
from service.cli import cli
from tests import support
from tests.service.support import SKIPPED_AT, stop_and_skip_by_hand
from tests.support import not_broken

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_events.jsonl"


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def test_status_json_names_the_database_the_table_shows(db_url: str) -> None:
    table = run("status", "--wide", "--db", db_url)
    assert f"database:   {mask_url(db_url)}" in table.stdout
    shown = json.loads(run("status", "--format", "json", "--db", db_url).stdout)
    assert shown["database"] == mask_url(db_url)


def test_status_and_verify_write_a_skip_in_one_shape_and_one_time_format(
    ledger: Ledger, db_url: str
) -> None:
    """`status --format json` wrote the projection error's time and each skip's time as
    str(datetime) ("2026-12-04 23:40:00.123456+00:00") where `verify --format json` wrote the
    same skip row as isoformat_utc; the text said "at 2026-12-04 23:40:00 UTC" in status and
    "at 2026-12-04T23:40:00.123456Z" in verify."""
    with freeze_time("2026-12-04 23:00:00"):
        run_id = ledger.start_run(1, "SOURCE_1")
    position = ledger.head().last_position
    stop_and_skip_by_hand(ledger, position, "RunStarted")
    with freeze_time("2026-12-05 00:00:00"):
        status = json.loads(run("status", "--format", "json", "--db", db_url).stdout)
        verified = run("verify", "--format", "json", "--db", db_url)
        status_text = run("status", "--wide", "--db", db_url).stdout
        verify_text = run("verify", "--db", db_url).stdout
    (projection,) = status["projections"]
    assert projection["error"] == {
        "position": position,
        "type": "RunStarted",
        "message": "cannot apply",
        "at": "2026-12-04T23:30:00.654321Z",
    }
    (status_skip,) = projection["skips"]
    (verify_skip,) = json.loads(verified.stdout)["skips"]
    assert status_skip == {
        "position": position,
        "event_type": "RunStarted",
        "reason": "r",
        "actor": "operator:bob",
        "skipped_at": isoformat_utc(SKIPPED_AT),
    }
    assert verify_skip == {"name": PROJECTION_NAME, **status_skip, "run_id": run_id}
    shown = 'by operator:bob at 2026-12-04 23:40:00 UTC: "r"'
    assert f"skipped position {position} (RunStarted) {shown}" in status_text
    verify_skip_line = f"position {position} (RunStarted of run {run_id}) {shown}"
    assert not_broken(verify_skip_line) in not_broken(verify_text)


def test_status_shows_an_unreadable_spool_beside_the_ledger(db_url: str, tmp_path: Path) -> None:
    """A corrupted spool file failed the whole command ("Error: spool …: file is not a
    database", exit 1): on the day the spool needed looking at, the operator saw nothing of
    the ledger. It is shown beside the rest, and exit 0 as ever."""
    broken = tmp_path / "spool"
    broken.mkdir()
    (broken / "spool.db").write_bytes(b"not a spool: the disk lost it\n" * 200)
    table = run("status", "--wide", "--spool-dir", str(broken), "--db", db_url)
    assert table.exit_code == 0, table.output
    assert "head:       position 0" in table.stdout
    assert (
        f"spool:      UNREADABLE: spool {broken / 'spool.db'}: file is not a database"
        in table.stdout
    )
    shown = json.loads(
        run("status", "--format", "json", "--spool-dir", str(broken), "--db", db_url).stdout
    )
    assert shown["spool_error"] == f"spool {broken / 'spool.db'}: file is not a database"
    assert shown["head_position"] == 0


def test_status_says_when_no_spool_file_is_there_as_spool_status_does(
    db_url: str, tmp_path: Path
) -> None:
    """A typo in --spool-dir showed "0 event(s) waiting in TYPO/spool.db", an empty backlog
    where there is no spool at all; `ledger spool status` says so, and now status too."""
    typo = tmp_path / "spoool"
    table = run("status", "--wide", "--spool-dir", str(typo), "--db", db_url)
    assert table.exit_code == 0, table.output
    assert f"spool:      none at {typo / 'spool.db'} (nothing was ever spooled there)" in (
        table.stdout
    )
    shown = json.loads(
        run("status", "--format", "json", "--spool-dir", str(typo), "--db", db_url).stdout
    )
    assert (shown["spool_backlog"], shown["spool_path"], shown["spool_exists"]) == (
        0,
        str(typo / "spool.db"),
        False,
    )
    assert not typo.exists()  # and it made no folder


def test_verify_chain_only_does_not_count_runs_it_did_not_look_at(
    ledger: Ledger, db_url: str
) -> None:
    assert run("append", str(SAMPLE), "--db", db_url).exit_code == 0
    result = run("verify", "--chain-only", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "verified hash chain: 7 event(s), no problem" in result.stdout
    assert "run(s)" not in result.stdout
    verdict = json.loads(run("verify", "--chain-only", "--format", "json", "--db", db_url).stdout)
    assert (verdict["events"], verdict["runs"]) == (7, None)
    full = run("verify", "--db", db_url)
    assert "7 event(s), 2 run(s), no problem" in full.stdout


def test_the_markdown_report_renders_generated_and_database_on_two_lines(
    ledger: Ledger, db_url: str
) -> None:
    run("append", str(SAMPLE), "--db", db_url)
    markdown = run("report", "--format", "markdown", "--db", db_url).stdout
    html = MarkdownIt("commonmark").render(markdown)
    generated = next(line for line in html.splitlines() if "Generated:" in line)
    assert "Database:" not in generated, html  # not run together in one paragraph
    assert any(line.startswith("<li>Database:") for line in html.splitlines()), html


def test_the_markdown_report_keeps_mismatches_out_of_the_column_list(
    ledger: Ledger, db_url: str
) -> None:
    run("append", str(SAMPLE), "--db", db_url)
    markdown = run("report", "--format", "markdown", "--db", db_url).stdout
    html = MarkdownIt("commonmark").render(markdown)
    assert "<p>Mismatches: none</p>" in html, html  # its own paragraph, after the list
    assert not any("Mismatches" in line for line in html.splitlines() if "<li>" in line), html


def test_status_and_verify_warn_of_a_head_recorded_ahead_of_the_clock(
    ledger: Ledger, db_url: str
) -> None:
    """The audit's: after one append made while the clock was 4 years ahead, status showed
    `last append 2030-…` and verify exited 0, neither saying a word. Both now warn, naming
    the two times; verify's verdict stays clean (the chain is sound), as for triggers it could
    not check."""
    with freeze_time("2030-01-28 01:00:00"):
        ledger.start_run(1, "SOURCE_1")
    with freeze_time("2026-01-28 01:00:00"):
        status_table = run("status", "--wide", "--db", db_url)
        status_json = json.loads(run("status", "--format", "json", "--db", db_url).stdout)
        verify_text = run("verify", "--db", db_url)
        verify_json = run("verify", "--format", "json", "--db", db_url)
    both = ("2030-01-28T01:00:00.000000Z", "2026-01-28T01:00:00.000000Z")
    warning = status_json["clock_warning"]
    assert warning == json.loads(verify_json.stdout)["clock_warning"]
    assert all(time in warning for time in both), warning
    assert "last append 2030-01-28 01:00:00 UTC" in status_table.stdout
    assert (
        "  WARNING: ahead of the ledger's clock (2026-01-28 01:00:00 UTC) by 1461d"
        in status_table.stdout
    )
    assert verify_text.exit_code == 0
    assert verify_json.exit_code == 0
    assert "clock: WARNING: the last append's recorded_at" in verify_text.stdout
    assert json.loads(verify_json.stdout)["ok"] is True
    with freeze_time("2030-01-28 01:03:00"):  # the clock has caught up: nothing to say
        assert (
            json.loads(run("status", "--format", "json", "--db", db_url).stdout)["clock_warning"]
            is None
        )
        assert "WARNING" not in run("verify", "--db", db_url).stdout


def test_status_warns_of_a_schema_every_writer_refuses(ledger: Ledger, db_url: str) -> None:
    """run-ledger upgraded, `ledger migrate` not run (or a newer one's database). Before: the
    status looked healthy, exit 0, while append, run, serve and the projector refused it."""
    current = run("status", "--format", "json", "--db", db_url)
    assert json.loads(current.stdout)["schema_warning"] is None
    assert "schema:" not in run("status", "--db", db_url).stdout
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE ledger_alembic_version SET version_num = '0004_schedule_claims'"))
    try:
        table = run("status", "--db", db_url)
        data = run("status", "--format", "json", "--db", db_url)
        refused = run("append", "--db", db_url, input="")
    finally:
        with ledger.engine.begin() as conn:
            conn.execute(
                text("UPDATE ledger_alembic_version SET version_num = :head"),
                {"head": support.head_revision()},
            )
    assert table.exit_code == 0, table.output
    assert "schema:     WARNING: database schema is at 0004_schedule_claims" in table.stdout
    assert "`ledger migrate`" in table.stdout  # the remedy, wrapped into view
    warning = json.loads(data.stdout)["schema_warning"]
    assert warning.startswith("database schema is at 0004_schedule_claims, this run-ledger ")
    assert warning in " ".join(refused.stderr.split())  # what the writers say
