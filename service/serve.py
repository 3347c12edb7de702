"""``ledger serve``: one process that schedules connectors, follows the ledger with the
projector, sweeps stuck runs and flushes the spool.

One APScheduler 3 ``BackgroundScheduler`` (UTC, coalesce, max_instances=1, deterministic job
ids; following a wall clock stepped back, see service.clock_steps) runs thin jobs that call
library functions and log their own errors, so a job that raises never stops the process.
Several serve processes may share one database: each scheduled tick of a connector or of the
sweeper is claimed through ``schedule_claims`` (one INSERT wins), and the projector's lock lets
one projector work at a time.

A connector's tick, its run within ``max_run_time`` and the runs still going are
service.connector_jobs'; this module schedules the jobs and runs the process's life.

On SIGTERM/SIGINT: scheduling stops, running connector runs get ``grace_period`` to finish and
are then ended ``failed`` ("shutdown"), the projector applies one more batch, and the process
exits 0; what follows the grace periods is bounded (:data:`WRAP_UP_SECONDS`), whether or not
the database answers.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.triggers.base import BaseTrigger
from prometheus_client.registry import CollectorRegistry

from connectors import Spool
from forensics.anchors import append_anchor
from ledger import (
    ConfigurationError,
    Ledger,
    LedgerError,
    SchemaError,
    StorageError,
    sweep,
)
from ledger.clock import format_utc_seconds, utcnow
from ledger.driver_errors import database_unreachable
from ledger.durations import format_duration
from ledger.events import SERVE_PREFIX
from ledger.outage import Outage, flush_tallies
from ledger.text import visible
from projections import PoisonEventError, Projector
from projections.projector import PoisonBackoff
from service.claims import TICK_ORIGIN, claim, interval_tick, prune_claims
from service.clock_steps import ClockWatchedScheduler
from service.config import ConnectorConfig, LedgerConfig, anchor_stream_problem
from service.connector_jobs import (
    CONNECTOR_JOB_PREFIX,
    RETRY,
    RETRY_FIRST_S,
    RETRY_MAX_S,
    ConnectorJobs,
    connector_trigger,
    interval_trigger,
    job_id,
    log_tick_failure,
)
from service.hangup import ignore_hangup
from service.metrics import Figures, LedgerCollector, collect_figures, scrape_url
from service.metrics_server import MetricsServer, start_metrics_server
from service.stop_request import StopRequest

if TYPE_CHECKING:
    from service.api.server import ApiThread

log = logging.getLogger(__name__)

# What a stop still does after the grace periods (end the runs still going, wait for jobs that
# were starting one, the last projector batch) fits in this many seconds, whether or not the
# database answers: the README tells operators to size their stop timeout by it.
WRAP_UP_SECONDS = 10.0
# The longest the stop waits on any one database call (connect, read, write, a row lock). The
# jobs' engine waits 75 s (MYSQL_TIMEOUTS' read_timeout) on a database that stopped answering:
# a run ended through it was spooled only after that, and an orchestrator's stop timeout
# (Kubernetes' 30 s) killed the process first, the run's failure nowhere.
SHUTDOWN_WAIT_S = 3
# How much longer than its grace period the API's drain may take (closing its connections).
API_STOP_EXTRA_S = 5.0
# The id suffix of the one-off job that runs a job once as serve starts.
AT_START = ":start"
# The scheduler's executor of serve's own jobs (projector, sweeper, spool, anchor), apart from
# the connectors' ("default"): with one pool of APScheduler's default 10 threads, ten runs still
# going (a backfill, a source that hangs until max_run_time) took every thread, and the
# projector, the sweeper and the spool flush stopped, with nothing logged. Each of these jobs
# has a thread here, its run at start one more: 4 interval jobs, 3 at start.
SERVICE_EXECUTOR = "service"
SERVICE_THREADS = 8
# The connectors' pool: a thread for every enabled connector's job and its run at start
# (threads are made only as jobs run at once), never fewer than APScheduler's default.
CONNECTOR_THREADS_MIN = 10
# APScheduler's own lines for what the listener below reports in run-ledger's words.
APSCHEDULER_TRANSLATED = (
    'Execution of job "%s" skipped: maximum number of running instances reached',
    'Run time of job "%s" was missed by',
)


class TranslatedSchedulerLines(logging.Filter):
    """Drops APScheduler's lines that :meth:`LedgerService.scheduler_event` says better."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(APSCHEDULER_TRANSLATED)


