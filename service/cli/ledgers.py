"""Opening the ledger a command works on: its URL from ``--db`` or ``$LEDGER_DATABASE_URL``,
a missing SQLite file refused unless the command may create one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from ledger import DatabaseNotFoundError, Ledger
from ledger.text import visible
from ledger.urls import (
    mask_url,
    resolve_database_url,
)
from service.cli.errors import library_errors, remember_url_source
from service.config import LedgerConfig, load_config

log = logging.getLogger("ledger.cli")


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
def opened_ledger(db_url: str | None, *, writes: bool = False) -> Iterator[Ledger]:
    """:func:`open_ledger`, and the block that makes the command's library call under
    :func:`library_errors`; for a command that ``writes``, first :func:`check_writable`."""
    ledger = open_ledger(db_url)
    if writes:
        check_writable(ledger)
    with library_errors():
        yield ledger


def check_writable(ledger: Ledger) -> None:
    """Refuse to write to a database whose schema is not at the revision this code needs
    ("run `ledger migrate`", as the API's 503): a migrate that stopped half-way (a grant
    missing; MySQL commits each DDL statement) can leave the event tables without the
    triggers that make them append-only (DESIGN.md I1), and nothing must be written there."""
    with library_errors():
        ledger.check_schema()


def open_or_start_ledger(db_url: str | None) -> Ledger:
    """The ledger a writing command (append, run) works on, its schema checked
    (:func:`check_writable`); where its SQLite file is not there yet, a new ledger made there
    (migrated, said on stderr with its path), so that the first append works and a typo is
    visible rather than an empty file that asks for a migrate."""
    url = resolve_database_url(db_url)
    remember_url_source(url)  # before the first error about the URL: it names the variable
    with library_errors():
        try:
            ledger = Ledger.from_url(url, create=False)
        except DatabaseNotFoundError:
            # Alembic is loaded only to make a ledger: a quarter of a second of every append's
            # start otherwise, where the ledger is there.
            from migrations.runner import create_if_missing

            note_created(create_if_missing(url))
            ledger = Ledger.from_url(url, create=False)
    log.info("using %s", mask_url(url))
    check_writable(ledger)
    return ledger


def note_created(path: Path | None) -> None:
    """Say on stderr where a new ledger was made (None: none was)."""
    if path is not None:
        click.echo(f"created a new ledger at {visible(str(path))}", err=True)


def stuck_config(config_path: Path | None) -> LedgerConfig:
    """The config whose thresholds ``stuck``, ``sweep`` and ``report`` apply: the file's, else the
    defaults (60m, no max_runtime, no connector of its own)."""
    if config_path is None:
        return LedgerConfig()
    with library_errors():
        return load_config(config_path)
