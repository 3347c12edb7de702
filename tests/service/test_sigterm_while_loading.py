"""A SIGTERM that reaches ``ledger project --follow``, ``ledger serve`` or ``ledger api`` while the
command is still loading stops it as a later SIGTERM does: exit 0 and its usual lines. It
ended them with 143 and not a word: their handlers were installed only once the command had
loaded and opened its database, one to several seconds after the start, and an orchestrator
stopping what it had just started (a rollout undone at once) met that window. A command that
does not stop on request still ends at once, as it always has.

Each command is sent SIGTERM the moment it is seen loading: pydantic's compiled core is mapped
into the process (``/proc/PID/maps``), which happens during the import of the command's
modules, a second or more before any command runs. Only the interpreter's own start, before the
console script's first line, is left (the README says so).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import free_port, stop_process

DEADLINE_S = 60.0
LEDGER = [sys.executable, "-c", "from service.launch import main; main()"]
# Real ledger processes, waited on (`-m "not processes"` leaves them out).
pytestmark = pytest.mark.processes


def loading(process: subprocess.Popen[str]) -> bool:
    """The command's modules are being imported (pydantic's compiled core is mapped)."""
    try:
        maps = Path(f"/proc/{process.pid}/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not exec'd yet, or gone
        return False
    return "pydantic_core" in maps


def terminated_while_loading(args: list[str]) -> tuple[int, str]:
    """Start ``ledger ARGS``, SIGTERM it the moment it is seen loading, and return its exit
    code and stderr; the process is killed whatever happens."""
    process = subprocess.Popen(
        [*LEDGER, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not loading(process):
            assert process.poll() is None, "the command exited before it was seen loading"
            assert time.monotonic() < deadline, "the command was never seen loading"
            threading.Event().wait(0.001)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=DEADLINE_S)
        return process.returncode, stderr
    finally:
        stop_process(process, signal.SIGKILL)


def test_project_follow_sent_sigterm_while_loading_stops_after_the_batch(db_url: str) -> None:
    code, stderr = terminated_while_loading(["project", "--follow", "--db", db_url])
    assert code == 0, stderr
    assert stderr.splitlines()[-1] == "stopped after the current batch", stderr


def test_serve_sent_sigterm_while_loading_shuts_down(db_url: str, tmp_path: Path) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text(f'database_url = "{db_url}"\n', encoding="utf-8")
    args = ["-v", "serve", "--config", str(config), "--metrics-port", str(free_port())]
    code, stderr = terminated_while_loading(args)
    assert code == 0, stderr
    assert "SIGTERM or Ctrl-C to stop" in stderr, stderr
    assert "received SIGTERM: shutting down" in stderr, stderr
    assert "scheduled (times UTC)" not in stderr, stderr  # no job started only to be stopped
    assert "Traceback" not in stderr, stderr


def test_api_sent_sigterm_while_loading_stops(db_url: str) -> None:
    listen = f"127.0.0.1:{free_port()}"
    code, stderr = terminated_while_loading(["-v", "api", "--db", db_url, "--listen", listen])
    assert code == 0, stderr
    assert f"on http://{listen}; SIGTERM or Ctrl-C to stop" in stderr, stderr
    assert "stopped (SIGTERM)" in stderr, stderr
    assert "Traceback" not in stderr, stderr


@pytest.mark.parametrize(
    "args", [["runs", "list"], ["project"]], ids=["runs list", "project without --follow"]
)
def test_a_command_not_stopped_on_request_still_ends_at_once(db_url: str, args: list[str]) -> None:
    code, stderr = terminated_while_loading([*args, "--db", db_url])
    assert code == -signal.SIGTERM, stderr  # as ever: the signal's default, not a clean exit
    assert stderr == "", stderr
