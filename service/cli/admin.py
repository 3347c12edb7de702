"""``ledger migrate``, ``demo`` and ``import-legacy``: set a database up, show the story, adopt
a legacy table."""

from __future__ import annotations

import json
import os
import shlex
import sys
from typing import TYPE_CHECKING

import click
from sqlalchemy.engine import make_url

from forensics.legacy_import import import_legacy
from forensics.report import report_passed
from forensics.report_render import REPORT_WIDTH, render_text
from ledger.clock import utcnow
from ledger.dialects import EVENTS_TABLE
from ledger.durations import format_duration
from ledger.schema import LEGACY_TABLE, SHARED_VERSION_TABLE, VERSION_TABLE
from ledger.text import visible, wrap_cells
from ledger.urls import (
    DATABASE_URL_ENV,
    IN_MEMORY_HINT,
    is_in_memory_sqlite,
    mask_url,
    resolve_database_url,
)
from service.cli.errors import EXIT_PROBLEM, library_errors
from service.cli.ledgers import open_ledger, opened_ledger
from service.cli.options import db_option, refuse_empty, wide_option
from service.cli.timelines import print_audit

if TYPE_CHECKING:
    from migrations.runner import MigrationResult, SchemaCheck

# Alembic (migrations.runner) loads only in the commands that migrate or check a schema, as in
# service.cli.ledgers: it took a sixth of every other command's start.

DEMO_DATABASE_URL = "sqlite:///ledger-demo.db"


@click.command()
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Change nothing: exit 0 if the schema is current, 1 naming what is pending.",
)
@db_option
def migrate(check_only: bool, db_url: str | None) -> None:
    """Create or upgrade the schema to the newest revision (a no-op when already there)."""
    if check_only:
        check_schema_command(db_url)
        return
    from migrations.runner import upgrade

    ledger = open_ledger(db_url, create=True)
    with library_errors():
        result = upgrade(ledger)
    where = mask_url(ledger.url)
    if result.changed:
        click.echo(f"{where}: migrated from {result.before or 'empty'} to {result.after}")
    else:
        click.echo(f"{where}: already at {result.after}")
    if result.version_moved is not None:
        click.echo(
            f"moved the schema's revision from the shared table {SHARED_VERSION_TABLE} to "
            f"{VERSION_TABLE}; on MySQL/MariaDB, roles granted SELECT on {SHARED_VERSION_TABLE} "
            f'need it on {VERSION_TABLE} now (README: "Grants on MySQL/MariaDB")'
        )
    if result.triggers_restored:
        click.echo(
            f"put back the missing append-only trigger(s) of {EVENTS_TABLE}: "
            f"{', '.join(result.triggers_restored)} (a database restored without its "
            "triggers?); `ledger verify` checks what was written while they were gone"
        )
    if is_in_memory_sqlite(ledger.url):
        click.echo(f"Note: nothing was kept, {IN_MEMORY_HINT}", err=True)
    if result.legacy_rows_moved is not None:
        echo_legacy_move(result, db_url)


def echo_legacy_move(result: MigrationResult, db_url: str | None) -> None:
    """Say what migrate did to a table it did not create, and what to do next."""
    same_db = " (with the same --db)" if db_url else ""
    click.echo(
        f"renamed the legacy table ingestion_runs ({result.legacy_rows_moved} row(s)) to "
        f"{LEGACY_TABLE}: nothing was dropped, and new run ids continue after its highest id.\n"
        f"Next: `ledger import-legacy`{same_db} adopts its rows into the ledger."
    )


def check_schema_command(db_url: str | None) -> None:
    """``migrate --check``: where the schema stands, changing nothing (not even creating a
    SQLite file)."""
    from migrations.runner import check

    with opened_ledger(db_url) as ledger:
        found = check(ledger)
    click.echo(f"{mask_url(ledger.url)}: {describe_schema_check(found)}")
    if not found.current_ok:
        sys.exit(EXIT_PROBLEM)


def describe_schema_check(found: SchemaCheck) -> str:
    if found.unknown_revision:
        return (
            f"at revision {found.current}, which this run-ledger does not know (migrated by a "
            f"newer run-ledger?); this one's newest is {found.head}"
        )
    if found.drift:
        return f"at {found.current}, but its tables differ from this run-ledger's: {found.drift}"
    if found.missing_triggers:
        return (
            f"at {found.current}, the newest revision, but {EVENTS_TABLE} lacks its append-only "
            f"trigger(s) {', '.join(found.missing_triggers)} (a database restored without its "
            "triggers?); run `ledger migrate` to put them back"
        )
    if found.version_to_move and not found.pending:
        return (
            f"at {found.current}, the newest revision, kept in the shared table "
            f"{SHARED_VERSION_TABLE} (by a run-ledger before 2026-12-07); run `ledger migrate` "
            f"to move it to {VERSION_TABLE}"
        )
    if not found.pending:
        return f"at {found.current}, the newest revision: nothing to migrate"
    legacy = (
        f"; it will rename the legacy ingestion_runs table to {LEGACY_TABLE}"
        if found.legacy_table_to_move
        else ""
    )
    return (
        f"{len(found.pending)} migration(s) pending, from {found.current or 'empty'} to "
        f"{found.head}: {', '.join(found.pending)}{legacy}; run `ledger migrate`"
    )


