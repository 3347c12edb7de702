"""A SQLite URL naming a path no ledger can be at (a name longer than the file system takes,
with or without SQLite's ``-wal`` after it, or symbolic links that loop) is the caller's
mistake: exit 2 naming the path and why, nothing left behind. It was a traceback (``OSError:
[Errno 36] File name too long``, ``[Errno 40] Too many levels of symbolic links``, exit 1) for
every command, and ``migrate`` on a name 252 to 255 bytes long made the file, failed to open
its write-ahead log, left the empty file behind and blamed this user's permissions (exit 3).
SQLite only: a MySQL/MariaDB URL names no file."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from service.cli import cli

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_events.jsonl"

COMMANDS = [
    ("runs", "list"),
    ("verify",),
    ("migrate", "--check"),
    ("import-legacy",),
    ("migrate",),
    ("demo",),
    ("append", str(SAMPLE)),
    ("run", "csv", "--source-id", "1"),
]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    monkeypatch.setenv("LEDGER_SPOOL_DIR", str(tmp_path / "spool"))
    return work


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("length", [300, 252])
def test_a_name_too_long_is_refused_naming_it(
    folder: Path, command: tuple[str, ...], length: int
) -> None:
    """300 bytes: over the file system's 255. 252 (with ``.db``, 255): a file the file system
    takes, but not its ``NAME-wal`` beside it."""
    name = "n" * (length - len(".db")) + ".db"
    result = run(*command, "--db", f"sqlite:///{name}")
    assert result.exit_code == 2, result.output
    assert f"no SQLite database can be at {folder / name} " in result.stderr
    assert f"its name is {length} bytes long" in result.stderr
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_folder_name_too_long_is_refused_naming_why(
    folder: Path, command: tuple[str, ...]
) -> None:
    url = f"sqlite:///{'d' * 300}/ledger.db"
    result = run(*command, "--db", url)
    assert result.exit_code == 2, result.output
    assert "File name too long" in result.stderr
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_symbolic_link_loop_is_refused_naming_why(folder: Path, command: tuple[str, ...]) -> None:
    (folder / "a.db").symlink_to("b.db")
    (folder / "b.db").symlink_to("a.db")
    result = run(*command, "--db", "sqlite:///a.db")
    assert result.exit_code == 2, result.output
    assert f"{folder / 'a.db'}" in result.stderr
    assert "Too many levels of symbolic links" in result.stderr
    assert sorted(path.name for path in folder.iterdir()) == ["a.db", "b.db"]


def test_a_long_name_that_fits_still_makes_a_ledger(folder: Path) -> None:
    """The hidden file a new ledger is built in adds 26 characters to its name: for a name
    that fits (with its ``-wal``) but not with them, the build failed."""
    name = "n" * (251 - len(".db")) + ".db"
    result = run("append", str(SAMPLE), "--db", f"sqlite:///{name}")
    assert result.exit_code == 0, result.output
    assert run("verify", "--db", f"sqlite:///{name}").exit_code == 0
    assert not [path for path in folder.iterdir() if path.name.endswith(".creating")]
