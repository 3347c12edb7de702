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
from pathlib import Path

from ledger.errors import LedgerError, OutputFileError, ValidationError
from ledger.urls import path_state

# The errors of a path the caller got wrong: nothing about the machine would make it work.
CALLERS_PATH_ERRNOS = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP}
)


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
    if error.errno in CALLERS_PATH_ERRNOS or (error.errno is None and wrong_file_path(Path(path))):
        return mistake(message)
    return OutputFileError(message)


__all__ = ["CALLERS_PATH_ERRNOS", "output_file_error", "wrong_file_path"]
