"""Usage mistakes refused before anything runs (exit 2): ids out of range, and ``ledger run
http-json`` with two paging rules or a URL that is not one, before a run starts."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger import Ledger
from service.cli import cli
from tests.service.support import LOOSE_INTEGERS, REPO, run


def test_out_of_range_ids_are_usage_errors(db_url: str) -> None:
    for args in (
        ["events", "--run", "99999999999999999999"],
        ["events", "--after", "-1"],
        ["runs", "show", "99999999999999999999"],
    ):
        result = run(*args, "--db", db_url)
        assert result.exit_code == 2, (args, result.output)


def test_out_of_range_counts_and_positions_are_usage_errors(db_url: str, ledger: Ledger) -> None:
    # They reached the SQL: a traceback on SQLite (OverflowError), 1064 and exit 1 on MariaDB.
    ledger.start_run(1, "SOURCE_1")
    huge = str(2**64)
    for args in (
        ["runs", "list", "--limit", huge],
        ["rebuild", "--batch-size", huge],
        ["project", "--batch-size", huge],
        ["project", "--skip-position", huge, "--reason", "poison"],
        ["events", "--limit", huge],
        ["runs", "list", "--at-position", huge],
    ):
        result = run(*args, "--db", db_url)
        assert result.exit_code == 2, (args, result.output)
        assert "is not in the range" in result.output, (args, result.output)


def test_a_source_id_beyond_the_column_is_a_usage_error_before_a_run(
    db_url: str, ledger: Ledger
) -> None:
    # It reached the SDK's RunStarted: pydantic's traceback, exit 1, from `ledger run csv`.
    for connector in (["csv"], ["http-json", "--url", "http://127.0.0.1:9/"]):
        result = run("run", *connector, "--source-id", str(2**31), "--db", db_url)
        assert result.exit_code == 2, (connector, result.output)
        assert "'--source-id': 2147483648 is not in the range 0<=x<=2147483647" in result.output
        assert "Traceback" not in result.output
    assert ledger.head().last_position == 0


def test_http_json_usage_is_checked_before_a_run_starts(db_url: str, ledger: Ledger) -> None:
    runner = CliRunner()
    both = runner.invoke(
        cli,
        [
            "run",
            "http-json",
            "--url",
            "http://x/",
            "--page-param",
            "p",
            "--next-path",
            "n",
            "--db",
            db_url,
        ],
    )
    assert both.exit_code == 2
    bad = runner.invoke(cli, ["run", "http-json", "--url", "not-a-url", "--db", db_url])
    assert bad.exit_code == 2
    assert ledger.head().last_position == 0


def test_db_before_the_command_says_where_it_goes() -> None:
    for args in (["--db", "sqlite:///x.db", "runs", "list"], ["--db=sqlite:///x.db", "status"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2
        assert "--db belongs to each command, after its name (ledger runs list --db URL)" in (
            result.output
        )
    other = CliRunner().invoke(cli, ["--dbx", "status"])
    assert other.exit_code == 2
    assert "No such option '--dbx'" in other.output


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["runs", "--db", "sqlite:///x.db", "list"],
            "--db goes after the command's name: ledger runs list --db …",
        ),
        (
            ["run", "--source-id", "3", "csv"],
            "--source-id goes after the command's name: ledger run csv --source-id …",
        ),
        (
            ["spool", "--spool-dir", "x", "status"],
            "--spool-dir goes after the command's name: ledger spool status --spool-dir …",
        ),
        (
            ["--config", "ledger.toml", "serve"],
            "--config goes after the command's name: ledger serve --config …",
        ),
        (["--format=json", "status"], "--format goes after the command's name: ledger status"),
        (  # a value that is a command's name: the command that takes the option is named
            ["runs", "--status", "show", "list"],
            "--status goes after the command's name: ledger runs list --status …",
        ),
    ],
)
def test_an_option_before_its_command_says_where_it_goes(args: list[str], said: str) -> None:
    """`ledger runs --db URL list`, `ledger run --source-id 3 csv`, `ledger --config FILE
    serve` said only "No such option", as if the command took no such option; `--db` before
    the command alone was explained. Each option a command under the group takes is named
    with that command, nothing run."""
    result = CliRunner().invoke(cli, args, prog_name="ledger")
    assert result.exit_code == 2, result.output
    assert said in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("group", [[], ["run"], ["runs"], ["config"], ["spool"]])
def test_a_group_given_no_command_shows_its_help_in_lines(group: list[str]) -> None:
    """`ledger run` (and `runs`, `config`, `spool`) printed its help as one line, each line
    break shown as the two characters \\n: the escaping meant for a quoted argument applied to
    click's own help text."""
    result = CliRunner().invoke(cli, group, prog_name="ledger")
    assert result.exit_code == 2, result.output
    assert "\\n" not in result.output, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"Usage: {' '.join(['ledger', *group])} [OPTIONS] COMMAND"), lines
    assert "Commands:" in lines


