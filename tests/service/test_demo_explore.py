"""``ledger demo`` prints "Explore further" commands that work when pasted (issue 15, item 1):
each one, taken from the demo's output and run as printed through a shell in the same folder,
exits 0 and creates no file. They used to point at ``./ledger.db``, fail, and leave it behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli.admin import DEMO_DATABASE_URL, explore_heading, explore_target

LEDGER = str(Path(sys.executable).parent / "ledger")  # the console script of this install
TIMEOUT_S = 120


def shell(command: str, folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Through a shell, as a user pastes it: that is the point.
    return subprocess.run(  # noqa: S602
        command,
        shell=True,
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def clean_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_DATABASE_URL"}
    # `ledger` as a user types it: the console script of this install first on the PATH.
    env["PATH"] = f"{Path(LEDGER).parent}{os.pathsep}{env.get('PATH', '')}"
    return env | extra


def explore_commands(output: str) -> list[str]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Explore further"))
    commands = [line.strip() for line in lines[start + 1 :] if line.startswith("  ledger ")]
    assert len(commands) == 7, output
    return commands


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def demo_then_explore(folder: Path, demo: str, env: dict[str, str]) -> list[str]:
    """Run the demo, then each command it prints; return those commands."""
    result = shell(demo, folder, env)
    assert result.returncode == 0, result.stdout + result.stderr
    created = files_in(folder)
    commands = explore_commands(result.stdout)
    for command in commands:
        explored = shell(command, folder, env)
        assert explored.returncode == 0, f"{command}:\n{explored.stdout}{explored.stderr}"
        assert "Error" not in explored.stderr, f"{command}: {explored.stderr}"
        assert files_in(folder) == created, command
    return commands


def test_the_demos_commands_work_as_printed_on_sqlite(tmp_path: Path) -> None:
    commands = demo_then_explore(tmp_path, "ledger demo", clean_environment())
    assert files_in(tmp_path) == ["ledger-demo.db"]  # and no ledger.db
    assert commands[0] == "ledger runs list --db sqlite:///ledger-demo.db"


def test_the_demos_commands_work_as_printed_on_mariadb(
    backend: str, db_url: str, tmp_path: Path
) -> None:
    if backend != "mysql":
        pytest.skip("the SQLite default is the test above")
    commands = demo_then_explore(tmp_path, f"ledger demo --db '{db_url}'", clean_environment())
    assert all(command.endswith(f" --db {db_url}") for command in commands)
    assert files_in(tmp_path) == []


def test_the_demo_honours_the_environment_like_every_command(tmp_path: Path) -> None:
    env = clean_environment(LEDGER_DATABASE_URL="sqlite:///from-env.db")
    commands = demo_then_explore(tmp_path, "ledger demo", env)
    assert files_in(tmp_path) == ["from-env.db"]
    assert "ledger runs list" in commands  # the variable reaches them: no --db needed


def test_a_password_is_never_printed_and_the_heading_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    secret = "mysql+pymysql://ops:hunter22secret@db.example:3306/demo"
    assert explore_target(secret) == ""
    assert "set $LEDGER_DATABASE_URL to the URL given to --db" in explore_heading(secret)
    query_secret = "mysql+pymysql://ops@db.example:3306/demo?password=hunter22secret"
    assert explore_target(query_secret) == ""
    forged = "sqlite:///demo\u202egpj.db"  # a bidi override would reorder the line shown
    assert explore_target(forged) == ""
    assert "\u202e" not in explore_heading(forged)
    monkeypatch.setenv("LEDGER_DATABASE_URL", secret)  # already set: the commands need nothing
    assert explore_target(secret) == ""
    assert explore_heading(secret) == "Explore further:"


def test_a_url_the_shell_would_split_is_quoted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    assert explore_target(DEMO_DATABASE_URL) == f" --db {DEMO_DATABASE_URL}"
    odd = "sqlite:///my demo;rm -rf x.db"
    assert explore_target(odd) == " --db 'sqlite:///my demo;rm -rf x.db'"
    assert explore_target("sqlite:///ledger.db") == ""  # what the commands use anyway


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///"])
def test_an_in_memory_demo_prints_no_command_that_cannot_work(url: str, tmp_path: Path) -> None:
    """Each pasted command would open a new, empty in-memory database and fail: the demo says
    its database is gone, and how to get one to explore, instead."""
    result = shell(f"ledger demo --db {url}", tmp_path, clean_environment())
    assert result.returncode == 0, result.stdout + result.stderr
    tail = result.stdout[result.stdout.index("Explore further") :]
    assert "  ledger " not in tail, tail
    assert "ran in memory" in tail
    assert files_in(tmp_path) == []
