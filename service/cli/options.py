"""The options the commands share and their bounded types (``Integer``, ``Number``, durations,
names), each checked by click before a command runs."""

from __future__ import annotations

import getpass
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from connectors.spool import DEFAULT_SPOOL_DIR, SPOOL_DIR_ENV
from ledger import (
    LedgerError,
)
from ledger.durations import parse_duration
from ledger.events import (
    MAX_RUN_ID,
    UNNAMED_OPERATOR,
    operator_actor,
    operator_problem,
)
from ledger.schema import MAX_POSITION
from ledger.text import is_ascii_integer, visible
from ledger.urls import (
    DATABASE_URL_ENV,
)
from projections.as_of import parse_as_of
from service.cli.errors import BadInput, library_errors


class Integer(click.IntRange):
    """An integer option or argument within bounds. Click calls its range type "integer range",
    so a word given for a run id read "'abc' is not a valid integer range": the reader wrote no
    range. Here it is "not a valid integer", and help shows INTEGER with the bounds beside it."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        # int() reads "1_0" as 10 and "+1", " 1" and an Arabic-Indic one as 1: `runs fail 1_0`
        # failed run 10. A minus passes, for the range's own message.
        if isinstance(value, str) and not is_ascii_integer(value.removeprefix("-")):
            self.fail(
                f"{value!r} is not a valid integer (ASCII digits 0-9 only: no +, space, _ or .)",
                param,
                ctx,
            )
        return super().convert(value, param, ctx)


class Number(click.FloatRange):
    """A number (seconds, mostly) within bounds: "not a valid number", NUMBER in help.

    A finite one: ``nan`` passes every range check (each comparison with it is false) and, as a
    wait, returns at once (``project --follow --interval nan`` polled the database without a
    pause, ``run --heartbeat-interval nan`` appended heartbeats as fast as the ledger took
    them); ``inf`` or ``1e10`` as a wait is an OverflowError (a traceback, or a heartbeat
    thread that died silently)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        # float() reads "1_0" as 10 and " 1" or an Arabic-Indic one as 1, as int() does.
        loose = isinstance(value, str) and (
            not value.isascii() or "_" in value or value != value.strip()
        )
        if loose:
            self.fail(f"{value!r} is not a number of ASCII digits (no space or _)", param, ctx)
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


# What an option or argument given as "" is told (an unset variable, not the option left
# out); an argument has no default to fall back on.
EMPTY_ARGUMENT = "is empty (an unset variable?): give a value"
EMPTY_VALUE = f"{EMPTY_ARGUMENT}, or leave the option out for its default"


class NamedPath(click.Path):
    """A path on the command line; ``""`` (``--config "$FILE"`` with FILE unset) is refused,
    not read as ``.``, the current folder: as ``--db ""`` is (:func:`refuse_empty`)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "":
            self.fail(
                EMPTY_VALUE if isinstance(param, click.Option) else EMPTY_ARGUMENT, param, ctx
            )
        return super().convert(value, param, ctx)


RUN_ID = Integer(1, MAX_RUN_ID)
SOURCE_ID = Integer(0, MAX_RUN_ID)
FILE = NamedPath(dir_okay=False, path_type=Path)

F = TypeVar("F", bound=Callable[..., Any])


def operator_actor_of(name: str | None) -> str:
    """The actor an operator's command records (``runs fail``, ``project --skip-position``):
    ``operator:NAME`` for ``--actor NAME``, else ``operator:$USER`` (:func:`operator_actor`)."""
    if name is not None:
        return operator_actor(name)
    actor = operator_actor(getpass.getuser())
    found = operator_problem(actor)
    if found is not None:
        raise BadInput(f"the user name in {actor!r} cannot be an actor ({found[1]}): give --actor")
    return actor


# ---------------------------------------------------------------------- options


def refuse_empty(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An option given as ``""`` (``--db "$URL"`` with URL unset) is a mistake, not the option
    left out: read as left out, ``--db ""`` wrote to ``$LEDGER_DATABASE_URL`` or made a new
    ledger.db here, another ledger than the caller meant."""
    if value == "":
        raise click.BadParameter(EMPTY_VALUE, ctx=ctx, param=param)
    return value


def db_option(command: F) -> F:
    return click.option(
        "--db",
        "db_url",
        metavar="URL",
        default=None,
        callback=refuse_empty,
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
        callback=refuse_empty,
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
        callback=refuse_empty,
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
    """``--actor NAME``, held to the ledger's name rule (:func:`check_actor`)."""

    def decorate(command: F) -> F:
        return click.option("--actor", default=None, callback=check_actor, help=help)(command)

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


def check_actor(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--actor NAME``, held to the ledger's rule of an operator's name
    (:func:`ledger.events.operator_problem`) as a usage error before anything is done: ``""``
    or ``operator:`` alone would record an operator's act by no one, a name with an invisible
    character breaks the name rule, and ``operator: bob`` would be an operator other than
    ``operator:bob``."""
    found = None if value is None else operator_problem(value)
    if found is None:
        return value
    error_type, problem = found
    if error_type == UNNAMED_OPERATOR[0]:
        message = (
            f"{visible(value or '')!r} names no one: give the name of who decides (recorded as "
            "operator:NAME)"
        )
    else:
        message = visible(problem)
    raise click.BadParameter(message, ctx=ctx, param=param)


class CommandGroup(click.Group):
    """A group of commands whose options go after a command's name: one given before it
    (``ledger runs --db URL list``, ``ledger run --source-id 3 csv``) is refused naming the
    command that takes it and where it goes, not only "No such option"."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as error:
            hint = self.option_order_hint(ctx, error.option_name.split("=")[0], args)
            if hint is None:
                raise
            option = error.option_name.split("=")[0]
            vars(error)["message"] = f"No such option: {option} before the command; {hint}"
            vars(error)["possibilities"] = []
            raise

    def option_order_hint(self, ctx: click.Context, option: str, args: list[str]) -> str | None:
        """Where ``option`` goes: after the name of the command that takes it (the one named
        later on the line, else each of this group's that does), or None when none does."""
        named = [self.commands[word] for word in args if word in self.commands][:1]
        paths: list[str] = []
        for candidates in (named, list(self.commands.values())):
            paths = [
                path
                for command in candidates
                for path in _paths_taking(command, option, f"{ctx.command_path} {command.name}")
            ]
            if paths:
                break
        if not paths:
            return None
        shown = ", ".join(f"{path} {option} …" for path in paths[:3])
        more = f" (and {len(paths) - 3} more)" if len(paths) > 3 else ""
        return f"{option} goes after the command's name: {shown}{more}"


def _paths_taking(command: click.Command, option: str, path: str) -> list[str]:
    """The command lines (``ledger runs list``) of ``command`` and the commands under it that
    take ``option``."""
    if isinstance(command, click.Group):
        return [
            found
            for name, sub in command.commands.items()
            for found in _paths_taking(sub, option, f"{path} {name}")
        ]
    takes = any(option in param.opts for param in command.params if isinstance(param, click.Option))
    return [path] if takes else []
