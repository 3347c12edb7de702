"""``ledger runs`` (list, show, fail), ``stuck``, ``sweep`` and ``status``: runs and health."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from pathlib import Path

import click

from ledger import StuckRun, SweepResult, fail_run
from ledger.clock import utcnow
from ledger.durations import format_duration, format_silence
from ledger.schema import MAX_POSITION
from ledger.stuck import DEFAULT_STALE_AFTER_TEXT
from ledger.text import quoted, shown_name, visible, wrap_cells
from projections.as_of import judged_moment
from projections.queries import (
    RunFilter,
    find_run,
    find_runs,
    jsonable_row,
)
from projections.schema import RECORD_COUNTER_COLUMNS, RUN_STATUSES
from service.cli.errors import (
    EXIT_PROBLEM,
    BadInput,
    ProblemFound,
    library_errors,
    naming_the_environment,
    problem_for,
)
from service.cli.ledgers import check_writable, open_ledger, opened_ledger, stuck_config
from service.cli.options import (
    DURATION,
    FILE,
    RUN_ID,
    SOURCE_ID,
    CommandGroup,
    F,
    Integer,
    actor_option,
    as_of_options,
    db_option,
    db_or_config_option,
    operator_actor_of,
    output_format_option,
    parse_moment,
    spool_option,
    wide_option,
)
from service.cli.output import output_after
from service.cli.tables import (
    TableColumn,
    TwoForms,
    cell,
    compact_duration,
    echo_fitted,
    echo_json,
    print_table,
)
from service.config import load_config
from service.status import status_report


@click.group(cls=CommandGroup)
def runs() -> None:
    """Read runs from ingestion_runs, now or as they were at a past moment."""


@runs.command("list")
@click.option(
    "--status", type=click.Choice(RUN_STATUSES), default=None, help="Only runs with this status."
)
@click.option("--connector", default=None, help="Only this connector name.")
@click.option("--source", "source_id", type=SOURCE_ID, default=None, help="Only this source id.")
@click.option(
    "--limit",
    type=Integer(1, MAX_POSITION),
    default=50,
    show_default=True,
    metavar="N",
    help="At most N runs, the newest.",
)
@as_of_options
@output_format_option
@wide_option
@db_option
def runs_list(
    status: str | None,
    connector: str | None,
    source_id: int | None,
    limit: int,
    as_of: str | None,
    at_position: int | None,
    output_format: str,
    wide: bool,
    db_url: str | None,
) -> None:
    """List runs, newest first."""
    run_filter = RunFilter(status=status, connector=connector, source_id=source_id, limit=limit)
    moment = parse_moment(as_of, at_position)
    with opened_ledger(db_url) as ledger:
        view = find_runs(ledger, run_filter, moment, at_position)
    if output_format == "json":
        echo_json(view.jsonable())
        return
    title = "ingestion_runs"
    if view.position is not None:
        title += f" as of position {view.position}"
    print_table(
        f"{title}: {len(view.rows)} run(s), times in UTC",
        RUN_COLUMNS,
        (
            (
                row["id"],
                row["sourceId"],
                row["connectorName"],
                row["status"],
                row["startedAt"],
                row["completedAt"],
                row["duration"],
                tuple(row[column] for column in RECORD_COUNTER_COLUMNS),
                row["errorMessage"],
            )
            for row in view.rows
        ),
        wide=wide,
    )
    # Said when --limit cut the list: "50 run(s)" over a cut list reads as "there are 50 runs".
    if view.more:
        click.echo(f"the newest {limit} shown; more runs match: a higher --limit shows them")


# The columns a run's table and the stuck runs' table both show, the same way.
SOURCE_COLUMN = TableColumn("src", "source", "word")
CONNECTOR_COLUMN = TableColumn("connector")
STARTED_COLUMN = TableColumn("started", kind="time")

RUN_COLUMNS = (
    TableColumn("id", kind="word"),
    SOURCE_COLUMN,
    CONNECTOR_COLUMN,
    TableColumn("status", kind="word"),
    STARTED_COLUMN,
    TableColumn("completed", kind="time", wide_only=True),
    TableColumn("took", "duration", "duration"),
    TableColumn("f/c/u/s", "fetched/created/updated/skipped", "counts"),
    TableColumn("error"),
)


@runs.command("show")
@click.argument("run_id", type=RUN_ID)
@as_of_options
@output_format_option
@wide_option
@db_option
def runs_show(
    run_id: int,
    as_of: str | None,
    at_position: int | None,
    output_format: str,
    wide: bool,
    db_url: str | None,
) -> None:
    """Show one run, every value in full, and its status transitions."""
    moment = parse_moment(as_of, at_position)
    with opened_ledger(db_url) as ledger:
        view = find_run(ledger, run_id, moment, at_position)
    where = "in ingestion_runs" if view.position is None else f"as of position {view.position}"
    row = view.row
    if row is None:
        why = view.note(run_id) or ""
        if view.not_started:
            raise BadInput(why)
        raise ProblemFound(why)  # in the ledger, not in the table: the projection's doing
    if output_format == "json":
        echo_json(jsonable_row(row))
        return
    values = []
    for key, value in row.items():
        shown = json.dumps(value, sort_keys=True) if isinstance(value, dict) else value
        if key == "duration" and value is not None:
            readable = format_duration(value)  # the column's seconds, and in hours when long
            shown = f"{value}s" if readable == f"{value}s" else f"{value}s ({readable})"
        values.append((key, shown))
    print_table(
        f"run {run_id} {where}, times in UTC",
        (TableColumn("column", kind="word"), TableColumn("value")),
        values,
        wide=wide,
        full_text=True,
        show_header=False,
    )
    print_table(
        "transitions, times in UTC",
        TRANSITION_COLUMNS,
        (
            (step.position, step.at, step.from_status, step.to_status, step.actor)
            for step in view.transitions
        ),
        wide=wide,
        full_text=True,
    )


TRANSITION_COLUMNS = (
    TableColumn("pos", "position", "word"),
    TableColumn("at", kind="time"),
    TableColumn("from", kind="word"),
    TableColumn("to", kind="word"),
    TableColumn("actor"),
)


@runs.command("fail")
@click.argument("run_id", type=RUN_ID)
@click.option("--reason", required=True, help="Why the run is declared failed (recorded).")
@actor_option("Who decides (default: $USER); recorded as operator:NAME.")
@db_option
def runs_fail(run_id: int, reason: str, actor: str | None, db_url: str | None) -> None:
    """Declare an open run failed: appends RunTimedOut with detected_by=operator:NAME."""
    ledger = open_ledger(db_url)
    check_writable(ledger)
    actor = operator_actor_of(actor)
    with library_errors():
        position = fail_run(ledger, run_id, reason, actor)
    with output_after(f"run {run_id} WAS failed, at position {position}: do not fail it again"):
        click.echo(
            f"run {run_id} failed by {shown_name(actor)} at position {position}: {quoted(reason)}"
        )


# ---------------------------------------------------------------------- stuck runs


def threshold_options(command: F) -> F:
    """``--older-than``, ``--max-runtime`` and ``--config`` of ``stuck`` and ``sweep``: the
    thresholds serve's sweeper uses come from its config, each connector's own included, so
    that the command and serve agree on which runs are stuck (without ``--config``, a
    connector allowed a longer silence was timed out by a hand-run sweep at 60m)."""
    command = click.option(
        "--config",
        "config_path",
        type=FILE,
        default=None,
        help="Take the thresholds (each connector's own too) and the database from this "
        "config; --older-than and --max-runtime, when given, replace them for every run.",
    )(command)
    command = click.option(
        "--max-runtime",
        type=DURATION,
        default=None,
        help="Also stuck: started longer ago than this (e.g. 6h).",
    )(command)
    return click.option(
        "--older-than",
        type=DURATION,
        default=None,
        help=f"Stuck: no activity for longer than this.  [default: {DEFAULT_STALE_AFTER_TEXT}, "
        "or the config's]",
    )(command)


def print_stuck_table(
    stuck: list[StuckRun],
    title: str,
    wide: bool,
    total: int | None = None,
    now: datetime | None = None,
) -> None:
    """The runs as a table; ``total``: how many there are when ``stuck`` is the first of them;
    ``now``: what "silent for" counts to (a past moment's stuck runs: that moment)."""
    now = utcnow() if now is None else now
    print_table(
        f"{title}: {len(stuck) if total is None else total} run(s), times in UTC",
        STUCK_COLUMNS,
        (
            (
                run.run_id,
                run.source_id,
                run.connector_name,
                run.started_at,
                run.last_event_at,
                silent_cell(now - run.last_event_at),
                stuck_rule(run),
            )
            for run in stuck
        ),
        wide=wide,
    )


def silent_cell(silence: timedelta) -> timedelta | TwoForms:
    """How long a run has been silent; a last activity dated ahead of now (a writer's clock
    ahead, within the skew guard) is no silence: ``0s``, marked, never ``-3m55s``."""
    if silence >= timedelta(0):
        return silence
    return TwoForms("0s (ahead)", format_silence(silence))


# The compact table's word for a rule: `runtime>6h` (the wide table and JSON say max_runtime).
STUCK_RULE_WORDS = {"max_runtime": "runtime"}


def stuck_rule(run: StuckRun) -> TwoForms:
    """``runtime>6h`` compact, ``max_runtime (> 6h)`` wide."""
    word = STUCK_RULE_WORDS.get(run.rule, run.rule)
    return TwoForms(
        f"{word}>{compact_duration(run.threshold)}",
        f"{run.rule} (> {format_duration(run.threshold)})",
    )


# Fits 80 columns with the widest ids (10 digits each) and dates of another year: the last
# activity is in --wide only (silent, now minus it, says as much), and the rule is short. Both
# dates and `max_runtime (> 6h)` made 81 to 89 columns with 5- to 7-digit run ids.
STUCK_COLUMNS = (
    TableColumn("run", kind="word"),
    SOURCE_COLUMN,
    CONNECTOR_COLUMN,
    STARTED_COLUMN,
    TableColumn("last seen", "last activity", "time", wide_only=True),
    TableColumn("silent", "silent for", "duration"),
    TableColumn("rule", kind="word"),
)


# The runs a stuck table shows unless --limit says otherwise: a ledger left without its
# sweeper can hold tens of thousands, a table no one reads (the web's Stuck page shows 500).
# JSON lists every one by default: a script reads them all, as it did before --limit.
STUCK_TABLE_ROWS = 100


@click.command()
@threshold_options
@click.option(
    "--limit",
    type=Integer(0, MAX_POSITION),
    default=None,
    metavar="N",
    help="At most N runs, the longest silent; 0: every one.  [default: "
    f"{STUCK_TABLE_ROWS} in a table, every one in JSON]",
)
@as_of_options
@output_format_option
@wide_option
@db_or_config_option
def stuck(
    older_than: timedelta | None,
    max_runtime: timedelta | None,
    config_path: Path | None,
    limit: int | None,
    as_of: str | None,
    at_position: int | None,
    output_format: str,
    wide: bool,
    db_url: str | None,
) -> None:
    """List runs with no terminal event and no recent activity; exit 1 if there are any. With
    --as-of/--at-position, the runs stuck then (replayed from the runs open then, judged at
    that moment)."""
    moment = parse_moment(as_of, at_position)
    config = stuck_config(config_path)
    if limit is None:
        limit = 0 if output_format == "json" else STUCK_TABLE_ROWS
    position = judged = None
    with opened_ledger(db_url or (config.database_url if config_path else None)) as ledger:
        if moment is not None or at_position is not None:
            position, judged = judged_moment(ledger, moment, at_position)
        if limit == 0:
            found = config.stuck_runs(
                ledger, position, judged, stale_after=older_than, max_runtime=max_runtime
            )
            total = len(found)
        else:
            page = config.stuck_page(
                ledger,
                limit,
                position=position,
                at=judged,
                stale_after=older_than,
                max_runtime=max_runtime,
                count=True,
            )
            found, total = page.runs, page.total or 0
    if output_format == "json":
        echo_json([run.to_dict() for run in found])
    else:
        title = "stuck runs"
        if judged is not None:
            # A line of its own: in the table's title, the moment was cut across two lines.
            title += " then"
            echo_fitted(f"as of {cell(judged)} UTC (position {position}): silent until then", wide)
        print_stuck_table(found, title, wide, max(total, len(found)), now=judged)
        # The title counts every stuck run; said when the table holds fewer of them.
        if total > len(found):
            click.echo(f"… and {total - len(found)} more: --limit 0 shows every one")
    if found or total:
        sys.exit(EXIT_PROBLEM)


@click.command("sweep")
@threshold_options
@click.option("--dry-run", is_flag=True, help="Only show what would be timed out.")
@output_format_option
@wide_option
@db_or_config_option
def sweep_command(
    older_than: timedelta | None,
    max_runtime: timedelta | None,
    config_path: Path | None,
    dry_run: bool,
    output_format: str,
    wide: bool,
    db_url: str | None,
) -> None:
    """Append RunTimedOut for every stuck run (RunStarted .. no terminal event)."""
    config = stuck_config(config_path)
    db = db_url or (config.database_url if config_path else None)
    with opened_ledger(db, writes=True) as ledger:
        result = config.sweep(
            ledger, dry_run=dry_run, stale_after=older_than, max_runtime=max_runtime
        )
    with output_after(what_was_swept(result)):
        if output_format == "json":
            echo_json(result.to_dict())
        else:
            title = "would time out" if dry_run else "timed out"
            print_stuck_table(result.timed_out, title, wide)
            for run, why in result.skipped:
                echo_fitted(f"left run {run.run_id} alone: {visible(why)}", wide)
    if result.failed:  # each timed out or left alone is said; the exit says some failed
        first = result.failed[0][1]
        runs = ", ".join(str(run.run_id) for run, _exc in result.failed)
        raise problem_for(
            first,
            f"{len(result.failed)} stuck run(s) not timed out, left for the next sweep "
            f"(run {runs}); the first: {naming_the_environment(str(first))}",
        )


def what_was_swept(result: SweepResult) -> str:
    """What a sweep changed, for an error while its table is written (a Ctrl-C, a full disk):
    the table cut or dropped read as nothing done, or a sweep half done."""
    if result.dry_run:
        return "nothing was changed (--dry-run)"
    done = (
        f"{len(result.timed_out)} stuck run(s) WERE timed out (run "
        f"{', '.join(str(run.run_id) for run in result.timed_out)})"
        if result.timed_out
        else "no run was timed out"
    )
    if result.failed:
        done += (
            f"; {len(result.failed)} not, left for the next sweep (run "
            f"{', '.join(str(run.run_id) for run, _exc in result.failed)})"
        )
    return done


# ---------------------------------------------------------------------- status


@click.command()
@click.option(
    "--config",
    "config_path",
    type=FILE,
    default=None,
    help="Take thresholds, spool folder and database from this config.",
)
@spool_option
@output_format_option
@wide_option
@db_or_config_option
def status(
    config_path: Path | None,
    spool_dir: str | None,
    output_format: str,
    wide: bool,
    db_url: str | None,
) -> None:
    """Head, open and stuck runs, runs by status, projection lag and errors, spool backlog."""
    with library_errors():
        config = load_config(config_path) if config_path else None
    ledger = open_ledger(db_url or (config.database_url if config else None))
    with library_errors():
        report = status_report(ledger, config, spool_dir)
    if output_format == "json":
        echo_json(report.to_dict())
        return
    head = report.status
    figures = report.figures

    def echo(line: str) -> None:
        echo_fitted(line, wide)

    echo(f"database:   {cell(report.database)}")
    if report.schema_warning is not None:  # whole, wrapped: its remedy is at the end
        warning = f"schema:     WARNING: {cell(report.schema_warning)}"
        click.echo(warning if wide else "\n".join(wrap_cells(warning, 80, " " * 12)))
    echo(
        f"head:       position {head.head_position}"
        + (f", last append {cell(head.head_recorded_at)} UTC" if head.head_recorded_at else "")
    )
    if head.clock_warning is not None and head.clock is not None:
        # Short, to fit the table's line (the JSON and verify give the whole warning).
        assert head.head_recorded_at is not None
        echo(
            f"  WARNING: ahead of the ledger's clock ({cell(head.clock)} UTC) by "
            f"{format_duration(head.head_recorded_at - head.clock)}"
        )
    echo(f"head hash:  {head.head_hash}")
    echo(
        f"open runs:  {head.open_runs} ({figures.stuck_runs} stuck: no activity for "
        f"{format_duration(report.stale_after)})"
    )
    echo(
        "runs:       "
        + ", ".join(f"{count} {name}" for name, count in figures.runs_by_status.items())
    )
    if report.spool_error is not None:
        echo(f"spool:      UNREADABLE: {cell(report.spool_error)}")
    elif report.spool_exists:
        echo(f"spool:      {figures.spool_backlog} event(s) waiting in {report.spool_path}")
    else:  # as `ledger spool status` says it: not an empty backlog, no spool at all
        echo(f"spool:      none at {report.spool_path} (nothing was ever spooled there)")
    for projection in head.projections:
        checkpoint = projection.checkpoint
        echo(
            f"projection {projection.name}: checkpoint {checkpoint.position}, lag "
            f"{projection.lag_events} event(s) / {projection.lag_seconds:.1f}s"
        )
        if checkpoint.error_position is not None:
            echo(
                f"  STOPPED at position {checkpoint.error_position} "
                f"({cell(checkpoint.error_type)}): {cell(checkpoint.error_message)}"
            )
        for skip in projection.skips:
            echo(
                f"  skipped position {skip.position} ({cell(skip.event_type)}) by "
                f"{shown_name(skip.actor)} at {cell(skip.skipped_at)} UTC: {quoted(skip.reason)}"
            )
