"""Exit codes, and library errors as the one-line messages and codes of the CLI (0 ok, 1 a
problem found, 2 the caller's mistake, 3 the environment, 130 Ctrl-C)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import click

from ledger import (
    AccessDeniedError,
    ClockAheadError,
    ConcurrencyError,
    ConfigurationError,
    DatabaseNotFoundError,
    DatabaseUnreachableError,
    DiskError,
    LedgerError,
    OutputFileError,
    ServerSettingError,
    StorageError,
    StoredEventError,
    StreamError,
    UnusableUrlError,
    ValidationError,
)
from ledger.driver_errors import database_busy, is_transaction_conflict
from ledger.text import visible, visible_lines
from ledger.urls import (
    DATABASE_URL_ENV,
    mask_secrets,
    mask_url,
    unparseable_url_message,
)

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command ended by Ctrl-C


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


def _other_packages_kind(error: LedgerError) -> int | None:
    """The exit code of an error of the packages above ``ledger`` whose code is not the
    default, or None. Their modules are imported on an error's path only: each package loads
    whole, and importing them was a tenth of every command's start."""
    from connectors.spool import SpoolAccessError
    from forensics.legacy_table import LegacyTableChangedError
    from projections.errors import ReadModelExtrasError

    if isinstance(error, ReadModelExtrasError):
        return EXIT_USAGE  # an operator's trigger, CHECK, foreign key: theirs to decide
    if isinstance(error, SpoolAccessError | LegacyTableChangedError):
        # A spool folder or file this user may not open, like a SQLite ledger file: it was a
        # PermissionError traceback, exit 1.
        return EXIT_ENVIRONMENT
    return None


def exit_code_for(error: LedgerError) -> int:
    """0 done, 1 a check found a problem (or a statement failed), 2 the caller's mistake
    (bad input, an unknown run, an unknown or unnamed database), 3 the environment (the
    database unreachable, credentials or permission refused, a transaction that kept losing
    to others past its retries, the database busy: a lock or every pooled connection held
    past the wait)."""
    if isinstance(error, StoredEventError):  # the ledger's history, not the caller's input
        return EXIT_PROBLEM
    if isinstance(error, _CALLERS_MISTAKES):
        return EXIT_USAGE
    kind = _other_packages_kind(error)
    if kind is not None:
        return kind
    if isinstance(
        error,
        DatabaseUnreachableError
        | AccessDeniedError
        | DiskError
        | ServerSettingError
        | ClockAheadError
        | OutputFileError,
    ):
        # An output file on a full disk, as stdout is, and so the SQLite file's own disk.
        return EXIT_ENVIRONMENT
    if isinstance(error, StorageError) and isinstance(error.__cause__, StorageError):
        # A storage error raised from another (the SDK's "run not started: the ledger is
        # unreachable") is what its cause is.
        return exit_code_for(error.__cause__)
    if isinstance(error, StorageError) and database_busy(error):
        # A lock held elsewhere, or no pooled connection free, past the wait: the database is
        # up and busy, the environment's failure, which may pass (not a problem a check found).
        return EXIT_ENVIRONMENT
    if isinstance(error, StorageError) and is_transaction_conflict(error):
        # Still losing to other transactions once the bounded retries ran out (a Galera
        # cluster's DDL or writes through other nodes): the environment's, which may pass;
        # exit 1 would say a check found a problem in the ledger.
        return EXIT_ENVIRONMENT
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
        message = naming_the_environment(str(error))
        if where is not None and not isinstance(error, StorageError):
            message = f"{visible(where)}: {message}"
        raise problem_for(error, message) from error


def problem_for(error: LedgerError, message: str) -> ProblemFound:
    """``message``, about ``error``, as the one-line error of that error's exit code."""
    return _EXCEPTION_FOR_EXIT_CODE.get(exit_code_for(error), ProblemFound)(message)


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
