"""The ``ledger`` command: a thin click layer over the library.

Each command parses its options, makes one library call, renders the result, and turns every
:class:`ledger.LedgerError` into a one-line message and an exit code, never a traceback:
0 ok, 1 a check found a problem (or the database failed a statement), 2 the caller's mistake
(bad usage or input, an unknown run or database), 3 the environment (the database unreachable,
access refused, stdout that cannot be written).
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

import click

from ledger import LedgerError
from ledger.text import visible, visible_lines
from ledger.urls import mask_secrets
from service.cli.errors import (
    EXIT_ENVIRONMENT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PROBLEM,
    Interrupted,
    ProblemFound,
    exit_code_for,
)
from service.cli.options import CommandGroup
from service.cli.output import OutputError, abandon_output, guard_stdout
from service.stop_request import release_termination

ExitCode = str | int | None  # what sys.exit takes
_VERBOSITY = "ledger.verbosity"  # the -v count so far, in the click context's meta


class OneLineFormatter(logging.Formatter):
    """Each log record's message on one line, its invisible characters shown as escapes
    (:func:`ledger.text.visible`): a log call's arguments may quote a connector, a data source
    or a driver (a server's raw status line, a stored name), and a newline in them would start
    a forged log line, an ESC or OSC sequence would draw on the terminal. Every message of
    run-ledger's is one line. A traceback after it (a bug's: ``log.exception``) keeps its
    lines, each indented and escaped the same way: its last line quotes the exception's
    message, which a connector or a data source may have written, so no line of it starts at
    the margin where a record's level does."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        shown = logging.makeLogRecord(vars(record))
        shown.message = visible(record.message)
        return super().formatMessage(shown)

    def formatException(self, ei: Any) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    """A traceback's lines, each indented by two spaces, its invisible characters escaped."""
    return "\n".join(f"  {visible(line)}" for line in text.splitlines())


def configure_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])  # a no-op once the root has one
    logging.getLogger().setLevel(level)  # again: a later -v raises it after basicConfig ran
    # SQL statement logs only at -vvv: -vv is for run-ledger's own debug lines.
    logging.getLogger("sqlalchemy").setLevel(logging.DEBUG if verbose >= 3 else logging.WARNING)
    # Alembic's "Context impl SQLiteImpl." / "Will assume non-transactional DDL." as migrate
    # starts say nothing to a user at -v: run-ledger logs what migrate did itself.
    logging.getLogger("alembic").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)


def _count_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    """-v counts wherever it is given: ``ledger -v verify -v`` is -vv."""
    if value:
        ctx.meta[_VERBOSITY] = ctx.meta.get(_VERBOSITY, 0) + value
        configure_logging(ctx.meta[_VERBOSITY])


def verbose_option() -> click.Option:
    return click.Option(
        ["-v", "--verbose"],
        count=True,
        expose_value=False,
        callback=_count_verbose,
        help="More log output (-v info, -vv debug, -vvv SQL); counts before and after the "
        "command name.",
    )


def add_verbose_everywhere(command: click.Command) -> None:
    """Give ``command`` and every command under it the -v option the group has."""
    if not any("--verbose" in param.opts for param in command.params):
        command.params.append(verbose_option())
    if isinstance(command, click.Group):
        for subcommand in command.commands.values():
            add_verbose_everywhere(subcommand)


# What click (8.2 and later) raises for a group given no command, `ledger run`: its message
# is the group's help. Escaped as one line, it printed as one line of "\n"s.
_GROUP_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


# Each command by name, and the module and name it is defined as. A command's module, with
# what it alone imports (rich, the scheduler, the HTTP and metrics servers, the forensics), is
# imported when that command runs; help and the unknown-name and misplaced-option messages,
# which look at every command, import them all. Every ``ledger`` process imported all of them
# before, a good part of its start.
COMMANDS: dict[str, tuple[str, str]] = {
    "migrate": ("service.cli.admin", "migrate"),
    "demo": ("service.cli.admin", "demo"),
    "import-legacy": ("service.cli.admin", "import_legacy_command"),
    "append": ("service.cli.events", "append"),
    "events": ("service.cli.events", "events"),
    "verify": ("service.cli.verify", "verify"),
    "anchor": ("service.cli.verify", "anchor_command"),
    "audit": ("service.cli.verify", "audit"),
    "report": ("service.cli.verify", "report"),
    "project": ("service.cli.projection", "project"),
    "rebuild": ("service.cli.projection", "rebuild"),
    "runs": ("service.cli.runs", "runs"),
    "status": ("service.cli.runs", "status"),
    "stuck": ("service.cli.runs", "stuck"),
    "sweep": ("service.cli.runs", "sweep_command"),
    "run": ("service.cli.connectors", "run_group"),
    "spool": ("service.cli.connectors", "spool"),
    "serve": ("service.cli.serve", "serve_command"),
    "config": ("service.cli.serve", "config_group"),
    "api": ("service.cli.api", "api_command"),
}


