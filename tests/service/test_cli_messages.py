"""What the ``ledger`` command says when something is wrong (issue 15, item 8): each message
names the mistake, the setting to fix and what happened to the data."""

from __future__ import annotations

import json
import os
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from connectors import SAMPLE_CSV
from connectors.outcome import describe_failure
from ledger import Ledger, RunFinished
from ledger.urls import DATABASE_URL_ENV, mask_url
from service.cli import cli
from tests.support import stop_process

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "sample_events.jsonl"


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, env=env, catch_exceptions=False)


def test_a_text_that_is_not_a_url_is_shown_with_what_a_url_looks_like() -> None:
    result = run("runs", "list", "--db", "notaurl")
    assert result.exit_code == 2
    assert "not a database URL: 'notaurl'" in result.stderr
    assert "sqlite:///path/to/ledger.db" in result.stderr
    assert "mysql+pymysql://" in result.stderr
    assert "unparseable" not in result.stderr


def test_a_url_that_does_not_parse_is_never_echoed() -> None:
    """A scheme-less "user:password@host" cannot be told apart from a password: only the
    shape of a URL is shown, never the text."""
    result = run("runs", "list", "--db", "root:Secret1@db.example/ledger")
    assert result.exit_code == 2
    assert "Secret1" not in result.stderr
    assert "not a database URL" in result.stderr


@pytest.mark.parametrize(
    "url",
    ["notaurl", "postgresql://app:pw@h/d", "mysql+pymysql://app:p@ss@h/d"],
    ids=["not a URL", "unsupported", "unencoded @"],
)
def test_an_error_about_a_url_from_the_environment_names_the_variable(url: str) -> None:
    from_environment = run("runs", "list", env={DATABASE_URL_ENV: url})
    assert from_environment.exit_code == 2
    assert from_environment.stderr.startswith(f"Error: ${DATABASE_URL_ENV}: ")
    from_option = run("runs", "list", "--db", url, env={DATABASE_URL_ENV: url})
    assert DATABASE_URL_ENV not in from_option.stderr  # --db was given: the option is at fault


