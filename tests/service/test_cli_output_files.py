"""A file named by `--output` that cannot be written exits as the same failure on standard
output does: a full disk or a permission refused is the environment's (exit 3), a path that
cannot be a file (its folder missing, a file where its folder should be) the caller's mistake
(exit 2). `report --output /dev/full` and `anchor --output /dev/full` exited 2, where `report
> /dev/full` exits 3; so did a folder this user may not write. (Issue 15, item 2.)"""

from __future__ import annotations

import os
import resource
import shlex
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from contextlib import closing
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


SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_events.jsonl"


@pytest.fixture
def sample_db(db_url: str) -> str:
    """The shipped sample, projected: a report whose conditions pass (exit 0)."""
    assert run("append", str(SAMPLE), "--db", db_url).exit_code == 0
    assert run("project", "--db", db_url).exit_code == 0
    return db_url


# A report larger than this cannot be written under RLIMIT_FSIZE: the write fails half-way
# (EFBIG; Python ignores SIGXFSZ), as on a disk that fills up while the report is written.
FILE_SIZE_LIMIT = 1024


def _under_a_file_size_limit(
    command: str, url: str, output: Path, limit: int = FILE_SIZE_LIMIT
) -> subprocess.CompletedProcess[str]:
    """``ledger COMMAND --output OUTPUT`` in a process that may write no file past ``limit``
    bytes: a disk that fills up part-way through the write."""

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "service.cli", command, "--db", url, "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_file_size,
        check=False,
    )


def test_a_report_that_cannot_be_written_whole_leaves_the_old_one(
    sample_db: str, tmp_path: Path
) -> None:
    """`ledger report --output report.txt` on a disk that filled up half-way left the first
    2048 bytes of the new report in place of the old one, cut mid-line, and exited 3: a proof
    report that reads as a whole one. The old report now stays as it was, and no partial file
    is left beside it."""
    db_url = sample_db
    output = tmp_path / "reports" / "report.txt"
    output.parent.mkdir()
    assert run("report", "--db", db_url, "--output", str(output)).exit_code == 0
    before = output.read_text(encoding="utf-8")
    assert len(before.encode()) > FILE_SIZE_LIMIT
    url = db_url
    if db_url.startswith("sqlite:///"):  # SQLite would write its -shm beside the ledger
        url = f"sqlite:///file:{db_url.removeprefix('sqlite:///')}?immutable=1&uri=true"
    done = _under_a_file_size_limit("report", url, output)
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr
    assert done.stderr == f"Error: cannot write the report to {output}: File too large\n"
    assert output.read_text(encoding="utf-8") == before
    assert [path.name for path in output.parent.iterdir()] == ["report.txt"]


def test_a_report_replaces_the_file_keeping_its_mode_and_link(
    sample_db: str, tmp_path: Path
) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    output = folder / "report.txt"
    output.write_text("an old report\n")
    output.chmod(0o640)
    link = folder / "latest.txt"
    link.symlink_to(output.name)
    assert run("report", "--db", sample_db, "--output", str(link)).exit_code == 0
    assert link.is_symlink()
    assert output.read_text(encoding="utf-8").startswith("INGESTION_RUNS PROOF REPORT")
    assert stat.S_IMODE(output.stat().st_mode) == 0o640
    assert sorted(path.name for path in folder.iterdir()) == ["latest.txt", "report.txt"]


def test_a_report_file_this_user_may_not_write_is_not_replaced(db_url: str) -> None:
    """A report file made read-only (an archived proof) in a folder the user may write: the
    rename beside it needs only the folder's permission, and replaced the file that writing
    it in place refused (Permission denied, exit 3). It is refused as before, left as it is."""
    folder = Path(tempfile.mkdtemp(prefix="ledger-output-"))
    try:
        folder.chmod(0o777)
        url = db_url
        if db_url.startswith("sqlite:///"):
            database = folder / "ledger.db"
            shutil.copyfile(db_url.removeprefix("sqlite:///"), database)
            database.chmod(0o666)
            url = f"sqlite:///{database}"
        archived = folder / "archived.txt"
        archived.write_text("the archived report\n")
        archived.chmod(0o444)
        outcomes = as_another_user(
            lambda: [("report", run("report", "--db", url, "--output", str(archived)))]
        )
        kept = archived.read_text()
    finally:
        shutil.rmtree(folder)
    [(_, code, output)] = outcomes
    assert code == EXIT_ENVIRONMENT, output
    assert "Permission denied" in output
    assert kept == "the archived report\n"


