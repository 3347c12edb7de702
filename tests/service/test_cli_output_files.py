"""A file named by `--output` that cannot be written exits as the same failure on standard
output does: a full disk or a permission refused is the environment's (exit 3), a path that
cannot be a file (its folder missing, a file where its folder should be) the caller's mistake
(exit 2). `report --output /dev/full` and `anchor --output /dev/full` exited 2, where `report
> /dev/full` exits 3; so did a folder this user may not write. (Issue 15, item 2.)"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from service.cli import cli
from service.cli.errors import EXIT_ENVIRONMENT, EXIT_USAGE
from tests.support import as_another_user

DEV_FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not DEV_FULL.exists(), reason="no /dev/full here")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@needs_dev_full
def test_a_full_disk_under_output_is_the_environment(db_url: str) -> None:
    report = run("report", "--db", db_url, "--output", str(DEV_FULL))
    assert report.exit_code == EXIT_ENVIRONMENT, report.output
    assert report.stderr == (
        "Error: cannot write the report to /dev/full: No space left on device\n"
    )
    anchor = run("anchor", "--db", db_url, "--output", str(DEV_FULL))
    assert anchor.exit_code == EXIT_ENVIRONMENT, anchor.output
    assert anchor.stderr == (
        "Error: /dev/full: cannot append to the anchor file (No space left on device)\n"
    )


def test_an_output_path_that_cannot_be_a_file_is_the_callers_mistake(
    db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    for path in (tmp_path / "missing" / "out.txt", tmp_path / "a-file" / "out.txt"):
        for command in ("report", "anchor"):
            result = run(command, "--db", db_url, "--output", str(path))
            assert result.exit_code == EXIT_USAGE, (command, path, result.output)
            assert str(path) in result.stderr
        assert not path.parent.is_dir()


def test_a_folder_this_user_may_not_write_is_the_environment(db_url: str) -> None:
    """As another user (root writes into any folder, so a root run forks one that is not).
    Under /tmp, not pytest's tmp_path: the other user must reach the folder; a SQLite ledger
    is copied there, writable (WAL mode writes beside it even to read)."""
    folder = Path(tempfile.mkdtemp(prefix="ledger-output-"))
    try:
        folder.chmod(0o777)
        url = db_url
        if db_url.startswith("sqlite:///"):
            database = folder / "ledger.db"
            shutil.copyfile(db_url.removeprefix("sqlite:///"), database)
            database.chmod(0o666)
            url = f"sqlite:///{database}"
        read_only = folder / "read-only"
        read_only.mkdir(mode=0o555)
        read_only.chmod(0o555)  # whatever the umask
        outcomes = as_another_user(
            lambda: [
                (command, run(command, "--db", url, "--output", str(read_only / "out.txt")))
                for command in ("report", "anchor")
            ]
        )
    finally:
        shutil.rmtree(folder)
    for command, code, output in outcomes:
        assert code == EXIT_ENVIRONMENT, (command, output)
        assert f"{read_only / 'out.txt'}" in output
        assert "Permission denied" in output


def test_a_new_sqlite_file_under_a_file_is_the_callers_mistake(tmp_path: Path) -> None:
    """SQLite says only "unable to open database file"; the classifier of output paths says
    whose fault it is. A file where the folder should be was "may not open or create it",
    exit 3, as if a permission were missing."""
    (tmp_path / "a-file").write_text("")
    result = run("migrate", "--db", f"sqlite:///{tmp_path / 'a-file' / 'new.db'}")
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"{tmp_path / 'a-file'} is a file, not a folder" in result.stderr
