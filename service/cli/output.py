"""Standard output that cannot be written: one line and exit 3, never a traceback.

Every command writes through ``sys.stdout`` (``click.echo`` and rich's consoles look it up at
each write), so :func:`guard_stdout` puts a file in front of descriptor 1 whose failed writes
raise :class:`OutputError`: ``main`` tells a full disk or a closed pipe under the output from
any other OSError by its type. After the first failure the descriptor points at ``/dev/null``,
as the Python documentation's recipe for SIGPIPE does: the output is lost either way, and what
is still buffered must not fail again (a second traceback) as the interpreter exits.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ledger.descriptors import descriptor_named, is_open, own_descriptor, wait_writable
from ledger.output_files import RefusedOutputPath, database_file_named
from ledger.text import visible
from ledger.urls import mask_url

if TYPE_CHECKING:
    from typing_extensions import Buffer


class OutputError(OSError):
    """Writing the command's output (stdout) failed; ``done`` says what the command had
    already changed by then (a commit the user must not repeat), or is None."""

    def __init__(self, number: int | None, reason: str | None, done: str | None = None) -> None:
        super().__init__(number, reason)
        self.done = done

    @property
    def reader_went_away(self) -> bool:
        """A closed pipe (``| head -1``): the reader asked for no more, so nothing is said."""
        return self.errno == errno.EPIPE

    def message(self) -> str:
        line = f"cannot write the output to stdout: {self.strerror or 'error ' + str(self.errno)}"
        return line if self.done is None else f"{line}; {self.done}"


class _StdoutFile(io.FileIO):
    """Descriptor 1, its write errors as :class:`OutputError`; written as if blocking."""

    def write(self, data: Buffer, /) -> int:
        try:
            while (written := super().write(data)) is None:
                # A non-blocking stdout (a pipe its parent set O_NONBLOCK on) whose reader is
                # behind: FileIO says None, and the BufferedWriter above raised
                # BlockingIOError, a traceback and exit 120 with the output cut. Wait for it.
                wait_writable(self.fileno())
            return written
        except OSError as error:
            _discard_further_output(self.fileno())
            raise OutputError(error.errno, error.strerror) from error


def _discard_further_output(descriptor: int) -> None:
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, descriptor)
    finally:
        os.close(null)


class _ClosedStdout(io.RawIOBase):
    """Standard output the command was started without (``ledger … >&-``): its first write
    is :class:`OutputError` (EBADF, as a write to the closed descriptor would be), the rest
    are discarded, so that output still buffered does not fail again as Python exits."""

    def __init__(self) -> None:
        super().__init__()
        self._said = False

    def writable(self) -> bool:
        return True

    def write(self, data: Buffer, /) -> int:
        if not self._said:
            self._said = True
            raise OutputError(errno.EBADF, os.strerror(errno.EBADF))
        return len(memoryview(data))


class _ClosedStdin(io.RawIOBase):
    """Standard input the command was started without (``ledger append <&-``): Python leaves
    ``sys.stdin`` None and click raised RuntimeError (a traceback) where it looked for it.
    Reading it is OSError EBADF, as a read of the closed descriptor would be, which the command
    that reads stdin turns into one line."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer, /) -> int:
        raise started_without_error()


# The standard descriptors this process was started without, held on /dev/null since.
_STARTED_WITHOUT: set[int] = set()
# The descriptors this process was started with (0, 1, 2, a `3>` redirection): those its
# caller gave it. None before guard_stdout (a test's runner): then none is told apart.
_STARTED_WITH: set[int] | None = None


def names_missing_stdin(path: str) -> bool:
    """Whether ``path`` names standard input and the process was started without it: what
    it reads is the ``/dev/null`` held in its place (``ledger append /dev/stdin <&-`` appended
    nothing and said so with exit 0), so the command refuses it as it refuses ``-``."""
    return 0 in _STARTED_WITHOUT and own_descriptor(path) == 0


def names_missing_output(path: str) -> bool:
    """Whether ``path`` names standard output or error and the process was started without
    it: a report written there went to the ``/dev/null`` held in its place, "report written
    to /dev/stdout" and exit 0, as ``>&-`` is refused for a report on stdout."""
    descriptor = own_descriptor(path)
    return descriptor in (1, 2) and descriptor in _STARTED_WITHOUT


def names_descriptor_not_given(path: str) -> bool:
    """Whether ``path`` names a descriptor this process was not given (one it opened itself):
    ``report --output /dev/fd/3`` without a ``3>`` redirection found descriptor 3 open (the
    SQLite database the report was just read from, a socket to MariaDB) and wrote the report
    into it, "report written to /dev/fd/3", the database file overwritten ("file is not a
    database" from then on); ``anchor --output /dev/fd/3`` appended the anchor to it. Such a
    descriptor names no file of the caller's, as one not open at all does (ENOENT, exit 2)."""
    descriptor = descriptor_named(path)  # open or not yet: the command may open it later
    return descriptor is not None and _STARTED_WITH is not None and descriptor not in _STARTED_WITH