def test_a_report_to_standard_output_by_name_keeps_what_the_shell_wrote_around_it(
    sample_db: str, tmp_path: Path
) -> None:
    """`{ echo before; ledger report --output /dev/stdout; echo after; } > out`: the report
    renamed a new file over `out` (the name resolves to the file the descriptor is on), and
    `after` went to the replaced file, lost. Written through the descriptor itself, `out`
    holds all three in order; with `>>` too, and through a link to /dev/stdout."""
    link = tmp_path / "to-stdout"
    link.symlink_to("/dev/stdout")
    out = tmp_path / "out.txt"
    ledger = f"{shlex.quote(sys.executable)} -m service.cli report --db {shlex.quote(sample_db)}"
    for output, redirect in (("/dev/stdout", ">"), ("/dev/stdout", ">>"), (str(link), ">")):
        out.write_text("kept\n")
        script = (
            f"{{ echo before; {ledger} --output {shlex.quote(output)}; echo after; }} "
            f"{redirect} {shlex.quote(str(out))}"
        )
        done = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == f"report written to {output}\n"
        lines = out.read_text(encoding="utf-8").splitlines()
        first = ["kept", "before"] if redirect == ">>" else ["before"]
        assert lines[: len(first) + 1] == [*first, "INGESTION_RUNS PROOF REPORT"], lines[:3]
        assert lines[-2:] == ["Result: 6/6 conditions pass", "after"], lines[-3:]


def _ledger(
    *args: str, stdin: int | None = None, stdout: int = subprocess.PIPE, **options: object
) -> subprocess.CompletedProcess[str]:
    """``ledger ARGS`` as a process (its descriptors as a shell would give them)."""
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "service.cli", *args],
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=False,
        **options,
    )


def test_the_ledgers_own_sqlite_file_is_refused_as_output(tmp_path: Path) -> None:
    """`ledger report --output ledger.db` renamed the report over the SQLite ledger ("report
    written", exit 0; "file is not a database" from then on, the history gone); `anchor
    --output ledger.db` appended its line to it. Refused, exit 2, however the file is named
    (relative, a symbolic or hard link, its WAL or journal, /dev/stdout redirected to it),
    the ledger as it was. (SQLite only: a MariaDB ledger's files are the server's.)"""
    database = tmp_path / "ledger.db"
    url = f"sqlite:///{database}"
    assert run("append", str(SAMPLE), "--db", url).exit_code == 0
    (tmp_path / "link.db").symlink_to(database)
    os.link(database, tmp_path / "hard.db")
    before = database.read_bytes()
    for name in (
        "ledger.db",
        "./ledger.db",
        "link.db",
        "hard.db",
        "ledger.db-wal",
        "ledger.db-journal",
    ):
        for command in ("report", "anchor"):
            done = _ledger(command, "--db", url, "--output", name, cwd=tmp_path)
            assert done.returncode == EXIT_USAGE, (command, name, done.stderr)
            assert f"it is the ledger's own database file {tmp_path}/" in done.stderr, done.stderr
            assert "Traceback" not in done.stderr
    with database.open("ab") as redirected:  # `ledger anchor --output /dev/stdout >> ledger.db`
        done = _ledger("anchor", "--db", url, "--output", "/dev/stdout", stdout=redirected.fileno())
    assert done.returncode == EXIT_USAGE, done.stderr
    assert database.read_bytes() == before
    assert not (tmp_path / "ledger.db-journal").exists()
    assert run("verify", "--db", url).exit_code == 0


