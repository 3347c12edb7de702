"""What every command shares: exit codes, library errors as messages, the common options, and
rendering helpers (data shown through :func:`ledger.text.visible`, tables as plain text)."""

from __future__ import annotations

import getpass
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import click
from rich import box
from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.table import Table
from rich.text import Text

from connectors.spool import DEFAULT_SPOOL_DIR, SPOOL_DIR_ENV, SpoolAccessError
from ledger import (
    AccessDeniedError,
    ConcurrencyError,
    ConfigurationError,
    DatabaseNotFoundError,
    DatabaseUnreachableError,
    Ledger,
    LedgerError,
    StorageError,
    StoredEventError,
    StreamError,
    UnusableUrlError,
    ValidationError,
)
from ledger.clock import format_utc_seconds, utcnow
from ledger.durations import format_duration, parse_duration
from ledger.events import MAX_RUN_ID, name_problem, operator_actor
from ledger.schema import MAX_POSITION
from ledger.text import visible, visible_lines
from ledger.urls import (
    DATABASE_URL_ENV,
    mask_secrets,
    mask_url,
    resolve_database_url,
    unparseable_url_message,
)
from projections.as_of import parse_as_of

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command ended by Ctrl-C


class Integer(click.IntRange):
    """An integer option or argument within bounds. Click calls its range type "integer range",
    so a word given for a run id read "'abc' is not a valid integer range": the reader wrote no
    range. Here it is "not a valid integer", and help shows INTEGER with the bounds beside it."""

    name = "integer"


class Number(click.FloatRange):
    """A number (seconds, mostly) within bounds: "not a valid number", NUMBER in help.

    A finite one: ``nan`` passes every range check (each comparison with it is false) and, as a
    wait, returns at once (``project --follow --interval nan`` polled the database without a
    pause, ``run --heartbeat-interval nan`` appended heartbeats as fast as the ledger took
    them); ``inf`` or ``1e10`` as a wait is an OverflowError (a traceback, or a heartbeat
    thread that died silently)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


RUN_ID = Integer(1, MAX_RUN_ID)
SOURCE_ID = Integer(0, MAX_RUN_ID)
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


class Interrupted(ProblemFound):
    """Ctrl-C (SIGINT) ended the command: exit 130, with what it means for the data, instead of
    click's bare "Aborted!" and exit 1 (the code of a check that found a problem)."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str = "interrupted by Ctrl-C (SIGINT)") -> None:
        click.echo(err=True)  # the terminal echoed ^C: the message starts on a line of its own
        super().__init__(message)


_CALLERS_MISTAKES = (
    ValidationError,
    StreamError,
    ConcurrencyError,
    ConfigurationError,
    DatabaseNotFoundError,
    UnusableUrlError,
)


def exit_code_for(error: LedgerError) -> int:
    """0 done, 1 a check found a problem (or a statement failed), 2 the caller's mistake
    (bad input, an unknown run, an unknown or unnamed database), 3 the environment (the
    database unreachable, credentials or permission refused)."""
    if isinstance(error, StoredEventError):  # the ledger's history, not the caller's input
        return EXIT_PROBLEM
    if isinstance(error, _CALLERS_MISTAKES):
        return EXIT_USAGE
    if isinstance(error, DatabaseUnreachableError | AccessDeniedError | SpoolAccessError):
        # A spool folder or file this user may not open, like a SQLite ledger file: it was a
        # PermissionError traceback, exit 1.
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
def library_errors(where: str | None = None) -> Iterator[None]:
    """A library error raised inside becomes its one-line message and exit code; an error
    about the input (not the database's) is prefixed with ``where``, the file it came from."""
    try:
        yield
    except LedgerError as error:
        exception = _EXCEPTION_FOR_EXIT_CODE.get(exit_code_for(error), ProblemFound)
        message = naming_the_environment(str(error))
        if where is not None and not isinstance(error, StorageError):
            message = f"{visible(where)}: {message}"
        raise exception(message) from error


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


@contextmanager
def opened_ledger(db_url: str | None) -> Iterator[Ledger]:
    """:func:`open_ledger`, and the block that makes the command's library call under
    :func:`library_errors`."""
    ledger = open_ledger(db_url)
    with library_errors():
        yield ledger


def open_or_start_ledger(db_url: str | None) -> Ledger:
    """The ledger a writing command (append, run) works on; where its SQLite file is not there
    yet, a new ledger made there (migrated, said on stderr with its path), so that the first
    append works and a typo is visible rather than an empty file that asks for a migrate."""
    from migrations.runner import create_if_missing  # Alembic loads only where it may be needed

    url = resolve_database_url(db_url)
    with library_errors():
        note_created(create_if_missing(url))
    return open_ledger(db_url)


def note_created(path: Path | None) -> None:
    """Say on stderr where a new ledger was made (None: none was)."""
    if path is not None:
        click.echo(f"created a new ledger at {visible(str(path))}", err=True)


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


