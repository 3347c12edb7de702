"""The API figure group (``python -m benchmarks --api``) runs end to end at the hidden tiny
size: a real ``ledger api`` process, figures 9 and 10 beside the library, on SQLite and, with
``LEDGER_TEST_MYSQL_URL``, on MariaDB. No timing is asserted: a busy machine must not fail it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.support import run_to_end

REPO = Path(__file__).resolve().parents[2]
FIGURES = (
    "9. API append p50",
    "9. API append p99",
    "10. API batch (100 events/request)",
)


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
def test_api_figures_run_beside_the_library(tmp_path: Path, backend: str) -> None:
    server = os.environ.get("LEDGER_TEST_MYSQL_URL")
    if backend == "mysql" and not server:
        pytest.skip("LEDGER_TEST_MYSQL_URL is not set")
    output = tmp_path / "figures.json"
    extra = ["--db", str(server), "--skip-sqlite"] if backend == "mysql" else []
    result = run_to_end(  # its `ledger api` server dies with it, whatever happens
        [sys.executable, "-m", "benchmarks", "--api", "--tiny", "--json", str(output), *extra],
        timeout=600,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["api"] is True
    database = "mariadb" if backend == "mysql" else "sqlite"
    found = {f["name"]: f for f in report["figures"]}
    assert all(f["database"] == database for f in report["figures"])
    for prefix in FIGURES:
        figure = next(f for name, f in found.items() if name.startswith(prefix))
        assert figure["value"] > 0, figure
        assert figure["raw"] > 0, figure  # the library's figure, measured in the same run
        assert figure["checks"] or "p50" in prefix, figure
    for column in ("API", "library", "API ÷ library"):
        assert column in result.stdout
