"""A connector's scheduled ticks in ``ledger serve``: each claimed once across serve processes
(``schedule_claims``), skipped while a run of the connector is open, run within its
``max_run_time``, and tracked until the run ends, so that serve's stop can end the runs still
going.

A connector with a ``max_run_time`` (its own or ``[serve]``'s) runs in a thread of its own that
the job watches (service.run_bound): past the bound the run is asked to stop, and one still
going ``grace_period`` later is timed out by serve and left behind, so no run stays open and no
connector stays held by a run that never ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from connectors import RunContext, RunResult, Spool
from connectors.outcome import describe_failure
from connectors.registry import build_connector
from ledger import Ledger, LedgerError, SchemaError, StorageError, ValidationError
from ledger.batch_checks import MAX_CLOCK_SKEW
from ledger.clock import isoformat_utc, utcnow
from ledger.driver_errors import database_unreachable
from ledger.durations import format_duration
from ledger.outage import Outage
from ledger.rules import OPEN
from ledger.text import visible
from service.claims import TICK_ORIGIN, claim, interval_tick
from service.config import ConnectorConfig, LedgerConfig, crontab_trigger
from service.run_bound import POLL_SECONDS, RunBound, time_out_run

log = logging.getLogger("service.serve")  # serve's log: operators filter on the one name

# Waiting for an unreachable database: the first retry, doubled up to the last (serve's start
# waits alike).
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0
# The id suffix of the one-off job that tries a connector's tick again after an outage.
RETRY = ":retry"
# The id prefix of a connector's job (``connector:NAME:SOURCE``; a job id, not an actor).
CONNECTOR_JOB_PREFIX = "connector:"
# A connector's runs timed out past max_run_time whose threads are still blocked (a csv path on
# a FIFO nobody writes, a hung NFS mount): at most this many are left behind. A source that
# blocks every read left one more thread for ever at each tick (12 in a minute at a 2 s
# interval; 1,440 a day at 1 m), until the process could start no thread at all; past this
# many a tick is skipped, before its claim (another serve process may take it), until one of
# them returns. A few, not one: a read that hangs once in a while must not hold the connector.
MAX_LEFT_BEHIND = 3


def job_id(connector: ConnectorConfig) -> str:
    return f"{CONNECTOR_JOB_PREFIX}{connector.name}:{connector.source_id}"


def interval_trigger(every: timedelta) -> IntervalTrigger:
    """Ticks every ``every``, aligned to :data:`TICK_ORIGIN` as every serve process aligns them."""
    return IntervalTrigger(seconds=every.total_seconds(), start_date=TICK_ORIGIN, timezone=UTC)


def connector_trigger(connector: ConnectorConfig) -> BaseTrigger:
    if connector.schedule.interval is not None:
        return interval_trigger(connector.schedule.interval)
    assert connector.schedule.cron is not None
    return crontab_trigger(connector.schedule.cron)  # as config check read it


def connector_tick(connector: ConnectorConfig, now: datetime) -> datetime:
    """The scheduled time of the connector's tick running at ``now``: the claim's key."""
    if connector.schedule.interval is not None:
        return interval_tick(now, connector.schedule.interval, TICK_ORIGIN)
    return now.replace(second=0, microsecond=0)  # crontab ticks are whole minutes


def log_tick_failure(outage: Outage, what: str, exc: StorageError) -> None:
    """A scheduled tick (a connector's or the sweeper's) that failed on the database."""
    # One line as the outage starts, one as it ends: the database unreachable, or its
    # schema gone under a running serve (the start refuses a missing one; an ERROR per
    # connector per tick said "run `ledger migrate`" for ever, where one line says it).
    if database_unreachable(exc) or isinstance(exc, SchemaError):
        outage.failed(exc)
    else:
        log.error("%s: %s", what, visible(str(exc)))


class TickRetry:
    """A connector's tick whose claim or open-run check met the database unreachable: tried
    again after ``delay`` (doubling, as serve's start waits), while before the next tick is due
    (``until``). ``tried`` keeps the claim's attempts (see :func:`service.claims.claim`)."""

    def __init__(self, tick: datetime, until: datetime) -> None:
        self.tick = tick
        self.until = until
        self.tried: list[datetime] = []
        self.delay = RETRY_FIRST_S

    def later(self) -> TickRetry | None:
        """This tick to try again after :attr:`delay`, the next delay doubled; None once the
        retry would come as late as the next tick."""
        if utcnow() + timedelta(seconds=self.delay) >= self.until:
            return None
        again = TickRetry(self.tick, self.until)
        again.tried = self.tried
        again.delay = min(self.delay * 2, RETRY_MAX_S)
        return again


class ServiceShutdown(Exception):
    """Recorded as the failure of a run still going when ``ledger serve`` stopped."""


class ConnectorJobs:
    """The connectors' ticks of one serve process and the runs they have going."""

    def __init__(
        self,
        config: LedgerConfig,
        ledger: Ledger,
        shutdown_ledger: Ledger,
        spool: Spool,
        identity: str,
        stop: threading.Event,
        scheduler: BaseScheduler,
        ticks_outage: Outage,
    ) -> None:
        """``shutdown_ledger``: the stop's engine, which waits on the database only briefly;
        ``ticks_outage``: shared with the sweeper's ticks, so an outage is two lines in all."""
        self.config = config
        self.ledger = ledger
        self.shutdown_ledger = shutdown_ledger
        self.spool = spool
        self.identity = identity
        self.stop = stop
        self.scheduler = scheduler
        self.ticks_outage = ticks_outage
        self.active: dict[str, RunContext] = {}
        self.in_flight = 0  # connector jobs past their stop check
        self.active_lock = threading.Lock()
        # One per connector job, held from its tick's claim to the run's end: the run at start
        # and the interval's ticks are separate jobs (max_instances keeps each apart only from
        # itself), and the open-run check cannot see a run whose RunStarted is not committed.
        self.connector_running: dict[str, threading.Lock] = {}
        # Set by a connector job's run as it starts: a tick whose run began is not tried again.
        self.run_began: dict[str, threading.Event] = {}
        # Per connector job: the threads of its runs left behind past max_run_time.
        self.left_behind: dict[str, list[threading.Thread]] = {}

    def tick(self, connector: ConnectorConfig, retry: TickRetry | None = None) -> None:
        """One scheduled run: claimed once across processes, skipped while one is open;
        ``retry``: a tick that met the database unreachable, tried again."""
        name = job_id(connector)
        with self.active_lock:  # counted before it can start a run, so shutdown waits for it
            if self.stop.is_set():
                return
            self.in_flight += 1
            running = self.connector_running.setdefault(name, threading.Lock())
        if not running.acquire(blocking=False):
            # The run at start still going when the first tick fires (or the reverse): the
            # tick is skipped, as APScheduler skips a job's own overlapping tick.
            log.warning("%s: tick skipped, its previous run is still going", name)
            with self.active_lock:
                self.in_flight -= 1
            return
        try:
            self._run_tick(connector, name, retry)
        except StorageError as exc:
            log_tick_failure(self.ticks_outage, f"job {name}", exc)
        except LedgerError as exc:  # the database or the config: say what, no traceback
            log.error("job %s: %s", name, visible(str(exc)))
        except Exception:
            log.exception("job %s failed", name)
        finally:
            running.release()
            with self.active_lock:
                self.in_flight -= 1

    def _run_tick(
        self, connector: ConnectorConfig, name: str, retry: TickRetry | None = None
    ) -> None:
        """Claim the tick now running (or the one ``retry`` tries again), check that no run is
        open, and run the connector. The database unreachable before the run started (a
        failover, a restart) is tried again in a one-off job after a growing pause, up to the
        next tick: giving up at once lost the tick everywhere (a daily connector's 02:00 tick
        met by a 20 s outage did not run that day). A claim this process committed without
        hearing so is recognised as its own (see :func:`service.claims.claim`)."""
        blocked = self.still_blocked(name)
        if blocked >= MAX_LEFT_BEHIND:
            log.warning(
                "%s: tick skipped: the connectors of %d earlier runs timed out past "
                "max_run_time are still blocked (at most %d are left behind)",
                name,
                blocked,
                MAX_LEFT_BEHIND,
            )
            return
        if retry is None:
            tick = connector_tick(connector, utcnow())
            retry = TickRetry(tick, self._next_tick(connector, tick))
        began = threading.Event()
        try:
            self._claim_and_run(connector, name, retry.tick, retry.tried, began)
        except StorageError as exc:
            again = retry.later()
            if not database_unreachable(exc) or began.is_set() or again is None:
                raise
            self.ticks_outage.failed(exc)
            self.scheduler.add_job(
                self.tick,
                "date",
                run_date=utcnow() + timedelta(seconds=retry.delay),
                args=[connector],
                kwargs={"retry": again},
                id=name + RETRY,
                name=name + RETRY,
                replace_existing=True,
            )

    def _claim_and_run(
        self,
        connector: ConnectorConfig,
        name: str,
        tick: datetime,
        tried: list[datetime],
        began: threading.Event,
    ) -> None:
        ahead = self._clock_ahead()
        if ahead is not None:
            # The run would not start (the skew guard refuses the RunStarted this host dates),
            # and a claim made here would keep the tick from every other serve process: this
            # host's scheduler, ahead, fires first, so the connector ran nowhere.
            log.warning(
                "%s tick %s skipped and left to another serve process: this host's clock is "
                "%s ahead of the ledger's (the database server's), more than the %s skew "
                "guard allows, so its run would not start; set it right (NTP)",
                name,
                isoformat_utc(tick),
                format_duration(ahead),
                format_duration(MAX_CLOCK_SKEW),
            )
            return
        claimed = claim(self.ledger, name, tick, self.identity, tried)
        self.ticks_outage.ended()
        if not claimed:
            log.info(
                "%s tick %s: claimed already (another serve process, or an earlier start)",
                name,
                isoformat_utc(tick),
            )
            return
        if self._has_open_run(connector):
            log.warning(
                "%s tick %s skipped: a run of %s for source %d is still open",
                name,
                isoformat_utc(tick),
                connector.name,
                connector.source_id,
            )
            return
        self.run_began[name] = began  # one job of a connector at a time (connector_running)
        self._run_connector(connector, name)

    def _clock_ahead(self) -> timedelta | None:
        """How far this host's clock is ahead of the ledger's, when the skew guard would
        refuse the RunStarted it dates (None when it would not)."""
        ahead = utcnow() - self.ledger.clock()
        return ahead if ahead > MAX_CLOCK_SKEW else None

    def _next_tick(self, connector: ConnectorConfig, tick: datetime) -> datetime:
        """When the tick after ``tick`` is due (a day on, for a schedule that says never)."""
        after = connector_trigger(connector).get_next_fire_time(None, tick + timedelta(seconds=1))
        return tick + timedelta(days=1) if after is None else after

    def _has_open_run(self, connector: ConnectorConfig) -> bool:
        open_runs = self.ledger.runs(
            connector_name=connector.name, source_id=connector.source_id, state=OPEN, limit=1
        )
        return bool(open_runs)

    def _run_connector(self, connector: ConnectorConfig, name: str) -> None:
        instance = build_connector(
            connector.type, connector.source_id, connector.name, connector.options
        )
        context = instance.context(
            self.ledger,
            trigger="schedule",
            spool=self.spool,
            progress_interval=self.config.serve.progress_interval.total_seconds(),
            heartbeat_interval=self.config.serve.heartbeat_interval.total_seconds(),
        )
        limit = self.config.max_run_time(connector)
        bound = None if limit is None else RunBound(limit, self.config.serve.grace_period)

        def started(run: RunContext) -> None:
            with self.active_lock:
                began = self.run_began.get(name)
                if began is not None:  # a failure from here on is the run's, not the tick's
                    began.set()
                self.active[name] = run
            if bound is not None:
                bound.opened()
            if self.stop.is_set():  # shutdown began while this run was starting
                run.ledger = self.shutdown_ledger  # ended within the stop's deadline
                raise ServiceShutdown("shutdown: ledger serve stopped as the run started")

        def record() -> None:
            try:
                result, failure = instance.record(context, on_started=started)
            except ValidationError:  # the shutdown ended this run already
                return
            finally:
                self._forget_run(name, context)
            _log_outcome(name, result, failure)

        if bound is None:
            record()
        else:
            self._record_bounded(name, context, bound, record)

    def _record_bounded(
        self, name: str, context: RunContext, bound: RunBound, record: Callable[[], None]
    ) -> None:
        """``record`` in a thread of its own, watched against ``bound``: a connector blocked
        in a call past its bound plus the grace period is left behind (its run timed out, its
        thread a daemon) so this job ends and the connector's next tick can run."""
        raised: list[Exception] = []
        abandoned = threading.Event()

        def work() -> None:
            try:
                record()
            except Exception as exc:
                if not abandoned.is_set():
                    raised.append(exc)  # the job raises it, as if it had run the connector
                elif isinstance(exc, LedgerError):  # woke up after it was left behind
                    log.error("job %s (left behind): %s", name, visible(str(exc)))
                else:
                    log.exception("job %s (left behind) failed", name)

        worker = threading.Thread(target=work, name=f"run-{name}", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(POLL_SECONDS)
            if worker.is_alive() and self._past_bound(name, context, bound):
                abandoned.set()
                with self.active_lock:
                    self.left_behind.setdefault(name, []).append(worker)
                self._time_out_past_bound(name, context, bound)
                return
        if raised:
            raise raised[0]

    def still_blocked(self, name: str) -> int:
        """How many of the connector job's runs left behind still have their thread."""
        with self.active_lock:
            alive = [t for t in self.left_behind.get(name, []) if t.is_alive()]
            self.left_behind[name] = alive
            return len(alive)

    def _past_bound(self, name: str, context: RunContext, bound: RunBound) -> bool:
        """Whether serve gives up on the run now (asking it to stop first, see
        :meth:`RunBound.check`). Never once serve is stopping: the shutdown's own grace period
        ends the run ("shutdown"). Decided under ``active_lock``, which the shutdown takes to
        list the runs it ends: a run given up on here is no longer in that list, so it is ended
        once, by one of the two."""
        with self.active_lock:
            if self.stop.is_set() or not bound.check(context):
                return False
            if self.active.get(name) is context:  # the shutdown must not end it again
                del self.active[name]
            return True

    def _time_out_past_bound(self, name: str, context: RunContext, bound: RunBound) -> None:
        # Forgotten already (_past_bound); the connector's own late finish may still come.
        try:
            position = time_out_run(self.ledger, context.run_id, bound, self.identity)
        except LedgerError as exc:  # its heartbeats have stopped: the sweeper times it out
            log.error(
                "%s: run %d past max_run_time %s could not be timed out (the sweeper will, "
                "once it is silent for stale_after): %s",
                name,
                context.run_id,
                format_duration(bound.limit),
                visible(str(exc)),
            )
            return
        if position is None:
            return  # it closed first: its own RunFinished (logged) or the sweeper's timeout
        log.warning(
            "%s: run %d timed out: %s; its connector is left behind, what it reports "
            "later is recorded after the timeout",
            name,
            context.run_id,
            bound.reason(),
        )

    def _forget_run(self, name: str, context: RunContext) -> None:
        with self.active_lock:
            if self.active.get(name) is context:  # not a later run of the same connector
                del self.active[name]

    # ------------------------------------------------------------------ the stop

    def end_runs(self, deadline: float) -> None:
        """End every run still going ``failed`` ("shutdown"), each in a thread of its own,
        waited for until ``deadline``: a run whose heartbeat or connector is in a call to a
        silent database (the SDK holds the run's lock through it) cannot hold up the others,
        nor the stop."""
        ending = [
            (name, context, threading.Thread(target=self._end_run, args=[name, context]))
            for name, context in self.active_runs()
        ]
        for _name, _context, thread in ending:
            thread.daemon = True
            thread.start()
        for name, context, thread in ending:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.error(
                    "%s: run %d not ended by the stop's deadline (its heartbeat or connector is "
                    "waiting on the database); left open for the sweeper",
                    name,
                    context.run_id,
                )

    def _end_run(self, name: str, context: RunContext) -> None:
        # Through the stop's engine: the SDK spools the terminal event on the StorageError it
        # raises within SHUTDOWN_WAIT_S, where the run's own engine waited 75 s.
        context.ledger = self.shutdown_ledger
        try:
            ended = context.finish(
                ServiceShutdown("shutdown: ledger serve stopped before the run finished")
            )
            # "closed": another writer closed the run under it (connectors.refusal)
            log.warning("%s: run %d ended %s (shutdown)", name, ended.run_id, ended.status)
        except LedgerError as exc:
            log.error("%s: could not end run: %s", name, visible(str(exc)))

    def active_runs(self) -> list[tuple[str, RunContext]]:
        with self.active_lock:
            return list(self.active.items())

    def in_flight_now(self) -> bool:
        with self.active_lock:
            return self.in_flight > 0

    def starting(self) -> bool:
        with self.active_lock:
            return self.in_flight > len(self.active)


def _log_outcome(name: str, result: RunResult, failure: Exception | None) -> None:
    if failure is None:
        log.info("%s: run %d %s", name, result.run_id, result.status)
    else:  # one line per failed run, the reason and no traceback: it recurs every tick
        log.warning(
            "%s: run %d %s: %s",
            name,
            result.run_id,
            result.status,
            visible(describe_failure(failure)),  # secrets masked, as in the ledger
        )
