"""The ``ledger`` command, driven through click's CliRunner on both databases."""

from __future__ import annotations

import json
import re
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from freezegun import freeze_time

from ledger import ConfigurationError, Ledger, RunFinished, RunProgressed
from ledger.text import is_invisible
from ledger.urls import mask_secrets
from service import load_config
from service.cli import cli
from tests.projection_support import records_fetched_capped
from tests.support import drop_triggers, names_as_before_the_rule

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_events.jsonl"


def run(*args: str, input: str | bytes | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def lines(*events: dict[str, object]) -> str:
    return "".join(json.dumps(event) + "\n" for event in events)


def test_migrate_then_append_the_shipped_sample(db_url: str) -> None:
    result = run("migrate", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "already at" in result.output
    result = run("append", str(SAMPLE), "--db", db_url)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary == {
        "appended": 7,
        "duplicates": 0,
        "first_position": 1,
        "last_position": 7,
        "allocated_run_ids": [1, 2],
        "run_refs": {"nightly-source-1": 1, "nightly-source-2": 2},
    }
    again = json.loads(run("append", str(SAMPLE), "--db", db_url).stdout)
    assert (again["appended"], again["duplicates"], again["run_refs"]) == (
        0,
        7,
        {"nightly-source-1": 1, "nightly-source-2": 2},
    )


def test_one_bad_line_writes_nothing_and_is_named(ledger: Ledger, db_url: str) -> None:
    text = lines(
        {"type": "RunStarted", "run_ref": "r", "source_id": 1, "connector_name": "SOURCE_1"},
        {"type": "RunProgressed", "run_ref": "r", "records_fetched": 3},
        {"type": "RunProgressed", "run_ref": "r", "records_fetched": -3},
        {"type": "RunFinished", "run_ref": "r", "status": "success"},
    )
    result = run("append", "-", "--db", db_url, input=text)
    assert result.exit_code == 2
    assert "line 3: records_fetched: Input should be greater than or equal to 0" in result.stderr
    assert "line 1" not in result.stderr
    assert "nothing was appended" in result.stderr
    assert ledger.head().last_position == 0


def test_every_bad_line_is_reported(ledger: Ledger, db_url: str) -> None:
    raw = (
        b'{"type": "RunStarted", "source_id": 1, "connector_name": "S"}\n'
        b"not json\n"
        b"\n"
        b'{"type": "RunProgressed", "run_id": 1, "records_fetched": "12"}\n'
        b'["a", "list"]\n'
        b'{"type": "RunProgressed", "run_id": 1, "note": "\xff\xfe"}\n'
        b'{"type": "RunFinished", "run_id": 1, "status": "done", '
        b'"occurred_at": "2026-01-01T00:00"}\n'
        b'{"type": "Whatever", "run_id": 1}\n'
    )
    result = run("append", "-", "--db", db_url, input=raw)
    assert result.exit_code == 2
    err = result.stderr
    assert "line 2: not valid JSON" in err
    assert "line 4: records_fetched: Input should be a valid integer" in err
    assert "line 5: expected a JSON object" in err
    assert "line 6: not valid UTF-8" in err
    assert "line 7: status:" in err
    assert "line 7: occurred_at:" in err
    assert "line 8: type: unknown event type 'Whatever'" in err
    assert ledger.head().last_position == 0


def test_stream_rule_violation_names_the_line(ledger: Ledger, db_url: str) -> None:
    ledger.start_run(1, "SOURCE_1")
    text = lines(
        {"type": "RunProgressed", "run_id": 1, "records_fetched": 3},
        {"type": "RunFinished", "run_id": 1, "status": "success"},
        {"type": "RunProgressed", "run_id": 1},
    )
    result = run("append", "-", "--db", db_url, input=text)
    assert result.exit_code == 2
    assert "line 3: run 1: RunProgressed after RunFinished" in result.stderr
    assert ledger.head().last_position == 1


def test_unresolved_run_ref_and_clock_skew_name_the_line(ledger: Ledger, db_url: str) -> None:
    text = lines(
        {"type": "RunProgressed", "run_ref": "nope"},
        {
            "type": "RunStarted",
            "source_id": 1,
            "connector_name": "S",
            "occurred_at": "2999-01-01T00:00:00Z",
        },
    )
    result = run("append", "-", "--db", db_url, input=text)
    assert result.exit_code == 2
    assert "line 1: run_ref: 'nope' names no RunStarted" in result.stderr
    assert "line 2: occurred_at: 2999-01-01" in result.stderr
    assert ledger.head().last_position == 0


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


def test_verify_exit_codes(ledger: Ledger, db_url: str) -> None:
    run("append", str(SAMPLE), "--db", db_url)
    ok = run("verify", "--db", db_url)
    assert ok.exit_code == 0
    assert "7 event(s), 2 run(s), no problem" in ok.stdout
    assert "7 event(s)" in run("verify", "--chain-only", "--db", db_url).stdout
    drop_triggers(ledger.engine)
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE ledger_events SET actor = 'operator:mallory' WHERE position = 4"
        )
    for extra in ([], ["--chain-only"]):
        broken = run("verify", "--format", "json", *extra, "--db", db_url)
        assert broken.exit_code == 1
        problem = json.loads(broken.stdout)["problems"][0]
        assert (problem["check"], problem["position"]) == ("chain", 4)


def test_database_url_from_environment_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    assert run("migrate").exit_code == 0
    assert (tmp_path / "ledger.db").exists()
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    assert run("migrate").exit_code == 0
    assert (tmp_path / "other.db").exists()


def test_database_failures_never_show_the_password(tmp_path: Path) -> None:
    url = "mysql+pymysql://app:hunter2-secret@127.0.0.1:1/ledger"
    for args in (["migrate"], ["events"], ["verify"], ["append", str(SAMPLE)]):
        result = run(*args, "--db", url)
        assert result.exit_code == 3, result.output  # the environment: unreachable
        assert "hunter2-secret" not in result.output
        assert "app:***@127.0.0.1" in result.output
        assert "Traceback" not in result.output


def test_bad_urls_are_usage_errors() -> None:
    result = run("migrate", "--db", "postgresql://u:pw-x@localhost/db")
    assert result.exit_code == 2
    assert "unsupported database" in result.stderr
    assert "pw-x" not in result.output
    result = run("migrate", "--db", "not a url")
    assert result.exit_code == 2


def test_unmigrated_database_says_to_migrate(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()  # an empty SQLite database (a missing one is refused)
    result = run("events", "--db", f"sqlite:///{tmp_path / 'empty.db'}")
    assert result.exit_code == 1
    assert "ledger migrate" in result.stderr


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            b'{"type": "RunStarted", "source_id": 1, "connector_name": "S", '
            b'"metadata": {"x": NaN}}',
            "line 1: not valid JSON (NaN is not a JSON number)",
        ),
        (
            b'{"type": "RunStarted", "source_id": 1, "connector_name": "S", '
            b'"metadata": {"x": "\\ud800"}}',
            "line 1: payload: not storable as JSON",
        ),
        (
            b'{"type": "RunStarted", "source_id": 1, "connector_name": "S", '
            b'"occurred_at": "0001-01-01T00:00:00+01:00"}',
            "line 1: occurred_at:",
        ),
        (
            b'{"type": "RunStarted", "source_id": 1, "connector_name": "S", '
            b'"occurred_at": "1969-12-31T23:59:59Z"}',
            "line 1: occurred_at:",
        ),
        (
            b'{"type": "RunStarted", "source_id": 1, "connector_name": "S", "schema_version": 2}',
            "line 1: schema_version:",
        ),
    ],
)
def test_unstorable_values_are_input_errors(
    ledger: Ledger, db_url: str, line: bytes, expected: str
) -> None:
    result = run("append", "-", "--db", db_url, input=line + b"\n")
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert "Traceback" not in result.output
    assert ledger.head().last_position == 0


