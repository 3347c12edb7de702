"""An outage is two log lines, however many failures and threads meet it
(:class:`ledger.outage.Outage`): the projector's retries, the API's requests."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from freezegun import freeze_time

from ledger import StorageError
from ledger.outage import Outage, Tally, flush_tallies


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_an_outage_is_one_warning_as_it_starts_and_one_info_with_its_duration_as_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    outage = Outage("projector", logging.getLogger("tests.outage"))
    with freeze_time("2026-01-28 10:00:00") as clock:
        for _second in range(90):
            outage.failed(StorageError('database unreachable: (2003, "Can\'t connect")'))
            clock.tick(1)
        outage.ended()
        outage.ended()  # no outage: nothing more
    assert lines(caplog, logging.WARNING) == [
        "projector cannot proceed, retrying until it can: database unreachable: "
        '(2003, "Can\'t connect")'
    ]
    assert lines(caplog, logging.INFO) == ["projector proceeding again after 1m30s"]
    assert lines(caplog, logging.ERROR) == []


def test_threads_meeting_one_outage_log_it_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    outage = Outage("the API's database", logging.getLogger("tests.outage"))
    start = threading.Barrier(8)

    def request() -> None:
        start.wait(timeout=30)
        for _ in range(50):
            outage.failed("database unreachable")

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    outage.ended()
    assert len(lines(caplog, logging.WARNING)) == 1
    assert len(lines(caplog, logging.INFO)) == 1


def test_a_success_while_the_outage_is_logged_is_logged_after_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A request failing and another succeeding at once: the outage's state was changed under
    the lock and logged after it, so the success's "proceeding again" could come first and the
    log end on the WARNING of an outage already over. The outage cannot end while its WARNING
    is written: the success waits, its INFO after it."""
    log = logging.getLogger("tests.outage")
    outage = Outage("the API's database", log)
    written = log.warning
    ended_meanwhile = []

    def warning(*args: object, **kwargs: object) -> None:
        # The other request, answered now: it may end the outage only once this line is written.
        free = outage._lock.acquire(blocking=False)
        if free:
            outage._lock.release()
            outage.ended()
        ended_meanwhile.append(free)
        written(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(log, "warning", warning)
    caplog.set_level(logging.INFO)
    outage.failed("database unreachable")
    if ended_meanwhile == [False]:  # held: the success comes after, as it would
        outage.ended()
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]


def test_a_tally_says_the_rest_of_a_flood_once_its_minute_is_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The count after a line was said only at the next refusal past the minute: a flood that
    stopped was logged as its first refusal alone ("1 … refused" for 268)."""
    caplog.set_level(logging.WARNING)
    tally = Tally("connection(s) refused", logging.getLogger("tests.tally"), every=0.2)
    for _ in range(268):
        tally.add()
    deadline = time.monotonic() + 20
    while len(lines(caplog, logging.WARNING)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lines(caplog, logging.WARNING) == [
        "1 connection(s) refused",
        "267 connection(s) refused",
    ]


def test_flush_tallies_says_every_count_not_yet_said(caplog: pytest.LogCaptureFixture) -> None:
    """What a stop calls: the counts waiting on their timer (a daemon thread, gone at exit)
    are said at once, each tally's own; a tally with nothing counted says nothing."""
    caplog.set_level(logging.WARNING)
    log = logging.getLogger("tests.tally")
    refused, slow, quiet = (
        Tally(what, log, every=3600) for what in ("refused", "closed", "never counted")
    )
    for _ in range(5):
        refused.add()
    slow.add()
    flush_tallies()
    flush_tallies()  # said once
    said = [r.getMessage() for r in caplog.records if r.name == "tests.tally"]
    assert sorted(said) == ["1 closed", "1 refused", "4 refused"]
    assert quiet.what == "never counted"  # alive through the flushes, and said nothing


def test_a_stop_while_the_timer_writes_its_line_says_stopped_after_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The timer took the count under the lock and wrote its line after it: a stop's
    flush_tallies in that moment found nothing to say, the stop logged "stopped", and the
    timer's count came after it, the log's last line. The flush now waits for the line."""
    caplog.set_level(logging.INFO)
    log = logging.getLogger("tests.tally.stop")
    tally = Tally("connection(s) refused", log, every=0.5)
    tally.add()  # said at once
    written = log.warning
    stopped_meanwhile: list[bool] = []

    def warning(*args: object, **kwargs: object) -> None:
        # The stop, on the main thread, at this moment: it may flush only once this is written.
        free = tally._lock.acquire(blocking=False)
        if free:
            tally._lock.release()
            flush_tallies()
            log.info("stopped")
        stopped_meanwhile.append(free)
        written(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(log, "warning", warning)
    tally.add()  # waits for the timer
    deadline = time.monotonic() + 20
    while not stopped_meanwhile and time.monotonic() < deadline:
        time.sleep(0.02)
    if stopped_meanwhile == [False]:  # held: the stop comes after, as it would
        flush_tallies()
        log.info("stopped")
    said = [r.getMessage() for r in caplog.records if r.name == "tests.tally.stop"]
    assert said == ["1 connection(s) refused", "1 connection(s) refused", "stopped"]
