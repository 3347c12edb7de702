"""The ``ledger`` command: a thin click layer over the library.

It parses options, calls library functions, prints results, and turns every
:class:`ledger.LedgerError` into a one-line message and an exit code, never a traceback:
0 ok, 1 a check found a problem (or the database failed), 2 bad usage or input.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any, NoReturn, TypeVar

import click
import pydantic
from rich.console import Console
from rich.table import Table

from ledger import (
    ConcurrencyError,
    ConfigurationError,
    EventModel,
    Ledger,
    LedgerError,
    RecordedEvent,
    StreamError,
    UnknownEventTypeError,
    ValidationError,
    verify_chain,
)
from ledger.events import event_adapter
from ledger.mapper import describe_pydantic_errors, event_to_wire
from ledger.migrate import upgrade
from ledger.store import batch_problems
from ledger.urls import DATABASE_URL_ENV, mask_secrets, mask_url, resolve_database_url

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("ledger.cli")


class ProblemFound(click.ClickException):
    """A check found a problem, or the database failed: exit 1, message on stderr."""

    exit_code = EXIT_PROBLEM

    def __init__(self, message: str) -> None:
        super().__init__(mask_secrets(message))


class BadInput(ProblemFound):
    """Bad usage or input: exit 2."""

    exit_code = EXIT_USAGE


def cli_error(message: str, exit_code: int) -> click.ClickException:
    return BadInput(message) if exit_code == EXIT_USAGE else ProblemFound(message)


def exit_code_for(error: LedgerError) -> int:
    if isinstance(error, ValidationError | StreamError | ConcurrencyError | ConfigurationError):
        return EXIT_USAGE
    return EXIT_PROBLEM


@contextmanager
def library_errors() -> Iterator[None]:
    try:
        yield
    except LedgerError as error:
        raise cli_error(str(error), exit_code_for(error)) from error


def db_option(command: F) -> F:
    return click.option(
        "--db",
        "db_url",
        metavar="URL",
        default=None,
        help=f"Database URL (else ${DATABASE_URL_ENV}, else sqlite:///ledger.db).",
    )(command)


def open_ledger(db_url: str | None) -> Ledger:
    url = resolve_database_url(db_url)
    with library_errors():
        ledger = Ledger.from_url(url)
    log.info("using %s", mask_url(url))
    return ledger


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="run-ledger")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """run-ledger: an append-only, hash-chained ledger of ingestion runs."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


@cli.command()
@db_option
def migrate(db_url: str | None) -> None:
    """Create or upgrade the schema to the newest revision (a no-op when already there)."""
    ledger = open_ledger(db_url)
    with library_errors():
        result = upgrade(ledger.engine, ledger.url)
    where = mask_url(ledger.url)
    if result.changed:
        click.echo(f"{where}: migrated from {result.before or 'empty'} to {result.after}")
    else:
        click.echo(f"{where}: already at {result.after}")


@cli.command()
@click.argument("source", type=click.File("rb"), default="-")
@db_option
def append(source: IO[bytes], db_url: str | None) -> None:
    """Append events from a JSON Lines FILE (or - for stdin), all or nothing.

    Every line is validated first; if any is invalid, each bad line is reported with its line
    number and field, and nothing is appended. A new run's lines may carry "run_ref": "LABEL"
    instead of run_id; the summary maps each label to the run id allocated.
    """
    events, line_numbers = read_event_lines(source)
    problems = [
        f"line {line_numbers[index]}: {message}" if index is not None else message
        for index, message in batch_problems(events)
    ]
    if problems:
        fail_input(problems)
    ledger = open_ledger(db_url)
    try:
        result = ledger.append(events)
    except LedgerError as error:
        index = error.batch_index
        prefix = f"line {line_numbers[index]}: " if index is not None and events else ""
        raise cli_error(prefix + str(error), exit_code_for(error)) from error
    summary = {
        "appended": result.appended,
        "duplicates": result.duplicates,
        "first_position": result.first_position,
        "last_position": result.last_position,
        "allocated_run_ids": result.allocated_run_ids,
        "run_refs": result.run_refs,
    }
    click.echo(json.dumps(summary, sort_keys=True))


