"""SIGHUP in the long-running commands (``ledger serve``, ``ledger api``)."""

from __future__ import annotations

import logging
import signal
from types import FrameType

log = logging.getLogger(__name__)


def ignore_hangup() -> None:
    """SIGHUP (``systemctl reload``, a logrotate ``postrotate`` habit, a closed terminal)
    would end the process on the spot: no grace period, runs left open until the sweeper times
    them out, their connectors' ticks skipped meanwhile. The config is read at start only, and
    the logs go to stderr (nothing to reopen), so it is said and otherwise ignored."""
    if hasattr(signal, "SIGHUP"):  # not on Windows
        signal.signal(signal.SIGHUP, _hangup)


def _hangup(_signum: int, _frame: FrameType | None) -> None:
    log.warning(
        "received SIGHUP: ignored, still serving (the config is read only at start: restart "
        "to apply a change; SIGTERM stops)"
    )