def output_path_refusal(path: str, database_url: str) -> OSError | None:
    """Why ``--output PATH`` must not be written, checked before anything is (the error the
    write would have raised, for the command to word), else None: a standard descriptor the
    process was started without (exit 3, as ``>&-`` is), a descriptor it was not given, its
    standard input or a descriptor open only for reading (``/dev/stdin``: exit 3, "Bad file
    descriptor", or, stdin a file, the anchor appended to the command's own input), the
    ledger's own SQLite file (the report replaced the database with text)."""
    if descriptor_named(path) == 0:
        return RefusedOutputPath(
            errno.EBADF, "it is standard input, which is read, not written: give a file"
        )
    if names_missing_output(path):
        return started_without_error()
    if names_descriptor_not_given(path):
        return not_given_error()
    descriptor = own_descriptor(path)
    if descriptor is not None and _open_for_reading_only(descriptor):
        return RefusedOutputPath(
            errno.EBADF, f"descriptor {descriptor} was given open for reading only"
        )
    database = database_file_named(path, database_url)
    if database is not None:
        return RefusedOutputPath(
            errno.EEXIST,
            f"it is the ledger's own database file {visible(str(database))} "
            f"({mask_url(database_url)}): nothing was written",
        )
    return None


def _open_for_reading_only(descriptor: int) -> bool:
    try:
        flags = fcntl.fcntl(descriptor, fcntl.F_GETFL)
    except OSError:
        return False  # the write says why
    return flags & os.O_ACCMODE == os.O_RDONLY


def not_given_error() -> OSError:
    """The error of a descriptor the command was not given (:func:`names_descriptor_not_given`)."""
    return OSError(
        errno.ENOENT, f"{os.strerror(errno.ENOENT)}: not a descriptor ledger was started with"
    )


def started_without_error() -> OSError:
    """The error of a standard descriptor the process was started without (its stdin read,
    a report written to its stdout by name)."""
    return OSError(errno.EBADF, f"{os.strerror(errno.EBADF)} (started without it)")


def _note_descriptors_given() -> None:
    """Record the descriptors open now, before the command opens any of its own. The listing's
    own descriptor is in the listing, closed by the time each is checked."""
    global _STARTED_WITH
    try:
        listed = os.listdir("/proc/self/fd")
    except OSError:  # no /proc: every open descriptor counts as given, as before
        return
    _STARTED_WITH = {int(name) for name in listed if is_open(int(name))}


def _hold_closed_descriptors() -> None:
    """Point each standard descriptor the process was started without at ``/dev/null``.

    A closed descriptor 1 is the lowest free one: the next file this process opens (the SQLite
    database, its journal, a socket to MariaDB) would get it, and anything that writes to
    descriptor 1 (a C library, a subprocess inheriting it) would write into that file."""
    for descriptor, mode in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(descriptor)
        except OSError:
            _STARTED_WITHOUT.add(descriptor)
            null = os.open(os.devnull, mode)
            if null != descriptor:
                os.dup2(null, descriptor)
                os.close(null)


def guard_stdout() -> None:
    """Make ``sys.stdout`` write its descriptor through :class:`_StdoutFile`, with the
    encoding, error handler and buffering it had; a stdout with no descriptor (replaced by a
    test's runner) is left alone, and a closed one (``sys.stdout`` None: Python's "started
    without it") becomes :class:`_ClosedStdout`, one ``Error:`` line and exit 3 at the first
    write instead of a traceback; a closed stdin becomes :class:`_ClosedStdin`."""
    _note_descriptors_given()  # before the /dev/null held for one closed, which no caller gave
    _hold_closed_descriptors()
    if sys.stdin is None:  # started without it (<&-)
        sys.stdin = io.TextIOWrapper(io.BufferedReader(_ClosedStdin()), encoding="utf-8")
    if sys.stderr is None:  # started without it (2>&-): click wrote errors to stdout instead
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    stdout = sys.stdout
    if stdout is None:
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(_ClosedStdout()), encoding="utf-8")
        return
    if not isinstance(stdout, io.TextIOWrapper):
        return
    try:
        descriptor = stdout.fileno()
    except (OSError, ValueError):
        return
    stdout.flush()
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(_StdoutFile(descriptor, "w", closefd=False)),
        encoding=stdout.encoding,
        errors=stdout.errors,
        line_buffering=stdout.line_buffering,
        write_through=stdout.write_through,  # python -u
    )


def abandon_output() -> None:
    """Drop what stdout still holds unwritten, for a command ending on Ctrl-C: its output is cut
    anyway, and writing the rest to a reader that reads nothing (a pipe whose reader was not
    interrupted with it, a supervisor's) waited for ever after "interrupted by Ctrl-C", where
    a Ctrl-C must end the command (exit 130) as it ends cat."""
    raw = getattr(getattr(sys.stdout, "buffer", None), "raw", None)
    if isinstance(raw, _StdoutFile):
        _discard_further_output(raw.fileno())


@contextmanager
def output_after(done: str) -> Iterator[None]:
    """Output written once ``done`` happened (a commit): should it fail, its message says so,
    that the user does not do it twice. A Ctrl-C while it is written (a reader that reads
    nothing, the output more than the pipe holds) says so too: "interrupted by Ctrl-C" alone,
    the output dropped, read as nothing done, and an append run again added every run again."""
    try:
        yield
    except OutputError as error:
        raise OutputError(error.errno, error.strerror, visible(done)) from error
    except KeyboardInterrupt:
        from service.cli.errors import Interrupted  # errors imports the library, output not

        raise Interrupted(
            f"interrupted by Ctrl-C (SIGINT) while writing the output; {visible(done)}"
        ) from None
