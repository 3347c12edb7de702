"""A spooled event goes only into the run it was written for: a spool is a folder's, not a
ledger's (a database restored from a backup, a new ledger, staging and production run from one
folder), and run ids repeat across ledgers. Events spooled for run N of one ledger, flushed into
another whose run N is another connector's (by ``ledger run``'s start, ``ledger spool flush``
or a flush of the library), are set aside in ``rejected`` with the reason, shown by ``ledger
spool status``; rows an earlier release spooled (no run identity) are delivered as before."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy.engine import make_url

from connectors import RunContext, Spool
from ledger import Ledger, RunProgressed
from ledger.mapper import canonical_json, event_to_wire
from service.cli import cli
from tests import support

NOT_THE_RUN = "of this ledger is not the run these events were written for"


def _spooled_on_another_ledger(template: Path, folder: Path, spool: Spool) -> int:
    """Ledger A (a SQLite file of its own) goes away mid-run, as in the audit's repro: the run
    reports progress and an error, finishes, and both events are spooled. Returns its id."""
    folder.mkdir()
    url = support.sqlite_copy(template, folder)
    impatient = Ledger.from_url(url, sqlite_busy_timeout_ms=50)
    run = RunContext(
        impatient, 5, "from_ledger_a", spool=spool, progress_interval=0, heartbeat_interval=3600
    )
    run.start()
    blocker = sqlite3.connect(str(make_url(url).database), isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")  # ledger A unreachable for writes
        run.progress(fetched=777)
        run.error("boom")
        run.finish()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        impatient.close()
    assert spool.status().pending == 2
    return run.run_id


def _another_connectors_run(ledger: Ledger, run_id: int) -> None:
    """Ledger B's runs up to ``run_id``, each another connector's (billing_export, source 42)."""
    while ledger.head().last_run_id < run_id:
        ledger.start_run(42, "billing_export")


def _left_alone(ledger: Ledger, run_id: int) -> None:
    events = ledger.read_run(run_id)
    assert [e.type for e in events] == ["RunStarted"]
    assert events[0].payload_data["connector_name"] == "billing_export"
    assert ledger.run(run_id).state == "open"  # type: ignore[union-attr]


def _set_aside_in_status(folder: Path, run_id: int) -> None:
    status = CliRunner().invoke(
        cli, ["spool", "status", "--spool-dir", str(folder), "--format", "json"]
    )
    assert status.exit_code == 1, status.output
    report = json.loads(status.stdout)
    assert (report["pending"], report["rejected"]) == (0, 2)
    assert [e["type"] for e in report["rejected_events"]] == ["RunProgressed", "RunFinished"]
    for item in report["rejected_events"]:
        assert f"run {run_id} {NOT_THE_RUN}" in item["reason"]
        assert "billing_export" in item["reason"]
    table = CliRunner().invoke(cli, ["spool", "status", "--spool-dir", str(folder), "--wide"])
    assert f"(RunFinished of run {run_id}): run {run_id} {NOT_THE_RUN}" in table.output


def test_ledger_run_does_not_deliver_another_ledgers_spool_onto_its_run(
    ledger: Ledger, db_url: str, tmp_path: Path, sqlite_template: Path
) -> None:
    folder = tmp_path / "spool"
    run_id = _spooled_on_another_ledger(sqlite_template, tmp_path / "a", Spool(folder))
    _another_connectors_run(ledger, run_id)

    ran = CliRunner().invoke(
        cli,
        ["run", "csv", "--db", db_url, "--spool-dir", str(folder), "--source-id", "42"],
    )

    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["status"] == "success"  # its own run, straight in
    _left_alone(ledger, run_id)  # no RunProgressed of 777, no RunFinished of from_ledger_a
    _set_aside_in_status(folder, run_id)


def test_spool_flush_into_another_ledger_sets_the_events_aside(
    ledger: Ledger, db_url: str, tmp_path: Path, sqlite_template: Path
) -> None:
    folder = tmp_path / "spool"
    run_id = _spooled_on_another_ledger(sqlite_template, tmp_path / "a", Spool(folder))
    _another_connectors_run(ledger, run_id)

    flushed = CliRunner().invoke(
        cli, ["spool", "flush", "--spool-dir", str(folder), "--db", db_url]
    )

    assert flushed.exit_code == 1, flushed.output
    assert json.loads(flushed.stdout) == {
        "delivered": 0,
        "duplicates": 0,
        "rejected": 2,
        "remaining": 0,
    }
    _left_alone(ledger, run_id)
    _set_aside_in_status(folder, run_id)


def test_a_run_missing_from_the_ledger_met_is_named_as_such(
    ledger: Ledger, tmp_path: Path, sqlite_template: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    run_id = _spooled_on_another_ledger(sqlite_template, tmp_path / "a", spool)
    result = spool.flush(ledger)  # a new ledger: no run at all
    assert (result.delivered, result.rejected, result.remaining) == (0, 2, 0)
    reason = str(spool.rejected()[0]["reason"])
    assert f"run {run_id} {NOT_THE_RUN}" in reason
    assert "no run of that id is in this ledger" in reason


def test_the_spool_still_delivers_into_the_run_it_was_written_for(
    ledger: Ledger, spool: Spool, tmp_path: Path, sqlite_template: Path
) -> None:
    """Events of the ledger's own run, and events of another ledger's run waiting before them
    in the same spool: the foreign ones are set aside, the run's own delivered in order."""
    foreign = _spooled_on_another_ledger(sqlite_template, tmp_path / "a", spool)
    _another_connectors_run(ledger, foreign)
    own = RunContext(ledger, 7, "SOURCE_7", spool=spool, heartbeat_interval=3600)
    own.start()
    # Spooled as the SDK spools in an outage: with its run's RunStarted.
    spool.put(
        [RunProgressed(run_id=own.run_id, actor=own.actor, records_fetched=3)],
        own.run_started_id,
    )
    own.result.spooled = True  # type: ignore[union-attr]
    own.progress(fetched=4)
    own.finish()

    events = ledger.read_run(own.run_id)
    assert [e.type for e in events] == [
        "RunStarted",
        "RunProgressed",
        "RunProgressed",
        "RunFinished",
    ]
    assert [e.payload_data["records_fetched"] for e in events[1:3]] == [3, 4]
    assert spool.status().pending == 0
    assert [r["run_id"] for r in spool.rejected()] == [foreign, foreign]
    _left_alone(ledger, foreign)


