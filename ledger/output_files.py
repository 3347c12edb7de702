"""Files a command writes for the caller (``ledger report --output``, ``ledger anchor
--output``, serve's ``[anchor] path``), and whose fault it is when one cannot be written.

A path that cannot be a file (its folder does not exist, it is a folder, a file stands where
a folder should) is the caller's mistake: exit 2, fix the path. Permission refused, a full
disk or quota, a read-only file system, an I/O error are the environment's: exit 3, as the
same failure on standard output (``ledger report > /dev/full``) and on a SQLite ledger file
are. Both had exited 2 for any OSError.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
from contextlib import suppress
from pathlib import Path

from ledger.descriptors import own_descriptor, write_all
from ledger.errors import LedgerError, OutputFileError, ValidationError
from ledger.urls import path_state, sqlite_file_or_none

# The errors of a path the caller got wrong: nothing about the machine would make it work.
CALLERS_PATH_ERRNOS = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP}
)


# The files SQLite keeps a database in: the file itself, its rollback journal, its WAL and the
# WAL's shared-memory index. Any of them written over is the ledger lost or corrupted.
SQLITE_FILE_SUFFIXES = ("", "-journal", "-wal", "-shm")


class RefusedOutputPath(OSError):
    """A path refused before anything is written to it, for a reason that is the caller's
    mistake whatever its errno (standard input, the ledger's own database file)."""


def database_file_named(path: str | os.PathLike[str], database_url: str) -> Path | None:
    """The file of the SQLite ledger at ``database_url`` (or its journal, WAL, shared-memory
    index) that ``path`` names, however it is spelled (a relative path, a symbolic or hard
    link, ``/dev/stdout`` redirected to it), else None: a report written there replaced the
    ledger with text ("file is not a database" from then on); an anchor was appended to it."""
    database = sqlite_file_or_none(database_url)
    if database is None:
        return None
    wanted = os.path.realpath(path)
    try:
        found = os.stat(path)
    except OSError:
        found = None  # not there yet: only its name can be the database's (its -wal to come)
    for suffix in SQLITE_FILE_SUFFIXES:
        companion = Path(f"{database}{suffix}")
        if wanted == os.path.realpath(companion):
            return companion
        with suppress(OSError):
            if found is not None and os.path.samestat(found, os.stat(companion)):
                return companion
    return None


def wrong_file_path(path: Path) -> bool:
    """Whether ``path`` cannot be a file for the caller's mistake: it is a folder, or its
    folder does not exist (or is a file). Otherwise a file that cannot be opened or created
    is this user's permission, or the disk: the environment's. For a failure that gives no
    errno (SQLite's "unable to open database file")."""
    return path_state(path) in ("folder", "impossible") or path_state(path.parent) in (
        "missing",
        "file",
        "impossible",
    )


def output_file_error(
    path: str | os.PathLike[str],
    error: OSError,
    message: str,
    mistake: type[ValidationError] = ValidationError,
) -> LedgerError:
    """``message`` (about writing ``path``, which failed with ``error``) as the caller's
    mistake (``mistake``, exit 2) or the environment's failure (:class:`OutputFileError`,
    exit 3). The caller raises it ``from error``."""
    if (
        isinstance(error, RefusedOutputPath)
        or error.errno in CALLERS_PATH_ERRNOS
        or (error.errno is None and wrong_file_path(Path(path)))
    ):
        return mistake(message)
    return OutputFileError(message)


def write_whole(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all: a regular file (or none yet) is
    written beside it and renamed over it, so a full disk, a quota or Ctrl-C half-way leaves
    the file that was there as it was, not a report cut mid-line that reads as a whole one.
    This process's own descriptor (``/dev/stdout``, ``/dev/fd/3``, a link to one) is written
    through that descriptor; anything else that is not a regular file (a FIFO, ``/dev/full``)
    is written as it is: no file can stand in for it. Raises the OSError of the write."""
    descriptor = own_descriptor(path)
    if descriptor is not None:
        write_to_descriptor(descriptor, text.encode("utf-8"))
        return
    target = Path(os.path.realpath(path))  # a symbolic link keeps pointing at the report
    mode = _regular_file_mode(path)
    if mode == -1 or target.parts[1:2] in (("dev",), ("proc",)):
        # A device, a FIFO, another process's descriptor: no file can stand in for it.
        path.write_text(text, encoding="utf-8")
        return
    if mode is not None and not os.access(target, os.W_OK):
        # A file this user may not write (made read-only, another's) is not replaced either:
        # the rename needs only the folder's permission. Opened in place, it is refused as it
        # always was, untouched.
        path.write_text(text, encoding="utf-8")
        return
    try:
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".ledger-output-")
    except PermissionError:
        if mode is None:
            raise
        # A file this user may write in a folder it may not: it can only be written in place.
        path.write_text(text, encoding="utf-8")
        return
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp makes 0600: keep the mode a file written in place would have had.
        os.chmod(temporary, _new_file_mode() if mode is None else mode)
        os.replace(temporary, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary)
        raise


def write_to_descriptor(descriptor: int, data: bytes) -> None:
    """Write ``data`` through ``descriptor`` itself, at its offset, as the process's own
    output is written: ``{ echo a; ledger report --output /dev/stdout; echo b; } > out``
    keeps all three. What Python holds buffered for it is written first."""
    for stream in (sys.stdout, sys.stderr):
        with suppress(AttributeError, OSError, ValueError):
            if stream.fileno() == descriptor:
                stream.flush()
    # The descriptor as it is, O_NONBLOCK too (opened by name, the report had a blocking file
    # of its own): written whole however often the reader makes it wait.
    write_all(descriptor, data)


def _regular_file_mode(path: Path) -> int | None:
    """The permission bits of the regular file at ``path``, None when nothing is there, -1
    when something else is (a device, a FIFO) or it cannot be told (the write says why)."""
    try:
        found = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError:
        return -1
    return stat.S_IMODE(found) if stat.S_ISREG(found) else -1


def _new_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0666 less the umask (read by setting it,
    the only way there is, and putting it back at once)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


__all__ = [
    "CALLERS_PATH_ERRNOS",
    "SQLITE_FILE_SUFFIXES",
    "RefusedOutputPath",
    "database_file_named",
    "output_file_error",
    "write_to_descriptor",
    "write_whole",
    "wrong_file_path",
]