def test_an_option_no_command_takes_is_still_no_such_option() -> None:
    result = CliRunner().invoke(cli, ["runs", "--nope", "list"], prog_name="ledger")
    assert result.exit_code == 2
    assert "No such option '--nope'" in result.output
    assert "goes after" not in result.output


def test_a_word_where_a_number_goes_is_called_a_number_not_a_range() -> None:
    """`ledger runs show abc` said "'abc' is not a valid integer range" (click's name of its
    range type): the reader wrote no range. Every numeric option and argument says what it
    wants, and its help shows INTEGER or NUMBER with the range beside it."""
    for args, said in (
        (["runs", "show", "abc"], "'abc' is not a valid integer"),
        (["audit", "1.5"], "'1.5' is not a valid integer"),
        (["events", "--after", "x"], "'x' is not a valid integer"),
        (["run", "csv", "--heartbeat-interval", "soon"], "'soon' is not a valid number"),
        (["project", "--interval", "fast"], "'fast' is not a valid number"),
    ):
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert said in result.stderr, (args, result.stderr)
        assert "range" not in result.stderr.splitlines()[-1], (args, result.stderr)
    for args in (["events"], ["run", "csv"], ["project"], ["serve"], ["report"]):
        shown = run(*args, "--help").output
        assert "RANGE" not in shown, (args, shown)


def test_a_number_on_the_command_line_is_read_one_way_only(db_url: str, ledger: Ledger) -> None:
    """``ledger runs fail 1_0`` failed run 10, and ``+1``, `` 1`` and the Arabic-Indic ``١``
    were run 1 (Python's ``int()`` reads them so), where the API refuses each as not ASCII
    digits; a duration ``١٢m`` was 12 minutes. A number is written one way on the
    command line too: each is a usage error naming the option, and nothing is written."""
    for _ in range(10):
        ledger.start_run(1, "SOURCE_1")
    head = ledger.head()
    integers = (
        ["runs", "show"],
        ["runs", "fail", "--reason", "typo", "--actor", "alice"],
        ["audit"],
        ["events", "--run"],
        ["events", "--limit"],
        ["runs", "list", "--limit"],
        ["project", "--batch-size"],
        ["report", "--latest"],
    )
    for command in integers:
        for loose in LOOSE_INTEGERS:
            result = run(*command, loose, "--db", db_url)
            assert result.exit_code == 2, (command, loose, result.output)
            assert "Invalid value" in result.stderr, (command, loose, result.stderr)
    numbers = (["run", "csv", "--progress-interval"], ["run", "csv", "--heartbeat-interval"])
    for command in numbers:
        for loose in ("1_0", "\u0661", " 1", "1 "):
            result = run(*command, loose, "--db", db_url)
            assert result.exit_code == 2, (command, loose, result.output)
            assert "not a number of ASCII digits" in result.stderr, (command, loose, result.stderr)
    for duration in ("\u0661\u0662m", "\u0661h", "1\u0660m"):
        result = run("stuck", "--older-than", duration, "--db", db_url)
        assert result.exit_code == 2, (duration, result.output)
        assert "is not a duration" in result.stderr, (duration, result.stderr)
    assert ledger.head() == head  # no run failed, no run started, nothing appended
    assert run("runs", "show", "10", "--db", db_url).exit_code == 1  # open, not projected yet