TRANSLATED_LINES = TranslatedSchedulerLines()
for _name in ("apscheduler.scheduler", "apscheduler.executors.default"):
    logging.getLogger(_name).addFilter(TRANSLATED_LINES)  # adding it twice keeps one


class LedgerService:
    def __init__(
        self,
        config: LedgerConfig,
        metrics_port: int | None = None,
        api_socket: socket.socket | None = None,
    ) -> None:
        """``api_socket``: ``[api] listen`` bound already (see :func:`claim_ports`)."""
        self.config = config
        self.metrics_port = metrics_port if metrics_port is not None else config.serve.metrics_port
        self.ledger = Ledger.from_url(config.database_url)
        self.projector = Projector(self.ledger, batch_size=config.projector.batch_size)
        self.projector_backoff = PoisonBackoff(config.projector.interval.total_seconds())
        self.projector_outage = Outage("projector", log)
        self.spool_outage = Outage("spool flush", log)
        # Shared by every connector's ticks and the sweeper's: an outage is two lines in all,
        # not one per connector and tick.
        self.ticks_outage = Outage("scheduled ticks", log)
        self.spool = Spool(config.spool.dir)
        # Scrapes get their own engine with short timeouts: a database that stops answering
        # must give ledger_database_up 0 within Prometheus's scrape timeout, not after 75 s.
        # (An engine connects only when first used.)
        self.scrape_ledger = Ledger.from_url(scrape_url(config.database_url))
        # The stop's own engine, for the same reason: see SHUTDOWN_WAIT_S.
        self.shutdown_ledger = Ledger.from_url(config.database_url, wait_bound_s=SHUTDOWN_WAIT_S)
        self.identity = f"{SERVE_PREFIX}{socket.gethostname()}:{os.getpid()}"
        self.stop = threading.Event()
        self.stop_request = StopRequest(self.stop)  # SIGTERM/SIGINT, once run() installs it
        self.projecting = threading.Lock()
        self.last_sweep_at: datetime | None = None
        self.last_sweep_timed_out: int | None = None
        self.api: ApiThread | None = None
        self.metrics: MetricsServer | None = None
        self.api_socket = api_socket
        self.database_checked = False  # the schema, just before run (see wait_for_database)
        enabled = sum(c.enabled for c in config.connectors)
        self.scheduler = ClockWatchedScheduler(
            timezone=UTC,
            executors={
                "default": ThreadPoolExecutor(max(CONNECTOR_THREADS_MIN, 2 * enabled)),
                SERVICE_EXECUTOR: ThreadPoolExecutor(SERVICE_THREADS),
            },
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
        )
        self.scheduler.add_listener(
            self.scheduler_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED
        )
        self.schedule: list[str] = []  # what add_jobs scheduled, for the startup line
        self.connector_jobs = ConnectorJobs(
            config,
            self.ledger,
            self.shutdown_ledger,
            self.spool,
            self.identity,
            self.stop,
            self.scheduler,
            self.ticks_outage,
        )

    # ------------------------------------------------------------------ jobs

    def add_jobs(self) -> None:
        now = utcnow()
        config = self.config
        at_start = config.serve.run_at_start
        for connector in config.connectors:
            if connector.enabled:
                self._add(
                    job_id(connector),
                    self.connector_jobs.tick,
                    connector_trigger(connector),
                    _every(connector),
                    now if config.runs_at_start(connector) else None,
                    args=[connector],
                    first_after=now,
                )
        self._add_interval("projector", self.projector_job, config.projector.interval)
        self._add_interval("sweeper", self.sweeper_job, config.sweeper.interval, now, at_start)
        self._add_interval("spool", self.spool_job, config.spool.flush_interval, now, at_start)
        if config.anchor is not None:  # always once at start: a bad path shows in the log now
            self._add_interval("anchor", self.anchor_job, config.anchor.interval, now, True)
        disabled = sum(not c.enabled for c in config.connectors)
        if disabled:
            self.schedule.append(f"{disabled} connector(s) disabled")

    def _add_interval(
        self,
        name: str,
        job: Callable[[], None],
        every: timedelta,
        now: datetime | None = None,
        run_at_start: bool = False,
    ) -> None:
        """An interval job; ``now`` None: a frequent one, whose first time is not worth saying."""
        trigger = interval_trigger(every)
        text = f"every {format_duration(every)}"
        if now is None:
            self.scheduler.add_job(job, trigger, id=name, name=name, executor=SERVICE_EXECUTOR)
            self.schedule.append(f"{name} {text}")
        else:
            first = now if run_at_start else None
            self._add(name, job, trigger, text, first, first_after=now, executor=SERVICE_EXECUTOR)

    def _add(
        self,
        name: str,
        job: Callable[..., None],
        trigger: BaseTrigger,
        every: str,
        at_start: datetime | None,
        args: list[Any] | None = None,
        first_after: datetime | None = None,
        executor: str = "default",
    ) -> None:
        """Schedule ``job`` on ``trigger``, and once ``at_start`` if given, on ``executor``
        (the connectors' pool unless said); note for the startup line when it first fires.

        The run at start is a one-off job of its own: giving the interval job a first run time
        off its grid would move every later tick off the grid all serve processes share."""
        self.scheduler.add_job(job, trigger, args=args, id=name, name=name, executor=executor)
        if at_start is not None:
            self.scheduler.add_job(
                job,
                "date",
                run_date=at_start,
                args=args,
                id=name + AT_START,
                name=name + AT_START,
                executor=executor,
            )
            first = "now"
        else:
            first = _utc(trigger.get_next_fire_time(None, first_after or utcnow()))
        self.schedule.append(f"{name} {every}, first {first}")

    def schedule_summary(self) -> str:
        """One line: what is scheduled and when each job first fires (after :meth:`add_jobs`)."""
        return "scheduled (times UTC): " + visible("; ".join(self.schedule))

    def scheduler_event(self, event: JobSubmissionEvent | JobExecutionEvent) -> None:
        """APScheduler's skipped and missed runs, said in run-ledger's words: a connector's at
        WARNING (its tick did not run), the other jobs' at DEBUG (their next tick does it)."""
        name = event.job_id.removesuffix(AT_START).removesuffix(RETRY)
        level = logging.WARNING if name.startswith(CONNECTOR_JOB_PREFIX) else logging.DEBUG
        if event.code == EVENT_JOB_MAX_INSTANCES:
            log.log(level, "%s: tick skipped, its previous run is still going", name)
        else:
            when = _utc(event.scheduled_run_time)
            log.log(level, "%s: tick at %s missed (the process was busy or suspended)", name, when)

    def projector_job(self) -> None:
        # An event the projection cannot apply is retried with a growing pause, not at every
        # tick: the error is recorded for `ledger status` and the metrics meanwhile.
        if not self.projector_backoff.due():
            return
        with self.projecting:
            try:
                self.projector.run_once(self.stop)
            except PoisonEventError as exc:
                pause = self.projector_backoff.failed()
                log.error("projector stopped, retrying in %gs: %s", pause, visible(str(exc)))
                return
            except LedgerError as exc:  # one line as it starts, one as it ends: not every tick
                if self.stop.is_set():  # a retry given up for the shutdown: nothing to report
                    return
                self.projector_outage.failed(exc)
                return
        self.projector_outage.ended()
        self.projector_backoff.reset()

    def sweeper_job(self) -> None:
        try:
            tick = interval_tick(utcnow(), self.config.sweeper.interval, TICK_ORIGIN)
            claimed = claim(self.ledger, "sweeper", tick, self.identity)
            self.ticks_outage.ended()
            if not claimed:
                return
            thresholds = self.config.thresholds
            result = sweep(
                self.ledger,
                older_than=thresholds.stale_after,
                max_runtime=thresholds.max_runtime,
                overrides=self.config.overrides(),
            )
            self.last_sweep_at = utcnow()
            self.last_sweep_timed_out = len(result.timed_out)
            log.info(
                "sweeper: %d run(s) timed out, %d left alone",
                len(result.timed_out),
                len(result.skipped),
            )
            if result.failed:  # each logged as it failed; the next sweep tries them again
                log.error(
                    "sweeper: %d stuck run(s) could not be timed out (run %s), left for the "
                    "next sweep",
                    len(result.failed),
                    ", ".join(str(run.run_id) for run, _exc in result.failed),
                )
            prune_claims(self.ledger)
        except StorageError as exc:
            log_tick_failure(self.ticks_outage, "sweeper", exc)
        except LedgerError as exc:
            log.error("sweeper: %s", visible(str(exc)))
        except Exception:
            log.exception("sweeper failed")

    def spool_job(self) -> None:
        try:
            if self.spool.has_pending():
                self.spool.flush(self.ledger)
        except LedgerError as exc:  # one line as the outage starts, one as it ends
            self.spool_outage.failed(exc)
            return
        self.spool_outage.ended()

    def anchor_job(self) -> None:
        """Append the ledger head to the anchor file. Not claimed: each process keeps its own
        file, and a line written twice is harmless."""
        assert self.config.anchor is not None
        # Checked at start (anchor_problem); a file replaced by a FIFO since is checked again.
        stream = anchor_stream_problem(Path(self.config.anchor.path))
        if stream is not None:
            log.error("anchor: %s", stream)
            return
        try:
            anchor = append_anchor(self.ledger, self.config.anchor.path)
            log.info("anchored position %d in %s", anchor.position, self.config.anchor.path)
        except LedgerError as exc:
            log.error("anchor: %s", exc)
        except Exception:
            log.exception("anchor failed")

    # ------------------------------------------------------------------ metrics

    def figures(self) -> Figures:
        return collect_figures(
            self.scrape_ledger,
            self.config.thresholds.to_thresholds(),
            self.config.overrides(),
            None,  # the collector reads the spool itself: its failure is not the database's
            self.last_sweep_at,
            self.last_sweep_timed_out,
        )

    def start_metrics(self) -> None:
        if self.metrics_port is None:
            return
        registry = CollectorRegistry()
        registry.register(LedgerCollector(self.figures, self.spool))
        host = self.config.serve.metrics_host
        where = metrics_address(host, self.metrics_port)
        try:
            # Bounded (service.metrics_server): prometheus_client's start_http_server kept a
            # thread and a descriptor for every connection that never sent a request.
            self.metrics = start_metrics_server(self.metrics_port, host, registry)
        except OSError as exc:  # taken port, an address not on this host, a name unknown
            raise ConfigurationError(
                f"cannot serve metrics on {where}: {exc.strerror or exc}"
            ) from exc
        log.info("metrics on http://%s/metrics", where)

    def stop_metrics(self) -> None:
        """Stop taking connections to /metrics (a scrape in flight is a daemon thread)."""
        if self.metrics is not None:
            self.metrics.shutdown()  # its serve_forever loop ends within SHUTDOWN_POLL_S
            self.metrics.server_close()
            self.metrics = None

    def start_api(self) -> None:
        """The HTTP API in this process, when ``[api] listen`` is configured."""
        if self.config.api.listen is None:
            return
        from service.api.server import ApiThread  # FastAPI loads only when configured

        self.api = ApiThread(self.config, self.config.api.listen, self.api_socket)
        self.api.start()

    def stop_api(self) -> None:
        """Stop taking requests and finish those in flight (within ``[api] grace_period``)."""
        if self.api is not None:
            self.api.stop(self._api_stop_seconds())
            self.api = None

    def _api_stop_seconds(self) -> float:
        if self.api is None:
            return 0.0
        return self.config.api.grace_period.total_seconds() + API_STOP_EXTRA_S

    # ------------------------------------------------------------------ lifecycle

    def run(self, announce: Callable[[str], None] | None = None) -> None:
        """Serve until SIGTERM/SIGINT, then shut down cleanly. ``announce`` is given the
        startup line (what is scheduled, when it first fires) once the jobs are scheduled."""

        self.stop_request.install()
        ignore_hangup()
        if self.stop_request.received:
            # A SIGTERM while the command loaded (service.stop_request.defer_termination):
            # nothing is started, no connector run begun only to be ended "shutdown".
            log.info("received %s: shutting down", self.stop_request.signal_name)
            if self.api_socket is not None:
                self.api_socket.close()
            self.close_ledgers()
            log.info("stopped")
            return
        for warning in self.config.serve_warnings():
            log.warning("%s", warning)
        # Metrics first: while the database is awaited they answer ledger_database_up 0.
        self.start_metrics()
        self.start_api()
        if not self.wait_for_database():
            log.warning("stopped before the database could be reached")
            self.stop_api()
            self.close_ledgers()
            return
        self.add_jobs()
        self.scheduler.start()
        log.info("serving as %s", self.identity)
        log.info("%s", self.schedule_summary())
        if announce is not None:
            announce(self.schedule_summary())
        self.stop_request.wait()
        if self.stop_request.signal_name is not None:
            log.info("received %s: shutting down", self.stop_request.signal_name)
        self.shutdown()

    def refuse_what_waiting_would_not_fix(self) -> None:
        """Before serve says it serves: one check of the schema, raising what
        :meth:`wait_for_database` would raise at once (a schema missing or behind, refused
        credentials), so "serving …" is never printed just before the exit. A database that
        cannot be reached passes: serve says it serves and waits for it."""
        self.database_checked = self._schema_check() is None

    def _schema_check(self) -> StorageError | None:
        """One check of the schema: None if it passed, the error if the database cannot be
        reached; anything else (a schema missing or behind, refused credentials) is raised:
        waiting would not fix it."""
        try:
            self.ledger.check_schema()
        except SchemaError:
            raise
        except StorageError as exc:
            if not database_unreachable(exc):
                raise
            return exc
        return None

    def wait_for_database(self) -> bool:
        """Check the schema (at start, not every tick; not again if
        :meth:`refuse_what_waiting_would_not_fix` just did), waiting with backoff while the
        database cannot be reached, as the jobs do mid-run; False if stopped first."""
        if self.database_checked:
            return True
        delay = RETRY_FIRST_S
        while (unreachable := self._schema_check()) is not None:
            log.warning(
                "database unreachable at start, retrying in %gs: %s",
                delay,
                visible(str(unreachable)),
            )
            if self.stop_request.wait(delay):
                return False
            delay = min(delay * 2, RETRY_MAX_S)
        return True

    def shutdown(self) -> None:
        """Stop within a deadline, the database answering or not: the API's requests and the
        connectors' runs get their grace periods side by side, not one after the other (an
        orchestrator's stop timeout, 30 s by default, would kill the process before the runs
        were ended); then, within :data:`WRAP_UP_SECONDS`, the runs still going are ended
        (through :attr:`shutdown_ledger`, spooled if the database does not answer) and the
        last projector batch is applied, or skipped if the projector is still waiting on the
        database."""
        self.stop.set()
        self.scheduler.shutdown(wait=False)  # no new ticks
        api_stopping = threading.Thread(target=self.stop_api, name="api-stop", daemon=True)
        started = time.monotonic()
        api_stop_s = self._api_stop_seconds()
        api_stopping.start()
        grace_s = self.config.serve.grace_period.total_seconds()
        stop_by = started + max(grace_s, api_stop_s) + WRAP_UP_SECONDS
        _wait_while(self.connector_jobs.in_flight_now, started + grace_s)
        wrap_up_by = min(time.monotonic() + WRAP_UP_SECONDS, stop_by)
        self.connector_jobs.end_runs(wrap_up_by)
        # A job between its stop check and its first event ends its own run (see above); one
        # still claiming its tick from a silent database is not waited for past the deadline.
        _wait_while(self.connector_jobs.starting, wrap_up_by)
        api_stopping.join()  # bounded by the API's own grace period
        self._final_projector_batch(stop_by)
        self.close_ledgers()
        # Closed first: a connection refused after the flush was counted for a timer the exit
        # ends, or logged after "stopped".
        self.stop_metrics()
        flush_tallies()  # the API's and /metrics' refusals of the last minute (os._exit next)
        log.info("stopped")

    def close_ledgers(self) -> None:
        self.ledger.close()
        self.scrape_ledger.close()
        self.shutdown_ledger.close()

    def _final_projector_batch(self, deadline: float) -> None:
        """One more batch, so the runs just ended show in ingestion_runs; skipped if the
        projector job is still in its batch at ``deadline`` (waiting on a silent database,
        whose read would outlast any stop timeout). A batch commits whole or not at all, so
        one left unfinished costs nothing: the next projector applies it."""
        if not self.projecting.acquire(timeout=max(0.0, deadline - time.monotonic())):
            log.warning(
                "final projector batch skipped: the projector is still waiting on the database"
            )
            return

        def apply() -> None:
            try:
                Projector(self.shutdown_ledger, self.config.projector.batch_size).apply_batch()
            except LedgerError as exc:
                log.warning("final projector batch: %s", visible(str(exc)))
            finally:
                self.projecting.release()

        batch = threading.Thread(target=apply, name="final-projector-batch", daemon=True)
        batch.start()
        batch.join(max(0.0, deadline - time.monotonic()))
        if batch.is_alive():
            log.warning(
                "final projector batch left unfinished at the stop's deadline (the database "
                "is slow to answer); the next projector applies it"
            )


