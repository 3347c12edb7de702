"""The spool, on SQLite and on MariaDB: during an outage (SQLite's write lock, a cut proxy in
front of MariaDB) events wait in it and are delivered in order once the database is back;
counts survive a failed send when the spool cannot be written either; an event today's rules
refuse is set aside without blocking the rest; ``ledger spool flush`` and ``ledger spool
status``, their usage errors, a status that creates no folder, and a corrupt spool named as
such."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from connectors import RunContext, Spool
from ledger import Ledger, RunProgressed, StorageError
from ledger.events import RECORDED_NAMES
from service.cli import cli
from tests.connectors.support import run_events, totals, write
from tests.reliability.fault_proxy import FaultProxy
from tests.support import sqlite_without_schema


def test_sqlite_outage_spools_then_delivers_in_order(
    ledger: Ledger, backend: str, spool: Spool
) -> None:
    if backend != "sqlite":
        pytest.skip("the MariaDB outage goes through a TCP proxy (next test)")
    path = make_url(ledger.url).database
    impatient = Ledger.from_url(ledger.url, sqlite_busy_timeout_ms=50)
    with RunContext(impatient, 1, "SOURCE_1", spool=spool, progress_interval=0) as run:
        run.progress(fetched=1)
        blocker = sqlite3.connect(str(path), isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
        run.progress(fetched=2)
        run.progress(fetched=4)
        assert spool.status().pending == 2
        blocker.execute("ROLLBACK")
        blocker.close()
        run.progress(fetched=8)  # delivers the spooled two first, then itself
        assert not spool.has_pending()
    assert run.result is not None
    assert run.result.spooled
    events = run_events(ledger, run.run_id)
    assert [e.payload_data.get("records_fetched") for e in events[1:-1]] == [1, 2, 4, 8]
    assert [e.version for e in events] == list(range(1, 7))
    assert events[-1].type == "RunFinished"


def test_mariadb_outage_through_a_cut_proxy(
    ledger: Ledger, backend: str, db_url: str, spool: Spool
) -> None:
    if backend != "mysql":
        pytest.skip("needs a server to put a proxy in front of")
    url = make_url(db_url)
    proxy = FaultProxy((url.host or "127.0.0.1", url.port or 3306))
    proxied = Ledger.from_url(
        url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    )
    try:
        with RunContext(proxied, 1, "SOURCE_1", spool=spool, progress_interval=0) as run:
            for _ in range(3):
                run.progress(fetched=1, created=1)
            proxy.outage()
            for _ in range(3):
                run.progress(fetched=10, created=10)
            run.error("one bad record")
            assert spool.status().pending == 3
            proxy.restore()
            run.progress(fetched=100, skipped=100)
    finally:
        proxy.close()
        proxied.close()
    assert run.result is not None
    assert run.result.status == "partial"
    assert not spool.has_pending()
    events = run_events(ledger, run.run_id)
    assert len({e.event_id for e in events}) == len(events) == 1 + 3 + 3 + 1 + 1
    assert totals(ledger, run.run_id) == {
        "records_fetched": 133,
        "records_created": 33,
        "records_updated": 0,
        "records_skipped": 100,
        "claims_created": 0,
        "coverage_cells_updated": 0,
    }
    assert ledger.run(run.run_id).state == "finished"  # type: ignore[union-attr]


def test_spool_flush_and_status_through_the_cli(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    run_id = ledger.start_run(1, "SOURCE_1")
    local = Spool(spool_dir)
    local.put(
        [
            RunProgressed(run_id=run_id, records_fetched=5),
            RunProgressed(run_id=9999, records_fetched=1),
        ]
    )  # 9999 never started
    runner = CliRunner()
    status = runner.invoke(cli, ["spool", "status", "--spool-dir", str(spool_dir)])
    assert status.exit_code == 1
    assert "pending:   2 event(s) of 2 run(s)" in status.output
    flushed = runner.invoke(cli, ["spool", "flush", "--spool-dir", str(spool_dir), "--db", db_url])
    assert flushed.exit_code == 1  # one event is refused for good
    assert json.loads(flushed.stdout) == {
        "delivered": 1,
        "duplicates": 0,
        "rejected": 1,
        "remaining": 0,
    }
    assert totals(ledger, run_id)["records_fetched"] == 5
    status = runner.invoke(
        cli, ["spool", "status", "--spool-dir", str(spool_dir), "--format", "json"]
    )
    report = json.loads(status.stdout)
    assert (report["pending"], report["rejected"], report["exists"]) == (0, 1, True)
    assert "no RunStarted" in report["rejected_events"][0]["reason"]
    again = runner.invoke(cli, ["spool", "flush", "--spool-dir", str(spool_dir), "--db", db_url])
    assert json.loads(again.stdout)["delivered"] == 0


def test_status_of_a_folder_with_no_spool_says_so(tmp_path: Path) -> None:
    """A typo in --spool-dir must not pass for an empty backlog."""
    typo = tmp_path / "spoool"
    status = CliRunner().invoke(cli, ["spool", "status", "--spool-dir", str(typo)])
    assert status.exit_code == 0
    assert f"spool:     {typo}/spool.db (no such file: nothing was ever spooled here)" in (
        status.output
    )
    report = CliRunner().invoke(
        cli, ["spool", "status", "--spool-dir", str(typo), "--format", "json"]
    )
    assert json.loads(report.stdout)["exists"] is False
    assert not typo.exists()


def test_a_file_where_the_spool_folder_should_be_is_a_usage_error(tmp_path: Path) -> None:
    not_a_folder = write(tmp_path / "spool", "a file\n")
    # A database that exists (a missing or empty file is refused before the spool is looked at).
    database = ["--db", sqlite_without_schema(tmp_path / "ledger.db")]
    for args in (["spool", "flush", *database], ["spool", "status"]):
        result = CliRunner().invoke(cli, [*args, "--spool-dir", str(not_a_folder)])
        assert result.exit_code == 2, result.output
        assert "is not a folder" in result.output


def test_spool_status_of_a_folder_never_used_creates_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "never-used"
    result = CliRunner().invoke(cli, ["spool", "status", "--spool-dir", str(folder)])
    assert result.exit_code == 0, result.output
    assert "pending:   0 event(s)" in result.output
    assert not folder.exists()


def test_a_spooled_event_that_todays_rules_refuse_is_set_aside_not_blocking(
    ledger: Ledger, spool: Spool
) -> None:
    """An event spooled by an earlier release with a name the name rule now refuses goes to
    the rejected table; the events behind it are delivered."""
    first, second = ledger.start_run(1, "SOURCE_1"), ledger.start_run(2, "SOURCE_2")
    old = RunProgressed.model_validate(
        {"run_id": first, "records_fetched": 1, "actor": "connector:stations\u200b@host:42"},
        context=RECORDED_NAMES,
    )
    spool.put([old, RunProgressed(run_id=second, records_fetched=2)])
    result = spool.flush(ledger)
    assert (result.delivered, result.rejected, result.remaining) == (1, 1, 0)
    assert [e.type for e in ledger.read_run(second)] == ["RunStarted", "RunProgressed"]
    assert "U+200B ZERO WIDTH SPACE" in str(spool.rejected()[0]["reason"])


def test_counts_survive_a_failed_send_and_spool(
    ledger: Ledger, backend: str, tmp_path: Path
) -> None:
    if backend != "sqlite":
        pytest.skip("the outage is made with SQLite's write lock")
    blocker_file = tmp_path / "not-a-folder"
    blocker_file.write_text("")
    broken_spool = Spool(blocker_file / "spool")  # cannot be created: a file is in the way
    impatient = Ledger.from_url(ledger.url, sqlite_busy_timeout_ms=50)
    run = RunContext(impatient, 1, "SOURCE_1", spool=broken_spool, progress_interval=0)
    run.start()
    path = make_url(ledger.url).database
    blocker = sqlite3.connect(str(path), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StorageError, match="spool"):
        run.progress(fetched=5)
    with pytest.raises(StorageError):
        run.finish()
    blocker.execute("ROLLBACK")
    blocker.close()
    result = run.finish()  # nothing was lost: the 5 go out before RunFinished
    assert result.status == "success"
    fetched = sum(e.payload_data.get("records_fetched", 0) for e in ledger.read_run(run.run_id))
    assert fetched == 5


def test_a_corrupt_spool_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "spool.db").write_bytes(b"this is not a database" * 100)
    result = CliRunner().invoke(cli, ["spool", "status", "--spool-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "spool" in result.stderr
    assert "Traceback" not in result.output


def test_spool_status_fits_the_terminal_and_wide_lists_every_run(tmp_path: Path) -> None:
    """With 39 runs waiting, the pending line printed a Python list of every run id, 190
    cells wide at 80 columns; it lists the runs as a status line does, cut with "…" to the
    terminal, and `--wide` (as every other status command takes) shows them all."""
    spool_dir = tmp_path / "spool"
    Spool(str(spool_dir)).put(
        [RunProgressed(run_id=run_id, records_fetched=1) for run_id in range(1, 40)]
    )
    env = {"COLUMNS": "80"}
    fitted = CliRunner().invoke(cli, ["spool", "status", "--spool-dir", str(spool_dir)], env=env)
    assert fitted.exit_code == 1
    pending = next(line for line in fitted.stdout.splitlines() if line.startswith("pending:"))
    assert pending.startswith("pending:   39 event(s) of 39 run(s): runs 1, 2, 3, ")
    assert pending.endswith("…")
    assert len(pending) <= 80
    assert "[" not in fitted.stdout
    wide = CliRunner().invoke(
        cli, ["spool", "status", "--spool-dir", str(spool_dir), "--wide"], env=env
    )
    assert wide.exit_code == 1
    assert ", ".join(map(str, range(1, 40))) in wide.stdout


@pytest.mark.parametrize("removed", ["folder", "file"])
def test_a_spool_removed_under_a_long_lived_process_is_made_again(
    ledger: Ledger, backend: str, spool: Spool, removed: str
) -> None:
    """``ledger serve`` keeps one Spool for its lifetime. Once its folder (or its file) had
    been removed, by an operator tidying up or a cleaner of temporary files, the next outage
    could not spool ("unable to open database file", "no such table: spooled") and the run
    was left open with its reports lost: the spool is made again where it was."""
    if backend != "sqlite":
        pytest.skip("the outage is made with SQLite's write lock")
    path = make_url(ledger.url).database
    impatient = Ledger.from_url(ledger.url, sqlite_busy_timeout_ms=50)

    def run_through_an_outage() -> int:
        with RunContext(impatient, 1, "SOURCE_1", spool=spool, progress_interval=0) as run:
            blocker = sqlite3.connect(str(path), isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
            try:
                run.progress(fetched=3)
                assert spool.status().pending == 1
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            run.progress(fetched=4)  # delivers the spooled one first
        return run.run_id

    first = run_through_an_outage()
    if removed == "folder":
        shutil.rmtree(spool.folder)
    else:
        for file in spool.folder.glob(f"{spool.path.name}*"):  # with any -wal and -shm
            file.unlink()
    second = run_through_an_outage()

    for run_id in (first, second):
        events = run_events(ledger, run_id)
        assert [e.type for e in events] == [
            "RunStarted",
            "RunProgressed",
            "RunProgressed",
            "RunFinished",
        ]
        assert totals(ledger, run_id)["records_fetched"] == 7
    assert spool.status().pending == 0
