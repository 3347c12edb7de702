"""An outage is two log lines, however many failures and threads meet it
(:class:`ledger.outage.Outage`): the projector's retries, the API's requests."""

from __future__ import annotations

import logging
import threading

import pytest
from freezegun import freeze_time

from ledger import StorageError
from ledger.outage import Outage


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
