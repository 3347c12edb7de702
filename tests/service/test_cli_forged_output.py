"""Output cannot be forged: a connector's error message, a name, a reason or an argument that
holds control and format characters, markup or padding is shown as text (escaped) in the
report, the tables, the operator's lines and usage errors, never obeyed by a terminal or
rendered as a section of the report; JSON keeps the exact value."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from freezegun import freeze_time

from ledger import Ledger, RunFinished, RunProgressed
from ledger.text import cells
from service.cli import OneLineFormatter, cli
from tests.projection_support import records_fetched_capped
from tests.service.support import run, shows_no_raw_control
from tests.support import names_as_before_the_rule

# A connector-supplied error message that, printed raw, draws a fake report section, clears the
# screen, opens an OSC 8 hyperlink, rings, overwrites its line, starts a C1 CSI, reverses text,
# and carries rich markup and Markdown that would become a link, HTML and a broken table.
FORGED = (
    "[bold red]PASS[/] boom\n\nF. Stop conditions\n  PASS  everything: fine\n"
    "Result: 5/5 conditions pass\n"
    "\x1b[2J\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\\x07\roverwritten\x9b31m"
    "\u202ereversed\u200b\u2066 | x | [a](http://evil.example) <b>`c`</b> :warning:"
)
# Printed raw, each of these reaches a terminal as a control or format character.
RAW = ("\x1b", "\x07", "\r", "\x9b", "\u202e", "\u200b", "\u2066")


def failed_run(ledger: Ledger, name: str, message: str) -> int:
    run_id = ledger.start_run(1, name)
    ledger.append([RunFinished(run_id=run_id, status="failed", error_message=message)])
    return run_id


def test_a_forged_error_message_cannot_draw_a_report_section(ledger: Ledger, db_url: str) -> None:
    failed_run(ledger, "SOURCE_1", FORGED)
    assert run("project", "--db", db_url).exit_code == 0
    text = run("report", "--db", db_url).stdout
    assert shows_no_raw_control(text)
    lines_ = text.splitlines()
    assert lines_.count("F. Stop conditions") == 1
    assert [line for line in lines_ if line.startswith("Result:")] == [
        "Result: 5/6 conditions pass — FAIL"
    ]
    assert "boom\\n\\nF. Stop conditions\\n  PASS" in text
    markdown = run("report", "--format", "markdown", "--db", db_url).stdout
    assert shows_no_raw_control(markdown)
    assert markdown.splitlines().count("## F. Stop conditions") == 1
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(rows) == 3  # header, rule, the one run
    for row in rows:  # nine cell borders: every | inside a cell is escaped
        assert len(re.findall(r"(?<!\\)(?:\\\\)*\|", row)) == 9, row
    assert "\\[a\\](http://evil.example)" in markdown
    assert "\\<b\\>" in markdown
    report_json = json.loads(run("report", "--format", "json", "--db", db_url).stdout)
    assert report_json["latest_runs"][0]["error"] == FORGED  # JSON keeps the exact value


@pytest.mark.parametrize("filler", [" ", "x", "\u3000", " \u00a0"], ids=repr)
def test_padding_cannot_draw_a_report_section_where_a_terminal_wraps(
    ledger: Ledger, db_url: str, filler: str
) -> None:
    """Filler (spaces, letters, ideographic spaces) that would push a fake section to where an
    80-column terminal wraps: the text report wraps its own lines at 80 cells with a hanging
    indent, so no value starts a line; every line at the left margin is the report's own."""
    fake = ["F. Stop conditions", "------------------", "  PASS  x", "Result: 5/5 conditions pass"]
    padding = filler * (80 // len(filler))
    failed_run(ledger, "SOURCE_1", "boom" + "".join(padding + line for line in fake))
    assert run("project", "--db", db_url).exit_code == 0
    text = run("report", "--db", db_url).stdout
    lines_ = text.splitlines()
    assert all(sum(cells(char) for char in line) <= 80 for line in lines_)
    assert [line for line in lines_ if line.startswith("Result:")] == [
        "Result: 5/6 conditions pass — FAIL"
    ]
    assert lines_.count("F. Stop conditions") == 1
    assert "boom" in text


def test_tables_show_data_as_text_not_markup_or_control_characters(
    ledger: Ledger, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    names_as_before_the_rule(monkeypatch)  # history may hold such names
    name = "S\x1b[2J\u202e[red]X[/]"
    message = "[bold red]PASS[/] \x1b]8;;http://evil\x1b\\x\x07\r\x9b\u202e"
    with freeze_time(datetime.now(UTC) - timedelta(hours=3)):
        stale = ledger.start_run(2, name, actor=name, metadata={"trigger": "\x1b[31m"})
    failed = failed_run(ledger, name, message)
    assert run("project", "--db", db_url).exit_code == 0
    outputs = {  # --wide: whole values (the compact tables cut them: test_cli_tables.py)
        "runs list": run("runs", "list", "--wide", "--db", db_url).stdout,
        "runs show": run("runs", "show", str(failed), "--db", db_url).stdout,
        "as of": run("runs", "list", "--at-position", "9", "--wide", "--db", db_url).stdout,
        "audit": run("audit", str(stale), "--wide", "--db", db_url).stdout,
        "events": run("events", "--wide", "--db", db_url).stdout,
        "stuck": run("stuck", "--wide", "--db", db_url).stdout,
    }
    for command, output in outputs.items():
        assert shows_no_raw_control(output), command
        assert "S\\x1b[2J\\u202e[red]X[/]" in output, command  # markup shown, not obeyed
    for command in ("runs list", "runs show", "as of"):
        assert "[bold red]PASS[/]" in outputs[command], command
        assert "\\x1b]8;;http://evil" in outputs[command], command
    assert 'trigger="\\x1b[31m"' in outputs["audit"]
    shown = json.loads(run("runs", "show", str(failed), "--format", "json", "--db", db_url).stdout)
    assert (shown["connectorName"], shown["errorMessage"]) == (name, message)


# Writer text that, shown unquoted beside the tool's own words, reads as an actor or a field.
AS_SWEEPER = "no activity for 60 minutes · by sweeper"
AS_OPERATOR = "schedule) · by operator:alice (approved"
AS_FIELDS = "none, status=success"
# A JSON-style quoted string: what the tables and lines show writer text as.
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def outside_quotes(output: str) -> str:
    """``output`` with every quoted string emptied, on one line (a table wraps a cell over
    lines): the words the tool wrote itself."""
    return " ".join(QUOTED.sub('""', output).split())


def test_a_connectors_message_or_metadata_cannot_pass_for_the_audits_actor(
    ledger: Ledger, db_url: str
) -> None:
    """The narrow audit joins summary, "by ACTOR" and notes in one cell, and left "by" out
    when an event had no actor: a message ending "· by sweeper" or a trigger holding
    ") · by operator:alice (" read as the event's actor, which a connector's token may not
    claim (403). Writer text is quoted, and every event says who: "by —" for no one."""
    run_id = ledger.start_run(1, "billing", metadata={"trigger": AS_OPERATOR, "pid": 7})
    ledger.append([RunFinished(run_id=run_id, status="failed", error_message=AS_SWEEPER)])
    named = ledger.start_run(2, "crm", actor="bob · LATE: after the timeout")
    audit = run("audit", str(run_id), "--db", db_url).stdout
    tools_words = outside_quotes(audit)
    for forged in ("by sweeper", "by operator:alice", AS_SWEEPER, AS_OPERATOR):
        assert forged not in tools_words, forged
    joined = " ".join(audit.split())
    assert f'failed: "{AS_SWEEPER}" · by —' in joined
    assert f'source 1, billing (pid=7, trigger="{AS_OPERATOR}") · by —' in joined
    assert tools_words.count("by —") == 2  # one for each event
    other = outside_quotes(run("audit", str(named), "--db", db_url).stdout)
    assert "LATE" not in other  # an actor with spaces is quoted: it adds no note
    assert 'by "" ' in other + " "


def test_events_and_the_report_quote_what_a_writer_wrote(ledger: Ledger, db_url: str) -> None:
    """``events --wide`` wrote the payload as k=v, so an error message of "none,
    status=success" read as a field; the text report's line for a run put the connector's
    name and message beside its own words."""
    run_id = failed_run(ledger, "SOURCE_1", AS_FIELDS)
    events = run("events", "--wide", "--db", db_url).stdout
    assert f'error_message="{AS_FIELDS}", status="failed"' in events
    assert "status=success" not in outside_quotes(events)
    failed_run(ledger, "SOURCE_1", f'a \\" {AS_SWEEPER} "')  # a backslash cannot end the quote
    assert run("project", "--db", db_url).exit_code == 0
    report = run("report", "--db", db_url).stdout
    assert f"run {run_id} (SOURCE_1): failed;" in report
    assert f'error "{AS_FIELDS}"' in " ".join(report.split())
    assert f'error "a \\\\\\" {AS_SWEEPER} \\""' in " ".join(report.split())
    assert "by sweeper" not in outside_quotes(report)


def test_names_and_reasons_beside_the_tools_words_are_quoted(
    ledger: Ledger, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name is shown as it is when it is one word, else quoted (so "x) · by operator:alice
    (" cannot close the report's parenthesis); an operator's reason is always quoted."""
    names_as_before_the_rule(monkeypatch)  # history may hold such names
    name = "x) · by operator:alice (y"
    with freeze_time(datetime.now(UTC) - timedelta(hours=3)):
        stale = ledger.start_run(2, name)
    report = " ".join(run("report", "--db", db_url).stdout.split())
    assert f'run {stale} ("{name}", source 2)' in report
    assert "by operator:alice" not in outside_quotes(report)
    failed = run(
        "runs", "fail", str(stale), "--reason", AS_SWEEPER, "--actor", "Jane Doe", "--db", db_url
    )
    assert failed.exit_code == 0, failed.output
    assert f'failed by "operator:Jane Doe" at position 2: "{AS_SWEEPER}"' in failed.stdout
    audit = " ".join(run("audit", str(stale), "--db", db_url).stdout.split())
    assert f'"{AS_SWEEPER}" by "operator:Jane Doe"' in audit
    assert "by sweeper" not in outside_quotes(audit)


def test_skips_and_operator_lines_show_reasons_as_text(ledger: Ledger, db_url: str) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id, records_fetched=10**6)])
    reason = "bad\x1b[2J\rrow\u202e"
    with records_fetched_capped(ledger):  # the projection stops at position 2
        assert run("project", "--db", db_url).exit_code == 1
        skipped = run(
            "project", "--skip-position", "2", "--reason", reason, "--actor", "op", "--db", db_url
        )
    assert skipped.exit_code == 0, skipped.output
    assert shows_no_raw_control(skipped.output)
    assert "bad\\x1b[2J\\rrow\\u202e" in skipped.output
    status = run("status", "--wide", "--db", db_url).stdout
    assert shows_no_raw_control(status)
    assert "bad\\x1b[2J\\rrow\\u202e" in status
    failed = run("runs", "fail", str(run_id), "--reason", reason, "--actor", "op", "--db", db_url)
    assert failed.exit_code == 0, failed.output
    assert shows_no_raw_control(failed.output)
    assert "bad\\x1b[2J\\rrow\\u202e" in failed.output


@pytest.mark.parametrize(
    "args",
    [
        ("append", "evil\x1b[2J\u202ename.jsonl"),
        ("run", "csv", "--path", "x\x1b]8;;http://evil\x1b\\.csv"),
        ("runs", "show", "1\x1b[31m"),
    ],
    ids=["append FILE", "run csv --path", "runs show ID"],
)
def test_a_usage_error_does_not_echo_control_characters(args: tuple[str, ...], db_url: str) -> None:
    """click quotes the argument as given and strips ANSI codes only when stderr is not a
    terminal (``color=True`` is a terminal): the message shows escapes, as every other does."""
    result = CliRunner().invoke(cli, [*args, "--db", db_url], color=True)
    assert result.exit_code == 2, result.output
    assert shows_no_raw_control(result.stderr), repr(result.stderr)
    assert "\\x1b" in result.stderr


FORGED_LINE = "\nError: nothing is wrong\x1b[2J"


@pytest.mark.parametrize(
    "args",
    [
        ("append", f"missing{FORGED_LINE}.jsonl"),
        ("report", "--output", f"/nowhere{FORGED_LINE}/report.md"),
        ("anchor", "--output", f"/nowhere{FORGED_LINE}/anchors"),
        ("verify", "--anchor", f"/nowhere{FORGED_LINE}/anchors"),
    ],
    ids=["append FILE", "report --output", "anchor --output", "verify --anchor"],
)
def test_a_newline_in_a_file_name_starts_no_line_of_an_error(
    args: tuple[str, ...], db_url: str
) -> None:
    # A message is made visible line by line, its own line breaks kept: a newline in the file
    # name it quoted was one of them, and printed a line "Error: nothing is wrong" of its own.
    result = CliRunner().invoke(cli, [*args, "--db", db_url])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("Error:")] == [lines[-1]], result.stderr
    assert "\\nError: nothing is wrong\\x1b[2J" in lines[-1]


def test_a_newline_in_a_sqlite_path_starts_no_line_of_an_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/missing{FORGED_LINE}.db"
    result = CliRunner().invoke(cli, ["status", "--db", url])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert "missing\\nError: nothing is wrong\\x1b[2J.db" in result.stderr


@pytest.mark.parametrize(
    ("command", "body"),
    [
        (["config", "check"], None),
        (["stuck", "--config"], None),
        (["serve", "--config"], None),
        (["config", "check"], b"not = [toml\n"),
        (["config", "check"], b"\xff\n"),
        (["config", "check"], b"no_such_key = 1\n"),
    ],
    ids=["missing, check", "missing, stuck", "missing, serve", "not TOML", "not UTF-8", "invalid"],
)
def test_a_newline_in_a_config_path_starts_no_line_of_an_error(
    command: list[str], body: bytes | None, tmp_path: Path
) -> None:
    # The config's own errors quoted its path raw, ESC escaped but the newline kept (a line
    # "Error: nothing is wrong" of its own), where every other file's error shows it as \n.
    folder = tmp_path / f"configs{FORGED_LINE}"
    folder.mkdir()
    config = folder / "ledger.toml"
    if body is not None:
        config.write_bytes(body)
    result = CliRunner().invoke(cli, [*command, str(config)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("Error:")] == lines[:1], result.stderr
    assert "configs\\nError: nothing is wrong\\x1b[2J/ledger.toml: " in lines[0], lines


def test_json_output_escapes_what_a_terminal_would_obey(ledger: Ledger, db_url: str) -> None:
    # JSON escapes C0 controls by itself; `events --format jsonl` printed C1 (\x9b CSI), the
    # bidi overrides and zero-width characters raw, unlike every other JSON output.
    run_id = failed_run(ledger, "SOURCE_1", FORGED)
    assert run("project", "--db", db_url).exit_code == 0
    for args in (
        ("events", "--format", "jsonl"),
        ("runs", "list", "--format", "json"),
        ("runs", "show", str(run_id), "--format", "json"),
        ("audit", str(run_id), "--format", "json"),
        ("report", "--format", "json"),
    ):
        assert shows_no_raw_control(run(*args, "--db", db_url).stdout), args
    exported = run("events", "--format", "jsonl", "--db", db_url).stdout
    assert json.loads(exported.splitlines()[-1])["error_message"] == FORGED  # the exact value
    result = run("append", "-", "--db", db_url, input=exported)  # appends again as is
    assert json.loads(result.stdout)["duplicates"] == 2


def test_a_traceback_quoting_a_forged_line_starts_no_line_at_the_margin() -> None:
    """The CLI's log lines are one line each, but a bug's traceback (``log.exception``, e.g. a
    connector raising something unexpected under serve) kept its lines raw: its last line
    quotes the exception's message, written by a connector or its data source, which could
    print a line passing for a record of its own, or an ESC sequence. Each line of the
    traceback is indented and escaped now."""
    formatter = OneLineFormatter("%(levelname)s %(name)s: %(message)s")
    forged = "bad row\nINFO connectors.sdk: run 1 of stations finished: success\x1b[2J"
    try:
        raise ValueError(forged)
    except ValueError:
        record = logging.LogRecord(
            "service.serve", logging.ERROR, __file__, 1, "job %s failed", ("x",), sys.exc_info()
        )
    lines = formatter.format(record).splitlines()
    assert lines[0] == "ERROR service.serve: job x failed"
    assert lines[1] == "  Traceback (most recent call last):"
    assert all(line.startswith("  ") for line in lines[1:]), lines
    assert "  INFO connectors.sdk: run 1 of stations finished: success\\x1b[2J" in lines
    assert shows_no_raw_control("\n".join(lines))