def db_or_config_option(command: F) -> F:
    """``--db`` of a command that also reads ``--config`` (status, api): its help names the
    config's database_url, which those commands use when neither is set."""
    return click.option(
        "--db",
        "db_url",
        metavar="URL",
        default=None,
        help=(
            f"Database URL (else ${DATABASE_URL_ENV}, else the --config file's database_url, "
            "else sqlite:///ledger.db)."
        ),
    )(command)


def as_of_options(command: F) -> F:
    command = click.option(
        "--at-position",
        type=Integer(0, MAX_POSITION),
        default=None,
        help="Replay the ledger up to this position instead.",
    )(command)
    return click.option(
        "--as-of",
        "as_of",
        default=None,
        metavar="TIME",
        help="Replay the ledger as recorded at TIME (ISO-8601; no zone means UTC).",
    )(command)


def parse_moment(as_of: str | None, at_position: int | None) -> datetime | None:
    with library_errors():
        return parse_as_of(as_of, at_position)


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


def wide_option(command: F) -> F:
    return click.option(
        "--wide",
        is_flag=True,
        help="Every column, full values, times to the second, one line per row however long "
        "(default: fit the terminal, long text cut with …).",
    )(command)


# The longest wait a seconds option takes: a day (a wait past what the platform's time_t holds
# is an OverflowError; no interval or timeout of a CLI command needs more).
MAX_SECONDS_OPTION = 86_400.0


