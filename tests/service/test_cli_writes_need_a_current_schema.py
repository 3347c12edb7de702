"""Every command that writes to the ledger refuses a database whose schema is not at the
revision this run-ledger needs, as the API does (503), with the usual "run `ledger migrate`"
(exit 1), and writes nothing: a migrate that stopped half-way (on MariaDB, one refused a grant
after its first tables) leaves tables that `ledger append` wrote into, without the triggers
that keep ledger_events append-only."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from connectors import SAMPLE_CSV
from ledger import Ledger
from ledger.clock import utcnow
from ledger.schema import SCHEMA_REVISION
from service.cli import cli

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_events.jsonl"

WRITERS = [
    ("append", str(SAMPLE)),
    ("run", "csv", "--path", str(SAMPLE_CSV), "--source-id", "2"),
    ("sweep",),
    ("runs", "fail", "1", "--reason", "gone"),
    ("import-legacy",),
    ("spool", "flush"),
    ("project",),
    ("rebuild",),
]


@pytest.mark.parametrize("command", WRITERS, ids=" ".join)
def test_a_write_refuses_a_schema_that_is_not_current(
    ledger: Ledger, db_url: str, tmp_path: Path, command: tuple[str, ...]
) -> None:
    ledger.start_run(1, "SOURCE_1", occurred_at=utcnow() - timedelta(hours=3))
    before = ledger.head()
    spool = tmp_path / "spool"
    args = [*command, "--db", db_url]
    if command[0] in ("run", "spool"):
        args += ["--spool-dir", str(spool)]
    with ledger.engine.begin() as conn:  # as a migrate refused half-way leaves it
        conn.execute(text("DELETE FROM ledger_alembic_version"))
    try:
        result = CliRunner().invoke(cli, args)
    finally:  # the MariaDB database is shared by the tests that follow
        with ledger.engine.begin() as conn:
            conn.execute(
                text("INSERT INTO ledger_alembic_version (version_num) VALUES (:revision)"),
                {"revision": SCHEMA_REVISION},
            )
    assert result.exit_code == 1, result.output
    assert "database schema is at nothing" in result.stderr
    assert "run `ledger migrate`" in result.stderr
    assert "Traceback" not in result.output
    assert ledger.head() == before
    assert not spool.exists() or not any(spool.iterdir())