def test_ledger_api_refusing_its_address_says_only_that(db_url: str) -> None:
    """A bad or taken --listen printed "warning: no [api] tokens configured: every request but
    /healthz is refused" first, about an API that never started; the warning is for an API
    that serves."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        for listen, said in (
            ("127.0.0.1:99999", "write HOST:PORT"),
            (f"127.0.0.1:{port}", f"cannot serve the API on 127.0.0.1:{port}"),
        ):
            result = run("api", "--listen", listen, "--db", db_url)
            assert result.exit_code == 2, result.output
            assert said in result.stderr
            assert "warning" not in result.stderr, result.stderr


LEDGER = (sys.executable, "-c", "from service.cli import main; main()")


def test_seconds_options_take_finite_numbers_up_to_a_day(db_url: str, ledger: Ledger) -> None:
    """``nan`` passed the range check and a wait of nan returns at once: ``run
    --heartbeat-interval nan`` appended heartbeats as fast as the ledger took them. ``inf`` and
    ``1e10`` were an OverflowError from the wait (a traceback; in a connector run, a heartbeat
    thread that died and left the run to look stuck)."""
    head = ledger.head()
    commands = [
        ["project", "--follow", "--interval"],
        ["run", "csv", "--heartbeat-interval"],
        ["run", "csv", "--progress-interval"],
        ["run", "http-json", "--url", "http://127.0.0.1:9/", "--timeout"],
        ["run", "http-json", "--url", "http://127.0.0.1:9/", "--backoff"],
    ]
    for command in commands:
        for value in ("inf", "-inf", "1e10", "86401"):
            result = run(*command, value, "--db", db_url)
            assert result.exit_code == 2, (command, value, result.output)
            assert "Invalid value for" in result.output, (command, value, result.output)
    nan = run("run", "csv", "--heartbeat-interval", "nan", "--db", db_url)
    assert nan.exit_code == 2, nan.output
    assert "'nan' is not a finite number" in nan.output
    assert ledger.head() == head  # no run was started, no heartbeat appended
    # In a process of its own: before the fix, it polled the database without a pause forever.
    follow = subprocess.run(
        [*LEDGER, "project", "--follow", "--interval", "nan", "--db", db_url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert follow.returncode == 2, follow.stderr
    assert "'nan' is not a finite number" in follow.stderr


def test_a_duration_of_thousands_of_digits_is_too_long_not_a_traceback(
    db_url: str, tmp_path: Path
) -> None:
    """``ledger stuck --older-than 999…9s`` (5,000 digits) was a ValueError traceback, exit 1:
    ``int()`` refuses more than 4,300 digits; a config's ``stale_after`` said to call
    ``sys.set_int_max_str_digits()``. Such a duration is longer than the longest one taken, in
    one line that quotes the value cut short; leading zeros are no length."""
    huge = "9" * 5000 + "s"
    for command in (
        ["stuck", "--older-than"],
        ["sweep", "--max-runtime"],
        ["report", "--stuck-after"],
        ["run", "csv", "--max-run-time"],
    ):
        result = run(*command, huge, "--db", db_url)
        assert result.exit_code == 2, (command, result.output[-300:])
        assert "is longer than 3650 days" in result.stderr, (command, result.stderr[-300:])
        assert len(result.stderr) < 1000, command
    config = tmp_path / "ledger.toml"
    config.write_text(f'database_url = "{db_url}"\n[thresholds]\nstale_after = "{huge}"\n')
    checked = run("config", "check", str(config))
    assert checked.exit_code == 2, checked.output[-300:]
    assert "thresholds.stale_after:" in checked.stderr
    assert "is longer than 3650 days" in checked.stderr
    assert "set_int_max_str_digits" not in checked.stderr
    zeros = run("stuck", "--older-than", "0" * 5000 + "90s", "--db", db_url)
    assert zeros.exit_code == 0, zeros.output[-300:]


def test_a_port_or_toml_number_of_thousands_of_digits_is_refused_not_a_traceback(
    db_url: str, ledger: Ledger, tmp_path: Path
) -> None:
    """A config holding a number of 5,000 digits (tomllib's int() raises a plain ValueError,
    not a TOMLDecodeError) and ``run http-json --url http://host:99…9/`` were ValueError
    tracebacks, exit 1. Each is one line naming where, exit 2, nothing appended."""
    huge = "9" * 5000
    config = tmp_path / "ledger.toml"
    config.write_text(f'database_url = "{db_url}"\n\n[serve]\nmetrics_port = {huge}\n')
    for command in (["config", "check"], ["stuck", "--config"], ["serve", "--config"]):
        result = run(*command, str(config))
        assert result.exit_code == 2, (command, result.output[-300:])
        assert "not valid TOML (a number of more than 4,300 digits at line 4)" in result.stderr
        assert len(result.stderr) < 1000, command
    head = ledger.head()
    url = f"http://127.0.0.1:{huge}/"
    result = run("run", "http-json", "--url", url, "--single-page", "--db", db_url)
    assert result.exit_code == 2, result.output[-300:]
    assert "is not a TCP port (1 to 65535)" in result.stderr
    assert result.stderr.count("\n") == 1
    assert ledger.head() == head


def test_an_empty_path_is_refused_not_read_as_the_current_folder(
    ledger: Ledger, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--config "$FILE"`` with FILE unset passed ``--config ""``, which click read as ``.``:
    "cannot read the config file (Is a directory)", or for ``report --output ""`` a report
    written nowhere the caller meant. Every path option and argument refuses ``""`` as ``--db``
    does, naming it, and nothing is written."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    head = ledger.head()
    for args in (
        ["stuck", "--config", "", "--db", db_url],
        ["sweep", "--config", "", "--db", db_url],
        ["report", "--config", "", "--db", db_url],
        ["report", "--output", "", "--db", db_url],
        ["anchor", "--output", "", "--db", db_url],
        ["verify", "--anchor", "", "--db", db_url],
        ["run", "csv", "--path", "", "--db", db_url],
        ["serve", "--config", ""],
        ["api", "--config", "", "--db", db_url],
    ):
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "is empty (an unset variable?): give a value, or leave the option out" in (
            result.stderr
        ), (args, result.stderr)
    result = run("config", "check", "")
    assert result.exit_code == 2, result.output
    assert "'PATH': is empty (an unset variable?): give a value\n" in result.stderr
    assert ledger.head() == head
    assert list(here.iterdir()) == []  # no report, anchor file, spool or ledger made


def test_a_spool_folder_no_file_can_be_at_is_a_usage_error(
    db_url: str, ledger: Ledger, tmp_path: Path
) -> None:
    """A spool folder whose name is longer than the file system takes was exit 3, as if the
    machine had refused it: it is the caller's path to fix, as for a SQLite ledger file."""
    too_long = tmp_path / ("s" * 300)
    for args in (
        ["run", "csv", "--source-id", "1", "--db", db_url],
        ["spool", "status"],
        ["spool", "flush", "--db", db_url],
    ):
        result = run(*args, "--spool-dir", str(too_long))
        assert result.exit_code == 2, (args, result.output)
        assert "no file can be at this path: choose another spool folder" in result.stderr
        assert "Traceback" not in result.output
    assert ledger.head().last_position == 0
