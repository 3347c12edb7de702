"""Tables fit a terminal (issue 15): at 80 columns every table command prints lines of at most 80
cells, dates and statuses whole on one line, long text cut with "…" (shown whole by `runs show`,
`audit` and `--wide`), on data made to break them: long names, long errors, CJK and emoji,
dates of another year, escapes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner, Result
from freezegun import freeze_time
from rich.cells import cell_len

from ledger import Ledger, RunFinished, RunProgressed
from ledger.text import is_invisible, quoted, visible
from service.cli import cli
from service.cli.tables import compact_count, compact_duration, compact_time, cut_cells
from tests.projection_support import append_raw
from tests.service.support import REPO

NOW = datetime(2026, 11, 28, 21, 37, 5, tzinfo=UTC)
LAST_YEAR = datetime(2025, 6, 1, 10, 4, 9, tzinfo=UTC)
THIS_YEAR = datetime(2026, 11, 28, 19, 2, 0, tzinfo=UTC)
# 100 characters (the longest name the registry takes), CJK and an emoji in it: 108 cells.
LONG_NAME = "東京都気象観測所-stations-🎉-" + "warehouse-nightly-" * 4 + "x" * 8
# Words no wider than the narrowest column of a full-text table, so wrapping keeps them whole.
ERROR_WORDS = ["Refused:", "東京駅", "🎉🎉", "\x1bred", "api.ex", "port", "443"] * 6
LONG_ERROR = " ".join(ERROR_WORDS)
LONG_TYPE = "RunPausedForTheMaintenanceWindow"
LONG_REASON = "倉庫の保守作業のため " * 8 + "skipped by hand"
STATUSES = ("success", "failed", "running")


@dataclass(frozen=True)
class Story:
    failed: int
    stuck: int
    success: int


@pytest.fixture
def story(ledger: Ledger, db_url: str) -> Iterator[Story]:
    """Three runs (one last year with a long CJK name and a long error, one left open since last
    year, one this year) and a poison event skipped with a long reason; the clock stays at NOW."""
    with freeze_time(LAST_YEAR):
        failed = ledger.start_run(1, LONG_NAME)
        ledger.append([RunFinished(run_id=failed, status="failed", error_message=LONG_ERROR)])
        stuck = ledger.start_run(2, LONG_NAME)
    with freeze_time(THIS_YEAR):
        success = ledger.start_run(3, "S")
        ledger.append([RunProgressed(run_id=success, records_fetched=12, records_created=12)])
        ledger.append([RunFinished(run_id=success, status="success")])
        poison = append_raw(ledger, success, LONG_TYPE, "{}")
    with freeze_time(NOW):
        assert cli_run(db_url, "project").exit_code == 1  # stopped at the poison event
        skipped = cli_run(
            db_url, "project", "--skip-position", str(poison), "--reason", LONG_REASON
        )
        assert skipped.exit_code == 0, skipped.output
        yield Story(failed=failed, stuck=stuck, success=success)


def cli_run(db_url: str, *args: str, columns: int = 80) -> Result:
    """The command as a terminal of ``columns`` columns runs it: rich takes its width from
    ``$COLUMNS`` (the CLI's Console is built per table, after CliRunner set the variable)."""
    return CliRunner().invoke(
        cli,
        [*args, "--db", db_url],
        env={"COLUMNS": str(columns)},
        catch_exceptions=False,
    )


def output_of(db_url: str, *args: str, columns: int = 80) -> str:
    result = cli_run(db_url, *args, columns=columns)
    assert result.exit_code in (0, 1), result.output  # stuck and status-like checks exit 1
    assert not any(is_invisible(char) for char in result.stdout.replace("\n", ""))
    return result.stdout


def assert_fits(text: str, columns: int) -> None:
    for line in text.splitlines():
        assert cell_len(line) <= columns, line


def line_with(text: str, needle: str) -> str:
    found = [line for line in text.splitlines() if needle in line]
    assert len(found) == 1, (needle, text)
    return found[0]


# Each table command, its arguments, and what must show whole in every one of its rows.
TABLE_COMMANDS = {
    "runs list": ("runs", "list"),
    "stuck": ("stuck",),
    "sweep": ("sweep", "--dry-run"),
    "events": ("events",),
}


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("command", sorted(TABLE_COMMANDS))
def test_a_table_fits_the_terminal_and_never_splits_a_date_or_status(
    story: Story, db_url: str, command: str, columns: int
) -> None:
    with freeze_time(NOW):
        text = output_of(db_url, *TABLE_COMMANDS[command], columns=columns)
    assert_fits(text, columns)
    assert "times in UTC" in text
    assert "2025-06-01 10:04" in text  # another year's date has its year, on one line
    if command in ("runs list", "events"):
        assert "11-28 19:02" in text  # this year's, compact
        assert "2026-11-28" not in text
    if command == "runs list":
        for status in STATUSES:
            assert status in line_with(text, f"  {status}  ")
    assert visible(LONG_NAME) not in text  # too long for the compact table: cut…
    assert "…" in text  # …and the cut says so


def test_a_tiny_terminal_gets_lines_wrapped_by_it_not_dates_cropped(
    story: Story, db_url: str
) -> None:
    with freeze_time(NOW):
        for columns in (0, 20):
            text = output_of(db_url, "runs", "list", columns=columns)
            assert "2025-06-01 10:04" in text
            assert "11-28 19:02" in text
            for status in STATUSES:
                assert status in text
            assert cell_len(line_with(output_of(db_url, "status", columns=columns), "head:")) == 20


def test_runs_list_cuts_long_text_with_an_ellipsis_and_wide_shows_it_whole(
    story: Story, db_url: str
) -> None:
    with freeze_time(NOW):
        compact = output_of(db_url, "runs", "list")
        wide = output_of(db_url, "runs", "list", "--wide")
    row = line_with(compact, "  failed  ")
    assert row.startswith(f"{story.failed}  ")
    assert row.rstrip().endswith("…")  # the error, last column, cut
    assert "東京都気象" in row  # the name cut after whole wide characters (rich pads the gap)
    assert "2025-06-01 10:04" in row
    assert "f/c/u/s" in compact
    for header in ("source", "completed", "duration", "fetched/created/updated/skipped"):
        assert header in wide
    wide_row = line_with(wide, "  failed  ")
    assert visible(LONG_NAME) in wide_row
    assert visible(LONG_ERROR) in wide_row
    assert "2025-06-01 10:04:09" in wide_row  # to the second
    assert "…" not in wide
    assert "12/12/0/0" in line_with(compact, "  success  ")


def test_every_table_command_has_wide_and_shows_the_whole_value(story: Story, db_url: str) -> None:
    with freeze_time(NOW):
        for args in TABLE_COMMANDS.values():
            wide = output_of(db_url, *args, "--wide")
            assert visible(LONG_NAME) in wide, args
            assert "…" not in wide, args
        events = output_of(db_url, "events", "--wide")
        assert f"error_message={quoted(LONG_ERROR)}" in events
        assert LONG_TYPE in events
        assert f"{LONG_TYPE[:12]}…" in output_of(db_url, "events")  # a writer's long type


def test_a_wide_table_is_not_padded_to_its_longest_value(ledger: Ledger, db_url: str) -> None:
    """``--wide`` makes a table as wide as its longest value, and rich padded every line to it
    (and centred the title in it): ``runs show --wide`` of a 60,000-character error printed
    1 MB, 17 lines of 60,000 cells. Each line now ends at its last character."""
    message = "disk full on /var/spool " * 2500  # 60,000 characters
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunFinished(run_id=run_id, status="failed", error_message=message)])
    assert cli_run(db_url, "project").exit_code == 0
    wide = output_of(db_url, "runs", "show", str(run_id), "--wide")
    assert message.rstrip() in wide
    assert len(wide) < len(message) + 5_000, len(wide)
    assert wide.splitlines()[0].startswith(f"run {run_id} in ingestion_runs")  # not centred
    assert all(line == line.rstrip() for line in wide.splitlines())
    listed = output_of(db_url, "runs", "list", "--wide")
    assert message.rstrip() in listed
    assert all(line == line.rstrip() for line in listed.splitlines())