def seconds_option(
    name: str, minimum: float, default: float, help: str | None = None
) -> Callable[[F], F]:
    def decorate(command: F) -> F:
        return click.option(
            name,
            type=Number(min=minimum, max=MAX_SECONDS_OPTION),
            default=default,
            show_default=True,
            help=help,
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


# ---------------------------------------------------------------------- tables
#
# One way to draw every table: columns are declared once, with their compact form (the default,
# which fits an 80-column terminal: short headers, ``11-28 19:37``, long text cut with "…") and
# their wide form (``--wide``: full headers, times to the second, every value whole, one line
# per row however long). Times, statuses and counters never wrap: only text columns give way,
# so a narrow terminal shortens an error message, not a date. Counters are compact too (``2.1G``
# for 2,147,483,000): whole, a run's four took 38 cells and pushed a table past 80 columns.

ColumnKind = Literal["text", "word", "time", "duration", "counts"]
# Room to measure a --wide table in: its natural width, whatever the terminal's.
UNBOUNDED = 1_000_000
COLUMN_GAP = 2  # the cells between two columns in the tables' style (print_table)
LEAST_TEXT_CELLS = 4  # what a text column keeps on a tiny terminal: "ab…"
# What a text column that shows full text keeps (runs show, audit): a date and time,
# "2026-01-28 01:12:45", on one line, and a header word unbroken.
LEAST_FULL_TEXT_CELLS = 20
LEAST_LINE_CELLS = 20  # what a line of text output keeps on a tiny terminal


@dataclass(frozen=True)
class TableColumn:
    """A column, declared once with both of its forms.

    ``header`` titles it in the compact table, ``wide_header`` (default: the same) with
    ``--wide``; a ``wide_only`` column is left out of the compact table. ``kind`` says how a
    value shows and whether it may give way: ``text`` is data of any length (cut with "…", or
    wrapped in a table that shows full text); ``word`` is a short value the code makes (an id, a
    status), never wrapped; ``time`` is a datetime; ``duration`` is seconds or a
    timedelta (``4d22h`` compact, exact when wide); ``counts`` is a sequence of counters shown
    as ``a/b/c/d`` (each at most 4 cells compact, ``2.1G``; exact when wide). ``limit`` cuts
    a longer value of a ``word`` column in the compact table: for stored words, such as an
    event type, that are short unless a writer made them long.
    """

    header: str
    wide_header: str = ""
    kind: ColumnKind = "text"
    wide_only: bool = False
    limit: int | None = None

    def title(self, wide: bool) -> str:
        return (self.wide_header or self.header) if wide else self.header

    def show(self, value: object, wide: bool, now: datetime) -> str:
        shown = self._shown(value, wide, now)
        return shown if wide else cut_cells(shown, self.limit)

    def _shown(self, value: object, wide: bool, now: datetime) -> str:
        if self.kind == "time" and isinstance(value, datetime):
            return format_utc_seconds(value) if wide else compact_time(value, now)
        if self.kind == "duration" and isinstance(value, timedelta | int | float):
            return format_duration(value) if wide else compact_duration(value)
        if self.kind == "counts" and isinstance(value, tuple | list):
            return "/".join(str(count) if wide else compact_count(count) for count in value)
        return cell(value)


def cut_cells(text: str, limit: int | None) -> str:
    """``text`` in at most ``limit`` terminal cells, a cut marked with "…": counted in cells (a
    CJK character or an emoji takes two), and a character is never cut in half."""
    if limit is None or cell_len(text) <= limit:
        return text
    return set_cell_size(text, max(limit - 1, 0)).rstrip() + "…"


def compact_time(value: datetime, now: datetime) -> str:
    """``11-28 19:37`` (UTC, to the minute), with the year when it is not this year's:
    ``2025-11-28 19:37``."""
    utc = value.astimezone(UTC)
    return utc.strftime("%m-%d %H:%M" if utc.year == now.year else "%Y-%m-%d %H:%M")


def compact_duration(value: timedelta | int | float) -> str:
    """The two largest units of :func:`format_duration` (``4d22h`` for 4d22h20m59s): the
    order of magnitude in a few cells; ``--wide`` and ``runs show`` give the exact value."""
    exact = format_duration(value)
    units = re.findall(r"-?\d+[dhms]", exact)
    return "".join(units[:2])


COUNT_UNITS = ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k"))


def compact_count(value: int) -> str:
    """A counter in at most 4 cells: exact below 10,000, else ``12k``, ``1.2M``, ``999M``,
    ``2.1G``, rounded down (never more than the true value); ``--wide`` and ``runs show``
    give it exactly."""
    if value < 10_000:
        return str(value)
    for size, unit in COUNT_UNITS:
        if value >= size:
            whole, rest = divmod(value, size)
            if whole < 10:
                return f"{whole}.{rest * 10 // size}{unit}"
            return f"{whole}{unit}"
    return str(value)  # unreachable: 10,000 and more is at least 1k


def print_table(
    title: str,
    columns: Sequence[TableColumn],
    rows: Iterable[Sequence[object]],
    *,
    wide: bool,
    full_text: bool = False,
    show_header: bool = True,
) -> None:
    """Print ``rows`` (one value per declared column, wide-only ones included) as a table.

    Compact (the default) fits the terminal's width (``$COLUMNS``, else the terminal's, else
    80): text columns share what the other columns leave and a longer value is cut with "…",
    or, with ``full_text`` (``runs show``, ``audit``), wrapped inside its cell. ``wide`` shows
    every column at its full width. Values are made visible (:func:`cell`) and passed as plain
    ``Text``: rich would read a ``str`` cell as markup and emoji codes, so ``[link=…]`` or
    ``[bold red]PASS[/]`` in a stored name would be obeyed."""
    shown = [index for index, column in enumerate(columns) if wide or not column.wide_only]
    now = utcnow()
    texts = [[columns[i].show(row[i], wide, now) for i in shown] for row in rows]
    table = Table(
        title=title,
        show_header=show_header,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    least = COLUMN_GAP * (len(shown) - 1)  # the narrowest the table can be, dates whole
    for position, index in enumerate(shown):
        column = columns[index]
        header = column.title(wide)
        if column.kind == "text":
            # Not no_wrap: only such columns may be narrowed by rich; each cell stays on one
            # line through its own no_wrap (below) unless the table shows full text.
            keep = LEAST_FULL_TEXT_CELLS if full_text else LEAST_TEXT_CELLS
            table.add_column(
                header,
                overflow="fold" if full_text else "ellipsis",
                min_width=keep if full_text else None,
            )
            least += keep
        else:
            widest = max((cell_len(row[position]) for row in texts), default=0)
            width = max(widest, cell_len(header))
            table.add_column(header, no_wrap=True, overflow="ellipsis", min_width=width)
            least += width
    one_line = wide or not full_text
    kinds = [columns[index].kind for index in shown]
    for row in texts:
        table.add_row(
            *(
                Text(text, no_wrap=one_line, overflow="ellipsis" if one_line else "fold")
                if kind == "text"
                else Text(text)
                for text, kind in zip(row, kinds, strict=True)
            )
        )
    table_console(table, wide, least).print(table)


def table_console(table: Table, wide: bool, least: int) -> Console:
    """As wide as the terminal (rich reads ``$COLUMNS``, else the terminal's size, else takes
    80) but never narrower than ``least``: on a tiny terminal rich would crop dates, so the
    terminal wraps the lines instead. With ``wide``, as wide as the table needs: nothing is cut
    or wrapped (a narrower terminal wraps the lines)."""
    terminal = Console()
    if wide:
        natural = terminal.measure(table, options=terminal.options.update_width(UNBOUNDED))
        return Console(width=max(natural.maximum, 1))
    return terminal if terminal.width >= least else Console(width=least)


def echo_fitted(line: str, wide: bool) -> None:
    """A line of text output made visible and cut with "…" to the terminal's width (in cells:
    a wide character takes two, and is never cut in half), or whole with ``wide``."""
    line = visible(line)
    width = max(Console().width, LEAST_LINE_CELLS)
    click.echo(line if wide else cut_cells(line, width))
