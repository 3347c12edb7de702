"""``ledger project`` and ``ledger rebuild``: keep the ingestion_runs read model current."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ledger.errors import DatabaseUnreachableError
from ledger.schema import MAX_POSITION
from ledger.text import ABSENT, quoted, shown_name
from ledger.urls import mask_url
from projections import Projector
from projections import rebuild as rebuild_projection
from projections.projector import DEFAULT_BATCH_SIZE, FOLLOW_STOP_WAIT_S
from service.cli.errors import BadInput, library_errors
from service.cli.ledgers import check_writable, open_ledger
from service.cli.options import (
    F,
    Integer,
    actor_option,
    db_option,
    operator_actor_of,
    seconds_option,
)
from service.cli.output import output_after
from service.cli.tables import cell
from service.stop_request import StopRequest, release_termination


def batch_size_option(help: str) -> Callable[[F], F]:
    """``--batch-size N``: events per transaction (the projector's default)."""

    def decorate(command: F) -> F:
        return click.option(
            "--batch-size",
            type=Integer(1, MAX_POSITION),
            default=DEFAULT_BATCH_SIZE,
            show_default=True,
            help=help,
        )(command)

    return decorate


@click.command()
@click.option("--follow", is_flag=True, help="Keep tailing the ledger until SIGINT/SIGTERM.")
@batch_size_option("Events per transaction.")
@seconds_option("--interval", 0.01, 1.0, "Seconds between polls when caught up (with --follow).")
@click.option(
    "--skip-position",
    type=Integer(1, MAX_POSITION),
    default=None,
    help="Record that this position (a poison event) is not to be applied.",
)
@click.option("--reason", default=None, help="Why the position is skipped (required with it).")
@actor_option("Who decides the skip (default: $USER); recorded as operator:NAME.")
@db_option
def project(
    follow: bool,
    batch_size: int,
    interval: float,
    skip_position: int | None,
    reason: str | None,
    actor: str | None,
    db_url: str | None,
) -> None:
    """Apply pending events to the ingestion_runs read model (exactly once)."""
    if not follow:
        release_termination()  # only --follow stops on request: a SIGTERM ends this, as ever
    if skip_position is not None and reason is None:  # usage; the projector judges the reason
        raise BadInput("--skip-position needs --reason TEXT")
    if skip_position is None and (reason is not None or actor is not None):
        # Else dropped without a word while the projector applied what was pending.
        raise BadInput("--reason and --actor go with --skip-position POSITION (the event to skip)")
    ledger = open_ledger(db_url)
    projector = Projector(ledger, batch_size=batch_size)
    with library_errors():
        try:
            # A database that is not there or not migrated is the caller's to fix: said at
            # once, not retried for ever; an outage at start is waited out like one later.
            ledger.check_schema()
        except DatabaseUnreachableError:
            if not follow:
                raise
        if skip_position is not None:
            skip = projector.skip(skip_position, reason or "", operator_actor_of(actor))
            with output_after(f"the skip of position {skip.position} WAS recorded"):
                click.echo(
                    f"position {skip.position} ({cell(skip.event_type)}) will be skipped: "
                    f"{quoted(skip.reason)} (by {shown_name(skip.actor)})"
                )
        if follow:
            stop_request = StopRequest(threading.Event())
            stop_request.install()
            click.echo(f"following {mask_url(ledger.url)} (Ctrl-C to stop)", err=True)
            if projector.follow_until_stopped(
                stop_request.stop, stop_request.wait, interval=interval
            ):
                click.echo("stopped after the current batch", err=True)
            else:
                click.echo(
                    f"stopped; the batch in flight was still waiting on the database after "
                    f"{FOLLOW_STOP_WAIT_S:g}s and is left unapplied (the next projector "
                    "applies it)",
                    err=True,
                )
        else:
            applied = projector.run_once()
            checkpoint = projector.checkpoint().position
            with output_after(f"{applied} event(s) WERE applied, the checkpoint at {checkpoint}"):
                click.echo(f"applied {applied} event(s); checkpoint at {checkpoint}")


@click.command()
@batch_size_option("Events replayed per transaction into the shadow tables.")
@click.option(
    "--drop-extras",
    is_flag=True,
    help="Rebuild without what an operator added to the live tables and a rebuild cannot "
    "carry (a trigger, CHECK constraint, foreign key, an index on a column the schema lacks); "
    "without it they refuse the rebuild. Indexes are carried either way.",
)
@db_option
def rebuild(batch_size: int, drop_extras: bool, db_url: str | None) -> None:
    """Replay all history into shadow tables and swap them in atomically."""
    ledger = open_ledger(db_url)
    check_writable(ledger)
    with library_errors(), rebuild_progress() as progress:
        result = rebuild_projection(
            ledger, batch_size=batch_size, progress=progress, drop_extras=drop_extras
        )
    rate = result.events / result.seconds if result.seconds else 0.0
    click.echo(
        f"rebuilt ingestion_runs: {result.events} event(s), {result.runs} run(s) in "
        f"{result.seconds:.1f}s ({rate:,.0f} events/s); checkpoint at {result.position}"
    )
    if result.carried:
        click.echo(f"carried over: {'; '.join(map(str, result.carried))}")
    if result.dropped:
        click.echo(f"dropped (--drop-extras): {'; '.join(map(str, result.dropped))}")


class EventRateColumn(ProgressColumn):
    """Events per second, for the rebuild's progress bar."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(ABSENT if speed is None else f"{speed:,.0f} events/s")


@contextmanager
def rebuild_progress() -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on a terminal; a plain line every 10% otherwise."""
    console = Console(stderr=True)
    if not console.is_terminal:
        last = [-1]

        def plain(done: int, total: int) -> None:
            tenth = (10 * done // total) if total else 10
            if tenth != last[0]:
                last[0] = tenth
                click.echo(f"replayed {done}/{total} events", err=True)

        yield plain
        return
    columns = (
        TextColumn("rebuild"),
        BarColumn(),
        MofNCompleteColumn(),
        EventRateColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("rebuild", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=max(total, done))

        yield update
