"""``ledger verify``, ``anchor``, ``audit`` and ``report``: proof that the ledger holds."""

from __future__ import annotations

import errno
import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import click

from forensics.anchors import AnchorInputError, anchors_from, append_anchor, current_anchor
from forensics.audit import TimelineEntry, iter_audit
from forensics.report import build_report, report_passed
from forensics.report_render import render_json, render_text
from forensics.verify import VerifyReport, verify_all
from ledger.clock import isoformat_utc, labelled_utc
from ledger.descriptors import own_descriptor
from ledger.errors import OutputFileError
from ledger.output_files import output_file_error, write_whole
from ledger.stuck import DEFAULT_STALE_AFTER_TEXT
from ledger.text import quoted, shown_name, visible, wrap_cells
from ledger.urls import resolve_database_url
from service.cli.errors import EXIT_PROBLEM, ProblemFound, library_errors, problem_for
from service.cli.ledgers import opened_ledger, stuck_config
from service.cli.options import (
    DURATION,
    FILE,
    RUN_ID,
    Integer,
    NamedPath,
    as_of_options,
    db_option,
    db_or_config_option,
    format_option,
    output_format_option,
    parse_moment,
    wide_option,
)
from service.cli.output import output_path_refusal
from service.cli.tables import echo_json
from service.cli.timelines import print_audit


