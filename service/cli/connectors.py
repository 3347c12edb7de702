"""``ledger run csv|http-json`` and ``ledger spool status|flush``: the shipped connectors, run
once, and the local spool of events that could not reach the ledger."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
from datetime import timedelta
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import click

from connectors import (
    SAMPLE_CSV,
    Connector,
    CsvConnector,
    HttpJsonConnector,
    RunContext,
    Spool,
)
from connectors.http_json import MAX_RETRIES
from connectors.sdk import stop_runs
from ledger.durations import format_duration
from ledger.events import RUN_WATCHDOG_PREFIX
from service.cli.errors import EXIT_PROBLEM, BadInput, ProblemFound, library_errors, problem_for
from service.cli.ledgers import check_writable, open_or_start_ledger, opened_ledger
from service.cli.options import (
    DURATION,
    SOURCE_ID,
    CommandGroup,
    F,
    Integer,
    NamedPath,
    db_option,
    output_format_option,
    seconds_option,
    spool_option,
    wide_option,
)
from service.cli.tables import cell, echo_fitted, echo_json
from service.config import ServeConfig
from service.run_bound import RunBound
from service.run_watchdog import RunWatchdog, TimeOut

# A run past --max-run-time that has not stopped this long after being asked is timed out:
# serve's own default grace period.
DEFAULT_GRACE_PERIOD: timedelta = ServeConfig.model_fields["grace_period"].default


def run_options(command: F) -> F:
    for option in reversed(
        [
            click.option(
                "--source-id",
                type=SOURCE_ID,
                default=1,
                show_default=True,
                help="The source this run ingests (ingestion_runs.sourceId).",
            ),
            click.option(
                "--trigger",
                default="manual",
                show_default=True,
                help="Why the run happened (recorded in RunStarted's metadata).",
            ),
            seconds_option("--progress-interval", 0, 5.0, "Seconds between progress events."),
            seconds_option("--heartbeat-interval", 0.01, 60.0, "Seconds between heartbeats."),
            click.option(
                "--max-run-time",
                type=DURATION,
                default=None,
                help="Bound the run's total time (90s, 15m, 6h, 2d): past it the run is asked "
                "to stop and ends failed; one still blocked --grace-period later is timed out "
                "and the command exits 1. No bound by default.",
            ),
            click.option(
                "--grace-period",
                type=DURATION,
                default=None,
                help="With --max-run-time: how long a run asked to stop may take to end before "
                "it is timed out (default 30s, as serve's).",
            ),
            spool_option,
            db_option,
        ]
    ):
        command = option(command)
    return command


@click.group("run", cls=CommandGroup)
def run_group() -> None:
    """Run one shipped connector once, recorded in the ledger (exit 1 unless success)."""


@run_group.command("csv")
@click.option(
    "--path",
    type=NamedPath(exists=True, dir_okay=False, path_type=Path),
    default=SAMPLE_CSV,
    show_default=False,  # an absolute path inside the installed package: said in words
    help="A CSV file with a header row, or JSON Lines (.jsonl); by default the sample the "
    "package ships.",
)
@click.option(
    "--key", default="id", show_default=True, help="The column (field) that identifies a record."
)
@run_options
def run_csv(path: Path, key: str, **options: Any) -> None:
    """Upsert the records of a CSV or JSON Lines file into source_records."""
    execute_connector(CsvConnector(options.pop("source_id"), path, key=key), **options)


@run_group.command("http-json")
@click.option("--url", required=True, help="The first page's URL.")
@click.option("--key", default="id", show_default=True, help="The field that identifies a record.")
@click.option(
    "--records-path",
    default="",
    help="Dotted path to the list of records in each page (empty: the page is the list).",
)
@click.option("--page-param", default=None, help="Query parameter to increment per page.")
@click.option("--next-path", default=None, help="Dotted path to the next page's link.")
@click.option(
    "--single-page",
    is_flag=True,
    help="Read the first page only. Without any paging option, a Link: rel=next header is "
    "followed, and a page whose body links to a next page is refused.",
)
@seconds_option("--timeout", 0.1, 10.0, "Seconds to wait for each HTTP response.")
@click.option(
    "--retries",
    type=Integer(min=0, max=MAX_RETRIES),
    default=3,
    show_default=True,
    help="Retries of a page after a network error, a timeout, 429 or 5xx, before the run fails.",
)
@seconds_option("--backoff", 0, 0.5, "First retry delay in seconds, doubled each retry.")
@run_options
def run_http_json(
    url: str,
    key: str,
    records_path: str,
    page_param: str | None,
    next_path: str | None,
    single_page: bool,
    timeout: float,
    retries: int,
    backoff: float,
    **options: Any,
) -> None:
    """Page through a JSON API and upsert its records into source_records."""
    if sum((page_param is not None, next_path is not None, single_page)) > 1:
        raise BadInput("give one of --page-param, --next-path and --single-page")
    with library_errors():
        connector = HttpJsonConnector(
            options.pop("source_id"),
            url,
            key=key,
            records_path=records_path,
            page_param=page_param,
            next_path=next_path,
            single_page=single_page,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
        )
    execute_connector(connector, **options)


def execute_connector(
    connector: Connector,
    *,
    trigger: str,
    progress_interval: float,
    heartbeat_interval: float,
    max_run_time: timedelta | None,
    grace_period: timedelta | None,
    spool_dir: str | None,
    db_url: str | None,
) -> None:
    if grace_period is not None and max_run_time is None:
        raise BadInput("--grace-period bounds the end of a run past --max-run-time: give both")
    ledger = open_or_start_ledger(db_url)
    watchdog = None
    if max_run_time is not None:
        bound = RunBound(max_run_time, grace_period or DEFAULT_GRACE_PERIOD)
        actor = f"{RUN_WATCHDOG_PREFIX}{socket.gethostname()}:{os.getpid()}"
        watchdog = RunWatchdog(ledger, bound, actor, partial(_end_timed_out_run, bound))
    with library_errors():
        spool = Spool(spool_dir)
        # SIGTERM (and SIGHUP) end the run as "interrupted" instead of leaving it open.
        signal.signal(signal.SIGTERM, _stop_on_signal)
        _stop_on_hangup()
        try:
            outcome = connector.run_once(
                ledger,
                trigger=trigger,
                on_started=None if watchdog is None else watchdog.started,
                spool=spool,
                progress_interval=progress_interval,
                heartbeat_interval=heartbeat_interval,
            )
        finally:
            if watchdog is not None:
                watchdog.finished()  # once it began timing the run out, it ends the process
    click.echo(json.dumps(outcome.to_dict()))
    # A run stopped by SIGTERM or Ctrl-C exits 1 whatever it is recorded with: one stopped
    # while finish() recorded its decided `success` exited 0, as if the signal never came.
    if outcome.result.status != "success" or outcome.stopped:
        sys.exit(EXIT_PROBLEM)


@click.group(cls=CommandGroup)
def spool() -> None:
    """The local spool of events that could not reach the ledger."""


@spool.command("status")
@spool_option
@output_format_option
@wide_option
def spool_status(spool_dir: str | None, output_format: str, wide: bool) -> None:
    """Show the backlog (exit 1 if events are waiting or were rejected)."""
    with library_errors():
        backlog = Spool(spool_dir).backlog()
    report = backlog.status
    if output_format == "json":
        echo_json(backlog.to_dict())
    else:
        click.echo(
            f"spool:     {cell(report.path)}"
            + ("" if report.exists else " (no such file: nothing was ever spooled here)")
        )
        # One line each, cut to the terminal like `ledger status` (--wide: whole): the run ids
        # were a Python list of every run waiting, hundreds of cells for a long outage.
        echo_fitted(
            f"pending:   {report.pending} event(s) of {len(report.runs)} run(s)"
            + (f": runs {', '.join(map(str, report.runs))}" if report.runs else ""),
            wide,
        )
        if report.oldest_spooled_at:
            click.echo(f"oldest:    {report.oldest_spooled_at}")
        click.echo(f"rejected:  {report.rejected}")
        for item in backlog.rejected_events:
            echo_fitted(
                f"  {cell(item['event_id'])} ({cell(item['type'])} of run "
                f"{cell(item['run_id'])}): {cell(item['reason'])}",
                wide,
            )
    if report.pending or report.rejected:
        sys.exit(EXIT_PROBLEM)


@spool.command("flush")
@spool_option
@db_option
def spool_flush(spool_dir: str | None, db_url: str | None) -> None:
    """Deliver the backlog to the ledger, in order, exactly once."""
    with opened_ledger(db_url) as ledger:
        spool = Spool(spool_dir)  # a wrong --spool-dir first: the caller's mistake
    check_writable(ledger)
    with library_errors():
        result = spool.flush(ledger)
    click.echo(json.dumps(result.to_dict()))
    if result.remaining or result.rejected:
        sys.exit(EXIT_PROBLEM)


def _end_timed_out_run(bound: RunBound, context: RunContext, timeout: TimeOut) -> NoReturn:
    """The end of a ``ledger run`` whose connector did not stop within the grace period: one
    line on stderr (and, for a run it timed out, the outcome on stdout, as for any run), then
    the process ends from the watchdog's thread: the main thread is blocked in a call nothing
    can wake it from."""
    run_id = context.run_id
    problem: ProblemFound
    if timeout.error is not None:
        problem = problem_for(
            timeout.error,
            f"run {run_id} past max_run_time {format_duration(bound.limit)} could not be timed "
            f"out (the sweeper will, once it is silent for stale_after): {timeout.error}",
        )
    elif timeout.outcome is None:
        problem = ProblemFound(
            f"run {run_id} was closed meanwhile, and its connector did not stop within "
            f"{format_duration(bound.grace)} of being asked to (past max_run_time "
            f"{format_duration(bound.limit)})"
        )
    else:
        click.echo(json.dumps(timeout.outcome.to_dict()))  # what it reported until it blocked
        problem = ProblemFound(f"run {run_id} timed out: {bound.reason()}")
    problem.show()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(problem.exit_code)


def _stop_on_hangup() -> None:
    """SIGHUP (the terminal closed, the ssh session lost) ends the run as SIGTERM does: its
    default action killed the process on the spot, and the run stayed `running` until the
    sweeper timed it out, an hour later by default. Not where it is ignored already (``nohup
    ledger run …``): whoever started it so meant the run to outlive the terminal."""
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:
        signal.signal(signal.SIGHUP, _stop_on_signal)


def _stop_on_signal(signum: int, _frame: FrameType | None) -> None:
    """SystemExit(128 + signum), 143 for SIGTERM, raised here and, should Python drop it (a
    handler that ran inside a weakref callback), at the run's next report
    (:func:`connectors.sdk.stop_runs`)."""
    stop = SystemExit(128 + signum)
    stop_runs(stop)
    raise stop