def metrics_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def claim_ports(config: LedgerConfig, metrics_port: int | None) -> socket.socket | None:
    """Check serve's ports before anything is made or said to serve: the API's ``listen`` is
    bound here and kept (given to :class:`LedgerService`, None without ``[api] listen``); the
    metrics port is bound and let go (prometheus_client binds its own, as serve starts, with
    the same SO_REUSEADDR). A taken port or an address not on this host is a
    :class:`ConfigurationError` naming it: serve made the SQLite file and printed "serving"
    first, and only then exited 2 "Address already in use"."""
    port = metrics_port if metrics_port is not None else config.serve.metrics_port
    if port is not None:
        host = config.serve.metrics_host
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as exc:
            where = metrics_address(host, port)
            raise ConfigurationError(
                f"cannot serve metrics on {where}: {exc.strerror or exc}"
            ) from exc
    if config.api.listen is None:
        return None
    from service.api.server import bind  # FastAPI loads only when configured

    return bind(config.api.listen)


def _wait_while(busy: Callable[[], bool], deadline: float) -> None:
    while busy() and time.monotonic() < deadline:
        time.sleep(0.05)


def _every(connector: ConnectorConfig) -> str:
    if connector.schedule.interval is not None:
        return f"every {format_duration(connector.schedule.interval)}"
    return f'cron "{connector.schedule.cron}"'


def _utc(moment: datetime | None) -> str:
    return "never" if moment is None else format_utc_seconds(moment)
