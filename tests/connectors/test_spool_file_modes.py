"""The spool holds the connectors' facts (error messages, details): whatever the umask, the
folders it creates are 0700 and its files (``spool.db`` and SQLite's ``-wal`` and ``-shm``)
0600; a folder or file the operator made keeps its mode."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from connectors import Spool
from ledger import RunProgressed
from tests.support import mode, umask


def test_a_spool_is_private_whatever_the_umask(tmp_path: Path) -> None:
    # Under umask 0 the folders were 0777 and the three files 0644: any local user could read
    # the connectors' error details, or replace the spool.
    folder = tmp_path / "var" / "spool"
    with umask(0o000):
        spool = Spool(folder)
        spool.put([RunProgressed(run_id=1, records_fetched=1)])
        # A reader holds the WAL open, so the -wal and -shm files are there to be seen.
        with closing(sqlite3.connect(spool.path)) as reader:
            reader.execute("SELECT COUNT(*) FROM spooled").fetchone()
            spool.put([RunProgressed(run_id=1, records_fetched=2)])
            files = sorted(p.name for p in folder.iterdir())
            modes = {name: mode(folder / name) for name in files}
    assert files == ["spool.db", "spool.db-shm", "spool.db-wal"]
    assert modes == dict.fromkeys(files, 0o600)
    assert (mode(tmp_path / "var"), mode(folder)) == (0o700, 0o700)
    assert spool.status().pending == 2


def test_a_folder_and_a_spool_file_the_operator_made_keep_their_mode(tmp_path: Path) -> None:
    theirs = tmp_path / "spool"
    theirs.mkdir()
    theirs.chmod(0o750)
    with umask(0o000):
        Spool(theirs).put([RunProgressed(run_id=1, records_fetched=1)])
    assert (mode(theirs), mode(theirs / "spool.db")) == (0o750, 0o600)
    older = tmp_path / "older"
    older.mkdir()
    before = mode(older)
    (older / "spool.db").touch()
    (older / "spool.db").chmod(0o640)  # made by an earlier release, or by the operator
    with umask(0o000):
        Spool(older).put([RunProgressed(run_id=1, records_fetched=1)])
    assert (mode(older), mode(older / "spool.db")) == (before, 0o640)
