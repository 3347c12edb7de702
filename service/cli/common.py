"""What every command shares: exit codes, library errors as messages, the common options, and
rendering helpers (data shown through :func:`ledger.text.visible`, tables as plain text)."""

from __future__ import annotations

import getpass
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from connectors.spool import DEFAULT_SPOOL_DIR, SPOOL_DIR_ENV
from ledger import (
    AccessDeniedError,
    ConcurrencyError,
    ConfigurationError,
    DatabaseNotFoundError,
    DatabaseUnreachableError,
    Ledger,
    LedgerError,
    StorageError,
    StreamError,
    ValidationError,
)
from ledger.clock import format_utc_seconds
from ledger.database import unparseable_url_message
from ledger.durations import parse_duration
from ledger.events import MAX_RUN_ID, name_problem, operator_actor
from ledger.text import visible, visible_lines
from ledger.urls import DATABASE_URL_ENV, mask_secrets, mask_url, resolve_database_url

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
RUN_ID = click.IntRange(1, MAX_RUN_ID)
SOURCE_ID = click.IntRange(0, MAX_RUN_ID)
FILE = click.Path(dir_okay=False, path_type=Path)

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("ledger.cli")


class ProblemFound(click.ClickException):
    """A check found a problem, or the database failed a statement: exit 1, message on
    stderr."""

    exit_code = EXIT_PROBLEM

    def __init__(self, message: str) -> None:
        # Messages quote input and stored data: no ESC or CR from them reaches the terminal.
        super().__init__(visible_lines(mask_secrets(message)))


class BadInput(ProblemFound):
    """Bad usage or input: exit 2."""

    exit_code = EXIT_USAGE


class EnvironmentFailure(ProblemFound):
    """The environment failed (the database unreachable, access or permission refused):
    exit 3."""

    exit_code = EXIT_ENVIRONMENT


_CALLERS_MISTAKES = (
    ValidationError,
    StreamError,
    ConcurrencyError,
    ConfigurationError,
    DatabaseNotFoundError,
)


def exit_code_for(error: LedgerError) -> int:
    """0 done, 1 a check found a problem (or a statement failed), 2 the caller's mistake
    (bad input, an unknown run, an unknown or unnamed database), 3 the environment (the
    database unreachable, credentials or permission refused)."""
    if isinstance(error, _CALLERS_MISTAKES):
        return EXIT_USAGE
    if isinstance(error, DatabaseUnreachableError | AccessDeniedError):
        return EXIT_ENVIRONMENT
    if isinstance(error, StorageError) and isinstance(error.__cause__, StorageError):
        # A storage error raised from another (the SDK's "run not started: the ledger is
        # unreachable") is what its cause is.
        return exit_code_for(error.__cause__)
    return EXIT_PROBLEM


_EXCEPTION_FOR_EXIT_CODE: dict[int, type[ProblemFound]] = {
    EXIT_USAGE: BadInput,
    EXIT_ENVIRONMENT: EnvironmentFailure,
}


@contextmanager
def library_errors() -> Iterator[None]:
    """A library error raised inside becomes its one-line message and exit code."""
    try:
        yield
    except LedgerError as error:
        exception = _EXCEPTION_FOR_EXIT_CODE.get(exit_code_for(error), ProblemFound)
        raise exception(naming_the_environment(str(error))) from error


# Where open_ledger notes, in the click context, a database URL read from the environment.
_URL_FROM_ENVIRONMENT = "ledger.url_from_environment"