class LedgerGroup(CommandGroup):
    """The ``ledger`` group: Ctrl-C in any command is one line and exit 130 (commands that
    handle SIGINT themselves, like ``project --follow`` and ``serve``, still exit 0), no usage
    error echoes a control or format character, and an option before the command's name says
    where it goes. Its commands are imported as they are named (:data:`COMMANDS`)."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            self._import_command(cmd_name)
        command = self.commands.get(cmd_name)
        if command is None:
            self.all_commands()  # click's "Did you mean ...?" looks through self.commands
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def all_commands(self) -> Mapping[str, click.Command]:
        """Every command by name, each one's module imported, in the table's order."""
        for name in COMMANDS:
            if name not in self.commands:
                self._import_command(name)
        # In the table's order whatever was imported first: the misplaced option's hint lists
        # the commands that take it in this order, and named the ones a process had run first
        # (`ledger --limit 5` said "stuck, events, runs list" after a `stuck`, in one process).
        self.commands = {**{name: self.commands[name] for name in COMMANDS}, **self.commands}
        return self.commands

    def _import_command(self, name: str) -> None:
        module, attribute = COMMANDS[name]
        command: click.Command = getattr(importlib.import_module(module), attribute)
        add_verbose_everywhere(command)
        self.add_command(command, name)

    def option_order_hint(self, ctx: click.Context, option: str, args: list[str]) -> str | None:
        self.all_commands()
        return super().option_order_hint(ctx, option, args)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as error:
            if error.option_name.split("=")[0] != "--db":
                raise
            # `ledger --db URL runs list`, as many CLIs take a global option: say where it goes.
            vars(error)["message"] = (
                "No such option: --db before the command; --db belongs to each command, after "
                "its name (ledger runs list --db URL), or set $LEDGER_DATABASE_URL for all"
            )
            vars(error)["possibilities"] = []
            raise

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # Parsing the command line comes before invoke: a Ctrl-C there was click's "Aborted!"
        # and exit 1, the code of a check that found a problem.
        try:
            return super().make_context(info_name, args, parent, **extra)
        except KeyboardInterrupt:
            raise Interrupted() from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted() from None
        except click.ClickException as error:
            if isinstance(error, _GROUP_HELP):
                raise  # click's help text, laid out in lines, with nothing of the caller's
            # click's own messages quote arguments as given (a FILE that does not exist), and
            # strip ANSI codes only when stderr is not a terminal: escape them as ours are.
            # Each is one line: a newline in it is the argument's (a file name's), shown as
            # \n, or it would start a line of its own ("Error: ..."). Ours (ProblemFound) may
            # list problems a line each, made visible line by line as they were made.
            shown = visible_lines if isinstance(error, ProblemFound) else visible
            vars(error)["message"] = shown(error.message)  # Final for type checkers
            raise


@click.group(cls=LedgerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="run-ledger")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """run-ledger: an append-only, hash-chained ledger of ingestion runs."""
    configure_logging(ctx.meta.get(_VERBOSITY, 0))
    if ctx.invoked_subcommand not in STOPPED_ON_REQUEST:
        release_termination()  # SIGTERM ends the others at once, as ever


# The commands that stop cleanly on SIGTERM, and take one received while they loaded
# (service.stop_request.defer_termination); project only with --follow, else it releases it.
STOPPED_ON_REQUEST = frozenset({"project", "serve", "api"})

add_verbose_everywhere(cli)  # the group's own -v; each command gets its own as it is imported


def main() -> NoReturn:
    guard_stdout()
    try:
        code = _run_command()
    except OutputError as error:  # stdout could not be written: no traceback either
        code = _output_failure(error)
    sys.exit(code)


def _run_command() -> ExitCode:
    try:
        cli.main(standalone_mode=True)
        code: ExitCode = EXIT_OK
    except SystemExit as done:  # how click ends every command
        code = done.code
        if code == EXIT_INTERRUPTED:
            abandon_output()  # what is left would wait for the reader, Ctrl-C or not
    except KeyboardInterrupt:
        # Shell completion (_LEDGER_COMPLETE), which click runs before its own handlers: it
        # imports the command's module (the console script's own handler no longer covers
        # that import), and a Ctrl-C meanwhile was Python's traceback on the terminal.
        Interrupted().show()
        abandon_output()
        code = EXIT_INTERRUPTED
    except LedgerError as error:  # a library error that escaped a command: still no traceback
        click.echo(f"Error: {visible_lines(mask_secrets(str(error)))}", err=True)
        code = exit_code_for(error)
    # Output still buffered is written here, where its failure is handled, not as Python exits.
    sys.stdout.flush()
    return code


def _output_failure(error: OutputError) -> int:
    """Exit 3 with one line naming the OS's reason; a reader that went away (``| head -1``)
    gets no message and exit 1, as Python's own recipe for SIGPIPE."""
    if error.reader_went_away:
        return EXIT_PROBLEM
    click.echo(f"Error: {visible_lines(error.message())}", err=True)
    return EXIT_ENVIRONMENT


__all__ = ["cli", "main"]