def piped_output(db_url: str, *args: str, timeout: float = 120, **env: str) -> str:
    """The command's standard output as a pipe (``| less -R``) reads it, in ``env``."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("FORCE_COLOR", "NO_COLOR", "COLUMNS")
    }
    done = subprocess.run(
        [sys.executable, "-c", "from service.launch import main; main()", *args, "--db", db_url],
        capture_output=True,
        text=True,
        env={**environment, "TERM": "xterm-256color", **env},
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


STYLE_CODE = re.compile(r"\x1b\[[0-9;]*m")


def test_a_wide_table_keeps_the_style_codes_rich_writes_into_a_pipe(
    ledger: Ledger, db_url: str
) -> None:
    """``FORCE_COLOR=1 ledger runs list --wide | less -R``: the wide table went through
    click.echo, which strips style codes from a pipe, so it lost the colours the compact
    table keeps (review 31). Both keep them; neither has one under ``NO_COLOR``; a wide
    line's padding goes, before its closing codes too."""
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunFinished(run_id=run_id, status="failed", error_message="boom")])
    assert cli_run(db_url, "project").exit_code == 0
    for args in (("runs", "list"), ("runs", "show", str(run_id))):
        compact = piped_output(db_url, *args, FORCE_COLOR="1")
        wide = piped_output(db_url, *args, "--wide", FORCE_COLOR="1")
        assert STYLE_CODE.search(compact), compact
        assert STYLE_CODE.search(wide), wide
        assert STYLE_CODE.sub("", wide).count("boom") == 1
        for line in wide.splitlines():
            plain = STYLE_CODE.sub("", line)
            assert plain == plain.rstrip(), repr(line)
        for extra in ((), ("--wide",)):
            plain = piped_output(db_url, *args, *extra, NO_COLOR="1")
            assert "\x1b" not in plain, plain
            assert "boom" in plain