@click.command("import-legacy")
@click.option(
    "--from-url",
    default=None,
    metavar="URL",
    callback=refuse_empty,
    help="Database holding the legacy table (default: the ledger's own).",
)
@click.option(
    "--table",
    default=None,
    help="Legacy table (default: ingestion_runs_legacy in "
    "the ledger's database, where `ledger migrate` moved it; ingestion_runs with "
    "--from-url).",
)
@db_option
def import_legacy_command(from_url: str | None, table: str | None, db_url: str | None) -> None:
    """Adopt a legacy ingestion_runs table into the ledger (idempotent)."""
    with opened_ledger(db_url, writes=True) as ledger:
        result = import_legacy(ledger, source_url=from_url, table=table)
    click.echo(json.dumps(result.to_dict(), indent=2))
    if result.mismatches:
        sys.exit(EXIT_PROBLEM)


@click.command()
@click.option(
    "--db",
    "db_url",
    default=None,
    metavar="URL",
    callback=refuse_empty,
    help=f"Database for the demo (else ${DATABASE_URL_ENV}, else {DEMO_DATABASE_URL}).",
)
@wide_option
def demo(db_url: str | None, wide: bool) -> None:
    """The whole story in seconds: real runs, a killed run swept, the proof report."""
    # Like every command, then its own file: the default ledger.db may be a real ledger.
    from service.demo import tell_demo  # migrates its ledger: Alembic

    url = db_url or os.environ.get(DATABASE_URL_ENV) or DEMO_DATABASE_URL
    ledger = open_ledger(url, create=True)
    with library_errors():
        story = tell_demo(ledger)
    result = story.result
    echo = click.echo

    def step(text: str) -> None:  # laid out for 80 columns, as the report below it
        echo("\n".join(wrap_cells(text, REPORT_WIDTH, "   ")))

    if result.already_ran:
        echo(f"The demo already ran on {mask_url(ledger.url)}; here is where it stands.")
    else:
        echo(f"run-ledger demo on {mask_url(ledger.url)}\n")
        step(
            f"1. run {result.success_run}: the csv connector ingested the shipped sample "
            "(success, non-zero counters)"
        )
        step(f"2. run {result.partial_run}: the same connector over rows with errors (partial)")
        step(
            f"3. run {result.failed_run}: a source that refused the connection (failed, with "
            "its traceback)"
        )
        step(
            f"4. run {result.orphan_run}: started two hours ago by a process that was then "
            "killed: no terminal event, no activity since"
        )
        if result.swept is not None:
            step(
                f"5. the sweeper timed run {result.orphan_run} out: it had been silent for "
                f"{format_duration(utcnow() - result.swept.last_event_at)}, over the "
                f"{format_duration(result.swept.threshold)} threshold, so it appended "
                "RunTimedOut (detected_by=sweeper); the projection shows it failed, with "
                "completedAt and duration"
            )
    echo("")
    echo(render_text(story.proof), nl=False)
    if story.timeline:
        echo("")
        print_audit(story.timeline[0].event.run_id, story.timeline, wide)
    if is_in_memory_sqlite(url):  # the commands below would each open a new, empty one
        echo(
            "\nExplore further: the demo ran in memory and its database is gone; run "
            "`ledger demo` (on sqlite:///ledger-demo.db) to explore one."
        )
        if not report_passed(story.proof):
            sys.exit(EXIT_PROBLEM)
        return
    echo(f"\n{explore_heading(url)}")
    target = explore_target(url)
    for command in (
        "runs list",
        f"audit {story.orphan}",
        "events --format jsonl",
        "verify",
        "stuck",
        "report --format markdown",
        "status",
    ):
        echo(f"  ledger {command}{target}")
    if not report_passed(story.proof):
        sys.exit(EXIT_PROBLEM)


def explore_target(url: str) -> str:
    """What the "Explore further" commands need to reach the demo's database when pasted in
    this shell: nothing when it is the one they would use anyway, else ``--db URL``. A URL that
    cannot be printed as it is (a password, an invisible character) is left out:
    :func:`explore_heading` says to set it instead."""
    if url == resolve_database_url(None) or not _printable(url):
        return ""
    return f" --db {shlex.quote(url)}"


def explore_heading(url: str) -> str:
    if url == resolve_database_url(None) or _printable(url):
        return "Explore further:"
    return (
        f"Explore further (first set ${DATABASE_URL_ENV} to the URL given to --db: it is not "
        "printed, it holds a password or an invisible character):"
    )


def _printable(url: str) -> bool:
    """Whether the URL can be shown whole: no password to mask, nothing to escape."""
    unmasked = make_url(url).render_as_string(hide_password=False)
    return mask_url(url) == unmasked and visible(url) == url
