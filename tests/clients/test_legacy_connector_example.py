"""examples/legacy-connector.mjs, the README's TypeScript connector, run as printed
(``LEDGER_API_URL=… LEDGER_API_TOKEN=… node examples/legacy-connector.mjs``; its run recorded
against a live ``ledger api``: clients/typescript/test/live.test.mjs). A newcomer's mistakes (a
wrong token, a URL where no API answers, a URL that is not one, a variable not set) end with
one ``Error:`` line and the exit codes of the ``ledger`` command (2 the caller's mistake, 3 the
environment), never Node's stack trace."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support
from tests.clients.test_typescript_client import _node
from tests.service.test_api_process import wait_for_healthz

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "legacy-connector.mjs"
TOKEN = "legacy-example-token-0123456789"
TIMEOUT_S = 120.0

pytestmark = [pytest.mark.slow, pytest.mark.processes]  # a ledger api process and node


@pytest.fixture
def api_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "api.toml"
    config.write_text(
        '[api]\n[[api.tokens]]\nname = "connectors"\nscopes = ["append", "read"]\n'
        'env = "LEGACY_EXAMPLE_TOKEN"\n',
        encoding="utf-8",
    )
    port = support.free_port()
    command = [sys.executable, "-m", "service.cli", "api", "--listen", f"127.0.0.1:{port}"]
    process = subprocess.Popen(
        [*command, "--config", str(config), "--db", db_url],
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "LEGACY_EXAMPLE_TOKEN": TOKEN},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_healthz(process, base)
        yield base
    finally:
        support.stop_process(process)


def run_example(url: str, token: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LEDGER_API_URL": url, "LEDGER_API_TOKEN": token}
    return support.run_to_end([_node(), str(EXAMPLE)], timeout=TIMEOUT_S, cwd=REPO, env=env)


def assert_one_error_line(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.stdout == "", done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: "), done.stderr
    for word in words:
        assert word in lines[0], done.stderr
    assert "    at " not in done.stderr  # a stack frame
    assert "Node.js v" not in done.stderr


def test_a_wrong_token_is_one_error_line_and_exit_2(api_url: str) -> None:
    done = run_example(api_url, "not-the-token-0123456789")
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done, "401", "LEDGER_API_TOKEN")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_no_api_at_the_url_is_one_error_line_and_exit_3(backend: str) -> None:
    url = f"http://127.0.0.1:{support.free_port()}"  # nothing listens there
    done = run_example(url, TOKEN)
    assert done.returncode == 3, done.stderr
    assert_one_error_line(done, "ECONNREFUSED", "LEDGER_API_URL")


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("url", ["127.0.0.1:8080", ""])
def test_a_url_that_is_not_one_is_one_error_line_and_exit_2(backend: str, url: str) -> None:
    done = run_example(url, TOKEN)
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done, "LEDGER_API_URL")
