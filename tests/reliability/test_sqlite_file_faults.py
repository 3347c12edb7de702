"""A SQLite ledger file whose disk fails it: a torn copy (a page that no longer reads, as `cp`
of a file a checkpoint was writing leaves) and a disk that is full or past a file-size limit.
SQLite only: MariaDB's files are the server's. Each command fails with one line and the exit
code of its cause, never a traceback, and a refused batch leaves nothing behind."""

from __future__ import annotations

import json
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ledger import Ledger, RunProgressed, RunStarted
from service.cli import cli
from service.cli.errors import EXIT_ENVIRONMENT, EXIT_PROBLEM
from tests import support
from tests.reliability.summary import Summary


def run(*args: str) -> Result:
    # catch_exceptions=False: an exception the CLI lets out fails the test with it.
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def ledger_with_runs(path: Path, runs: int, progress: int) -> str:
    url = f"sqlite:///{path}"
    support.migrate(url)
    store = Ledger.from_url(url)
    try:
        for run_id in range(1, runs + 1):
            store.append(
                [RunStarted(run_id=run_id, source_id=1, connector_name="pages")]
                + [RunProgressed(run_id=run_id, records_fetched=1) for _ in range(progress)]
            )
    finally:
        store.close()
    return url


def tear_a_page_of_the_events(path: Path) -> None:
    """Zero one leaf page of ledger_events in the middle of the table, as a copy taken while a
    checkpoint wrote it can hold; the schema, the head and the first events still read."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        try:
            pages = [
                page
                for (page,) in conn.execute(
                    "SELECT pageno FROM dbstat WHERE name = 'ledger_events' AND pagetype = 'leaf' "
                    "ORDER BY pageno"
                )
            ]
        except sqlite3.OperationalError:
            pytest.skip("this sqlite3 has no dbstat table to find a page of ledger_events")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    assert len(pages) > 4, pages
    with path.open("r+b") as file:
        file.seek((pages[len(pages) // 2] - 1) * page_size)
        file.write(bytes(page_size))


def test_a_torn_copy_is_one_line_and_exit_1_never_a_traceback(
    tmp_path: Path, reliability: Summary
) -> None:
    """Before: `verify` and `events` on such a copy ended in a traceback of the driver's
    sqlite3.DatabaseError: SQLite reads rows as they are fetched, and the append's and the
    readers' driver cursor wrapped errors of execute only."""
    database = tmp_path / "copy.db"
    url = ledger_with_runs(database, runs=60, progress=20)
    tear_a_page_of_the_events(database)
    outcomes = {
        name: run(*command, "--db", url)
        for name, command in {
            "verify": ("verify",),
            "verify --chain-only": ("verify", "--chain-only"),
            "events": ("events", "--format", "jsonl"),
            "rebuild": ("rebuild",),
        }.items()
    }
    for name, result in outcomes.items():
        assert result.exit_code == EXIT_PROBLEM, (name, result.output)
        assert "database disk image is malformed" in result.stderr, (name, result.output)
        assert "Traceback" not in result.output
    reliability.record(
        "SQLite file faults",
        "sqlite",
        "a copy of a 1,260-event ledger with one leaf page of ledger_events zeroed (a torn "
        "`cp` of a file a checkpoint was writing): verify, verify --chain-only, events, rebuild",
        "each one line `database disk image is malformed`, exit 1, no traceback",
    )


def append_under_a_file_size_limit(
    url: str, path: Path, lines: str
) -> subprocess.CompletedProcess[str]:
    """``ledger append`` in a process that may not grow ``path`` past its size: SQLite's
    write fails as on a full disk (EFBIG; Python ignores SIGXFSZ)."""
    limit = path.stat().st_size + 8192

    def limited() -> None:  # pragma: no cover (runs in the child)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-c", "from service.cli import main; main()", "append", "--db", url],
        input=lines,
        capture_output=True,
        text=True,
        preexec_fn=limited,
        timeout=120,
        check=False,
    )


def test_a_full_disk_is_the_environment_and_appends_nothing(
    tmp_path: Path, reliability: Summary
) -> None:
    """Before: exit 1 "disk I/O error" (or "database or disk is full" on a full disk), as if a
    check had found a problem in the ledger."""
    database = tmp_path / "full.db"
    url = ledger_with_runs(database, runs=1, progress=1)
    with sqlite3.connect(database) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    batch = "".join(
        json.dumps(
            {"type": "RunStarted", "run_id": 100 + n, "source_id": 1, "connector_name": "x" * 90}
        )
        + "\n"
        for n in range(2000)
    )
    result = append_under_a_file_size_limit(url, database, batch)
    assert result.returncode == EXIT_ENVIRONMENT, result.stderr
    assert "Traceback" not in result.stderr
    assert f"the disk holding {database} is full, or a file-size limit" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    status = run("status", "--format", "json", "--db", url)
    assert json.loads(status.stdout)["head_position"] == 2  # the batch left nothing
    assert run("verify", "--db", url).exit_code == 0
    reliability.record(
        "SQLite file faults",
        "sqlite",
        "`ledger append` of 2,000 events under a file-size limit 8 KiB above the file "
        "(RLIMIT_FSIZE: SQLite's write fails as on a full disk)",
        "one line naming the file and the full disk, exit 3; head and events as before, "
        "verify clean",
    )
