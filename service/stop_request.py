"""SIGTERM and SIGINT as a request to stop a long-running command (``ledger serve``,
``ledger project --follow``), without a lock in the signal handler.

A Python signal handler runs in the main thread between two bytecodes, possibly while that
thread holds a lock: the lock of the very ``threading.Event`` the main thread waits on, which
``Event.wait`` takes again as it returns. A handler calling ``Event.set()`` then waits for a lock
its own thread holds, for ever (python/cpython#126434 is the same for ``multiprocessing``): a
``project --follow`` sent SIGTERM in CI never stopped and was killed a minute later. So the
handler only records the signal (a list append takes no lock of Python's), and the main thread,
which looks at the record every :data:`POLL_S` while it waits, sets the event for the others.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

POLL_S = 0.5  # how soon the main thread notices a signal while it waits


class StopRequest:
    """Stop requested by a signal (SIGTERM, SIGINT) or by any thread setting ``stop``."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.received: list[int] = []

    def install(self) -> None:
        """Handle SIGTERM and SIGINT from now on (call from the main thread)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._record)

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)  # no lock: see the module's docstring

    @property
    def signal_name(self) -> str | None:
        """The first signal received (``SIGTERM``), None if none came."""
        return signal.Signals(self.received[0]).name if self.received else None

    def wait(self, seconds: float | None = None) -> bool:
        """Wait up to ``seconds`` (None: for ever) for a stop; True once it is requested, and
        ``stop`` is then set (the threads waiting on it wake up). Call from the main thread."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while not self.received:
            pause = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
            if pause <= 0:
                return False
            if self.stop.wait(pause):
                return True
        self.stop.set()
        return True
