"""The TypeScript client's own tests (``node --test``, clients/typescript/test/), run from the
suite: each starts a live ``ledger api`` with this virtualenv's ``ledger`` on SQLite, and on
MariaDB when LEDGER_TEST_MYSQL_URL names a server."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from tests import support

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "clients" / "typescript"
NODE_MIN_MAJOR = 18
TIMEOUT_S = 600

pytestmark = pytest.mark.slow


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the TypeScript client's tests need Node >= 18")
    done = support.run_to_end([node, "--version"], timeout=30)
    assert done.returncode == 0, done.stderr
    version = done.stdout.strip()
    major = re.match(r"v(\d+)\.", version)
    if major is None or int(major.group(1)) < NODE_MIN_MAJOR:
        pytest.skip(f"node {version} is older than {NODE_MIN_MAJOR}: the client needs fetch")
    return node


def _ledger_bin() -> str:
    found = shutil.which("ledger", path=str(Path(sys.executable).parent)) or shutil.which("ledger")
    assert found is not None, "the ledger executable is not installed (pip install -e .)"
    return found


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_typescript_client(backend: str) -> None:
    node = _node()
    env = {**os.environ, "LEDGER_BIN": _ledger_bin(), "LEDGER_TS_BACKENDS": backend}
    if backend == "mariadb":
        if not support.mysql_base_url():
            pytest.skip(f"MariaDB half skipped: set {support.MYSQL_URL_ENV} to run it")
        tests = [str(CLIENT / "test" / "live.test.mjs")]  # the server-free ones run once
    else:
        env.pop(support.MYSQL_URL_ENV, None)
        tests = [str(CLIENT / "test")]
    # A session of its own: the `ledger api` servers it starts are in its process group, and
    # die with it (a timeout, a failure or an interrupt). Its own killer of them runs on exit,
    # which a SIGKILL of node never reaches.
    done = support.run_to_end([node, "--test", *tests], timeout=TIMEOUT_S, cwd=REPO, env=env)
    assert done.returncode == 0, f"node --test failed:\n{done.stdout}\n{done.stderr}"
    assert re.search(r"^# pass [1-9]", done.stdout, re.MULTILINE), done.stdout
