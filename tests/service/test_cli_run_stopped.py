"""``ledger run`` stopped by a real SIGTERM at the two moments a random one once hit (the audit
sent 40): as its heartbeat thread starts, and while ``finish()`` records the run's outcome;
and by SIGHUP (a terminal closed) mid-run. Either way the run ends with an outcome (``failed``
and ``stopped by SIGTERM`` when none was decided yet), one JSON line is printed that agrees
with the ledger, no traceback, exit 1 as for any `ledger run` a signal stopped."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ledger import Ledger
from tests import support
from tests.connectors.support import finished

REPO = Path(__file__).resolve().parents[2]

# The signal is sent for real, by the process to itself, at the moment named; the handler
# `ledger run` installed runs at the next bytecode boundary, as it would for a kill from outside.
AS_THE_HEARTBEAT_STARTS = """
import os, signal, threading
start = threading.Thread.start
def starting(self):
    if self.name.startswith("heartbeat-run-"):
        os.kill(os.getpid(), signal.SIGTERM)
    return start(self)
threading.Thread.start = starting
"""
AS_THE_OUTCOME_IS_APPENDED = """
import os, signal
from ledger import Ledger, RunFinished
append = Ledger.append
def appending(self, events, *args, **kwargs):
    if any(isinstance(e, RunFinished) for e in events) and not getattr(self, "_killed", False):
        self._killed = True
        os.kill(os.getpid(), signal.SIGTERM)
    return append(self, events, *args, **kwargs)
Ledger.append = appending
"""

# A signal sent as the run reports its first progress (the csv connector's first batch).
AT_THE_FIRST_PROGRESS = """
import os, signal
from ledger import Ledger, RunProgressed
append = Ledger.append
def appending(self, events, *args, **kwargs):
    if any(isinstance(e, RunProgressed) for e in events) and not getattr(self, "_sent", False):
        self._sent = True
        os.kill(os.getpid(), signal.SIGHUP)
    return append(self, events, *args, **kwargs)
Ledger.append = appending
"""
# A signal as RunStarted has just committed, before the SDK has its reply's run id.
AS_RUN_STARTED_COMMITS = """
import os, signal
from ledger import Ledger, RunStarted
append = Ledger.append
def appending(self, events, *args, **kwargs):
    result = append(self, events, *args, **kwargs)
    if any(isinstance(e, RunStarted) for e in events):
        os.kill(os.getpid(), signal.SIGTERM)
    return result
Ledger.append = appending
"""
# As `nohup` starts a command: SIGHUP ignored, which the command inherits.
UNDER_NOHUP = "import signal\nsignal.signal(signal.SIGHUP, signal.SIG_IGN)\n"


def _ledger_run(
    prelude: str, db_url: str, tmp_path: Path, *options: str
) -> tuple[int, dict[str, object], str]:
    script = prelude + "\nfrom service.cli import main\nmain()\n"
    args = ["run", "csv", *options, "--spool-dir", str(tmp_path / "spool"), "--db", db_url]
    done = support.run_to_end([sys.executable, "-c", script, *args], timeout=120, cwd=REPO)
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout + done.stderr
    return done.returncode, json.loads(lines[0]), done.stderr


def test_sigterm_as_the_heartbeat_thread_starts_ends_the_run_failed(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    code, outcome, stderr = _ledger_run(AS_THE_HEARTBEAT_STARTS, db_url, tmp_path)

    assert "Traceback" not in stderr, stderr
    assert "could not close" not in stderr, stderr
    assert code == 1
    assert (outcome["status"], outcome["error"]) == ("failed", "stopped by SIGTERM")
    run_id = int(outcome["run_id"])  # type: ignore[call-overload]
    payload = finished(ledger, run_id)
    assert (payload["status"], payload["error_message"]) == ("failed", "stopped by SIGTERM")
    assert ledger.run(run_id).state == "finished"  # type: ignore[union-attr]


def test_sigterm_while_the_outcome_is_recorded_exits_1_and_says_what_is_recorded(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    code, outcome, stderr = _ledger_run(AS_THE_OUTCOME_IS_APPENDED, db_url, tmp_path)

    assert "Traceback" not in stderr, stderr
    assert code == 1  # it exited 0: as if the signal never came
    run_id = int(outcome["run_id"])  # type: ignore[call-overload]
    recorded = finished(ledger, run_id)["status"]
    assert recorded == outcome["status"] == "success"  # the outcome decided before the signal
    assert outcome["error"] == (
        "stopped by SIGTERM while the run's end was being recorded: the run is recorded success"
    )


def test_sighup_mid_run_ends_the_run_failed(ledger: Ledger, db_url: str, tmp_path: Path) -> None:
    # SIGHUP's default action killed the process: no JSON, the run left `running` for the
    # sweeper, as a SIGKILL would.
    code, outcome, stderr = _ledger_run(
        AT_THE_FIRST_PROGRESS, db_url, tmp_path, "--progress-interval", "0"
    )

    assert "Traceback" not in stderr, stderr
    assert code == 1
    assert (outcome["status"], outcome["error"]) == ("failed", "stopped by SIGHUP")
    run_id = int(outcome["run_id"])  # type: ignore[call-overload]
    payload = finished(ledger, run_id)
    assert (payload["status"], payload["error_message"]) == ("failed", "stopped by SIGHUP")
    details = payload["error_details"]
    assert details["reason"] == "interrupted"
    # The details say what the message says (they said SystemExit, "129"), keeping the facts.
    assert (details["exception"], details["message"]) == ("SIGHUP", "stopped by SIGHUP")
    assert (details["signal"], details["exit_status"]) == ("SIGHUP", 129)
    assert "SystemExit" not in json.dumps(details)


def test_a_run_started_under_nohup_is_not_stopped_by_sighup(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    code, outcome, stderr = _ledger_run(
        UNDER_NOHUP + AT_THE_FIRST_PROGRESS, db_url, tmp_path, "--progress-interval", "0"
    )

    assert code == 0, stderr
    assert outcome["status"] == "success"
    assert finished(ledger, int(outcome["run_id"]))["status"] == "success"  # type: ignore[call-overload]


def test_sigterm_as_run_started_commits_ends_that_run_failed(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    # Exit 143 without a word, and the run it had opened stayed `running` for the sweeper.
    code, outcome, stderr = _ledger_run(AS_RUN_STARTED_COMMITS, db_url, tmp_path)

    assert "Traceback" not in stderr, stderr
    assert code == 1
    assert (outcome["status"], outcome["error"]) == ("failed", "stopped by SIGTERM")
    run_id = int(outcome["run_id"])  # type: ignore[call-overload]
    assert [e.type for e in ledger.read_run(run_id)] == ["RunStarted", "RunFinished"]
    assert finished(ledger, run_id)["error_message"] == "stopped by SIGTERM"
    assert ledger.runs(state="open") == []
