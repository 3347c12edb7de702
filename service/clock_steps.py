"""Serve's scheduler after the wall clock steps back.

APScheduler 3 times its jobs on the wall clock: each job's next run is a wall-clock time, and
the scheduler sleeps until the earliest. When the clock steps back (an NTP step after a host
booted with its clock ahead, a hardware clock kept in local time, a VM restored), every next run
is that much further away: after a step of an hour the projector (every second), the sweeper,
the spool flush and every connector waited an hour, the projection's lag growing. The
scheduler here watches the wall clock against the monotonic one and, on a step back, brings
each job's next run back to what its trigger gives from the new time (a one-off job's by the
step), so the jobs go on as the clock now reads.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger

from ledger.durations import format_duration

log = logging.getLogger("service.serve")

# A step back longer than this reschedules the jobs (a shorter one costs them no more than it).
STEP_S = 2.0
# How often the clocks are compared.
WATCH_S = 1.0


def clock_offset() -> float:
    """The wall clock less the monotonic one: constant unless the wall clock is stepped.
    (``time``'s functions looked up at each call, so a test can hold the monotonic one.)"""
    return time.time() - time.monotonic()


class ClockWatchedScheduler(BackgroundScheduler):  # type: ignore[misc]
    """A ``BackgroundScheduler`` whose jobs follow a wall clock stepped back (see above)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._watching = threading.Event()

    def start(self, *args: Any, **kwargs: Any) -> None:
        super().start(*args, **kwargs)
        self._watching.set()
        threading.Thread(target=self._watch, name="clock-watch", daemon=True).start()

    def shutdown(self, wait: bool = True) -> None:
        self._watching.clear()
        super().shutdown(wait)

    def _watch(self) -> None:
        offset = clock_offset()
        while self._watching.is_set():
            time.sleep(WATCH_S)
            now = clock_offset()
            step, offset = offset - now, now
            if step > STEP_S and self._watching.is_set():
                self.stepped_back(step)

    def stepped_back(self, step: float) -> None:
        """Bring each job's next run back to its trigger's next from now (a one-off job's by
        ``step``): a job would otherwise wait ``step`` longer."""
        now = datetime.now(UTC)
        moved = 0
        for job in self.get_jobs():
            due = job.next_run_time
            if due is None:  # paused
                continue
            if isinstance(job.trigger, DateTrigger):
                earlier = due - timedelta(seconds=step)
            else:
                earlier = job.trigger.get_next_fire_time(None, now)
            if earlier is not None and earlier < due:
                job.modify(next_run_time=earlier)
                moved += 1
        log.warning(
            "the wall clock stepped back %s; %d job(s) rescheduled from the clock's new time",
            format_duration(timedelta(seconds=round(step))),
            moved,
        )
