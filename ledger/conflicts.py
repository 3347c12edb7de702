"""Running a transaction again when it lost to another one (a deadlock, a lock wait, a Galera
certification conflict): bounded, with full-jitter pauses, so that writers on different nodes
that collided do not collide again in step.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ledger.driver_errors import is_transaction_conflict

log = logging.getLogger(__name__)


# A transaction that loses to another one (is_transaction_conflict) was rolled back: it is run
# again at most this many times in all, and no attempt starts after the budget. The pause
# before attempt n+1 is drawn uniformly from [0, min(cap, first * 2**(n-1))] ("full jitter"),
# so writers on different nodes that collided do not collide again in step. The bounds leave
# room for a writer on a slow node that keeps losing the race (three writers on three nodes
# sharing two busy cores once needed more than 40 attempts).
MAX_CONFLICT_ATTEMPTS = 100
CONFLICT_RETRY_BUDGET_S = 60.0
CONFLICT_PAUSE_FIRST_S = 0.005
CONFLICT_PAUSE_CAP_S = 0.25

T = TypeVar("T")


def conflict_pause(attempt: int) -> float:
    """The jittered pause after the ``attempt``-th try lost to another transaction."""
    ceiling = min(CONFLICT_PAUSE_CAP_S, CONFLICT_PAUSE_FIRST_S * 2 ** (attempt - 1))
    return random.uniform(0.0, ceiling)  # noqa: S311 - spreading retries, not a secret


def retrying_conflicts(
    action: Callable[[], T],
    what: str,
    also: tuple[type[Exception], ...] = (),
    stop: threading.Event | None = None,
) -> T:
    """``action()``, run again while it fails with a transaction conflict, or one of ``also``
    (each attempt must be a whole transaction, rolled back by the failure); bounded as the
    append's retry. Any other error, or the last conflict, is raised; so is the conflict in
    hand when ``stop`` is set during a pause (a shutdown does not wait out the retries)."""
    started = time.monotonic()
    attempt = 1
    while True:
        try:
            return action()
        except Exception as exc:
            if not (is_transaction_conflict(exc) or isinstance(exc, also)):
                raise
            if (
                attempt >= MAX_CONFLICT_ATTEMPTS
                or time.monotonic() - started > CONFLICT_RETRY_BUDGET_S
            ):
                log.warning("%s still conflicting after %d attempt(s); giving up", what, attempt)
                raise
            log.debug("%s lost to another transaction (attempt %d): %s", what, attempt, exc)
            if stop is None:
                time.sleep(conflict_pause(attempt))
            elif stop.wait(conflict_pause(attempt)):
                raise
            attempt += 1