def test_anchor_to_a_pipe_is_written_as_a_report_is(db_url: str, tmp_path: Path) -> None:
    """`ledger anchor --output /dev/stdout | cat` and a FIFO failed, "Illegal seek", exit 3,
    where `report --output` writes to a pipe: the line is written to the stream as it is (no
    file to read back or fsync). /dev/null took the line too (it was "Invalid argument")."""
    script = (
        f"{shlex.quote(sys.executable)} -m service.cli anchor --db {shlex.quote(db_url)} "
        "--output /dev/stdout | cat"
    )
    piped = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert piped.returncode == 0, piped.stderr
    line = run("anchor", "--db", db_url).stdout
    assert piped.stdout == line
    assert piped.stderr == f"appended to /dev/stdout: {line}"
    fifo = tmp_path / "anchors.fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    try:
        done = _ledger("anchor", "--db", db_url, "--output", str(fifo))
        read, _ = reader.communicate(timeout=120)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert done.returncode == 0, done.stderr
    assert read == line
    null = _ledger("anchor", "--db", db_url, "--output", "/dev/null")
    assert null.returncode == 0, null.stderr


def test_standard_input_or_a_descriptor_open_for_reading_is_refused_as_output(
    db_url: str, tmp_path: Path
) -> None:
    """`--output /dev/stdin` was exit 3, "Bad file descriptor" (the environment's), and
    `anchor`, its stdin a file, appended the anchor to that input file. A descriptor given
    only for reading (`3< file`) is the same mistake. Exit 2 naming the path; nothing written."""
    given = tmp_path / "input.txt"
    given.write_text("the input\n")
    for command in ("report", "anchor"):
        for path in ("/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"):
            with given.open("rb") as stdin:
                done = _ledger(command, "--db", db_url, "--output", path, stdin=stdin.fileno())
            assert done.returncode == EXIT_USAGE, (command, path, done.stderr)
            assert path in done.stderr
            assert "it is standard input, which is read, not written" in done.stderr
        with given.open("rb") as readable:
            done = _ledger(
                command,
                "--db",
                db_url,
                "--output",
                f"/dev/fd/{readable.fileno()}",
                pass_fds=(readable.fileno(),),
            )
        assert done.returncode == EXIT_USAGE, (command, done.stderr)
        assert "was given open for reading only" in done.stderr
    assert given.read_text() == "the input\n"


def test_an_anchor_that_cannot_be_written_whole_leaves_the_file_as_it_was(
    sample_db: str, tmp_path: Path
) -> None:
    """An anchor appended to a disk that filled up half-way (here a file-size limit the line
    crosses) left the start of its line at the file's end, which `verify --anchor` then
    refused as malformed (exit 2); a file it had just created was left empty, "no anchor line
    in the file". The file is now as it was, and one it created is removed."""
    url = sample_db
    if sample_db.startswith("sqlite:///"):  # SQLite would write its -shm beside the ledger
        database = sample_db.removeprefix("sqlite:///")
        with closing(sqlite3.connect(database)) as connection:  # immutable reads no WAL
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        url = f"sqlite:///file:{database}?immutable=1&uri=true"
    line = run("anchor", "--db", sample_db).stdout
    kept = tmp_path / "anchors.txt"
    kept.write_text(line * (FILE_SIZE_LIMIT // len(line)))  # the next line crosses the limit
    before = kept.read_text()
    done = _under_a_file_size_limit("anchor", url, kept)
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr
    assert done.stderr == f"Error: {kept}: cannot append to the anchor file (File too large)\n"
    assert kept.read_text() == before
    assert run("verify", "--db", sample_db, "--anchor", str(kept)).exit_code == 0
    new = tmp_path / "new.txt"
    done = _under_a_file_size_limit("anchor", url, new, len(line) // 2)
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr
    assert not new.exists()
