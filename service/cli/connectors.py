"""``ledger run csv|http-json`` and ``ledger spool status|flush``: the shipped connectors, run
once, and the local spool of events that could not reach the ledger."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click

from connectors import SAMPLE_CSV, Connector, CsvConnector, HttpJsonConnector, Spool
from connectors.http_json import MAX_RETRIES
from connectors.sdk import stop_runs
from service.cli.errors import EXIT_PROBLEM, BadInput, library_errors
from service.cli.ledgers import open_or_start_ledger, opened_ledger
from service.cli.options import (
    SOURCE_ID,
    F,
    Integer,
    db_option,
    output_format_option,
    seconds_option,
    spool_option,
    wide_option,
)
from service.cli.tables import cell, echo_fitted, echo_json


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
            spool_option,
            db_option,
        ]
    ):
        command = option(command)
    return command


@click.group("run")
def run_group() -> None:
    """Run one shipped connector once, recorded in the ledger (exit 1 unless success)."""


@run_group.command("csv")
@click.option(
    "--path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
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
    spool_dir: str | None,
    db_url: str | None,
) -> None:
    ledger = open_or_start_ledger(db_url)
    with library_errors():
        spool = Spool(spool_dir)
        # SIGTERM ends the run as "interrupted" instead of leaving it open.
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        outcome = connector.run_once(
            ledger,
            trigger=trigger,
            spool=spool,
            progress_interval=progress_interval,
            heartbeat_interval=heartbeat_interval,
        )
    click.echo(json.dumps(outcome.to_dict()))
    if outcome.result.status != "success":
        sys.exit(EXIT_PROBLEM)


@click.group()
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
        result = Spool(spool_dir).flush(ledger)
    click.echo(json.dumps(result.to_dict()))
    if result.remaining or result.rejected:
        sys.exit(EXIT_PROBLEM)


def _stop_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    """SystemExit(143), raised here and, should Python drop it (a handler that ran inside a
    weakref callback), at the run's next report (:func:`connectors.sdk.stop_runs`)."""
    stop = SystemExit(128 + signal.SIGTERM)
    stop_runs(stop)
    raise stop
