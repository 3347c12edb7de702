"""The ledger and the spool both unusable mid-run (the database unreachable, the spool folder
read-only or the disk full): nothing can record the run's end, and it stays open for the
sweeper. Said once per kind of failure, without a traceback, and the error that ends the run
names the run left open and what will close it (``ledger sweep``), as does the exit hook."""

from __future__ import annotations

import logging
import resource
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from connectors import Connector, RunContext, Spool, SpoolDiskError
from connectors.sdk import RunLeftOpenError, _close_runs_left_open
from ledger import Ledger
from service.cli.errors import EXIT_ENVIRONMENT, exit_code_for


class _LosesBoth(Connector):
    """Reports once the database is locked (the ledger unreachable), after three heartbeats
    met the same failure."""

    name = "loses_both"

    def __init__(self, database: Path) -> None:
        super().__init__(1)
        self.database = database
        self.blocker: sqlite3.Connection | None = None
        self.recording: RunContext | None = None

    def ingest(self, run: RunContext) -> None:
        self.recording = run
        self.blocker = sqlite3.connect(str(self.database), isolation_level=None)
        self.blocker.execute("BEGIN EXCLUSIVE")
        for _ in range(3):  # what the heartbeat thread does every heartbeat_interval
            run._beat_once(heartbeat_if_empty=True)
        run.progress(fetched=5)


def test_a_run_neither_the_ledger_nor_the_spool_can_record_is_named_left_open(
    ledger: Ledger, backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if backend != "sqlite":
        pytest.skip("the ledger is made unreachable with SQLite's write lock")
    in_the_way = tmp_path / "not-a-folder"
    in_the_way.write_text("")
    broken = Spool(in_the_way / "spool")  # cannot be created: a file is in the way
    impatient = Ledger.from_url(ledger.url, sqlite_busy_timeout_ms=50)
    connector = _LosesBoth(Path(str(make_url(ledger.url).database)))
    caplog.set_level(logging.INFO, logger="connectors")

    with pytest.raises(RunLeftOpenError) as raised:
        connector.run_once(impatient, spool=broken, progress_interval=0, heartbeat_interval=3600)

    context = connector.recording
    assert context is not None
    assert connector.blocker is not None
    run_id = context.run_id
    message = str(raised.value)
    assert f"spool {broken.path}" in message  # what failed
    assert f"run {run_id} of loses_both is left open" in message
    assert "`ledger sweep` times it out" in message
    assert exit_code_for(raised.value) == EXIT_ENVIRONMENT  # the spool's (and the ledger's)
    beats = [r for r in caplog.records if "heartbeat of run" in r.getMessage()]
    assert len(beats) == 1, [r.getMessage() for r in beats]  # one line, not one per heartbeat
    assert beats[0].exc_info is None  # and no traceback
    assert "Not a directory" in beats[0].getMessage()

    caplog.clear()
    _close_runs_left_open()  # the exit hook tries once more: one line, no traceback
    closing = [r for r in caplog.records if "at exit" in r.getMessage()]
    assert len(closing) == 1
    assert closing[0].exc_info is None
    assert f"could not close run {run_id} of loses_both at exit" in closing[0].getMessage()
    assert "`ledger sweep`" in closing[0].getMessage()
    assert ledger.run(run_id).state == "open"  # type: ignore[union-attr]

    connector.blocker.execute("ROLLBACK")  # the database back: the decided outcome goes out
    connector.blocker.close()
    result = context.finish()
    assert result.status == "failed"
    assert ledger.run(run_id).state == "finished"  # type: ignore[union-attr]
    impatient.close()


class _LosesBothOnAFullDisk(_LosesBoth):
    """As :class:`_LosesBoth`, on a host whose disk is full from then on: no file of this
    process may grow (RLIMIT_FSIZE 0; Python ignores SIGXFSZ, so SQLite's writes fail as on a
    full disk) until the caller gives the disk back (:meth:`disk_back`)."""

    limits: tuple[int, int] | None = None

    def ingest(self, run: RunContext) -> None:
        self.limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, self.limits[1]))
        super().ingest(run)

    def disk_back(self) -> None:
        if self.limits is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, self.limits)


def test_a_spool_on_a_full_disk_is_the_environment_as_the_ledgers_own_disk(
    ledger: Ledger, backend: str, tmp_path: Path
) -> None:
    # The spool's "database or disk is full" (or "disk I/O error") was a plain SpoolError: the
    # run left open exited 1, a check's code, where the README says 3, and `ledger spool
    # status` on that disk said 1, the code of events waiting.
    if backend != "sqlite":
        pytest.skip("the ledger is made unreachable with SQLite's write lock")
    spool = Spool(tmp_path / "spool")
    impatient = Ledger.from_url(ledger.url, sqlite_busy_timeout_ms=50)
    connector = _LosesBothOnAFullDisk(Path(str(make_url(ledger.url).database)))

    try:
        with pytest.raises(RunLeftOpenError) as raised:
            connector.run_once(impatient, spool=spool, progress_interval=0, heartbeat_interval=3600)
    finally:
        connector.disk_back()

    assert exit_code_for(raised.value) == EXIT_ENVIRONMENT
    cause = raised.value.__cause__
    assert isinstance(cause, SpoolDiskError), repr(cause)
    assert f"spool {spool.path}: " in str(raised.value)
    assert "the disk holding it is full, or a file-size limit" in str(raised.value)
    assert connector.blocker is not None
    context = connector.recording
    assert context is not None
    connector.blocker.execute("ROLLBACK")  # the database and the disk back: the end goes out
    connector.blocker.close()
    assert context.finish().status == "failed"
    assert ledger.run(context.run_id).state == "finished"  # type: ignore[union-attr]
    impatient.close()