@pytest.mark.parametrize(
    "url",
    [
        "mysql+pymysql//root:pw-in-a-typo@127.0.0.1/db",
        "mysql+pymysql://root:pw-in-a-port@127.0.0.1:abc/db",
        "mysql+pymysql://root:pw-in-a-query@127.0.0.1:1/db?bogus=1",
    ],
)
def test_malformed_urls_are_usage_errors_without_the_password(url: str) -> None:
    result = run("events", "--db", url)
    assert result.exit_code == 2, result.output
    assert "pw-in-a" not in result.output
    assert "Traceback" not in result.output


def test_a_password_with_an_unencoded_at_sign_is_masked_whole() -> None:
    result = run("events", "--db", "mysql+pymysql://app:p@ss-w0rd@127.0.0.1:1/db")
    assert result.exit_code == 2
    assert "percent-encoded" in result.stderr
    assert "ss-w0rd" not in result.output


# ---------------------------------------------------------------- projection commands


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


def test_rebuild_and_status(db_url: str) -> None:
    run("append", str(SAMPLE), "--db", db_url)
    status = json.loads(run("status", "--format", "json", "--db", db_url).stdout)
    assert (status["head_position"], status["open_runs"]) == (7, 0)
    assert status["projections"][0]["lag_events"] == 7
    result = run("rebuild", "--batch-size", "2", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "rebuilt ingestion_runs: 7 event(s), 2 run(s)" in result.stdout
    assert "replayed 7/7 events" in result.stderr
    status = json.loads(run("status", "--format", "json", "--db", db_url).stdout)
    assert status["projections"][0]["lag_events"] == 0
    text = run("status", "--db", db_url).stdout
    assert "checkpoint 7, lag 0 event(s)" in text


def test_poison_event_skip_through_the_cli(ledger: Ledger, db_url: str) -> None:
    from tests.projection_support import append_raw

    run_id = ledger.start_run(1, "SOURCE_1")
    poison = append_raw(ledger, run_id, "RunPaused", "{}")
    stopped = run("project", "--db", db_url)
    assert stopped.exit_code == 1
    assert f"cannot project position {poison} (RunPaused)" in stopped.stderr
    status = run("status", "--db", db_url).stdout
    assert f"STOPPED at position {poison} (RunPaused)" in status
    no_reason = run("project", "--skip-position", str(poison), "--db", db_url)
    assert no_reason.exit_code == 2
    skipped = run(
        "project",
        "--skip-position",
        str(poison),
        "--reason",
        "from a newer writer",
        "--actor",
        "operator:al",
        "--db",
        db_url,
    )
    assert skipped.exit_code == 0, skipped.output
    assert f"checkpoint at {poison}" in skipped.stdout
    status = run("status", "--db", db_url).stdout
    assert "STOPPED" not in status
    assert f"skipped position {poison} (RunPaused) by operator:al" in status


# ---------------------------------------------------------------- found by the second test pass


def test_a_password_in_the_query_string_is_masked() -> None:
    result = run("events", "--db", "mysql+pymysql://root@127.0.0.1:1/x?password=qs-secret-1")
    assert result.exit_code == 3  # unreachable
    assert "qs-secret-1" not in result.output
    assert "password=***" in result.output


def test_a_byte_order_mark_opens_a_file_fine(ledger: Ledger, db_url: str) -> None:
    line = '{"type": "RunStarted", "source_id": 1, "connector_name": "S"}\n'
    result = run("append", "-", "--db", db_url, input=b"\xef\xbb\xbf" + line.encode())
    assert result.exit_code == 0, result.output
    assert ledger.head().last_position == 1


def test_deep_nesting_and_huge_lines_are_input_errors(ledger: Ledger, db_url: str) -> None:
    deep = (
        '{"type": "RunStarted", "source_id": 1, "connector_name": "S", "metadata": '
        + ('{"a": ' * 100_000)
        + "1"
        + ("}" * 100_000)
        + "}\n"
    )
    result = run("append", "-", "--db", db_url, input=deep)
    assert result.exit_code == 2, result.output[-500:]
    assert "line 1:" in result.stderr
    huge = (
        json.dumps(
            {
                "type": "RunStarted",
                "source_id": 1,
                "connector_name": "S",
                "metadata": {"blob": "x" * 20_000_000},
            }
        )
        + "\n"
    )
    result = run("append", "-", "--db", db_url, input=huge)
    assert result.exit_code == 2
    assert "line 1: payload:" in result.stderr
    assert "byte limit" in result.stderr
    assert ledger.head().last_position == 0


def test_an_empty_file_still_checks_the_database(tmp_path: Path) -> None:
    result = run("append", "-", "--db", "mysql+pymysql://u:pw-empty@127.0.0.1:1/x", input="\n\n")
    assert result.exit_code == 3
    assert "pw-empty" not in result.output
    unmigrated = run("append", "-", "--db", f"sqlite:///{tmp_path / 'new.db'}", input="")
    assert unmigrated.exit_code == 1
    assert "ledger migrate" in unmigrated.stderr


def test_out_of_range_ids_are_usage_errors(db_url: str) -> None:
    for args in (
        ["events", "--run", "99999999999999999999"],
        ["events", "--after", "-1"],
        ["runs", "show", "99999999999999999999"],
    ):
        result = run(*args, "--db", db_url)
        assert result.exit_code == 2, (args, result.output)


@pytest.mark.parametrize("name", ["key", "access_token", "client_secret", "API_KEY"])
def test_secret_query_parameters_are_masked_in_free_text(name: str) -> None:
    text = f"GET https://api.example.com/x?page=2&{name}=s3cr3t-value&ssl_key=/etc/k.pem failed"
    masked = mask_secrets(text)
    assert "s3cr3t-value" not in masked
    assert f"{name}=***" in masked
    assert "ssl_key=/etc/k.pem" in masked  # a file path, not a secret


@pytest.mark.parametrize("query", ["read_timeout=0", "connect_timeout=-1", "write_timeout=abc"])
def test_bad_timeouts_in_a_mysql_url_are_usage_errors(query: str) -> None:
    result = run("status", "--db", f"mysql+pymysql://u:hunter2-pw@127.0.0.1:1/x?{query}")
    assert result.exit_code == 2, result.output
    assert "must be a whole number of seconds above 0" in result.output
    assert "hunter2-pw" not in result.output


def test_a_rejected_config_value_is_not_kept_in_the_chained_error(tmp_path: Path) -> None:
    """A logged traceback of a config error must not carry the URL or API key it rejected."""
    config = tmp_path / "ledger.toml"
    config.write_text(
        'database_url = "postgresql://app:hunter2-pw@db/x"\n'
        "[[connectors]]\n"
        'name = "api"\ntype = "http-json"\nsource_id = 1\n'
        'schedule = { interval = "1m" }\n'
        'options = { url = "https://api.example.com/?api_key=TOPSECRETKEY", bogus = 1 }\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError) as caught:
        load_config(config)
    chain = "".join(traceback.format_exception(caught.value))
    assert "database_url" in chain
    assert "hunter2-pw" not in chain
    assert "TOPSECRETKEY" not in chain


def test_a_record_key_in_free_text_is_not_taken_for_a_secret() -> None:
    assert mask_secrets("record key=station_7; next") == "record key=station_7; next"
    assert mask_secrets("GET /x?key=abc;def") == "GET /x?key=***;def"


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


def test_a_bad_url_from_the_environment_is_named_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text('database_url = "sqlite:///fine.db"\n', encoding="utf-8")
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql://app@db/x")
    result = run("config", "check", str(config))
    assert result.exit_code == 2, result.output
    assert "$LEDGER_DATABASE_URL (in place of database_url)" in result.output


# ---------------------------------------------------------------- issue 12: forged output, names

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


def shows_no_raw_control(output: str) -> bool:
    return not any(is_invisible(char) for char in output.replace("\n", ""))


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
        "Result: 4/5 conditions pass — FAIL"
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


def test_padding_cannot_draw_a_report_section_where_a_terminal_wraps(
    ledger: Ledger, db_url: str
) -> None:
    """Spaces that would push a fake section to the start of a wrapped 80-column line are
    counted instead of printed."""
    lines_ = [
        "F. Stop conditions",
        "------------------",
        "  PASS  x",
        "Result: 5/5 conditions pass",
    ]
    failed_run(ledger, "SOURCE_1", "boom" + "".join(" " * 80 + line for line in lines_))
    assert run("project", "--db", db_url).exit_code == 0
    for output_format in ("text", "markdown"):
        text = run("report", "--format", output_format, "--db", db_url).stdout
        wrapped = [line[i : i + 80] for line in text.splitlines() for i in range(0, len(line), 80)]
        assert [line for line in wrapped if line.startswith("Result:")] == [
            "Result: 4/5 conditions pass — FAIL"
        ]
        assert "boom [80 spaces] F. Stop conditions [80 spaces] " in text.replace("\\", "")


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
    assert "trigger=\\x1b[31m" in outputs["audit"]
    shown = json.loads(run("runs", "show", str(failed), "--format", "json", "--db", db_url).stdout)
    assert (shown["connectorName"], shown["errorMessage"]) == (name, message)


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


@pytest.mark.parametrize("name", ["op\u202e", "op ", "\u00a0op", "o\x1bp"])
def test_an_actor_on_the_command_line_follows_the_name_rule(
    ledger: Ledger, db_url: str, name: str
) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    for args in (
        ["runs", "fail", str(run_id), "--reason", "dead", "--actor", name],
        ["project", "--skip-position", "1", "--reason", "bad", "--actor", name],
    ):
        result = run(*args, "--db", db_url)
        assert result.exit_code == 2, result.output
        assert "--actor" in result.stderr
        assert "is not allowed" in result.stderr
        assert shows_no_raw_control(result.stderr)
    assert ledger.head().last_position == 1
    assert "skipped" not in run("status", "--db", db_url).stdout


def test_a_user_name_that_breaks_the_rule_is_not_taken_as_the_actor(
    ledger: Ledger, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    for variable in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(variable, "mallory\u202e")
    result = run("runs", "fail", str(run_id), "--reason", "dead", "--db", db_url)
    assert result.exit_code == 2, result.output
    assert "U+202E RIGHT-TO-LEFT OVERRIDE" in result.stderr
    assert "--actor" in result.stderr
    assert shows_no_raw_control(result.stderr)
    assert ledger.head().last_position == 1


def test_append_names_a_bad_name_and_echoes_no_control_character(
    ledger: Ledger, db_url: str
) -> None:
    text = lines(
        {"type": "RunStarted", "source_id": 1, "connector_name": "SOURCE\u202e_1"},
        {"type": "RunProgressed", "run_id": 1, "\x1b[2J\x1b]8;;http://evil\x1b\\": 1},
        {"type": "RunProgressed", "run_id": 1, "x\nline 9: all good": 1},
    )
    result = run("append", "-", "--db", db_url, input=text)
    assert result.exit_code == 2
    assert (
        "line 1: connector_name: U+202E RIGHT-TO-LEFT OVERRIDE at index 6 is not allowed"
        in result.stderr
    )
    assert "line 2: \\x1b[2J\\x1b]8;;http://evil\\x1b\\: Extra inputs" in result.stderr
    assert "line 3: x\\nline 9: all good: Extra inputs" in result.stderr
    assert not any(line.startswith("line 9") for line in result.stderr.splitlines())
    assert shows_no_raw_control(result.stderr)
    assert ledger.head().last_position == 0


def test_a_config_connector_name_follows_the_name_rule(tmp_path: Path) -> None:
    path = tmp_path / "ledger.toml"
    path.write_text(
        '[[connectors]]\nname = "stations "\ntype = "csv"\nsource_id = 1\n'
        'schedule = { interval = "15m" }\n'
        '[[connectors]]\nname = "sta\\u200btions"\ntype = "csv"\nsource_id = 2\n'
        'schedule = { interval = "15m" }\n',
        encoding="utf-8",
    )
    result = run("config", "check", str(path))
    assert result.exit_code == 2
    assert "connectors[0].name: trailing whitespace (U+0020 SPACE at index 8)" in result.stderr
    assert "connectors[1].name: U+200B ZERO WIDTH SPACE at index 3" in result.stderr


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