def anchor_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--anchor FILE`` and ``--expect-head POS:HASH``, of ``verify`` and ``report``."""
    command = click.option(
        "--expect-head",
        "expected_heads",
        multiple=True,
        metavar="POS:HASH",
        help="One anchor given inline: the ledger must hold this hash at this position.",
    )(command)
    return click.option(
        "--anchor",
        "anchor_files",
        multiple=True,
        metavar="FILE",
        type=NamedPath(path_type=Path),
        help="Anchor lines kept outside the database (`ledger anchor`): the ledger must "
        "still hold every one. Repeatable.",
    )(command)


@click.command()
@click.option("--chain-only", is_flag=True, help="Only recompute the hash chain (fastest).")
@anchor_options
@output_format_option
@db_option
def verify(
    chain_only: bool,
    anchor_files: tuple[Path, ...],
    expected_heads: tuple[str, ...],
    output_format: str,
    db_url: str | None,
) -> None:
    """Check the hash chain, the stream rules, the projection against a replay, the run
    registry against the events, the projection skips, the immutability triggers and any
    anchors given; exit 1 naming each problem."""
    with library_errors():  # a bad anchor is the caller's mistake: exit 2 before any check
        anchors = anchors_from(anchor_files, expected_heads)
    with opened_ledger(db_url) as ledger:
        report = verify_all(ledger, anchors, chain_only=chain_only)
    if output_format == "json":
        echo_json(report.to_dict())
    else:
        print_verdict(report)
        print_verify_details(report)
    if not report.ok:
        sys.exit(EXIT_PROBLEM)


# The text output fits an 80-column terminal: a longer line is broken with a hanging indent
# (ledger.text.wrap_cells, as `ledger report` does), so that every line starting at the left
# margin is verify's own, never a piece of a value a terminal wrapped.
WIDTH = 80
GOES_ON = "  "  # how a broken line goes on
PROBLEM_GOES_ON = "      "  # under "  [check] ", deeper than the problem's own indent


def echo_wrapped(text: str, indent: str = GOES_ON) -> None:
    click.echo("\n".join(wrap_cells(text, WIDTH, indent)))


def print_verdict(report: VerifyReport) -> None:
    if report.ok:
        if report.chain_only:  # runs are not looked at: no count of them to give
            echo_wrapped(f"verified hash chain: {report.events} event(s), no problem")
            return
        click.echo("verified chain, stream rules, projection, registry, skips and triggers:")
        echo_wrapped(f"{GOES_ON}{report.events} event(s), {report.runs} run(s), no problem")
        return
    click.echo(f"{len(report.problems)} problem(s):")
    for problem in report.problems:
        where = ", ".join(f"{name} {value}" for name, value in problem.where())
        echo_wrapped(
            f"  [{problem.check}] {visible(problem.message)}"
            + (f" ({visible(where)})" if where else ""),
            PROBLEM_GOES_ON,
        )


def print_verify_details(report: VerifyReport) -> None:
    """What an auditor keeps besides the verdict: the head checked (to anchor), the triggers,
    the anchors and the skipped events."""
    head = report.head
    if head is not None:
        when = f", recorded {isoformat_utc(head.last_recorded_at)}" if head.last_recorded_at else ""
        echo_wrapped(f"head: position {head.last_position}{when}")
        # The head row is the DBA's to edit like any other: its hash is shown, not obeyed. On
        # a line of its own: 64 digits do not fit beside the rest.
        echo_wrapped(f"{GOES_ON}hash {visible(head.last_hash)}", GOES_ON * 2)
    if report.clock_warning is not None:
        echo_wrapped(f"clock: WARNING: {report.clock_warning}")
    triggers = report.triggers
    if triggers is not None and not triggers.checked:
        echo_wrapped(f"triggers: NOT CHECKED: {visible(triggers.unchecked_reason or '')}")
    elif triggers is not None and triggers.ok:
        echo_wrapped(f"triggers: {', '.join(triggers.expected)} as defined")
    held = sum(check.ok for check in report.anchors)
    if report.anchors:
        echo_wrapped(f"anchors: {held} of {len(report.anchors)} held")
    for skipped in report.skips:
        skip = skipped.skip
        run = f" of run {skipped.run_id}" if skipped.run_id is not None else ""
        # To the second with its zone, as `ledger status` shows the same skip.
        echo_wrapped(
            f"skipped by projection {visible(skipped.name)}: position {skip.position} "
            f"({visible(skip.event_type)}{run}) by {shown_name(skip.actor)} at "
            f"{labelled_utc(skip.skipped_at)}: {quoted(skip.reason)}"
        )


@click.command("anchor")
@click.option(
    "--output",
    "-o",
    type=FILE,
    default=None,
    help="Append the line to FILE (created if missing, fsynced) instead of printing it.",
)
@db_option
def anchor_command(output: Path | None, db_url: str | None) -> None:
    """Print the ledger head as one line, `position hash recorded_at`, to keep outside the
    database; `ledger verify --anchor FILE` then fails if the ledger no longer holds it."""
    if output is not None:
        # Before the ledger is opened: /dev/fd/3 without a 3> redirection is the database's
        # own file once it is, /dev/stdin the command's input.
        refusal = output_path_refusal(str(output), resolve_database_url(db_url))
        if refusal is not None:
            error = output_file_error(
                output,
                refusal,
                f"{visible(str(output))}: cannot append to the anchor file ({refusal.strerror})",
                AnchorInputError,
            )
            raise problem_for(error, str(error))
    with opened_ledger(db_url) as ledger:
        if output is None:
            click.echo(current_anchor(ledger).line())
            return
        try:
            anchor = append_anchor(ledger, output)
        except OutputFileError as error:
            cause = error.__cause__
            if isinstance(cause, OSError) and _reader_of_stdout_went_away(output, cause):
                raise cause from None  # quiet and exit 1, as `ledger anchor | head`
            raise
    click.echo(f"appended to {visible(str(output))}: {anchor.line()}", err=True)


@click.command()
@click.argument("run_id", type=RUN_ID)
@output_format_option
@wide_option
@db_option
def audit(run_id: int, output_format: str, wide: bool, db_url: str | None) -> None:
    """A run's full timeline: every event, the status after it, its hash, silences; text in
    full, wrapped to the terminal (--wide: one line per event)."""
    with opened_ledger(db_url) as ledger:
        entries = iter_audit(ledger, run_id)
        if output_format == "json":
            all_ok = echo_json_entries(entries)
        else:
            # The table sizes its columns to every row: the text form holds the timeline.
            timeline = list(entries)
            print_audit(run_id, timeline, wide)
            all_ok = all(entry.hash_ok for entry in timeline)
    if not all_ok:
        sys.exit(EXIT_PROBLEM)


def echo_json_entries(entries: Iterator[TimelineEntry]) -> bool:
    """The timeline as the JSON array ``echo_json`` prints, written an entry at a time (a run
    of a million events is never held); whether every hash checked. Raises what the first
    read raises (an unknown run) before anything is written."""
    first = next(entries)
    all_ok = first.hash_ok
    click.echo("[\n" + textwrap.indent(json.dumps(first.to_dict(), indent=2), "  "), nl=False)
    for entry in entries:
        all_ok = all_ok and entry.hash_ok
        click.echo(",\n" + textwrap.indent(json.dumps(entry.to_dict(), indent=2), "  "), nl=False)
    click.echo("\n]")
    return all_ok


@click.command()
@format_option("text", "json", "markdown", default="text")
@click.option(
    "--output",
    type=FILE,
    default=None,
    help="Write the report to FILE instead of stdout.",
)
@click.option(
    "--stuck-after",
    type=DURATION,
    default=None,
    help="Silence after which an open run counts as stuck (replaces the config's for every "
    f"run).  [default: {DEFAULT_STALE_AFTER_TEXT}, or the config's]",
)
@click.option(
    "--config",
    "config_path",
    type=FILE,
    default=None,
    help="Judge stuck runs by this serve config's thresholds (each connector's own too, as "
    "`ledger stuck --config` and serve's sweeper do), and take its database.",
)
@click.option(
    "--latest",
    type=Integer(1, 1000),
    default=5,
    show_default=True,
    help="How many of the latest runs section C lists.",
)
@as_of_options
@anchor_options
@db_or_config_option
def report(
    output_format: str,
    output: Path | None,
    stuck_after: timedelta | None,
    config_path: Path | None,
    latest: int,
    as_of: str | None,
    at_position: int | None,
    anchor_files: tuple[Path, ...],
    expected_heads: tuple[str, ...],
    db_url: str | None,
) -> None:
    """The proof report: schema, statuses, latest runs, transitions, stuck runs, conditions;
    exit 1 if a condition fails. With --as-of/--at-position, the report as it would have been
    made then (replayed; the projection's sync, a question about now, is left out). With
    --anchor/--expect-head, the chain's condition also requires every anchor."""
    moment = parse_moment(as_of, at_position)
    with library_errors():  # a bad anchor is the caller's mistake: exit 2 before any check
        anchors = anchors_from(anchor_files, expected_heads)
    config = stuck_config(config_path)
    thresholds, overrides = config.stuck_thresholds(stale_after=stuck_after)
    database_url = db_url or (config.database_url if config_path else None)
    if output is not None:
        refusal = output_path_refusal(str(output), resolve_database_url(database_url))
        if refusal is not None:  # before the database is read: nothing will be written
            raise _report_file_error(output, refusal)
    with opened_ledger(database_url) as ledger:
        data = build_report(
            ledger,
            thresholds=thresholds,
            latest=latest,
            at_position=at_position,
            at=moment,
            anchors=anchors,
            overrides=overrides,
        )
    text = (
        render_json(data)
        if output_format == "json"
        else render_text(data, markdown=output_format == "markdown")
    )
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            write_whole(output, text)
        except OSError as exc:
            raise _report_file_error(output, exc) from exc
        click.echo(f"report written to {visible(str(output))}", err=True)
    if not report_passed(data):
        sys.exit(EXIT_PROBLEM)


def _report_file_error(output: Path, error: OSError) -> OSError | ProblemFound:
    """The error of a report ``output`` could not take: a missing folder is the caller's (2),
    a full disk not (3); a reader of this process's stdout that went away (``--output
    /dev/stdout | head -c1``) is the OSError itself, quiet and exit 1, as on stdout."""
    if _reader_of_stdout_went_away(output, error):
        return error
    found = output_file_error(
        output,
        error,
        f"cannot write the report to {visible(str(output))}: {error.strerror or error}",
    )
    return problem_for(found, str(found))


def _reader_of_stdout_went_away(output: Path, error: BaseException | None) -> bool:
    """Whether writing ``output`` failed because it is this process's stdout (by name) and
    its reader went away: no message and exit 1, as when the same output goes to stdout."""
    return isinstance(error, OSError) and error.errno == errno.EPIPE and own_descriptor(output) == 1