def remember_url_source(url: str) -> None:
    """Note ``url`` when it came from ``$LEDGER_DATABASE_URL`` rather than ``--db``: an error
    about it must name the variable, the one setting to fix."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and not ctx.params.get("db_url") and url == os.environ.get(DATABASE_URL_ENV):
        ctx.meta[_URL_FROM_ENVIRONMENT] = url


def naming_the_environment(message: str) -> str:
    """``$LEDGER_DATABASE_URL: message`` when the message is about the database URL and that
    URL came from the environment (as ``config check`` names it); else the message."""
    ctx = click.get_current_context(silent=True)
    url = ctx.meta.get(_URL_FROM_ENVIRONMENT) if ctx is not None else None
    if url is None or not (mask_url(url) in message or unparseable_url_message(url) in message):
        return message
    return f"${DATABASE_URL_ENV}: {message}"


def open_ledger(db_url: str | None, *, create: bool = False) -> Ledger:
    """The ledger the command works on. Only the commands that write a new ledger (migrate,
    demo, append, run, serve) pass ``create=True``: for every other one, a SQLite file that
    does not exist is the caller's mistake (a typo), refused without creating it."""
    url = resolve_database_url(db_url)
    remember_url_source(url)
    with library_errors():
        ledger = Ledger.from_url(url, create=create)
    log.info("using %s", mask_url(url))
    return ledger


def operator_actor_of(name: str | None) -> str:
    """The actor an operator's command records (``runs fail``, ``project --skip-position``):
    ``operator:NAME`` for ``--actor NAME``, else ``operator:$USER`` (:func:`operator_actor`)."""
    if name is not None:
        return operator_actor(name)
    actor = operator_actor(getpass.getuser())
    problem = name_problem(actor)
    if problem is not None:
        raise BadInput(f"the user name in {actor!r} cannot be an actor ({problem}): give --actor")
    return actor


# ---------------------------------------------------------------------- options


def db_option(command: F) -> F:
    return click.option(
        "--db",
        "db_url",
        metavar="URL",
        default=None,
        help=f"Database URL (else ${DATABASE_URL_ENV}, else sqlite:///ledger.db).",
    )(command)


def spool_option(command: F) -> F:
    return click.option(
        "--spool-dir",
        default=None,
        metavar="DIR",
        help=f"Where events wait while the ledger is unreachable (else ${SPOOL_DIR_ENV}, "
        f"else ./{DEFAULT_SPOOL_DIR}).",
    )(command)


def format_option(
    *choices: str, default: str = "table", help: str | None = None
) -> Callable[[F], F]:
    def decorate(command: F) -> F:
        return click.option(
            "--format",
            "output_format",
            type=click.Choice(choices),
            default=default,
            show_default=True,
            help=help or "How to print the result.",
        )(command)

    return decorate


output_format_option = format_option("table", "json")


def seconds_option(
    name: str, minimum: float, default: float, help: str | None = None
) -> Callable[[F], F]:
    def decorate(command: F) -> F:
        return click.option(
            name, type=click.FloatRange(min=minimum), default=default, show_default=True, help=help
        )(command)

    return decorate


def actor_option(help: str) -> Callable[[F], F]:
    """``--actor NAME``, held to the ledger's name rule (:func:`check_name`)."""

    def decorate(command: F) -> F:
        return click.option("--actor", default=None, callback=check_name, help=help)(command)

    return decorate


class DurationParam(click.ParamType[timedelta]):
    """``90s`` / ``15m`` / ``6h`` / ``2d``."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            # click's message names the option already ("Invalid value for '--older-than'").
            return parse_duration(str(value), None if param else "duration")
        except LedgerError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationParam()


def check_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The name rule of the ledger (no invisible character, no whitespace at either end) for a
    name given on the command line, as a usage error before anything is done."""
    problem = None if value is None else name_problem(value)
    if problem is not None:
        raise click.BadParameter(visible(problem), ctx=ctx, param=param)
    return value


# ---------------------------------------------------------------------- rendering


def echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2))


def cell(value: object) -> str:
    """A value as people read it; data is made visible (no control or format character)."""
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return format_utc_seconds(value)
    return visible(str(value))


def add_text_row(table: Table, *values: object) -> None:
    """A table row of plain ``Text`` cells: rich reads a ``str`` cell as markup and emoji
    codes, so ``[link=…]`` or ``[bold red]PASS[/]`` in a stored name would be obeyed."""
    table.add_row(*(Text(cell(value)) for value in values))


def new_table(title: str, columns: tuple[str, ...], **options: Any) -> Table:
    """A table with these columns, each made with ``options`` (``overflow="fold"``: long
    values wrap instead of being cut)."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, **options)
    return table


def wide_console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=200)
