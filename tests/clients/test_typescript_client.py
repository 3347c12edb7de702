"""The TypeScript client's own tests (``node --test``, clients/typescript/test/), run from the
suite: each starts a live ``ledger api`` with this virtualenv's ``ledger`` on SQLite, and on
MariaDB when LEDGER_TEST_MYSQL_URL names a server."""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
from pathlib import Path

import pytest

from tests import support

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "clients" / "typescript"
NODE_MIN_MAJOR = 18
TIMEOUT_S = 600

pytestmark = [pytest.mark.slow, pytest.mark.processes]  # ledger api processes and node


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


def test_the_fake_servers_take_no_port_of_ledger_test_ports() -> None:
    """The server-free tests' fakes listen in node's own process, on ports the system picks:
    held each until the end of the file, from LEDGER_TEST_PORTS, they ran a 50-port range dry
    ("no free port"). Here the range is one port this test holds: a fake that asks for one of
    its ports fails."""
    node = _node()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        env = {**os.environ, "LEDGER_BIN": _ledger_bin(), "LEDGER_TEST_PORTS": f"{port}-{port}"}
        hostile = str(CLIENT / "test" / "hostile.test.mjs")
        done = support.run_to_end([node, "--test", hostile], timeout=TIMEOUT_S, cwd=REPO, env=env)
    assert done.returncode == 0, f"node --test failed:\n{done.stdout}\n{done.stderr}"
    assert re.search(r"^# fail 0$", done.stdout, re.MULTILINE), done.stdout
