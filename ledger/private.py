"""Folders and files the ledger creates for its own facts, private to their owner whatever the
umask: the connectors' spool (their error messages and details) and the anchor file (evidence).

Only what is created here gets the private mode: a folder or file that is already there (the
operator's own, made with the mode they chose) is left as it is. The mode is set with chmod
after creating, because the umask may have taken the owner's own bits away as well.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600


def make_private_folder(folder: Path) -> None:
    """Create ``folder`` and any missing parent, each 0700; those already there are left
    alone. Raises OSError (as ``Path.mkdir`` does) when one cannot be made."""
    missing: list[Path] = []
    current = folder
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=PRIVATE_FOLDER)
        except FileExistsError:  # another process made it first: its mode is its own
            continue
        os.chmod(path, PRIVATE_FOLDER)


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty with mode 0600 if it is not there; True if this call created it.
    A file already there (whatever its mode) is left as it is."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return False
    try:
        os.fchmod(descriptor, PRIVATE_FILE)
    finally:
        os.close(descriptor)
    return True


__all__ = ["PRIVATE_FILE", "PRIVATE_FOLDER", "create_private_file", "make_private_folder"]
