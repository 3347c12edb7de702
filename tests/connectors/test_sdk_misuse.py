"""The connector SDK used wrongly, on SQLite and on MariaDB (connectors review): intervals that
are not a finite number of seconds, a second ``start()``, counts that sum past what one event
holds, an append cut by Ctrl-C after it committed. Each is refused with a message naming the
mistake, or recorded exactly; never a run left open, a busy loop or a count lost or doubled."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from connectors import RunContext, Spool
from connectors.sdk import stop_runs
from ledger import Ledger, ValidationError
from ledger.events import COUNTER_LIMIT
from projections import Projector
from tests import support
from tests.connectors.support import finished, run_events, totals

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("heartbeat_interval", float("nan")),
        ("heartbeat_interval", float("inf")),
        ("heartbeat_interval", 1e10),
        ("heartbeat_interval", 0),
        ("heartbeat_interval", "60"),
        ("heartbeat_interval", True),
        ("progress_interval", float("nan")),
        ("progress_interval", float("-inf")),
        ("progress_interval", -1),
        # Refused, its refusal quoted the value with repr(), which Python refuses for an int
        # of more than 4,300 digits: a ValueError escaped RunContext() in its place.
        pytest.param("heartbeat_interval", 10**5000, id="heartbeat_interval-5001-digits"),
        pytest.param("progress_interval", -(10**5000), id="progress_interval-5001-digits"),
        ("max_error_details", 1.5),
        ("max_error_details", -1),
        pytest.param("max_error_details", -(10**5000), id="max_error_details-5001-digits"),
    ],
)
def test_an_interval_that_is_not_a_finite_number_of_seconds_is_refused(
    ledger: Ledger, spool: Spool, option: str, value: Any
) -> None:
    # heartbeat_interval=nan appended heartbeats as fast as the ledger took them (586 in 0.3 s);
    # inf killed the heartbeat thread with an OverflowError, and the live run was timed out.
    with pytest.raises(ValidationError, match=option):
        RunContext(ledger, 1, "SOURCE_1", spool=spool, **{option: value})
    assert ledger.head().last_position == 0  # nothing started


@pytest.mark.parametrize("source_id", [2**31, -1, "1"])
def test_a_source_id_the_ledger_cannot_store_is_refused_naming_it(
    ledger: Ledger, spool: Spool, source_id: Any
) -> None:
    # pydantic's own ValidationError (not a LedgerError) escaped start(): a traceback from
    # `ledger run csv --source-id 3000000000`, and an error no caller of the SDK catches.
    with pytest.raises(ValidationError, match=r"^source_id: "):
        RunContext(ledger, source_id, "SOURCE_1", spool=spool)
    assert ledger.head().last_position == 0  # nothing started


@pytest.mark.parametrize("interval", [float("nan"), float("inf"), 0, -1.0, "1"])
def test_projector_follow_refuses_an_interval_that_is_not_finite(
    ledger: Ledger, interval: Any
) -> None:
    stop = threading.Event()
    with pytest.raises(ValidationError, match="interval"):
        Projector(ledger).follow(stop, interval=interval)


def test_a_second_start_is_refused_and_leaves_no_run_open(ledger: Ledger, spool: Spool) -> None:
    # A second start() opened a second run and left the first one open, unseen, until the
    # sweeper timed it out as failed.
    run = RunContext(ledger, 1, "SOURCE_1", spool=spool)
    first = run.start()
    with pytest.raises(ValidationError, match=f"already started run {first}"):
        run.start()
    run.finish()
    with pytest.raises(ValidationError, match="already started"):
        run.start()  # nor reused after finish
    assert ledger.head().last_run_id == first
    assert [e.type for e in run_events(ledger, first)] == ["RunStarted", "RunFinished"]


def test_counts_summed_past_one_event_are_split_not_stuck(ledger: Ledger, spool: Spool) -> None:
    # Two deltas just under the limit, within one progress interval: the pending sum could
    # not be put in a RunProgressed, so finish() raised pydantic's error every time and the
    # run stayed open with its counts, to be timed out as failed.
    big = COUNTER_LIMIT - 1
    with RunContext(ledger, 1, "SOURCE_1", spool=spool, progress_interval=3600) as run:
        run.progress(fetched=big)
        run.progress(fetched=big, created=5)
        run.progress(fetched=3)
    assert finished(ledger, run.run_id)["status"] == "success"
    assert totals(ledger, run.run_id)["records_fetched"] == 2 * big + 3
    assert totals(ledger, run.run_id)["records_created"] == 5


def commit_then_interrupt(real_append: Callable[..., Any]) -> Callable[..., Any]:
    """``Ledger.append`` that commits, then meets Ctrl-C before it returns."""

    def append(self: Ledger, events: Any, **kwargs: Any) -> Any:
        real_append(self, events, **kwargs)
        raise KeyboardInterrupt

    return append


def test_an_append_interrupted_after_its_commit_is_not_counted_twice(
    ledger: Ledger, spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C landing after the append committed, before it returned: the pending counts stayed
    # and finish() sent them again under a new event_id, so the run counted them twice.
    run = RunContext(ledger, 1, "SOURCE_1", spool=spool, progress_interval=0)
    run.start()
    monkeypatch.setattr(Ledger, "append", commit_then_interrupt(Ledger.append))
    with pytest.raises(KeyboardInterrupt) as interrupted:
        run.progress(fetched=7)
    monkeypatch.undo()
    run.finish(interrupted.value)
    assert totals(ledger, run.run_id)["records_fetched"] == 7
    assert finished(ledger, run.run_id)["status"] == "failed"


def test_a_finish_interrupted_after_its_commit_can_be_finished_again(
    ledger: Ledger, spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The RunFinished committed, then Ctrl-C: a second finish() (the exit hook's) built a new
    # RunFinished, which the ledger refuses after the first, and the run looked unfinished.
    run = RunContext(ledger, 1, "SOURCE_1", spool=spool, progress_interval=3600)
    run.start()
    run.progress(fetched=2)
    monkeypatch.setattr(Ledger, "append", commit_then_interrupt(Ledger.append))
    with pytest.raises(KeyboardInterrupt):
        run.finish()
    monkeypatch.undo()
    result = run.finish(SystemExit("interpreter exit with the run still open"))
    assert result.status == "success"  # the outcome first decided, already in the ledger
    types = [e.type for e in run_events(ledger, run.run_id)]
    assert types == ["RunStarted", "RunProgressed", "RunFinished"]
    assert totals(ledger, run.run_id)["records_fetched"] == 2


def test_a_forked_child_neither_closes_nor_reports_for_the_parents_run(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    # The child inherited the open run without its heartbeat thread; its exit hook appended
    # RunFinished failed ("interpreter exit") while the parent went on, whose own RunFinished
    # the ledger then refused.
    code = (
        "import os, sys\n"
        "from connectors import RunContext, Spool\n"
        "from ledger import Ledger, ValidationError\n"
        f"run = RunContext(Ledger.from_url({db_url!r}), 1, 'SOURCE_1', "
        f"spool=Spool({str(tmp_path)!r}), progress_interval=0)\n"
        "run.start()\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    try:\n"
        "        run.progress(fetched=1)\n"
        "    except ValidationError as exc:\n"
        "        print('child refused:', exc, flush=True)\n"
        "    sys.exit(0)  # a normal exit: the exit hooks run\n"
        "os.waitpid(child, 0)\n"
        "run.progress(fetched=2)\n"
        "print('parent:', run.finish().status, run.run_id, flush=True)\n"
    )
    done = support.run_to_end([sys.executable, "-c", code], timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("child refused: this RunContext records a run of process ")
    status, run_id = lines[1].split()[1:]
    assert status == "success"
    assert [e.type for e in ledger.read_run(int(run_id))] == [
        "RunStarted",
        "RunProgressed",
        "RunFinished",
    ]
    assert finished(ledger, int(run_id))["status"] == "success"
    assert totals(ledger, int(run_id))["records_fetched"] == 2


def test_a_stop_a_signal_handler_asked_for_ends_the_run_at_its_next_report(
    ledger: Ledger, spool: Spool
) -> None:
    """``stop_runs``: the raise of ``ledger run``'s SIGTERM handler can be dropped by Python
    (a handler that ran inside a weakref callback); the run's next report raises it, and the
    run ends failed, "interrupted", instead of going on to "success" or for ever."""
    context = RunContext(ledger, 1, "stopped", spool=spool, progress_interval=0)
    context.start()
    context.progress(fetched=1)
    stop = SystemExit(143)
    stop_runs(stop)
    try:
        with pytest.raises(SystemExit):
            context.progress(fetched=1)
        with pytest.raises(SystemExit):
            context.error("later")
        result = context.finish(stop)
    finally:
        stop_runs(None)
    assert result.status == "failed"
    last = ledger.read_run(context.run_id)[-1].payload_data
    assert last["error_details"]["reason"] == "interrupted"
    assert last["error_message"] == "stopped by SIGTERM"


class _ReprRaises:
    """A connector's object (a response, a row) whose ``repr`` fails: not JSON either."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize(
    "details",
    [{"n": 10**5000}, {"row": _ReprRaises()}, {"rows": [1, _ReprRaises()]}],
    ids=["int-past-4300-digits", "repr-raises", "repr-raises-inside"],
)
def test_details_that_neither_json_nor_repr_can_write_are_an_error_of_the_run(
    ledger: Ledger, spool: Spool, details: dict[str, Any]
) -> None:
    # bounded_details fell back on repr() for details JSON cannot write, and repr() raised in
    # turn (Python refuses an int of more than 4,300 digits as text; an object's __repr__ may
    # fail): a ValueError or RuntimeError escaped error(), the error was not counted, and the
    # connector's own code failed on a report meant to record a problem.
    run = RunContext(ledger, 1, "SOURCE_1", spool=spool)
    run.start()
    run.error("bad row", details)
    assert run.finish().status == "partial"
    payload = finished(ledger, run.run_id)
    assert payload["error_details"]["error_count"] == 1
    kept = payload["error_details"]["errors"][0]
    assert kept["message"] == "bad row"
    assert "unserialisable" in kept["details"]
    Projector(ledger).run_once()
    assert ledger.head().last_position == 2


