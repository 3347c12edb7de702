"""``ledger append`` and ``ledger events``: JSON Lines in, events out."""

from __future__ import annotations

import json
from typing import IO

import click

from ledger import AppendResult, RecordedEvent
from ledger.schema import MAX_POSITION
from ledger.store import read_events
from ledger.text import shown_value, visible
from ledger.wire import append_lines, read_lines, wire_line
from service.cli.errors import EnvironmentFailure, Interrupted, library_errors
from service.cli.ledgers import open_or_start_ledger, opened_ledger
from service.cli.options import RUN_ID, Integer, db_option, format_option, wide_option
from service.cli.output import names_missing_stdin, output_after, started_without_error
from service.cli.tables import TableColumn, print_table


@click.command()
@click.argument("source", type=click.File("rb"), default="-", metavar="[FILE|-]")
@db_option
def append(source: IO[bytes], db_url: str | None) -> None:
    """Append events from a JSON Lines FILE (or - for stdin), all or nothing.

    Every line is validated first; if any is invalid, each bad line is reported with its line
    number and field, and nothing is appended. A new run's lines may carry "run_ref": "LABEL"
    instead of run_id; the summary maps each label to the run id allocated.
    """
    if source.isatty():  # else a bare `ledger append` would seem to hang, waiting for input
        click.echo(
            "Reading JSON Lines events from the terminal, one event per line; end with Ctrl-D "
            "on an empty line (or give a FILE).",
            err=True,
        )
    name = getattr(source, "name", None)  # a FILE's errors name it; stdin's ("<stdin>") do not
    where = name if isinstance(name, str) and not name.startswith("<") else None
    try:
        if where is not None and names_missing_stdin(where):
            raise started_without_error()  # else it reads the /dev/null held in its place
        with library_errors(where):  # every line is read before the ledger is opened
            batch = read_lines(source)
    except KeyboardInterrupt:
        raise Interrupted(
            "interrupted by Ctrl-C while reading events: nothing was appended"
        ) from None
    except OSError as error:  # stdin the command was started without (<&-)
        raise EnvironmentFailure(
            f"cannot read the events from {visible(where or 'stdin')}: {error.strerror}; "
            "give a FILE"
        ) from error
    ledger = open_or_start_ledger(db_url)
    with library_errors(where):
        result = append_lines(ledger, batch)
    with output_after(what_was_appended(result)):
        click.echo(json.dumps(result.to_dict(), sort_keys=True))


def what_was_appended(result: AppendResult) -> str:
    """What a committed append changed, for an error after it: appending the same lines again
    would add a new run for each run_ref."""
    if not result.new_events:
        return f"nothing new was appended ({result.duplicates} duplicate(s))"
    done = (
        f"the {result.appended} event(s) WERE appended, at positions {result.first_position} "
        f"to {result.last_position}"
    )
    if result.run_refs:
        labels = ", ".join(f"{ref}={run_id}" for ref, run_id in result.run_refs.items())
        done += f" (runs {labels})"
    elif result.allocated_run_ids:
        done += f" (new runs {', '.join(map(str, result.allocated_run_ids))})"
    return f"{done}: do not append them again"


@click.command()
@click.option(
    "--run",
    "run_id",
    type=RUN_ID,
    default=None,
    metavar="ID",
    help="Only this run, in version order.",
)
@click.option(
    "--after",
    type=Integer(0, MAX_POSITION),
    default=0,
    metavar="POS",
    help="Only positions after POS.",
)
@click.option(
    "--limit",
    type=Integer(1, MAX_POSITION),
    default=None,
    metavar="N",
    help="At most N events.",
)
@format_option("table", "jsonl", help="jsonl output can be appended again as-is (idempotent).")
@wide_option
@db_option
def events(
    run_id: int | None,
    after: int,
    limit: int | None,
    output_format: str,
    wide: bool,
    db_url: str | None,
) -> None:
    """Read events back, in position order (or one run's in version order)."""
    with opened_ledger(db_url) as ledger:
        rows = read_events(ledger, run_id, after, limit)
        if output_format == "jsonl":
            for event in rows:
                click.echo(wire_line(event))
        else:
            print_events_table(list(rows), wide)


def print_events_table(rows: list[RecordedEvent], wide: bool) -> None:
    print_table(
        f"{len(rows)} event(s), times in UTC",
        EVENT_COLUMNS,
        (
            (
                event.position,
                event.run_id,
                event.version,
                event.type,
                event.occurred_at,
                event.actor,
                _payload_summary(event),
            )
            for event in rows
        ),
        wide=wide,
    )


EVENT_COLUMNS = (
    TableColumn("pos", "position", "word"),
    TableColumn("run", kind="word"),
    TableColumn("v", "version", "word"),
    TableColumn("type", kind="word", limit=len("RunProgressed")),
    TableColumn("occurred", "occurred_at", "time"),
    TableColumn("actor"),
    TableColumn("payload"),
)


def _payload_summary(event: RecordedEvent) -> str:
    """The payload's set fields as ``name=value``, each value as JSON writes it: text quoted
    (an error message of ``none, status=success`` cannot read as two fields), anything else
    (metadata, error details) compact, not as Python writes it (``{'a': 1}``, ``True``)."""
    data = {k: v for k, v in event.payload_data.items() if v not in (None, 0, {}, [])}
    return ", ".join(f"{k}={shown_value(v)}" for k, v in sorted(data.items()))