def read_event_lines(source: IO[bytes]) -> tuple[list[EventModel], list[int]]:
    """Parse and validate every line; exit 2 naming each bad line if any is invalid."""
    events: list[EventModel] = []
    line_numbers: list[int] = []
    problems: list[str] = []
    for number, raw in enumerate(source, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"line {number}: not valid UTF-8 (byte {exc.start})")
            continue
        if not text.strip():
            continue
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except ValueError as exc:
            problems.append(f"line {number}: not valid JSON ({exc})")
            continue
        if not isinstance(data, dict):
            problems.append(f"line {number}: expected a JSON object, got {type(data).__name__}")
            continue
        try:
            events.append(event_adapter.validate_python(data))
            line_numbers.append(number)
        except pydantic.ValidationError as exc:
            problems.extend(f"line {number}: {p}" for p in describe_pydantic_errors(exc))
    if problems:
        fail_input(problems)
    return events, line_numbers


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def fail_input(problems: list[str]) -> NoReturn:
    shown = problems[:50]
    more = len(problems) - len(shown)
    message = "invalid input, nothing was appended:\n  " + "\n  ".join(shown)
    if more:
        message += f"\n  … and {more} more problem(s)"
    raise BadInput(message)


@cli.command()
@click.option("--run", "run_id", type=int, default=None, help="Only this run, in version order.")
@click.option("--after", type=click.IntRange(min=0), default=0, help="Only positions after POS.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N events.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "jsonl"]),
    default="table",
    show_default=True,
    help="jsonl output can be appended again as-is (idempotent).",
)
@db_option
def events(
    run_id: int | None, after: int, limit: int | None, output_format: str, db_url: str | None
) -> None:
    """Read events back, in position order (or one run's in version order)."""
    ledger = open_ledger(db_url)
    with library_errors():
        if run_id is not None:
            selected = [e for e in ledger.read_run(run_id) if e.position > after][:limit]
            rows: Iterator[RecordedEvent] = iter(selected)
        else:
            rows = ledger.read_all(after=after, limit=limit)
        if output_format == "jsonl":
            for event in rows:
                click.echo(json.dumps(wire_form(event), sort_keys=True, ensure_ascii=False))
        else:
            print_events_table(list(rows))


def wire_form(event: RecordedEvent) -> dict[str, Any]:
    """The appendable JSON of a stored event (raw, if its type is unknown to this version)."""
    try:
        return event_to_wire(event.event)
    except UnknownEventTypeError:
        return {
            **event.payload_data,
            "type": event.type,
            "event_id": event.event_id,
            "run_id": event.run_id,
            "occurred_at": event.occurred_at.isoformat(),
            "actor": event.actor,
            "schema_version": event.schema_version,
        }


def print_events_table(rows: list[RecordedEvent]) -> None:
    table = Table(title=f"{len(rows)} event(s)")
    for column in ("position", "run", "version", "type", "occurred_at (UTC)", "actor", "payload"):
        table.add_column(column, overflow="fold")
    for event in rows:
        table.add_row(
            str(event.position),
            str(event.run_id),
            str(event.version),
            event.type,
            event.occurred_at.strftime("%Y-%m-%d %H:%M:%S.%f"),
            event.actor or "—",
            _payload_summary(event),
        )
    console = Console()
    if not console.is_terminal:  # piped: don't squeeze the table into 80 columns
        console = Console(width=200)
    console.print(table)


def _payload_summary(event: RecordedEvent) -> str:
    data = {k: v for k, v in event.payload_data.items() if v not in (None, 0, {}, [])}
    text = ", ".join(f"{k}={v}" for k, v in sorted(data.items()))
    return text if len(text) <= 120 else text[:117] + "…"


@cli.command()
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)
@db_option
def verify(output_format: str, db_url: str | None) -> None:
    """Recompute the hash chain; exit 1 naming the first position that does not match."""
    ledger = open_ledger(db_url)
    with library_errors():
        report = verify_chain(ledger)
    if output_format == "json":
        click.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "checked": report.checked,
                    "first_bad_position": report.first_bad_position,
                    "problem": report.problem,
                }
            )
        )
    elif report.ok:
        click.echo(f"chain verifies: {report.checked} event(s) checked")
    else:
        click.echo(
            f"chain broken at position {report.first_bad_position}: {report.problem} "
            f"({report.checked} event(s) verified before it)"
        )
    if not report.ok:
        sys.exit(EXIT_PROBLEM)


def main() -> NoReturn:
    try:
        cli.main(standalone_mode=True)
    except LedgerError as error:  # a library error that escaped a command: still no traceback
        click.echo(f"Error: {mask_secrets(str(error))}", err=True)
        sys.exit(exit_code_for(error))
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
