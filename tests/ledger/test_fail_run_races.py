"""An operator fails a run that other writers are still appending to (``fail_run``: the API's
``POST /v1/runs/{id}/fail``, ``ledger runs fail``, the web form), on SQLite and on MariaDB.

The run moving on between the read of its state and the append is no reason to refuse: the
operator gave no version. ``fail_run`` reads again and retries while the run is open; only a
closed run is refused, with the one answer (``open-runs-only``) whichever writer closed it and
whichever backend raced."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ledger import (
    Ledger,
    RunFinished,
    RunProgressed,
    RunTimedOut,
    StreamError,
    fail_run,
)
from ledger.rules import OPEN, RunState
from ledger.sweeper import MAX_FAIL_ATTEMPTS
from service.api.problems import problem_for
from tests.service.conftest import api_client, auth

DEADLINE_S = 120.0


class RacingLedger(Ledger):
    """A ledger on which another thread appends, and is waited for, right after each read of
    a run's state: the race ``fail_run`` loses between its read and its append, every time
    rather than by chance. ``racer(state)`` is the append; it runs in a thread of its own
    (its own connection and transaction), never inside this one's."""

    racer: Callable[[RunState], None] | None = None
    races = 0
    max_races = 1_000_000

    def run(self, run_id: int) -> RunState | None:
        state = super().run(run_id)
        if self.racer is not None and state is not None and self.races < self.max_races:
            self.races += 1
            racer = self.racer
            worker = threading.Thread(target=racer, args=(state,))
            worker.start()
            worker.join(DEADLINE_S)
            assert not worker.is_alive(), "the racing append did not end"
        return state


@pytest.fixture
def racing(db_url: str) -> Iterator[RacingLedger]:
    store = RacingLedger.from_url(db_url)
    try:
        yield store
    finally:
        store.close()


def _progress(ledger: Ledger) -> Callable[[RunState], None]:
    def racer(state: RunState) -> None:
        ledger.append([RunProgressed(run_id=state.run_id, records_fetched=1)])

    return racer


def test_a_run_that_reports_between_the_read_and_the_append_is_failed_all_the_same(
    racing: RacingLedger, ledger: Ledger
) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    racing.racer, racing.max_races = _progress(ledger), 3
    position = fail_run(racing, run_id, "host lost", "alice")
    assert racing.races >= 3  # it lost three times, read again each time
    events = ledger.read_run(run_id)
    assert [e.type for e in events] == ["RunStarted", *["RunProgressed"] * 3, "RunTimedOut"]
    assert events[-1].position == position
    timed_out = events[-1].event
    assert isinstance(timed_out, RunTimedOut)
    # Read again before each try: the activity it records is the run's latest, not a stale one.
    assert timed_out.last_event_at == events[-2].event.occurred_at


def test_a_run_that_reports_before_every_try_is_still_failed_within_the_bound(
    racing: RacingLedger, ledger: Ledger
) -> None:
    """A writer that always gets in first (a busy connector, the head lock unfair) does not
    keep the operator out: the last try appends without a version, and the stream rules under
    the lock still refuse only a closed run."""
    run_id = ledger.start_run(1, "SOURCE_1")
    racing.racer = _progress(ledger)
    fail_run(racing, run_id, "host lost", "alice")
    assert racing.races == MAX_FAIL_ATTEMPTS
    assert [e.type for e in ledger.read_run(run_id)][-1] == "RunTimedOut"


@pytest.mark.parametrize(
    ("closing", "closed"),
    [
        (lambda run_id: RunFinished(run_id=run_id, status="success"), "finished"),
        (
            lambda run_id: RunTimedOut(
                run_id=run_id,
                reason="stale",
                threshold_seconds=3600,
                last_event_at=None,
                detected_by="sweeper",
                actor="sweeper",
            ),
            "already timed out",
        ),
    ],
)
@pytest.mark.parametrize("last_try", [False, True])
def test_a_run_closed_between_the_read_and_the_append_is_refused_as_closed(
    racing: RacingLedger,
    ledger: Ledger,
    closing: Callable[[int], Any],
    closed: str,
    last_try: bool,
) -> None:
    """Closed by the connector or by the sweeper after the operator's read: the refusal of a
    closed run (``open-runs-only``), never a version conflict, whether the close comes before
    an early try or before the last one (appended without a version)."""
    run_id = ledger.start_run(1, "SOURCE_1")

    def racer(state: RunState) -> None:
        if state.state != OPEN:
            return
        if racing.races == (MAX_FAIL_ATTEMPTS if last_try else 1):
            ledger.append([closing(state.run_id)])
        else:
            ledger.append([RunProgressed(run_id=state.run_id)])

    racing.racer = racer
    with pytest.raises(StreamError) as refused:
        fail_run(racing, run_id, "host lost", "alice")
    assert refused.value.rule == "open-runs-only"
    assert f"the run is closed ({closed})" in str(refused.value)
    assert "operator:alice" not in {e.actor for e in ledger.read_run(run_id)}
    problem = problem_for(refused.value)  # what the API answers
    assert (problem.status, problem.slug, problem.extra["rule"]) == (
        409,
        "stream-rule",
        "open-runs-only",
    )


def test_a_run_failed_while_four_writers_report_on_it(ledger: Ledger) -> None:
    """The audit's case, with no hook: four threads append RunProgressed to the run as fast as
    they can while an operator fails it; the fail succeeds (before: a version conflict 8 or 9
    times in 10)."""
    run_id = ledger.start_run(1, "SOURCE_1")
    done = threading.Event()
    reported = threading.Semaphore(0)

    def report() -> int:
        count = 0
        while not done.is_set():
            try:
                ledger.append([RunProgressed(run_id=run_id, records_fetched=1)])
            except StreamError:
                break  # the run closed: what the operator asked
            count += 1
            reported.release()
        return count

    with ThreadPoolExecutor(4) as pool:
        writers = [pool.submit(report) for _ in range(4)]
        try:
            for _ in range(8):  # the writers are going before the operator reads
                assert reported.acquire(timeout=DEADLINE_S)
            position = fail_run(ledger, run_id, "host lost", "alice")
        finally:
            done.set()
        assert sum(writer.result(DEADLINE_S) for writer in writers) >= 8
    (timed_out,) = [e for e in ledger.read_run(run_id) if e.type == "RunTimedOut"]
    assert timed_out.position == position


def test_concurrent_fails_of_one_run_give_one_failure_and_the_same_refusal(db_url: str) -> None:
    """Sixteen operators fail one idle open run at once through the API: one 200, and every
    other the 409 ``stream-rule`` of a closed run, on both backends (MariaDB answered some of
    them ``version-conflict``)."""
    with api_client(db_url) as client:
        run_id = client.app.state.api.ledger.start_run(1, "SOURCE_1")  # type: ignore[attr-defined]
        barrier = threading.Barrier(16)

        def fail(number: int) -> Any:
            barrier.wait(DEADLINE_S)
            return client.post(
                f"/v1/runs/{run_id}/fail",
                json={"reason": f"attempt {number}"},
                headers=auth("operator"),
            )

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(fail, range(16)))
    client.app.state.api.close()  # type: ignore[attr-defined]
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] + [409] * 15, [answer.text for answer in answers]
    refusals = [answer.json() for answer in answers if answer.status_code == 409]
    assert {(p["type"], p["rule"]) for p in refusals} == {
        ("urn:run-ledger:problem:stream-rule", "open-runs-only")
    }
