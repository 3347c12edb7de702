"""The benchmark harness runs end to end, with the peer (``--peer eventsourcing``, the bench
extra CI installs) and, on MariaDB, the concurrent-writers curve. No timing is asserted here:
figures are the harness's business, and a test must not fail because the machine is busy. The
runs use the harness's hidden ``--tiny`` sizes (every figure, in seconds; ``--quick`` is what
a person runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import support

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
PEER_FIGURES = (
    "1. live append",
    "2. batch append (10/call",
    "2. batch append (1,000/call",
    "8. read and decode",
)


def run_harness(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    output = tmp_path / "figures.json"
    result = support.run_to_end(  # its writer processes die with it, whatever happens
        [sys.executable, "-m", "benchmarks", "--tiny", "--json", str(output), *args],
        timeout=600,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads(output.read_text())


def peer_figures(report: Any, database: str) -> dict[str, Any]:
    return {
        prefix: next(
            f
            for f in report["figures"]
            if f["database"] == database and f["name"].startswith(prefix)
        )
        for prefix in PEER_FIGURES
    }


def test_benchmark_runs_and_reports_every_figure_beside_the_peer(tmp_path: Path) -> None:
    result, report = run_harness(tmp_path, "--peer", "eventsourcing")
    names = {figure["name"].split(" ")[0] for figure in report["figures"]}
    assert {"1.", "2.", "4.", "6.", "7.", "8.", "10."} <= names  # 3 and 5 need MariaDB (--db)
    for figure in report["figures"]:
        assert figure["value"] > 0, figure
        assert figure["database"] == "sqlite"
    for prefix, figure in peer_figures(report, "sqlite").items():
        assert figure["peer"] is not None, prefix
        assert figure["peer"] > 0, figure
        assert figure["raw"] > 0, figure
        assert len(figure["samples"]["peer"]) == len(figure["samples"]["raw"]), figure
    assert report["peer"] == "eventsourcing"
    assert not report["peer_unavailable"]
    assert any("synchronous=FULL" in note for note in report["notes"]["sqlite"])
    for column in ("peer", "raw", "÷ peer", "÷ raw"):
        assert column in result.stdout


def test_without_the_peer_its_targets_are_not_measured(tmp_path: Path) -> None:
    """No ``--peer``: the peer column is empty and its targets say "—", not a failure."""
    _, report = run_harness(tmp_path)
    for prefix, figure in peer_figures(report, "sqlite").items():
        assert figure["peer"] is None, prefix
        for check in figure["checks"]:
            if "peer" in check["target"]:
                assert check["met"] is None, figure


def test_the_peer_without_the_bench_extra_exits_2_saying_what_to_install() -> None:
    hide = "import sys; sys.modules['eventsourcing'] = None\n"  # as if it were not installed
    run = "from benchmarks.harness import main; main(['--peer', 'eventsourcing'])"
    result = support.run_to_end([sys.executable, "-c", hide + run], timeout=120, cwd=REPO)
    assert result.returncode == 2, result.stderr
    assert "pip install -e '.[bench]'" in result.stderr


def test_writers_curve_and_peer_on_mariadb(tmp_path: Path) -> None:
    server = support.mysql_base_url()
    if server is None:
        pytest.skip(f"MariaDB half skipped: set {support.MYSQL_URL_ENV} to run it")
    plot = tmp_path / "curves.png"
    _, report = run_harness(
        tmp_path,
        "--peer",
        "eventsourcing",
        "--db",
        server,
        "--skip-sqlite",
        "--plot",
        str(plot),
    )
    assert {f["database"] for f in report["figures"]} == {"mariadb"}
    curve = report["curves"]["mariadb"]["writers"]
    assert [point["processes"] for point in curve] == [1, 2]  # --tiny: 1 and 2 processes
    for point in curve:
        for kind in ("run-ledger", "raw"):
            assert point[kind]["calls"] == 10 * point["processes"], point
            assert point[kind]["events_per_s"] > 0, point
    writers = [f for f in report["figures"] if f["name"].startswith("3. ")]
    assert len(writers) == 2
    assert all(f["raw"] > 0 for f in writers)
    for prefix, figure in peer_figures(report, "mariadb").items():
        assert figure["peer"] is not None, (prefix, report["peer_unavailable"])
        assert figure["peer"] > 0, figure
    assert plot.stat().st_size > 0