def test_a_wide_table_with_a_long_value_inside_it_prints_in_seconds(
    ledger: Ledger, db_url: str
) -> None:
    """``audit --wide`` puts a RunFinished's error in its ``what`` column, columns after it:
    every other row is padded inside to its 60,000 characters, and the expression that took
    each line's end padding off tried every space of that inner padding (review 31): minutes
    a line, 22 s for a 15,000-character error. Here it must finish in the time a pipe waits."""
    message = "disk full on /var/spool " * 2500  # 60,000 characters
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id, records_fetched=1) for _ in range(3)])
    ledger.append([RunFinished(run_id=run_id, status="failed", error_message=message)])
    assert cli_run(db_url, "project").exit_code == 0
    wide = piped_output(db_url, "audit", str(run_id), "--wide", timeout=60)
    assert message.rstrip() in wide
    assert all(line == line.rstrip() for line in wide.splitlines())
    heartbeat = next(line for line in wide.splitlines() if "RunProgressed" in line)
    assert len(heartbeat) > len(message)  # padded inside, to the error's width


def test_status_lines_fit_and_wide_shows_them_whole(story: Story, db_url: str) -> None:
    with freeze_time(NOW):
        compact = output_of(db_url, "status")
        wide = output_of(db_url, "status", "--wide")
    assert_fits(compact, 80)
    skip = line_with(compact, "skipped position")
    assert skip.endswith("…")
    assert cell_len(skip) <= 80
    assert visible(LONG_REASON) in line_with(wide, "skipped position")
    assert f"database:   {db_url.split('?')[0]}"[:40] in wide


def test_runs_show_and_audit_show_the_full_text_within_the_width(story: Story, db_url: str) -> None:
    with freeze_time(NOW):
        shown = output_of(db_url, "runs", "show", str(story.failed))
        audit = output_of(db_url, "audit", str(story.failed))
        audit_wide = output_of(db_url, "audit", str(story.failed), "--wide")
    for text in (shown, audit):
        assert_fits(text, 80)
        words = text.split()
        for word in ERROR_WORDS:  # every word of the error, none cut
            assert visible(word) in words, word
        assert "…" not in text
    assert visible(LONG_NAME).replace(" ", "") in "".join(shown.split())  # the name, wrapped
    assert "2025-06-01 10:04:09" in shown  # runs show: every value in full
    for status in ("running", "failed"):
        assert status in audit.split()
    assert "2025-06-01 10:04" in audit
    assert f"failed: {quoted(LONG_ERROR)}" in audit_wide
    assert "recorded" in audit_wide.splitlines()[1]  # the header: a wide-only column
    assert "recorded" not in audit.splitlines()[1]


def test_full_text_tables_keep_dates_and_headers_whole_on_a_narrow_terminal(
    story: Story, db_url: str
) -> None:
    """At 40 columns runs show wrapped its dates and audit's text header fell apart one word a
    line; the text column keeps a date's width and the terminal wraps the lines instead."""
    with freeze_time(NOW):
        shown = output_of(db_url, "runs", "show", str(story.failed), columns=40)
        audit = output_of(db_url, "audit", str(story.failed), columns=40)
    assert "2025-06-01 10:04:09" in shown
    assert "what, by whom, notes" in audit


def test_the_demo_audit_table_fits(db_url: str) -> None:
    result = cli_run(db_url, "demo")
    assert result.exit_code == 0, result.output
    table = result.stdout.split("Result: 6/6 conditions pass")[1].split("Explore further")[0]
    assert_fits(table, 80)
    assert "event(s), times in UTC" in table


