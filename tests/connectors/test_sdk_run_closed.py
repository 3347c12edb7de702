"""A run closed under its live connector, on SQLite and on MariaDB: another writer appends the
run's RunFinished while the connector still reports. The refused events are never sent again
but set aside in the spool's ``rejected`` table with the reason; the heartbeats stop; the
connector is told once (``RunClosedError``, naming who closed the run), never twice, and its
own exception is not masked; the exit hook is quiet. A run an operator fails (RunTimedOut)
still records its connector's later events, as late facts."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from connectors import RunClosedError, RunContext, Spool
from connectors.sdk import _close_runs_left_open
from ledger import Ledger, RunFinished, fail_run
from tests.connectors.support import run_events, totals


def close_by_hand(ledger: Ledger, run_id: int) -> None:
    """What ``ledger append`` or ``POST /v1/events`` of a RunFinished does under a live run."""
    ledger.append(
        [
            RunFinished(
                run_id=run_id,
                status="failed",
                error_message="closed by hand",
                actor="operator:bob",
            )
        ]
    )


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "refused by the ledger for good" in r.getMessage()]


def test_a_run_closed_under_its_connector_is_told_once_and_its_facts_kept(
    ledger: Ledger, spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: every later progress(), finish() and the exit hook sent the refused batch again,
    # a StreamError (and a traceback in the log) each time, and the facts were lost.
    run = RunContext(ledger, 1, "SOURCE_1", spool=spool, progress_interval=0)
    run.start()
    run.progress(fetched=1)
    close_by_hand(ledger, run.run_id)
    with pytest.raises(RunClosedError) as told:
        run.progress(fetched=2)
    message = str(told.value)
    assert f"run {run.run_id} of SOURCE_1: operator:bob closed it while the connector" in message
    assert '"closed by hand"' in message
    assert f"1 event(s) it refused are kept in {spool.path}, table rejected" in message
    assert told.value.closed_by == "operator:bob"
    with pytest.raises(RunClosedError):  # the run is closed: a later report is refused too
        run.error("a bad row")
    result = run.finish()  # told already: not again
    assert (result.status, result.closed_by) == ("closed", "operator:bob")
    assert result.error_message is not None
    assert "operator:bob closed it" in result.error_message
    assert "2 event(s) it refused are kept" in result.error_message  # its outcome too
    assert [e.type for e in run_events(ledger, run.run_id)] == [
        "RunStarted",
        "RunProgressed",
        "RunFinished",
    ]
    assert run_events(ledger, run.run_id)[-1].actor == "operator:bob"
    rejected = spool.rejected()
    assert [(r["run_id"], r["type"]) for r in rejected] == [
        (run.run_id, "RunProgressed"),
        (run.run_id, "RunFinished"),  # the outcome the connector would have recorded
    ]
    assert all("operator:bob closed it" in str(r["reason"]) for r in rejected)
    assert spool.status().pending == 0
    _close_runs_left_open()  # the interpreter's exit: nothing left to close
    assert len(refusal_lines(caplog)) == 1
    assert not [r for r in caplog.records if r.exc_info]


def test_the_connectors_own_exception_is_not_masked_and_heartbeats_stop(
    ledger: Ledger, spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    """The heartbeat meets the refusal first: the body's own ValueError leaves the ``with``
    block, not a StreamError from finish()."""
    run = RunContext(
        ledger, 1, "SOURCE_1", spool=spool, heartbeat_interval=0.02, progress_interval=3600
    )
    with pytest.raises(ValueError, match="the connector's own"), run:  # noqa: PT012
        run.progress(fetched=3)  # pending: the heartbeat takes it, and is refused
        close_by_hand(ledger, run.run_id)
        deadline = time.monotonic() + 30
        while run.closed is None and time.monotonic() < deadline:
            threading.Event().wait(0.01)
        assert run.closed is not None
        raise ValueError("the connector's own")
    assert run.result is not None
    assert run.result.status == "closed"
    assert f"heartbeat-run-{run.run_id}" not in {t.name for t in threading.enumerate()}
    rejected = spool.rejected()
    assert [r["type"] for r in rejected] == ["RunProgressed", "RunFinished"]
    assert len(refusal_lines(caplog)) == 1  # one line, not one per heartbeat
    assert not [r for r in caplog.records if r.exc_info]
    assert totals(ledger, run.run_id)["records_fetched"] == 0  # none of the refused counts


def test_finish_tells_a_connector_that_reported_nothing_after_the_close(
    ledger: Ledger, spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    run = RunContext(ledger, 1, "SOURCE_1", spool=spool, progress_interval=3600)
    run.start()
    run.progress(fetched=5)
    close_by_hand(ledger, run.run_id)
    with pytest.raises(RunClosedError, match="2 event"):
        run.finish()
    assert run.result is not None
    assert run.result.status == "closed"
    assert [r["type"] for r in spool.rejected()] == ["RunProgressed", "RunFinished"]
    _close_runs_left_open()
    assert len(refusal_lines(caplog)) == 1
    assert not [r for r in caplog.records if r.exc_info]


def test_refused_events_the_spool_cannot_keep_are_in_the_error_and_the_log(
    ledger: Ledger, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    in_the_way = tmp_path / "not-a-folder"
    in_the_way.write_text("")
    run = RunContext(ledger, 1, "SOURCE_1", spool=Spool(in_the_way / "spool"), progress_interval=0)
    run.start()
    close_by_hand(ledger, run.run_id)
    with pytest.raises(RunClosedError, match="1 the spool could not keep are in the log") as e:
        run.progress(fetched=7)
    assert [event.type for event in e.value.events] == ["RunProgressed"]
    event_id = str(e.value.events[0].event_id)
    assert any(event_id in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    run.finish()


def test_a_run_failed_by_an_operator_still_records_its_connector_late(
    ledger: Ledger, spool: Spool
) -> None:
    """``ledger runs fail`` (and the API's and the web view's) appends RunTimedOut, not
    RunFinished: the connector's later progress and its RunFinished are late facts (I5)."""
    run = RunContext(ledger, 1, "SOURCE_1", spool=spool, progress_interval=0)
    run.start()
    run.progress(fetched=1)
    fail_run(ledger, run.run_id, "looks stuck", "alice")
    run.progress(fetched=2)
    assert run.finish().status == "success"
    assert [e.type for e in run_events(ledger, run.run_id)] == [
        "RunStarted",
        "RunProgressed",
        "RunTimedOut",
        "RunProgressed",
        "RunFinished",
    ]
    assert totals(ledger, run.run_id)["records_fetched"] == 3
    assert spool.rejected() == []
