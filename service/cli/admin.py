"""``ledger migrate``, ``demo`` and ``import-legacy``: set a database up, show the story, adopt
a legacy table."""

from __future__ import annotations

import json
import sys

import click

from forensics.legacy_import import import_legacy
from forensics.report import render_text, report_passed
from ledger.clock import utcnow
from ledger.durations import format_duration
from ledger.urls import mask_url
from migrations.runner import upgrade
from service.cli.common import EXIT_PROBLEM, db_option, library_errors, open_ledger, wide_option
from service.cli.verify import print_audit
from service.demo import tell_demo

DEMO_DATABASE_URL = "sqlite:///ledger-demo.db"


@click.command()
@db_option
def migrate(db_url: str | None) -> None:
    """Create or upgrade the schema to the newest revision (a no-op when already there)."""
    ledger = open_ledger(db_url)
    with library_errors():
        result = upgrade(ledger)
    where = mask_url(ledger.url)
    if result.changed:
        click.echo(f"{where}: migrated from {result.before or 'empty'} to {result.after}")
    else:
        click.echo(f"{where}: already at {result.after}")


@click.command("import-legacy")
@click.option(
    "--from-url",
    default=None,
    metavar="URL",
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
    ledger = open_ledger(db_url)
    with library_errors():
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
    help="Database for the demo (default: sqlite:///ledger-demo.db).",
)
@wide_option
def demo(db_url: str | None, wide: bool) -> None:
    """The whole story in seconds: real runs, a killed run swept, the proof report."""
    url = db_url or DEMO_DATABASE_URL
    ledger = open_ledger(url)
    with library_errors():
        story = tell_demo(ledger)
    result = story.result
    echo = click.echo
    if result.already_ran:
        echo(f"The demo already ran on {mask_url(ledger.url)}; here is where it stands.\n")
    else:
        echo(f"run-ledger demo on {mask_url(ledger.url)}\n")
        echo(
            f"1. run {result.success_run}: the csv connector ingested the shipped sample "
            "(success, non-zero counters)"
        )
        echo(f"2. run {result.partial_run}: the same connector over rows with errors (partial)")
        echo(
            f"3. run {result.failed_run}: a source that refused the connection (failed, with "
            "its traceback)"
        )
        echo(
            f"4. run {result.orphan_run}: started two hours ago by a process that was then "
            "killed: no terminal event, no activity since"
        )
        if result.swept is not None:
            echo(
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
    target = "" if url == DEMO_DATABASE_URL else f" --db '{mask_url(url)}'"
    echo("\nExplore further:")
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