def test_runs_list_with_counters_in_the_billions_fits_80_columns(
    ledger: Ledger, db_url: str
) -> None:
    """A run of a big source (counters near the INT maximum, a start last year, days long) made
    `runs list` 101 cells wide at 80 columns: the counters, whole, took 38 cells and the
    connector was cut to "co…". Compact counters (``2.1G``) keep it within the width; --wide and
    runs show give them exactly."""
    with freeze_time(LAST_YEAR):
        run = ledger.start_run(123, "stations-registry")
    with freeze_time(NOW):
        ledger.append(
            [
                RunProgressed(
                    run_id=run,
                    records_fetched=2_147_483_000,
                    records_created=2_147_483_000,
                    records_updated=1_234_567,
                    records_skipped=76_543,
                ),
                RunFinished(run_id=run, status="partial", error_message=LONG_ERROR),
            ]
        )
        assert cli_run(db_url, "project").exit_code == 0
        compact = output_of(db_url, "runs", "list")
        wide = output_of(db_url, "runs", "list", "--wide")
        shown = output_of(db_url, "runs", "show", str(run))
    assert_fits(compact, 80)
    row = line_with(compact, "  partial  ")
    assert "2.1G/2.1G/1.2M/76k" in row
    assert "2025-06-01 10:04" in row
    assert "stat" in row  # room left for the name (before, "co…" in a 101-cell line)
    assert "2147483000/2147483000/1234567/76543" in line_with(wide, "  partial  ")
    assert "2147483000" in shown


@pytest.mark.parametrize("command", [("stuck",), ("sweep", "--dry-run")], ids=" ".join)
def test_stuck_and_sweep_fit_80_columns_with_big_ids_and_old_dates(
    ledger: Ledger, db_url: str, command: tuple[str, ...]
) -> None:
    """Run 12345 started last year still heartbeating (past --max-runtime) and run 12346
    silent since last year printed 81-column lines at 80 columns, 83 to 89 with longer run
    ids: two dates with their year and the rule `max_runtime (> 6h)`, never cut. The compact
    table leaves the last activity to --wide (`silent` says as much) and says `runtime>6h`;
    --wide and JSON keep the full rule. Here with run and source ids at their widest."""
    with freeze_time(datetime(2025, 12, 1, 3, 0, tzinfo=UTC)):
        running = ledger.start_run(2_147_483_000, "stations-registry", run_id=1_234_567)
    with freeze_time(datetime(2025, 12, 20, 3, 0, tzinfo=UTC)):
        silent = ledger.start_run(1002, "weather-api", run_id=2_147_483_647)
    with freeze_time(NOW):
        ledger.append([RunProgressed(run_id=running, records_fetched=1)])  # a heartbeat now
        compact = output_of(db_url, *command, "--max-runtime", "6h")
        wide = output_of(db_url, *command, "--max-runtime", "6h", "--wide")
        as_json = output_of(db_url, *command, "--max-runtime", "6h", "--format", "json")
    assert_fits(compact, 80)
    running_row = line_with(compact, str(running))
    assert "2025-12-01 03:00" in running_row
    assert "stations-registry" in running_row  # room left for the name
    assert running_row.rstrip().endswith("runtime>6h")
    assert line_with(compact, str(silent)).rstrip().endswith("stale>1h")
    assert "last" not in compact
    assert line_with(wide, str(running)).rstrip().endswith("max_runtime (> 6h)")
    assert "last activity" in wide
    assert "2026-11-28 21:37:05" in line_with(wide, str(running))  # its heartbeat, now
    assert '"rule": "max_runtime"' in as_json


def test_compact_values_count_cells() -> None:
    assert cut_cells("東京駅", 4) == "東…"  # 3 cells: half a character is not shown
    assert cut_cells("東京駅", 6) == "東京駅"
    assert cut_cells("ab🎉cd", 4) == "ab…"
    assert cut_cells("abcdef", 4) == "abc…"
    assert compact_time(LAST_YEAR, NOW) == "2025-06-01 10:04"
    assert compact_time(THIS_YEAR, NOW) == "11-28 19:02"
    assert compact_duration(4 * 86400 + 22 * 3600 + 20 * 60 + 59) == "4d22h"
    assert compact_duration(59) == "59s"
    # Counters: exact below 10,000, else at most 4 cells, never more than the true value.
    assert [compact_count(n) for n in (0, 9_999, 10_000, 99_999, 123_456, 999_999)] == [
        "0",
        "9999",
        "10k",
        "99k",
        "123k",
        "999k",
    ]
    assert [compact_count(n) for n in (1_000_000, 1_299_999, 12_345_678, 999_999_999)] == [
        "1.0M",
        "1.2M",
        "12M",
        "999M",
    ]
    assert compact_count(2_147_483_647) == "2.1G"
    assert compact_count(-5) == "-5"  # not a counter the ledger stores, shown as it is
