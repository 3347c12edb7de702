"""A spell of failures logged as two lines, not one per retry or per request: a WARNING as it
starts (with the first error) and an INFO as it ends (with how long it lasted). Shared by the
threads that meet it (the API answers requests on many)."""

from __future__ import annotations

import logging
import threading
import time

from ledger.durations import format_duration
from ledger.text import visible


class Outage:
    def __init__(self, what: str, log: logging.Logger) -> None:
        self.what = what
        self.log = log
        self.since: float | None = None  # time.monotonic() of the first failure
        self._lock = threading.Lock()

    def failed(self, exc: BaseException | str) -> None:
        with self._lock:
            starting, self.since = self.since is None, self.since or time.monotonic()
        if starting:
            self.log.warning(
                "%s cannot proceed, retrying until it can: %s", self.what, visible(str(exc))
            )
        else:
            self.log.debug("%s still cannot proceed: %s", self.what, visible(str(exc)))

    def ended(self) -> None:
        with self._lock:
            since, self.since = self.since, None
        if since is not None:
            lasted = format_duration(round(time.monotonic() - since))
            self.log.info("%s proceeding again after %s", self.what, lasted)
