"""The last ``ledger verify`` this process ran, for the red banner of every page.

"The last verify" is the newest result kept in this process, with its time: refreshed when the
Integrity page is opened and, every ``[web] verify_interval``, by a daemon thread (the first
run right at start). A fresh process has no result until that first run ends; the pages say
so rather than claiming the ledger is sound. Several processes each keep their own.

The banner answers from the last verify that *ran to the end* (:attr:`VerifyCache.completed`):
a verify that could not run (the database away for a moment) found nothing, and must not take
down the banner of one that found a problem before it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from forensics.verify import VerifyReport, verify_all
from ledger import Ledger, LedgerError
from ledger.clock import utcnow
from ledger.outage import Outage
from service.api.problems import problem_for

log = logging.getLogger("ledger.web")


@dataclass(frozen=True)
class VerifyOutcome:
    at: datetime
    report: VerifyReport | None  # None: verify could not run (``error`` says why)
    error: str | None = None

    @property
    def failed(self) -> bool:
        """The banner's question: did the last verify find a problem?"""
        return self.report is not None and not self.report.ok


class VerifyCache:
    def __init__(self, ledger: Ledger, interval: timedelta, outage: Outage | None = None) -> None:
        """``outage``: the pages' (the API's), through which a verify that cannot reach the
        database is logged: once as the outage starts, not once per visit to Integrity."""
        self._ledger = ledger
        self._outage = outage
        self._interval = interval.total_seconds()
        self._lock = threading.Lock()
        self._last: VerifyOutcome | None = None
        self._completed: VerifyOutcome | None = None  # the last one with a report
        self._finished = 0  # verifies kept so far (a waiter knows one ended meanwhile)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def last(self) -> VerifyOutcome | None:
        return self._last

    @property
    def completed(self) -> VerifyOutcome | None:
        """The last verify that ran to the end (the banner's): one that could not run says
        nothing about the ledger, so it leaves this as it was."""
        return self._completed

    def refresh(self) -> VerifyOutcome:
        """Verify now and keep the result. While a verify runs (the scheduled one, another
        visitor's), a caller waits for it and takes its result instead of queueing a second
        full scan behind it."""
        seen = self._finished
        with self._lock:
            if self._finished != seen and self._last is not None:
                return self._last  # one finished while this caller waited for the lock
            try:
                outcome = VerifyOutcome(utcnow(), verify_all(self._ledger))
            except LedgerError as exc:
                # What a 503 says, never the database's URL, user, file or the driver's words
                # (any reader, anyone with public_read, sees the page): problem_for logs them.
                outcome = VerifyOutcome(utcnow(), None, problem_for(exc, self._outage).detail)
            self._last = outcome
            if outcome.report is not None:
                self._completed = outcome
            self._finished += 1
        if outcome.failed:
            log.warning("verify found %d problem(s)", len(outcome.report.problems))  # type: ignore[union-attr]
        return outcome

    def start(self) -> None:
        if self._interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="web-verify", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # the thread must outlive a bad moment; the next tick retries
                log.exception("scheduled verify failed")
            self._stop.wait(self._interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


__all__ = ["VerifyCache", "VerifyOutcome"]
