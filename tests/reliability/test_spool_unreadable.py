"""A spool folder this user may not enter, on SQLite and MariaDB (connectors review): another
user's spool (root's, 0700) met by `ledger spool status`, `ledger spool flush` and `ledger run`.
`Path.exists` raised PermissionError: a traceback and exit 1 from each, and `ledger run` did
not start its run although the ledger was reachable. Now the spool commands exit 3 naming the
spool (the environment, as a SQLite ledger file this user may not open), and the run goes
straight to the ledger; the other user's spooled event is untouched."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy.engine import make_url

from connectors import SAMPLE_CSV, Spool
from ledger import Ledger, RunProgressed
from service.cli import cli
from service.cli.errors import EXIT_ENVIRONMENT
from tests.support import as_another_user


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    # Under /tmp, not pytest's tmp_path: the other user must reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="ledger-spool-"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def test_a_spool_folder_this_user_may_not_enter_is_the_environment(
    db_url: str, shared_folder: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a spool folder another user may not enter")
    if db_url.startswith("sqlite"):  # the ledger itself must stay usable by the other user
        database = shared_folder / "ledger.db"
        shutil.copy(str(make_url(db_url).database), database)
        database.chmod(0o666)
        db_url = f"sqlite:///{database}"
    spool_dir = shared_folder / "root-spool"
    waiting = RunProgressed(run_id=424242, records_fetched=1)
    Spool(spool_dir).put([waiting])
    spool_dir.chmod(0o700)

    def commands() -> list[tuple[str, Result]]:
        outcomes = []
        spool_and_db = ["--spool-dir", str(spool_dir), "--db", db_url]
        for name, args in [
            ("status", ["spool", "status", "--spool-dir", str(spool_dir)]),
            ("flush", ["spool", "flush", "--spool-dir", str(spool_dir), "--db", db_url]),
            ("run", ["run", "csv", "--path", str(SAMPLE_CSV), *spool_and_db]),
        ]:
            outcomes.append((name, CliRunner().invoke(cli, args)))
        return outcomes

    outcomes = {name: (code, output) for name, code, output in as_another_user(commands)}
    for name in ("status", "flush"):
        code, output = outcomes[name]
        assert code == EXIT_ENVIRONMENT, output
        assert f"Error: spool {spool_dir / 'spool.db'}: Permission denied" in output
        assert "Traceback" not in output
    code, output = outcomes["run"]
    assert code == 0, output
    summary = json.loads(output.strip().splitlines()[-1])
    assert (summary["status"], summary["records_created"]) == ("success", 20)
    ledger = Ledger.from_url(db_url)
    try:
        assert [e.type for e in ledger.read_run(summary["run_id"])][-1] == "RunFinished"
    finally:
        ledger.close()
    spool_dir.chmod(0o755)
    assert Spool(spool_dir).status().pending == 1  # the other user's fact is still there
