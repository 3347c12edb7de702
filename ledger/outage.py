"""A spell of failures logged as two lines, not one per retry or per request: a WARNING as it
starts (with the first error) and an INFO as it ends (with how long it lasted). Shared by the
threads that meet it (the API answers requests on many). And :class:`Tally`: what a bound
refused, counted, a WARNING a minute at most, the rest said as the process stops
(:func:`flush_tallies`)."""

from __future__ import annotations

import logging
import threading
import time
import weakref

from ledger.durations import format_duration
from ledger.text import visible


class Outage:
    def __init__(self, what: str, log: logging.Logger) -> None:
        self.what = what
        self.log = log
        self.since: float | None = None  # time.monotonic() of the first failure
        self._lock = threading.Lock()

    # Each line is written under the lock: written after it, a success meanwhile on another
    # thread (an API request, a web page) wrote its "proceeding again" first, and the log ended
    # on the WARNING of an outage already over.

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


# The most often a Tally's WARNING is written.
NOTE_EVERY_S = 60.0

# Every Tally alive, for flush_tallies: a server's protocol class holds its own two.
_TALLIES: weakref.WeakSet[Tally] = weakref.WeakSet()


class Tally:
    """Counts what a bound refused (a connection over a limit, headers not complete in time):
    a WARNING with the count at most every ``every`` seconds, so that a flood is a line a
    minute, not a line a refusal. What is counted after a line is said once the ``every``
    seconds are over (a timer), not at the next refusal: that one may come days later, or never,
    and a flood of 268 refused connections that then stopped was logged as "1"."""

    def __init__(self, what: str, log: logging.Logger, every: float = NOTE_EVERY_S) -> None:
        self.what = what
        self.log = log
        self.every = every
        self._count = 0
        self._last: float | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        _TALLIES.add(self)

    def add(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._count += 1
            if self._last is not None and now - self._last < self.every:
                if self._timer is None:
                    self._timer = threading.Timer(self._last + self.every - now, self.flush)
                    self._timer.daemon = True
                    self._timer.start()
                return
            if self._timer is not None:  # said now, with the rest of the count
                self._timer.cancel()
                self._timer = None
            count, self._count, self._last = self._count, 0, now
            self.log.warning("%d %s", count, self.what)

    # Each line is written under the lock, as Outage's are: written after it, the timer's line
    # could follow a stop's flush_tallies (which found the count taken) and the "stopped" after
    # it, the last line of the log a count of a process already stopped.

    def flush(self) -> None:
        """Say what was counted since the last line, now (the timer's work, or the stop's)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            count, self._count = self._count, 0
            if count:
                self._last = time.monotonic()
                self.log.warning("%d %s", count, self.what)


def flush_tallies() -> None:
    """Say every count not yet said, as the process stops: the timer is a daemon thread, and
    a flood in the last minute before a stop (refused while the server was overloaded, the
    very minute an operator then restarted it) was never logged."""
    for tally in list(_TALLIES):
        tally.flush()
