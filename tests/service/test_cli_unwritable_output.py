"""Standard output that cannot be written (issue 15): a full disk (``> /dev/full``) is one
``Error:`` line naming the OS's reason and exit 3, never a traceback, and ``append`` says the
events it committed; a reader that went away (``| head -1``) is no message at all. A stdin
``append`` cannot read (started without it) is one line and exit 3 too."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from service.cli.errors import (
    EXIT_ENVIRONMENT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_USAGE,
)
from tests.service.support import REPO, SAMPLE, run

# Commands that write their output to stdout, each as its arguments (with no --db).
OUTPUT_COMMANDS = [
    ("runs", "list"),
    ("runs", "show", "1"),
    ("verify",),
    ("events", "--format", "jsonl"),
    ("events",),
    ("report",),
    ("status", "--format", "json"),
    ("audit", "1"),
]
FULL_DISK = "Error: cannot write the output to stdout: No space left on device"


def ledger_writing_to(stdout: int, db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``ledger`` command as a process (its console script's entry), stdout ``stdout``."""
    return subprocess.run(
        [sys.executable, "-c", "from service.launch import main; main()", *args, "--db", db_url],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


@contextmanager
def full_disk() -> Iterator[int]:
    descriptor = os.open("/dev/full", os.O_WRONLY)
    try:
        yield descriptor
    finally:
        os.close(descriptor)


@contextmanager
def closed_pipe() -> Iterator[int]:
    """The writing end of a pipe whose reader is gone, as ``| head -1`` leaves it."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        yield writer
    finally:
        os.close(writer)


@pytest.fixture
def sample_db(db_url: str) -> str:
    assert run("append", str(SAMPLE), "--db", db_url).exit_code == 0
    assert run("project", "--db", db_url).exit_code == 0  # for runs list, runs show, report
    return db_url


pytestmark = pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")


@pytest.mark.parametrize("args", OUTPUT_COMMANDS, ids=" ".join)
def test_a_full_disk_under_stdout_is_one_line_and_exit_3(sample_db: str, args: tuple[str]) -> None:
    with full_disk() as stdout:
        done = ledger_writing_to(stdout, sample_db, *args)
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr
    assert done.stderr == FULL_DISK + "\n"


@pytest.mark.parametrize("args", OUTPUT_COMMANDS, ids=" ".join)
def test_a_reader_that_went_away_is_no_message(sample_db: str, args: tuple[str]) -> None:
    with closed_pipe() as stdout:
        done = ledger_writing_to(stdout, sample_db, *args)
    assert done.stderr == ""
    assert done.returncode == EXIT_PROBLEM  # Python's own exit code for SIGPIPE


def test_append_under_a_full_disk_says_the_events_were_appended(db_url: str) -> None:
    with full_disk() as stdout:
        done = ledger_writing_to(stdout, db_url, "append", str(SAMPLE))
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr
    assert done.stderr == (
        f"{FULL_DISK}; the 7 event(s) WERE appended, at positions 1 to 7 (runs "
        "nightly-source-1=1, nightly-source-2=2): do not append them again\n"
    )
    assert run("events", "--format", "jsonl", "--db", db_url).output.count("\n") == 7

    with full_disk() as stdout:  # the same lines again: their event_ids are there already
        again = ledger_writing_to(stdout, db_url, "append", str(SAMPLE))
    assert again.returncode == EXIT_ENVIRONMENT, again.stderr
    assert again.stderr == f"{FULL_DISK}; nothing new was appended (7 duplicate(s))\n"


def test_append_to_a_reader_that_went_away_appends_quietly(db_url: str) -> None:
    with closed_pipe() as stdout:
        done = ledger_writing_to(stdout, db_url, "append", str(SAMPLE))
    assert done.stderr == ""
    assert done.returncode == EXIT_PROBLEM
    assert run("events", "--format", "jsonl", "--db", db_url).output.count("\n") == 7


LEDGER = (sys.executable, "-c", "from service.launch import main; main()")


def ledger_without(descriptor: int, db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``ledger`` command started with standard descriptor ``descriptor`` closed
    (``>&-`` or ``2>&-``, as a daemon or a careless script starts it); the other one piped."""
    command = [*LEDGER, *args]
    return subprocess.run(
        ["sh", "-c", f'exec "$@" {descriptor}>&-', "sh", *command, "--db", db_url],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("args", OUTPUT_COMMANDS[:4], ids=" ".join)
def test_a_closed_stdout_is_one_line_and_exit_3(sample_db: str, args: tuple[str]) -> None:
    done = ledger_without(1, sample_db, *args)
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr
    assert done.stderr == "Error: cannot write the output to stdout: Bad file descriptor\n"


def test_a_report_to_a_stdout_started_without_is_refused_by_name_too(sample_db: str) -> None:
    """`ledger report --output /dev/stdout >&-` wrote the report into the /dev/null held in
    stdout's place and said "report written to /dev/stdout", exit 0, where `ledger report
    >&-` is refused: it is refused the same way, however the path is spelled."""
    for path in ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"):
        done = ledger_without(1, sample_db, "report", "--output", path)
        assert done.returncode == EXIT_ENVIRONMENT, (path, done.stderr)
        assert done.stderr == (
            f"Error: cannot write the report to {path}: Bad file descriptor (started without it)\n"
        )


def test_append_with_stdout_closed_appends_and_says_so(db_url: str) -> None:
    # Descriptor 1 closed is the next one the process opens (the SQLite file, a socket): it is
    # held on /dev/null, so nothing meant for stdout reaches the database.
    done = ledger_without(1, db_url, "append", str(SAMPLE))
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr
    assert "the 7 event(s) WERE appended" in done.stderr
    assert "Traceback" not in done.stderr
    assert run("verify", "--db", db_url).exit_code == 0


def test_a_closed_stderr_keeps_errors_out_of_stdout(db_url: str) -> None:
    done = ledger_without(2, db_url, "runs", "show", "999")
    assert done.returncode == 2
    assert done.stdout == ""  # the error was click's stdout fallback: mixed into the output


def test_append_started_without_stdin_is_one_line_and_exit_3(db_url: str) -> None:
    """``ledger append`` (stdin by default) under ``<&-``, as a daemon or a careless script
    starts it: click found no ``sys.stdin`` and raised RuntimeError, a traceback and exit 1.
    One line naming stdin and the reason, as a closed stdout, exit 3; nothing appended; a
    FILE given is read as ever."""
    for args in (["append"], ["append", "-"]):
        done = ledger_without(0, db_url, *args)
        assert done.returncode == EXIT_ENVIRONMENT, done.stderr
        assert done.stderr == (
            "Error: cannot read the events from stdin: Bad file descriptor (started without "
            "it); give a FILE\n"
        ), done.stderr
    assert (
        json.loads(run("status", "--format", "json", "--db", db_url).stdout)["head_position"] == 0
    )
    # Named as a path, stdin is the /dev/null held in its place: it appended nothing, exit 0.
    for path in ("/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"):
        done = ledger_without(0, db_url, "append", path)
        assert done.returncode == EXIT_ENVIRONMENT, (path, done.stdout, done.stderr)
        assert done.stderr == (
            f"Error: cannot read the events from {path}: Bad file descriptor (started without "
            "it); give a FILE\n"
        ), done.stderr
    assert (
        json.loads(run("status", "--format", "json", "--db", db_url).stdout)["head_position"] == 0
    )
    given = ledger_without(0, db_url, "append", str(SAMPLE))
    assert given.returncode == 0, given.stderr
    # With a stdin, /dev/stdin is read as ever.
    piped = subprocess.run(
        [*LEDGER, "append", "/dev/stdin", "--db", db_url],
        input=SAMPLE.read_text(encoding="utf-8"),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["duplicates"] == 7  # the FILE's events, read again


def test_append_started_without_stdin_refuses_stdin_however_its_path_is_spelled(
    db_url: str, tmp_path: Path
) -> None:
    """Only three spellings of stdin's path were refused under ``<&-`` (review 31): a symbolic
    link to ``/dev/stdin`` (a script's ``in`` link), ``//dev/stdin`` or
    ``/proc/thread-self/fd/0`` read the ``/dev/null`` held in its place and appended nothing,
    exit 0. A FILE that is a link to a real file is read as ever."""
    link = tmp_path / "events-in"
    link.symlink_to("/dev/stdin")
    hop = tmp_path / "hop"
    hop.symlink_to(link)
    dev = tmp_path / "dev"
    dev.symlink_to("/dev")
    for path in (
        str(link),
        str(hop),
        "//dev/stdin",
        "/dev/./stdin",
        f"{dev}/stdin",
        "/proc/thread-self/fd/0",
        "/dev/fd/../fd/0",
    ):
        done = ledger_without(0, db_url, "append", path)
        assert done.returncode == EXIT_ENVIRONMENT, (path, done.stdout, done.stderr)
        assert "Bad file descriptor (started without it)" in done.stderr, (path, done.stderr)
    assert (
        json.loads(run("status", "--format", "json", "--db", db_url).stdout)["head_position"] == 0
    )
    sample = tmp_path / "sample-link"
    sample.symlink_to(SAMPLE)
    given = ledger_without(0, db_url, "append", str(sample))
    assert given.returncode == 0, given.stderr
    assert json.loads(given.stdout)["appended"] == 7


# Linux's fcntl commands for a pipe's capacity (Python's fcntl names them from 3.10 only on
# some builds).
F_SETPIPE_SZ = 1031
F_GETPIPE_SZ = 1032
DEADLINE_S = 60.0


@contextmanager
def non_blocking_pipe() -> Iterator[tuple[int, int, Callable[[], None]]]:
    """A pipe (reader, writer) whose writing end is O_NONBLOCK, as Node.js's child_process and
    some supervisors hand a child its stdout, holding as little as the kernel allows; and the
    call that closes this process's writer once the child holds it. Each end is closed once:
    closed again, its number may by then be another file's (a thread's MariaDB socket)."""
    reader, writer = os.pipe()
    open_ends = [reader, writer]

    def hand_over() -> None:
        open_ends.remove(writer)
        os.close(writer)

    try:
        fcntl.fcntl(writer, fcntl.F_SETFL, fcntl.fcntl(writer, fcntl.F_GETFL) | os.O_NONBLOCK)
        fcntl.fcntl(writer, F_SETPIPE_SZ, 4096)
        yield reader, writer, hand_over
    finally:
        for end in open_ends:
            os.close(end)


def _pending(reader: int) -> int:
    return int.from_bytes(fcntl.ioctl(reader, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)


@pytest.mark.parametrize(
    "args",
    [("--output", "/dev/stdout"), ()],
    ids=["--output /dev/stdout", "stdout"],
)
def test_a_report_to_a_non_blocking_pipe_waits_for_its_reader(
    sample_db: str, args: tuple[str, ...]
) -> None:
    """A non-blocking stdout whose reader is behind: the report by name (written through the
    descriptor since it keeps the shell's offset) stopped at the pipe's capacity, "Resource
    temporarily unavailable", exit 3; on stdout, a BlockingIOError traceback and exit 120.
    Both wait for the reader, as on a blocking pipe (the report by name had a blocking file of
    its own before it wrote through the descriptor)."""
    command = [sys.executable, "-c", "from service.launch import main; main()", "report"]
    with non_blocking_pipe() as (reader, writer, hand_over):
        capacity = fcntl.fcntl(writer, F_GETPIPE_SZ)
        process = subprocess.Popen(
            [*command, "--format", "json", *args, "--db", sample_db],
            stdout=writer,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        hand_over()
        try:
            # Read nothing until the report filled the pipe (or the process ended): its next
            # write would block.
            deadline = time.monotonic() + DEADLINE_S
            while _pending(reader) < capacity and process.poll() is None:
                assert time.monotonic() < deadline, "the report neither filled the pipe nor ended"
                time.sleep(0.01)
            output = b"".join(iter(lambda: os.read(reader, 65536), b""))
            _, errors = process.communicate(timeout=DEADLINE_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert len(output) > capacity  # else no write would have waited
    assert process.returncode == EXIT_OK, errors.decode()
    assert all(condition["passed"] for condition in json.loads(output)["conditions"])


def test_a_report_to_a_descriptor_not_open_is_the_callers_mistake(sample_db: str) -> None:
    """`report --output /dev/fd/9` without a `9>` redirection names no file: exit 2, "No such
    file or directory", as before it was written through the descriptor (then EBADF, exit 3:
    the environment's)."""
    done = ledger_writing_to(subprocess.DEVNULL, sample_db, "report", "--output", "/dev/fd/9")
    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stderr == (
        "Error: cannot write the report to /dev/fd/9: No such file or directory: not a "
        "descriptor ledger was started with\n"
    )


# Descriptors a command may open for itself (its database, a socket to MariaDB, a journal).
ITS_OWN_DESCRIPTORS = range(3, 10)


@pytest.mark.parametrize("command", ["report", "anchor"])
def test_a_descriptor_the_command_was_not_given_is_refused_not_written(
    sample_db: str, command: str
) -> None:
    """`report --output /dev/fd/3` without a `3>` redirection: descriptor 3 was the SQLite
    database the report had just read (or the socket to MariaDB), and the report was written
    into it, "report written to /dev/fd/3", the ledger "not a database" from then on; `anchor`
    appended the anchor to it. Each such descriptor is refused, exit 2, the ledger as it was."""
    for descriptor in ITS_OWN_DESCRIPTORS:
        path = f"/dev/fd/{descriptor}"
        done = ledger_writing_to(subprocess.DEVNULL, sample_db, command, "--output", path)
        assert done.returncode == EXIT_USAGE, (path, done.stderr)
        assert "not a descriptor ledger was started with" in done.stderr, (path, done.stderr)
    checked = ledger_writing_to(subprocess.PIPE, sample_db, "verify")
    assert checked.returncode == EXIT_OK, checked.stderr


def _events_to_fill(db_url: str, runs: int) -> None:
    """``runs`` runs of two events each: more output than a pipe holds."""
    lines = []
    for number in range(runs):
        ref = f"filler-{number}"
        lines.append(
            {
                "type": "RunStarted",
                "run_ref": ref,
                "source_id": 1,
                "connector_name": "FILLER",
                "occurred_at": "2026-01-28T01:00:00Z",
                "actor": "test",
                "event_id": f"00000000-0000-4000-8000-{number:012d}",
            }
        )
        lines.append(
            {
                "type": "RunProgressed",
                "run_ref": ref,
                "records_fetched": 1,
                "occurred_at": "2026-01-28T01:00:01Z",
                "actor": "test",
                "event_id": f"00000000-0000-4000-9000-{number:012d}",
            }
        )
    text = "".join(json.dumps(line) + "\n" for line in lines)
    assert run("append", "-", "--db", db_url, input=text).exit_code == 0


@pytest.mark.parametrize("non_blocking", [True, False], ids=["non-blocking", "blocking"])
def test_ctrl_c_while_the_reader_reads_nothing_ends_the_command(
    db_url: str, non_blocking: bool
) -> None:
    """Ctrl-C (SIGINT to ledger alone) while its stdout waits for a reader that reads nothing:
    "interrupted by Ctrl-C" was said, and then the command wrote the rest of its output as it
    exited, waiting for that reader for ever. It ends, exit 130, as cat would."""
    _events_to_fill(db_url, 40)
    # Its output begun: more than the pipe holds, so it waits for the reader now or soon.
    errors = _interrupted_while_writing(
        ["events", "--format", "jsonl", "--db", db_url],
        non_blocking,
        lambda pending, _: pending > 0,
    )
    assert errors == "\nError: interrupted by Ctrl-C (SIGINT)\n"


def _interrupted_while_writing(
    args: list[str],
    non_blocking: bool,
    waiting: Callable[[int, int], bool],
    *,
    full: bool = False,
) -> str:
    """``ledger ARGS`` writing to a pipe nobody reads, sent SIGINT once ``waiting(bytes in the
    pipe, its capacity)`` (``full``: the pipe filled before it starts, SIGINT once it waits to
    write, for a command whose output is shorter than a pipe holds): its stderr, once it ended
    with exit 130 (within the deadline: a command that waits for the reader for ever fails
    the test)."""
    with non_blocking_pipe() as (reader, writer, hand_over):
        if not non_blocking:
            fcntl.fcntl(writer, fcntl.F_SETFL, fcntl.fcntl(writer, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        capacity = fcntl.fcntl(writer, F_GETPIPE_SZ)
        if full:
            assert os.write(writer, b"\0" * capacity) == capacity
        process = subprocess.Popen(
            [*LEDGER, *args], stdout=writer, stderr=subprocess.PIPE, cwd=REPO
        )
        hand_over()
        try:
            deadline = time.monotonic() + DEADLINE_S
            while not (
                _waits_to_write_a_pipe(process.pid) if full else waiting(_pending(reader), capacity)
            ):
                assert process.poll() is None, process.stderr.read()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the output never filled the pipe"
                time.sleep(0.01)
            process.send_signal(signal.SIGINT)
            try:
                _, errors = process.communicate(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                pytest.fail("the command did not end on Ctrl-C: it waits for the reader")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == EXIT_INTERRUPTED, errors.decode()
    return str(errors.decode())


def _waits_to_write_a_pipe(pid: int) -> bool:
    """Whether process ``pid``'s main thread sleeps in a pipe's write (its stdout, full): the
    kernel's function it waits in (``pipe_write``, ``anon_pipe_write``, by version)."""
    try:
        return "pipe_write" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def test_ctrl_c_while_an_append_writes_its_summary_says_what_was_appended(
    db_url: str, tmp_path: Path
) -> None:
    """Ctrl-C while the summary of a committed append waits for a reader that reads nothing
    (its run_refs more than the pipe holds): "interrupted by Ctrl-C (SIGINT)" alone, the summary
    dropped, read as nothing appended, and the same lines appended again added every run
    again. The message says the events WERE appended, and the runs each label became."""
    lines = [
        {
            "type": "RunStarted",
            "run_ref": f"label-{number}",
            "source_id": 1,
            "connector_name": "FILLER",
            "occurred_at": "2026-01-28T01:00:00Z",
            "actor": "test",
            "event_id": f"00000000-0000-4000-8000-{number:012d}",
        }
        for number in range(400)
    ]
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    # The summary filled the pipe: its write waits for the reader, after the commit.
    errors = _interrupted_while_writing(
        ["append", str(source), "--db", db_url], False, lambda pending, full: pending >= full
    )
    message = errors.splitlines()[-1]
    assert message.startswith(
        "Error: interrupted by Ctrl-C (SIGINT) while writing the output; the 400 event(s) WERE "
        "appended, at positions 1 to 400 (runs label-0=1, label-1=2, "
    ), message
    assert message.endswith("label-399=400): do not append them again"), message


def _command_that_commits(db_url: str, command: str) -> tuple[list[str], str]:
    """``command``'s arguments (with no --db), with what it is ready to commit (a stuck run
    to time out, an open run to fail, two events to apply), and what it says it did."""
    line = {
        "type": "RunStarted",
        "run_ref": "silent",
        "source_id": 1,
        "connector_name": "SILENT",
        "occurred_at": "2026-01-28T01:00:00Z",  # silent since: stuck, as sweep judges it
        "actor": "test",
    }
    appended = run("append", "-", "--db", db_url, input=json.dumps(line) + "\n")
    assert appended.exit_code == 0, appended.output
    run_id = int(json.loads(appended.stdout)["run_refs"]["silent"])
    if command == "sweep":
        return ["sweep"], f"1 stuck run(s) WERE timed out (run {run_id})"
    if command == "runs fail":
        return (
            ["runs", "fail", str(run_id), "--reason", "gone"],
            f"run {run_id} WAS failed, at position 2: do not fail it again",
        )
    assert run("sweep", "--db", db_url).exit_code == 0  # a second event to apply
    return ["project"], "2 event(s) WERE applied, the checkpoint at 2"


COMMANDS_THAT_COMMIT = ["sweep", "runs fail", "project"]


@pytest.mark.skipif(not Path("/proc/self/wchan").exists(), reason="no /proc/PID/wchan here")
@pytest.mark.parametrize("command", COMMANDS_THAT_COMMIT)
def test_ctrl_c_while_a_command_writes_after_its_commit_says_what_was_done(
    db_url: str, command: str
) -> None:
    """Ctrl-C while `sweep`, `runs fail` or `project` waits to write its output (a reader that
    reads nothing) said only "interrupted by Ctrl-C (SIGINT)": read as nothing done, though
    the run was timed out or failed, the events applied. The message says what was done, as
    `append`'s does."""
    args, done = _command_that_commits(db_url, command)
    errors = _interrupted_while_writing([*args, "--db", db_url], False, bool, full=True)
    assert errors.splitlines()[-1] == (
        f"Error: interrupted by Ctrl-C (SIGINT) while writing the output; {done}"
    ), errors


@pytest.mark.parametrize("command", COMMANDS_THAT_COMMIT)
def test_a_full_disk_after_a_commit_says_what_was_done(db_url: str, command: str) -> None:
    args, done = _command_that_commits(db_url, command)
    with full_disk() as stdout:
        written = ledger_writing_to(stdout, db_url, *args)
    assert written.returncode == EXIT_ENVIRONMENT, written.stderr
    assert written.stderr == f"{FULL_DISK}; {done}\n"


@pytest.mark.parametrize("command", ["report", "anchor"])
def test_output_to_stdout_by_name_whose_reader_went_away_is_no_message(
    sample_db: str, command: str
) -> None:
    """`report --output /dev/stdout` to a reader that went away said "Broken pipe", exit 3,
    where `report | head -c1` is quiet, exit 1: the same pipe, the same answer."""
    with closed_pipe() as stdout:
        done = ledger_writing_to(stdout, sample_db, command, "--output", "/dev/stdout")
    assert done.stderr == ""
    assert done.returncode == EXIT_PROBLEM