@pytest.mark.parametrize(
    "url",
    [
        "notaurl",
        "sqlite://ledger.db",
        "mysql+pymysql://app@127.0.0.1:3306",
        "sqlite:////proc/no-such-folder/x.db",
    ],
    ids=["not a URL", "two slashes", "no database name", "no folder"],
)
@pytest.mark.parametrize("command", ["append", "run csv"])
def test_the_commands_that_create_a_ledger_name_the_variable_too(
    url: str, command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """append and run make a missing SQLite ledger first: an error about the URL there named
    no variable (issue 15)."""
    monkeypatch.chdir(tmp_path)
    args = {
        "append": ["append", str(SAMPLE)],
        "run csv": ["run", "csv", "--path", str(SAMPLE_CSV), "--spool-dir", str(tmp_path / "s")],
    }[command]
    from_environment = run(*args, env={DATABASE_URL_ENV: url})
    assert from_environment.exit_code == 2, from_environment.output
    assert from_environment.stderr.startswith(f"Error: ${DATABASE_URL_ENV}: ")
    assert list(tmp_path.iterdir()) == []  # nothing made


def test_serve_and_api_name_the_variable_too(tmp_path: Path) -> None:
    """serve (whose config's database_url the variable overrides) and api, as every command."""
    config = tmp_path / "ledger.toml"
    config.write_text('database_url = "sqlite:///x.db"\n', encoding="utf-8")
    missing = f"sqlite:///{tmp_path / 'nope.db'}"
    api = run("api", "--listen", "127.0.0.1:1", env={DATABASE_URL_ENV: missing})
    assert api.exit_code == 2, api.output
    assert api.stderr.startswith(f"Error: ${DATABASE_URL_ENV}: no SQLite database at")
    served = run("serve", "--config", str(config), env={DATABASE_URL_ENV: missing + "?mode=ro"})
    assert served.exit_code == 2, served.output
    assert f"${DATABASE_URL_ENV}" in served.stderr


def test_serve_in_a_folder_without_a_config_says_where_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ledger serve` with no --config in a folder without ledger.toml: it said only
    "ledger.toml: cannot read the config file (No such file or directory)"."""
    monkeypatch.chdir(tmp_path)
    result = run("serve")
    assert result.exit_code == 2
    assert "no ledger.toml in this folder" in result.stderr
    assert "--config FILE" in result.stderr
    assert "examples/ledger.toml" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing made
    given = run("serve", "--config", "other.toml")  # a file named by hand: the plain message
    assert given.exit_code == 2
    assert "other.toml: cannot read the config file" in given.stderr


def test_a_failure_on_the_database_from_the_environment_names_the_variable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "not-migrated.db"
    with closing(sqlite3.connect(path)) as conn:  # a database, but without the schema
        conn.execute("CREATE TABLE other (x INTEGER)")
    url = f"sqlite:///{path}"
    result = run("status", env={DATABASE_URL_ENV: url})
    assert result.exit_code != 0
    assert result.stderr.startswith(f"Error: ${DATABASE_URL_ENV}: ")
    assert mask_url(url) in result.stderr


def test_an_error_about_something_else_does_not_blame_the_variable(db_url: str) -> None:
    result = run("runs", "show", "999999", env={DATABASE_URL_ENV: db_url})
    assert result.exit_code == 2
    assert DATABASE_URL_ENV not in result.stderr


def test_a_zero_duration_names_the_option_once(db_url: str) -> None:
    result = run("stuck", "--older-than", "0m", "--db", db_url)
    assert result.exit_code == 2
    assert result.stderr.count("--older-than") == 1, result.stderr
    assert "'0m' must be longer than zero" in result.stderr


def test_a_stream_rule_refusal_says_nothing_was_appended(ledger: Ledger, db_url: str) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunFinished(run_id=run_id, status="success")])
    head = ledger.head().last_position
    line = json.dumps({"type": "RunProgressed", "run_id": run_id, "records_fetched": 1})
    result = run("append", "-", "--db", db_url, input=line + "\n")
    assert result.exit_code == 2
    assert "RunProgressed after RunFinished" in result.stderr
    assert "nothing was appended" in result.stderr
    assert ledger.head().last_position == head
    failed = run("runs", "fail", str(run_id), "--reason", "stuck", "--db", db_url)
    assert failed.exit_code == 2
    assert "nothing was appended" in failed.stderr


@pytest.mark.parametrize(
    ("ending", "said"),
    [
        (KeyboardInterrupt(), "interrupted by Ctrl-C (SIGINT)"),
        (SystemExit(143), "stopped by SIGTERM"),
        (SystemExit(130), "stopped by SIGINT"),
        (SystemExit("interpreter exit with the run still open"), "stopped: interpreter exit"),
        (SystemExit(3), "stopped (exit status 3)"),
        (ConnectionResetError("source went away"), "ConnectionResetError: source went away"),
    ],
)
def test_what_ended_a_run_reads_as_words(ending: BaseException, said: str) -> None:
    assert describe_failure(ending).startswith(said)


# ---------------------------------------------------------------- append and its input


@contextmanager
def append_on_a_terminal(db_url: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``ledger append`` with a pseudo-terminal as its standard input: the process and the
    terminal's other end (to type into); killed and closed however the block ends."""
    terminal, its_other_end = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", "from service.cli import main; main()", "append", "--db", db_url],
        stdin=its_other_end,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    os.close(its_other_end)
    try:
        yield process, terminal
    finally:
        stop_process(process, signal.SIGKILL)
        os.close(terminal)


def chars_read(pid: int) -> int:
    """What the process has read so far, in bytes (``rchar`` of /proc/PID/io): at the prompt
    it reads nothing but its terminal."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == "rchar":
            return int(value)
    raise AssertionError(f"/proc/{pid}/io has no rchar")


def test_append_on_a_terminal_says_it_reads_standard_input(db_url: str) -> None:
    """A bare ``ledger append`` at a prompt says what it waits for and how to end it."""
    with append_on_a_terminal(db_url) as (process, terminal):
        assert process.stderr is not None
        said = read_until(process.stderr, b"Ctrl-D", deadline=time.monotonic() + 30)
        assert b"Reading JSON Lines events from the terminal" in said
        event = {"type": "RunStarted", "run_ref": "a", "source_id": 1, "connector_name": "S_1"}
        os.write(terminal, json.dumps(event).encode() + b"\n\x04")  # Ctrl-D: end of input
        stdout, _ = process.communicate(timeout=60)
        assert json.loads(stdout)["appended"] == 1


def test_ctrl_c_while_append_reads_a_terminal_says_nothing_was_appended(
    ledger: Ledger, db_url: str
) -> None:
    """Ctrl-C at the prompt is one line and exit 130, not click's "Aborted!" and exit 1 (the
    code of a check that found a problem), and the line says what became of the events."""
    with append_on_a_terminal(db_url) as (process, terminal):
        assert process.stderr is not None
        read_until(process.stderr, b"Ctrl-D", deadline=time.monotonic() + 30)
        event = {"type": "RunStarted", "run_ref": "a", "source_id": 1, "connector_name": "S_1"}
        line = json.dumps(event).encode() + b"\n"
        before = chars_read(process.pid)
        os.write(terminal, line)
        # Ctrl-C once the line is read: the process then holds an event it has not appended.
        deadline = time.monotonic() + 30
        while chars_read(process.pid) < before + len(line):
            assert time.monotonic() < deadline, "ledger append never read the line"
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)  # what Ctrl-C on its terminal sends
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stdout == b""
    said = stderr.decode().strip()
    assert said == "Error: interrupted by Ctrl-C while reading events: nothing was appended", said
    assert ledger.head().last_position == 0


def test_ctrl_c_in_any_command_exits_130_without_aborted(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Ledger, "from_url", interrupted)
    result = run("runs", "list", "--db", db_url)
    assert result.exit_code == 130
    assert result.stderr.strip() == "Error: interrupted by Ctrl-C (SIGINT)"
    assert "Aborted" not in result.output


def test_ctrl_c_while_the_command_loads_exits_130_without_a_traceback() -> None:
    # Loading the command takes 1-2 s; a Ctrl-C then was KeyboardInterrupt inside an import,
    # outside every handler: Python's traceback. The console script is run as pip writes it,
    # with the SIGINT sent the moment it imports the command's module.
    target = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["ledger"]
    module, function = target.split(":")
    script = f"""
import builtins, os, signal, sys
real_import = builtins.__import__
def interrupting_import(name, *args, **kwargs):
    if name == "service.cli":
        builtins.__import__ = real_import
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C on the terminal sends
    return real_import(name, *args, **kwargs)
builtins.__import__ = interrupting_import
sys.argv = ["ledger", "--version"]
from {module} import {function}
sys.exit({function}())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, cwd=REPO, timeout=120, check=False
    )
    stderr = done.stderr.decode()
    assert done.returncode == 130, stderr
    assert stderr.strip() == "Error: interrupted by Ctrl-C (SIGINT)", stderr
    assert done.stdout == b""


def test_ctrl_c_while_shell_completion_loads_the_command_exits_130_without_a_traceback() -> None:
    # Tab completion (`ledger runs <TAB>`) imports the named command's module, which the
    # console script no longer imports under its own handler, and click runs the completion
    # before its handlers: a Ctrl-C then printed Python's traceback on the terminal.
    target = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["ledger"]
    module, function = target.split(":")
    script = f"""
import os, signal, sys
class Interrupting:
    def find_spec(self, name, path=None, target=None):
        if name == "service.cli.runs":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C on the terminal sends
        return None
sys.meta_path.insert(0, Interrupting())
sys.argv = ["ledger"]
from {module} import {function}
sys.exit({function}())
"""
    completing = {
        "_LEDGER_COMPLETE": "bash_complete",
        "COMP_WORDS": "ledger runs ",
        "COMP_CWORD": "2",
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        cwd=REPO,
        timeout=120,
        check=False,
        env={**os.environ, **completing},
    )
    stderr = done.stderr.decode()
    assert done.returncode == 130, stderr
    assert stderr.strip() == "Error: interrupted by Ctrl-C (SIGINT)", stderr
    assert done.stdout == b""
    # Not interrupted, the same completion lists the subcommands.
    done = subprocess.run(
        [sys.executable, "-c", script.replace("sys.meta_path.insert", "# sys.meta_path.insert")],
        capture_output=True,
        cwd=REPO,
        timeout=120,
        check=False,
        env={**os.environ, **completing},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split() == ["plain,fail", "plain,list", "plain,show"]


def test_ctrl_c_while_the_command_line_is_parsed_exits_130_without_aborted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(click.Group, "parse_args", interrupted)
    result = run("--version")
    assert result.exit_code == 130
    assert result.stderr.strip() == "Error: interrupted by Ctrl-C (SIGINT)"
    assert "Aborted" not in result.output


def read_until(stream: object, marker: bytes, deadline: float) -> bytes:
    received = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
        while marker not in received:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {marker!r} on stderr: {received!r}"
            if selector.select(remaining):
                chunk = os.read(stream.fileno(), 4096)  # type: ignore[attr-defined]
                assert chunk, f"stderr closed before {marker!r}: {received!r}"
                received += chunk
    return received


def test_append_from_a_pipe_says_nothing_about_a_terminal(db_url: str) -> None:
    event = {"type": "RunStarted", "run_ref": "a", "source_id": 1, "connector_name": "S_1"}
    result = run("append", "--db", db_url, input=json.dumps(event) + "\n")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert json.loads(result.stdout)["appended"] == 1