def test_rows_spooled_by_the_previous_release_are_delivered_as_before(
    ledger: Ledger, tmp_path: Path
) -> None:
    """A spool file of the release before (no ``run_started_id`` column; its rows say nothing
    of their run): the column is added and its rows are delivered, unchecked, as that release
    would have."""
    run_id = ledger.start_run(1, "SOURCE_1")
    folder = tmp_path / "old-spool"
    folder.mkdir()
    with closing(sqlite3.connect(folder / "spool.db")) as old:
        old.executescript(
            """
            CREATE TABLE spooled (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                event_id TEXT NOT NULL UNIQUE, run_id INTEGER, type TEXT NOT NULL,
                body TEXT NOT NULL, spooled_at TEXT NOT NULL);
            CREATE TABLE rejected (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,
                run_id INTEGER, type TEXT NOT NULL, body TEXT NOT NULL,
                spooled_at TEXT NOT NULL, rejected_at TEXT NOT NULL, reason TEXT NOT NULL);
            """
        )
        event = RunProgressed(run_id=run_id, records_fetched=5)
        old.execute(
            "INSERT INTO spooled (event_id, run_id, type, body, spooled_at) VALUES (?,?,?,?,?)",
            (str(event.event_id), run_id, event.type, canonical_json(event_to_wire(event)), "x"),
        )
        old.commit()

    result = Spool(folder).flush(ledger)

    assert (result.delivered, result.rejected, result.remaining) == (1, 0, 0)
    assert [e.type for e in ledger.read_run(run_id)] == ["RunStarted", "RunProgressed"]
    with closing(sqlite3.connect(folder / "spool.db")) as upgraded:
        columns = [row[1] for row in upgraded.execute("PRAGMA table_info(spooled)")]
    assert columns[-1] == "run_started_id"


def test_a_spool_that_has_the_column_already_opens_as_before(tmp_path: Path) -> None:
    """Every Spool adds the column on its first use; a file that has it (another process
    added it first) is used as it is."""
    folder = tmp_path / "spool"
    for pending in (1, 2):
        spool = Spool(folder)
        spool.put([RunProgressed(run_id=1, records_fetched=1)], "a RunStarted's event_id")
        assert spool.status().pending == pending
