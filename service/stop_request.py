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

# SIGTERMs received before the command took them (see defer_termination).
_EARLY: list[int] = []


def defer_termination() -> None:
    """From the start of the ``ledger`` console script (:mod:`service.launch`): a SIGTERM is
    recorded instead of ending the process, until the command either takes it as a stop request
    (:meth:`StopRequest.install`, :func:`take_early_signals`) or declines it
    (:func:`release_termination`).

    Loading the command and opening its database take one to several seconds; a SIGTERM then
    (an orchestrator stopping what it just started) ended ``project --follow``, ``serve`` and
    ``api`` with 143 and not a word, where a SIGTERM a moment later stops them cleanly (exit 0).
    Only the moments before this runs (the interpreter's own start, a few tens of ms) are left.
    A SIGTERM the process was started ignoring (``SIG_IGN``) is left as it is.
    """
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _record_early)


def _record_early(signum: int, _frame: FrameType | None) -> None:
    _EARLY.append(signum)  # no lock: see the module's docstring


def take_early_signals() -> list[int]:
    """The SIGTERMs recorded since :func:`defer_termination`, handed over once (the caller has
    installed its own handler first, so none falls between the two)."""
    taken = _EARLY[:]
    del _EARLY[: len(taken)]
    return taken


def release_termination() -> None:
    """For a command that does not stop on request: SIGTERM ends the process at once again, as
    it always has (143), and one recorded meanwhile ends it now."""
    if signal.getsignal(signal.SIGTERM) is not _record_early:
        return  # not deferred (not the console script), or taken by the command already
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if take_early_signals():
        signal.raise_signal(signal.SIGTERM)


class StopRequest:
    """Stop requested by a signal (SIGTERM, SIGINT) or by any thread setting ``stop``."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.received: list[int] = []

    def install(self) -> None:
        """Handle SIGTERM and SIGINT from now on (call from the main thread), except one the
        process was started ignoring (``SIG_IGN``): whoever started it asked that this signal
        not stop it (a supervisor ignoring SIGTERM, a script's background job ignoring SIGINT
        as the shell sets it), and Python itself leaves an ignored SIGINT ignored."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, self._record)
        self.received.extend(take_early_signals())  # a SIGTERM while the command loaded

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