def test_a_count_past_4300_digits_is_refused_as_any_count_out_of_range(
    ledger: Ledger, spool: Spool
) -> None:
    # The refusal quoted the count with repr(), which Python refuses for an int that long: a
    # ValueError escaped progress() in place of the ValidationError.
    run = RunContext(ledger, 1, "SOURCE_1", spool=spool)
    run.start()
    with pytest.raises(ValidationError, match=r"^progress fetched=<int: repr\(\) failed"):
        run.progress(fetched=10**5000)
    assert run.finish().status == "success"


def test_a_connector_name_past_4300_digits_is_refused_as_any_name_that_is_not_text(
    ledger: Ledger, spool: Spool
) -> None:
    # The run's actor was made from the name as text before the name was checked (a name that
    # is not text is refused as RunContext() checks its RunStarted), and Python refuses an int
    # of more than 4,300 digits as text: a ValueError escaped RunContext() in its place.
    for name in (5, 10**5000):
        with pytest.raises(ValidationError, match=r"^connector_name: Input should be a valid str"):
            RunContext(ledger, 1, name, spool=spool)  # type: ignore[arg-type]
    assert ledger.head().last_position == 0  # nothing started


def test_an_error_message_past_4300_digits_is_an_error_of_the_run(
    ledger: Ledger, spool: Spool
) -> None:
    # error() made its message text with str(), which Python refuses for an int of more than
    # 4,300 digits: a ValueError escaped error(), the error not kept, as review 60 fixed for
    # the details.
    run = RunContext(ledger, 1, "SOURCE_1", spool=spool)
    run.start()
    run.error(10**5000)  # type: ignore[arg-type]
    assert run.finish().status == "partial"
    kept = finished(ledger, run.run_id)["error_details"]["errors"][0]
    assert kept["message"] == "<int: str() failed with ValueError>"
