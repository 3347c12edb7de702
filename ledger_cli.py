"""The ``ledger`` command: a thin click layer over the library.

It parses options, calls library functions, prints results, and turns every
:class:`ledger.LedgerError` into a one-line message and an exit code, never a traceback:
0 ok, 1 a check found a problem (or the database failed), 2 bad usage or input.
"""

from __future__ import annotations

import getpass
import json
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import click
import pydantic
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from connectors import SAMPLE_CSV, Connector, CsvConnector, HttpJsonConnector, Spool
from connectors.spool import DEFAULT_SPOOL_DIR, SPOOL_DIR_ENV
from forensics.anchors import anchors_from, append_anchor, current_anchor
from forensics.audit import TimelineEntry, audit_run
from forensics.legacy_import import import_legacy
from forensics.report import build_report, render_json, render_text, report_passed
from forensics.verify import VerifyReport, verify_all
from ledger import (
    ConcurrencyError,
    ConfigurationError,
    EventModel,
    Ledger,
    LedgerError,
    RecordedEvent,
    StreamError,
    StuckRun,
    Thresholds,
    UnknownEventTypeError,
    UnknownRunError,
    ValidationError,
    fail_run,
    stuck_runs,
    sweep,
)
from ledger.clock import utcnow
from ledger.durations import format_duration, parse_duration
from ledger.events import MAX_RUN_ID, event_adapter, name_problem
from ledger.mapper import describe_pydantic_errors, event_to_wire
from ledger.migrate import upgrade
from ledger.store import batch_problems
from ledger.text import clip, visible, visible_lines
from ledger.urls import DATABASE_URL_ENV, mask_secrets, mask_url, resolve_database_url
from projections import (
    LedgerStatus,
    Projector,
    ledger_status,
    resolve_position,
    run_as_of,
    runs_as_of,
)
from projections import rebuild as rebuild_projection
from projections.projector import DEFAULT_BATCH_SIZE
from projections.queries import RunFilter, get_run, list_runs
from projections.schema import RUN_STATUSES
from service import LedgerService, load_config
from service.demo import demo_orphan, run_demo
from service.metrics import Figures, collect_figures

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
DEMO_DATABASE_URL = "sqlite:///ledger-demo.db"
MAX_POSITION = 2**63 - 1  # BIGINT

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("ledger.cli")


class ProblemFound(click.ClickException):
    """A check found a problem, or the database failed: exit 1, message on stderr."""

    exit_code = EXIT_PROBLEM

    def __init__(self, message: str) -> None:
        # Messages quote input and stored data: no ESC or CR from them reaches the terminal.
        super().__init__(visible_lines(mask_secrets(message)))


class BadInput(ProblemFound):
    """Bad usage or input: exit 2."""

    exit_code = EXIT_USAGE


def cli_error(message: str, exit_code: int) -> click.ClickException:
    return BadInput(message) if exit_code == EXIT_USAGE else ProblemFound(message)


def exit_code_for(error: LedgerError) -> int:
    if isinstance(error, ValidationError | StreamError | ConcurrencyError | ConfigurationError):
        return EXIT_USAGE
    return EXIT_PROBLEM


@contextmanager
def library_errors() -> Iterator[None]:
    try:
        yield
    except LedgerError as error:
        raise cli_error(str(error), exit_code_for(error)) from error


def db_option(command: F) -> F:
    return click.option(
        "--db",
        "db_url",
        metavar="URL",
        default=None,
        help=f"Database URL (else ${DATABASE_URL_ENV}, else sqlite:///ledger.db).",
    )(command)


class DurationParam(click.ParamType[timedelta]):
    """``90s`` / ``15m`` / ``6h`` / ``2d``."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(
                str(value),
                f"--{param.name.replace('_', '-')}" if param and param.name else "duration",
            )
        except LedgerError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationParam()


def spool_option(command: F) -> F:
    return click.option(
        "--spool-dir",
        default=None,
        metavar="DIR",
        help=f"Where events wait while the ledger is unreachable (else ${SPOOL_DIR_ENV}, "
        f"else ./{DEFAULT_SPOOL_DIR}).",
    )(command)


def output_format_option(command: F) -> F:
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
    )(command)


def check_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The name rule of the ledger (no invisible character, no whitespace at either end) for a
    name given on the command line, as a usage error before anything is done."""
    problem = None if value is None else name_problem(value)
    if problem is not None:
        raise click.BadParameter(visible(problem), ctx=ctx, param=param)
    return value


def ledger_clock_if_reachable(db_url: str | None) -> datetime | None:
    """The ledger's clock, so that every line ahead of it is named with the other problems;
    None when the database cannot be used (``append`` then reports why, after the input)."""
    try:
        ledger = Ledger.from_url(resolve_database_url(db_url))
    except LedgerError:
        return None
    try:
        return ledger.clock()
    except LedgerError:
        return None
    finally:
        ledger.close()


def open_ledger(db_url: str | None) -> Ledger:
    url = resolve_database_url(db_url)
    with library_errors():
        ledger = Ledger.from_url(url)
    log.info("using %s", mask_url(url))
    return ledger


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="run-ledger")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug, -vvv SQL).")
def cli(verbose: int) -> None:
    """run-ledger: an append-only, hash-chained ledger of ingestion runs."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # SQL statement logs only at -vvv: -vv is for run-ledger's own debug lines.
    logging.getLogger("sqlalchemy").setLevel(logging.DEBUG if verbose >= 3 else logging.WARNING)


@cli.command()
@db_option
def migrate(db_url: str | None) -> None:
    """Create or upgrade the schema to the newest revision (a no-op when already there)."""
    ledger = open_ledger(db_url)
    with library_errors():
        result = upgrade(ledger.engine, ledger.url)
    where = mask_url(ledger.url)
    if result.changed:
        click.echo(f"{where}: migrated from {result.before or 'empty'} to {result.after}")
    else:
        click.echo(f"{where}: already at {result.after}")


@cli.command()
@click.argument("source", type=click.File("rb"), default="-")
@db_option
def append(source: IO[bytes], db_url: str | None) -> None:
    """Append events from a JSON Lines FILE (or - for stdin), all or nothing.

    Every line is validated first; if any is invalid, each bad line is reported with its line
    number and field, and nothing is appended. A new run's lines may carry "run_ref": "LABEL"
    instead of run_id; the summary maps each label to the run id allocated.
    """
    events, line_numbers = read_event_lines(source)
    problems = [
        f"line {line_numbers[index]}: {message}" if index is not None else message
        for index, message in batch_problems(events, now=ledger_clock_if_reachable(db_url))
    ]
    if problems:
        fail_input(problems)
    ledger = open_ledger(db_url)
    if not events:  # nothing to append, but say so only if the ledger is really there
        with library_errors():
            ledger.head()
    try:
        result = ledger.append(events)
    except LedgerError as error:
        index = error.batch_index
        message = str(error)
        if index is not None and events:
            message = f"line {line_numbers[index]}: {message}"
            if isinstance(error, StreamError):  # the run this line names breaks a rule
                message += f"; field: {'run_ref' if events[index].run_id is None else 'run_id'}"
        raise cli_error(message, exit_code_for(error)) from error
    summary = {
        "appended": result.appended,
        "duplicates": result.duplicates,
        "first_position": result.first_position,
        "last_position": result.last_position,
        "allocated_run_ids": result.allocated_run_ids,
        "run_refs": result.run_refs,
    }
    click.echo(json.dumps(summary, sort_keys=True))


def read_event_lines(source: IO[bytes]) -> tuple[list[EventModel], list[int]]:
    """Parse and validate every line; exit 2 naming each bad line if any is invalid."""
    events: list[EventModel] = []
    line_numbers: list[int] = []
    problems: list[str] = []
    for number, raw in enumerate(source, start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a BOM may open a file
        except UnicodeDecodeError as exc:
            problems.append(f"line {number}: not valid UTF-8 (byte {exc.start})")
            continue
        if not text.strip():
            continue
        try:
            data = json.loads(
                text,
                parse_constant=_refuse_constant,
                parse_int=_read_int,
                object_pairs_hook=_object_without_repeated_keys,
            )
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except RepeatedKeyError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        except ValueError as exc:
            problems.append(f"line {number}: not valid JSON ({exc})")
            continue
        except RecursionError:
            problems.append(f"line {number}: nested too deeply to be an event")
            continue
        if not isinstance(data, dict):
            problems.append(f"line {number}: expected a JSON object, got {type(data).__name__}")
            continue
        try:
            events.append(event_adapter.validate_python(data))
            line_numbers.append(number)
        except pydantic.ValidationError as exc:
            problems.extend(f"line {number}: {p}" for p in describe_pydantic_errors(exc))
        except RecursionError:
            problems.append(f"line {number}: nested too deeply to be an event")
    if problems:
        fail_input(problems)
    return events, line_numbers


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _read_int(text: str) -> int | float:
    """An integer beyond Python's conversion limit (4,300 digits) is read as ±infinity, as JSON
    reads 1e400: the field it is in then refuses it by name, instead of the whole line failing
    as "not valid JSON"."""
    try:
        return int(text)
    except ValueError:
        return -math.inf if text.startswith("-") else math.inf


class RepeatedKeyError(ValueError):
    """A JSON object names one key twice: which value was meant cannot be known."""


def _object_without_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) == len(pairs):
        return data
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            shown = key if len(key) <= 80 else key[:79] + "…"
            raise RepeatedKeyError(f"{shown}: given more than once in one object")
        seen.add(key)
    raise AssertionError("unreachable: a shorter dict means a repeated key")


def fail_input(problems: list[str]) -> NoReturn:
    shown = [visible(problem) for problem in problems[:50]]  # one line each, whatever a key holds
    more = len(problems) - len(shown)
    message = "invalid input, nothing was appended:\n  " + "\n  ".join(shown)
    if more:
        message += f"\n  … and {more} more problem(s)"
    raise BadInput(message)


@cli.command()
@click.option(
    "--run",
    "run_id",
    type=click.IntRange(1, MAX_RUN_ID),
    default=None,
    help="Only this run, in version order.",
)
@click.option(
    "--after", type=click.IntRange(0, 2**63 - 1), default=0, help="Only positions after POS."
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N events.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "jsonl"]),
    default="table",
    show_default=True,
    help="jsonl output can be appended again as-is (idempotent).",
)
@db_option
def events(
    run_id: int | None, after: int, limit: int | None, output_format: str, db_url: str | None
) -> None:
    """Read events back, in position order (or one run's in version order)."""
    ledger = open_ledger(db_url)
    with library_errors():
        if run_id is not None:
            history = ledger.read_run(run_id)
            if not history:  # every run has its RunStarted: a typo, not an empty answer
                raise UnknownRunError(run_id)
            selected = [e for e in history if e.position > after][:limit]
            rows: Iterator[RecordedEvent] = iter(selected)
        else:
            rows = ledger.read_all(after=after, limit=limit)
        if output_format == "jsonl":
            for event in rows:
                click.echo(json.dumps(wire_form(event), sort_keys=True, ensure_ascii=False))
        else:
            print_events_table(list(rows))


def wire_form(event: RecordedEvent) -> dict[str, Any]:
    """The appendable JSON of a stored event (raw, if its type is unknown to this version)."""
    try:
        return event_to_wire(event.event)
    except UnknownEventTypeError:
        return {
            **event.payload_data,
            "type": event.type,
            "event_id": event.event_id,
            "run_id": event.run_id,
            "occurred_at": event.occurred_at.isoformat(),
            "actor": event.actor,
            "schema_version": event.schema_version,
        }


def print_events_table(rows: list[RecordedEvent]) -> None:
    table = Table(title=f"{len(rows)} event(s)")
    for column in ("position", "run", "version", "type", "occurred_at (UTC)", "actor", "payload"):
        table.add_column(column, overflow="fold")
    for event in rows:
        add_text_row(
            table,
            event.position,
            event.run_id,
            event.version,
            event.type,
            event.occurred_at.strftime("%Y-%m-%d %H:%M:%S.%f"),
            event.actor,
            _payload_summary(event),
        )
    wide_console().print(table)


def _payload_summary(event: RecordedEvent) -> str:
    data = {k: v for k, v in event.payload_data.items() if v not in (None, 0, {}, [])}
    return clip(visible(", ".join(f"{k}={v}" for k, v in sorted(data.items()))), 120)


@cli.command()
@click.option("--chain-only", is_flag=True, help="Only recompute the hash chain (fastest).")
@click.option(
    "--anchor",
    "anchor_files",
    multiple=True,
    metavar="FILE",
    type=click.Path(path_type=Path),
    help="Anchor lines kept outside the database (`ledger anchor`): the ledger must still "
    "hold every one. Repeatable.",
)
@click.option(
    "--expect-head",
    "expected_heads",
    multiple=True,
    metavar="POS:HASH",
    help="One anchor given inline: the ledger must hold this hash at this position.",
)
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
    ledger = open_ledger(db_url)
    with library_errors():
        report = verify_all(ledger, anchors, chain_only=chain_only)
    if output_format == "json":
        click.echo(json.dumps(verify_json(report), indent=2))
    elif report.ok:
        what = (
            "hash chain"
            if chain_only
            else "chain, stream rules, projection, registry, skips and triggers"
        )
        click.echo(f"verified {what}: {report.events} event(s), {report.runs} run(s), no problem")
    else:
        click.echo(f"{len(report.problems)} problem(s):")
        for problem in report.problems:
            where = ", ".join(
                f"{k} {v}"
                for k, v in (
                    ("position", problem.position),
                    ("run", problem.run_id),
                    ("column", problem.column),
                )
                if v and problem.check != "triggers"
            )
            click.echo(
                f"  [{problem.check}] {visible(problem.message)}"
                + (f" ({visible(where)})" if where else "")
            )
    if output_format != "json":
        print_verify_details(report)
    if not report.ok:
        sys.exit(EXIT_PROBLEM)


def verify_json(report: VerifyReport) -> dict[str, Any]:
    head = report.head
    triggers = report.triggers
    return {
        "ok": report.ok,
        "events": report.events,
        "runs": report.runs,
        "head": None
        if head is None
        else {
            "position": head.last_position,
            "hash": head.last_hash,
            "recorded_at": iso(head.last_recorded_at) if head.last_recorded_at else None,
        },
        "triggers": None
        if triggers is None
        else {
            "checked": triggers.checked,
            "unchecked_reason": triggers.unchecked_reason,
            "expected": triggers.expected,
            "found": triggers.found,
        },
        "skips": None
        if report.chain_only
        else [{**vars(skip), "skipped_at": iso(skip.skipped_at)} for skip in report.skips],
        "anchors": [
            {
                "source": check.anchor.source,
                "position": check.anchor.position,
                "hash": check.anchor.hash,
                "found_hash": check.found_hash,
                "ok": check.ok,
            }
            for check in report.anchors
        ],
        "problems": [vars(p) for p in report.problems],
    }


def print_verify_details(report: VerifyReport) -> None:
    """What an auditor keeps besides the verdict: the head checked (to anchor), the triggers,
    the anchors and the skipped events."""
    head = report.head
    if head is not None:
        when = f", recorded {iso(head.last_recorded_at)}" if head.last_recorded_at else ""
        click.echo(f"head: position {head.last_position}, hash {head.last_hash}{when}")
    triggers = report.triggers
    if triggers is not None and not triggers.checked:
        click.echo(f"triggers: NOT CHECKED: {visible(triggers.unchecked_reason or '')}")
    elif triggers is not None and triggers.ok:
        click.echo(f"triggers: {', '.join(triggers.expected)} as defined")
    held = sum(check.ok for check in report.anchors)
    if report.anchors:
        click.echo(f"anchors: {held} of {len(report.anchors)} held")
    for skip in report.skips:
        run = f" of run {skip.run_id}" if skip.run_id is not None else ""
        click.echo(
            f"skipped by projection {visible(skip.name)}: position {skip.position} "
            f"({visible(skip.event_type)}{run}) by {visible(skip.actor)} at "
            f"{iso(skip.skipped_at)}: {visible(skip.reason)}"
        )


@cli.command("anchor")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append the line to FILE (created if missing, fsynced) instead of printing it.",
)
@db_option
def anchor_command(output: Path | None, db_url: str | None) -> None:
    """Print the ledger head as one line, `position hash recorded_at`, to keep outside the
    database; `ledger verify --anchor FILE` then fails if the ledger no longer holds it."""
    ledger = open_ledger(db_url)
    with library_errors():
        if output is None:
            click.echo(current_anchor(ledger).line())
            return
        anchor = append_anchor(ledger, output)
    click.echo(f"appended to {output}: {anchor.line()}", err=True)


@cli.command()
@click.argument("run_id", type=click.IntRange(1, MAX_RUN_ID))
@output_format_option
@db_option
def audit(run_id: int, output_format: str, db_url: str | None) -> None:
    """A run's full timeline: every event, the status after it, its hash, silences."""
    ledger = open_ledger(db_url)
    with library_errors():
        timeline = audit_run(ledger, run_id)
    if output_format == "json":
        click.echo(
            json.dumps(
                [
                    {
                        "position": entry.event.position,
                        "version": entry.event.version,
                        "type": entry.event.type,
                        "occurred_at": iso(entry.event.occurred_at),
                        "recorded_at": iso(entry.event.recorded_at),
                        "actor": entry.event.actor,
                        "summary": entry.summary,
                        "status_after": entry.status_after,
                        "hash_ok": entry.hash_ok,
                        "late": entry.late,
                        "recorded_late": entry.recorded_late,
                        "silence_before_seconds": None
                        if entry.silence_before is None
                        else int(entry.silence_before.total_seconds()),
                    }
                    for entry in timeline
                ],
                indent=2,
            )
        )
    else:
        print_audit(run_id, timeline)
    if not all(entry.hash_ok for entry in timeline):
        sys.exit(EXIT_PROBLEM)


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def print_audit(run_id: int, timeline: list[TimelineEntry]) -> None:
    table = Table(title=f"run {run_id}: {len(timeline)} event(s), times in UTC")
    for column in (
        "pos",
        "v",
        "type",
        "occurred",
        "recorded",
        "actor",
        "what",
        "status",
        "hash",
        "notes",
    ):
        table.add_column(column, overflow="fold")
    for entry in timeline:
        event = entry.event
        notes = []
        if entry.silence_before is not None and entry.silence_before >= timedelta(minutes=1):
            notes.append(f"silent {format_duration(entry.silence_before)} before")
        if entry.late:
            notes.append("LATE: after the timeout")
        if entry.recorded_late:
            notes.append(
                f"recorded {format_duration(event.recorded_at - event.occurred_at)} "
                "after it happened"
            )
        add_text_row(
            table,
            event.position,
            event.version,
            event.type,
            event.occurred_at,
            event.recorded_at,
            event.actor,
            entry.summary,
            entry.status_after,
            "ok" if entry.hash_ok else "BROKEN",
            "; ".join(notes) or None,
        )
    wide_console().print(table)


@cli.command()
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the report to FILE instead of stdout.",
)
@click.option(
    "--stuck-after",
    type=DURATION,
    default="60m",
    show_default=True,
    help="Silence after which an open run counts as stuck.",
)
@click.option(
    "--latest",
    type=click.IntRange(1, 1000),
    default=5,
    show_default=True,
    help="How many of the latest runs section C lists.",
)
@db_option
def report(
    output_format: str, output: Path | None, stuck_after: timedelta, latest: int, db_url: str | None
) -> None:
    """The proof report: schema, statuses, latest runs, transitions, stuck runs, conditions;
    exit 1 if a condition fails."""
    ledger = open_ledger(db_url)
    with library_errors():
        data = build_report(ledger, stuck_after=stuck_after, latest=latest)
    text = (
        render_json(data)
        if output_format == "json"
        else render_text(data, markdown=output_format == "markdown")
    )
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"cannot write the report to {output}: {exc.strerror}") from exc
        click.echo(f"report written to {output}", err=True)
    if not report_passed(data):
        sys.exit(EXIT_PROBLEM)


@cli.command("import-legacy")
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
    click.echo(
        json.dumps(
            {
                "table": result.table,
                "rows": result.rows,
                "imported": result.imported,
                "already_imported": result.already_imported,
                "left_open": result.open_runs,
                "duration_repaired": result.repaired,
                "details_kept_apart": result.details_kept_apart,
                "mismatches": result.mismatches,
            },
            indent=2,
        )
    )
    if result.mismatches:
        sys.exit(EXIT_PROBLEM)


@cli.command()
@click.option(
    "--db",
    "db_url",
    default=None,
    metavar="URL",
    help="Database for the demo (default: sqlite:///ledger-demo.db).",
)
def demo(db_url: str | None) -> None:
    """The whole story in seconds: real runs, a killed run swept, the proof report."""
    url = db_url or DEMO_DATABASE_URL
    ledger = open_ledger(url)
    with library_errors():
        result = run_demo(ledger)
        proof = build_report(ledger)
        orphan = demo_orphan(ledger)
        timeline = audit_run(ledger, orphan) if orphan else []
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
    echo(render_text(proof), nl=False)
    if timeline:
        echo("")
        print_audit(timeline[0].event.run_id, timeline)
    target = "" if url == DEMO_DATABASE_URL else f" --db '{mask_url(url)}'"
    echo("\nExplore further:")
    for command in (
        "runs list",
        f"audit {orphan}",
        "events --format jsonl",
        "verify",
        "stuck",
        "report --format markdown",
        "status",
    ):
        echo(f"  ledger {command}{target}")
    if not report_passed(proof):
        sys.exit(EXIT_PROBLEM)


# ---------------------------------------------------------------------- projections


@cli.command()
@click.option("--follow", is_flag=True, help="Keep tailing the ledger until SIGINT/SIGTERM.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Events per transaction.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    help="Seconds between polls when caught up (with --follow).",
)
@click.option(
    "--skip-position",
    type=click.IntRange(min=1),
    default=None,
    help="Record that this position (a poison event) is not to be applied.",
)
@click.option("--reason", default=None, help="Why the position is skipped (required with it).")
@click.option(
    "--actor",
    default=None,
    callback=check_name,
    help="Who decides the skip (default: operator:$USER).",
)
@db_option
def project(
    follow: bool,
    batch_size: int,
    interval: float,
    skip_position: int | None,
    reason: str | None,
    actor: str | None,
    db_url: str | None,
) -> None:
    """Apply pending events to the ingestion_runs read model (exactly once)."""
    if skip_position is not None and not reason:
        raise BadInput("--skip-position needs --reason TEXT")
    ledger = open_ledger(db_url)
    projector = Projector(ledger, batch_size=batch_size)
    with library_errors():
        if skip_position is not None:
            skip = projector.skip(skip_position, reason or "", actor or default_actor())
            click.echo(
                f"position {skip_position} ({cell(skip['event_type'])}) will be skipped: "
                f"{cell(reason)} (by {cell(skip['actor'])})"
            )
        if follow:
            stop = threading.Event()
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda *_: stop.set())
            click.echo(f"following {mask_url(ledger.url)} (Ctrl-C to stop)", err=True)
            projector.follow(stop, interval=interval)
            click.echo("stopped after the current batch", err=True)
        else:
            applied = projector.run_once()
            click.echo(
                f"applied {applied} event(s); checkpoint at {projector.checkpoint().position}"
            )


def default_actor() -> str:
    actor = f"operator:{getpass.getuser()}"
    problem = name_problem(actor)
    if problem is not None:
        raise BadInput(f"the user name in {actor!r} cannot be an actor ({problem}): give --actor")
    return actor


@cli.command()
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True
)
@db_option
def rebuild(batch_size: int, db_url: str | None) -> None:
    """Replay all history into shadow tables and swap them in atomically."""
    ledger = open_ledger(db_url)
    with library_errors(), rebuild_progress() as progress:
        result = rebuild_projection(ledger, batch_size=batch_size, progress=progress)
    rate = result.events / result.seconds if result.seconds else 0.0
    click.echo(
        f"rebuilt ingestion_runs: {result.events} event(s), {result.runs} run(s) in "
        f"{result.seconds:.1f}s ({rate:,.0f} events/s); checkpoint at {result.position}"
    )


class EventRateColumn(ProgressColumn):
    """Events per second, for the rebuild's progress bar."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("—" if speed is None else f"{speed:,.0f} events/s")


@contextmanager
def rebuild_progress() -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on a terminal; a plain line every 10% otherwise."""
    console = Console(stderr=True)
    if not console.is_terminal:
        last = [-1]

        def plain(done: int, total: int) -> None:
            tenth = (10 * done // total) if total else 10
            if tenth != last[0]:
                last[0] = tenth
                click.echo(f"replayed {done}/{total} events", err=True)

        yield plain
        return
    columns = (
        TextColumn("rebuild"),
        BarColumn(),
        MofNCompleteColumn(),
        EventRateColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("rebuild", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=max(total, done))

        yield update


@cli.group()
def runs() -> None:
    """Read runs from ingestion_runs, now or as they were at a past moment."""


def as_of_options(command: F) -> F:
    command = click.option(
        "--at-position",
        type=click.IntRange(min=0),
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


@runs.command("list")
@click.option("--status", type=click.Choice(RUN_STATUSES), default=None)
@click.option("--connector", default=None, help="Only this connector name.")
@click.option(
    "--source",
    "source_id",
    type=click.IntRange(0, MAX_RUN_ID),
    default=None,
    help="Only this source id.",
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@as_of_options
@output_format_option
@db_option
def runs_list(
    status: str | None,
    connector: str | None,
    source_id: int | None,
    limit: int,
    as_of: str | None,
    at_position: int | None,
    output_format: str,
    db_url: str | None,
) -> None:
    """List runs, newest first."""
    run_filter = RunFilter(status=status, connector=connector, source_id=source_id, limit=limit)
    moment = parse_moment(as_of, at_position)
    ledger = open_ledger(db_url)
    with library_errors():
        if moment is None and at_position is None:
            rows = list_runs(ledger, run_filter)
            title = "ingestion_runs"
        else:
            position = resolve_position(ledger, moment, at_position)
            rows = run_filter.apply(list(runs_as_of(ledger, position).values()))
            title = f"ingestion_runs as of position {position}"
    if output_format == "json":
        click.echo(json.dumps([row_json(row) for row in rows], indent=2))
    else:
        print_runs_table(rows, title)


@runs.command("show")
@click.argument("run_id", type=click.IntRange(1, MAX_RUN_ID))
@as_of_options
@output_format_option
@db_option
def runs_show(
    run_id: int, as_of: str | None, at_position: int | None, output_format: str, db_url: str | None
) -> None:
    """Show one run and its status transitions."""
    moment = parse_moment(as_of, at_position)
    ledger = open_ledger(db_url)
    with library_errors():
        if moment is None and at_position is None:
            row, transitions = get_run(ledger, run_id)
            where = "in ingestion_runs"
        else:
            position = resolve_position(ledger, moment, at_position)
            row, transitions = run_as_of(ledger, run_id, position)
            where = f"as of position {position}"
    if row is None:
        if moment is not None or at_position is not None:
            raise BadInput(f"run {run_id} did not exist yet {where}")
        # In the ledger, not yet in the table: the projection is behind, not the caller wrong.
        raise ProblemFound(
            f"run {run_id} is in the ledger but not yet in ingestion_runs: the projection is "
            "behind (is a projector running? `ledger project` catches up)"
        )
    if output_format == "json":
        click.echo(json.dumps(row_json(row), indent=2))
        return
    table = Table(title=f"run {run_id} {where}", show_header=False)
    table.add_column("column")
    table.add_column("value", overflow="fold")
    for key, value in row.items():
        shown = json.dumps(value, sort_keys=True) if isinstance(value, dict) else value
        if key == "duration" and value is not None:
            shown = f"{value}s ({format_duration(value)})"
        add_text_row(table, key, shown)
    wide_console().print(table)
    steps = Table(title="transitions")
    for column in ("position", "at (UTC)", "from", "to", "actor"):
        steps.add_column(column)
    for step in transitions:
        add_text_row(steps, step.position, step.at, step.from_status, step.to_status, step.actor)
    wide_console().print(steps)


def parse_moment(as_of: str | None, at_position: int | None) -> datetime | None:
    if as_of is not None and at_position is not None:
        raise BadInput("give --as-of or --at-position, not both")
    if as_of is None:
        return None
    try:
        moment = datetime.fromisoformat(as_of.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadInput(f"--as-of: {as_of!r} is not an ISO-8601 time ({exc})") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def row_json(row: dict[str, Any]) -> dict[str, Any]:
    """A row keyed by the legacy column names; times as UTC ISO-8601."""
    return {
        key: (value.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(value, datetime) else value)
        for key, value in row.items()
    }


def cell(value: object) -> str:
    """A value as people read it; data is made visible (no control or format character)."""
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return visible(str(value))


def add_text_row(table: Table, *values: object) -> None:
    """A table row of plain ``Text`` cells: rich reads a ``str`` cell as markup and emoji
    codes, so ``[link=…]`` or ``[bold red]PASS[/]`` in a stored name would be obeyed."""
    table.add_row(*(Text(cell(value)) for value in values))


def print_runs_table(rows: list[dict[str, Any]], title: str) -> None:
    table = Table(title=f"{title}: {len(rows)} run(s), times in UTC")
    for column in (
        "id",
        "source",
        "connector",
        "status",
        "started",
        "completed",
        "duration",
        "fetched/created/updated/skipped",
        "error",
    ):
        table.add_column(column, overflow="fold")
    for row in rows:
        duration = row["duration"]
        add_text_row(
            table,
            row["id"],
            row["sourceId"],
            row["connectorName"],
            row["status"],
            row["startedAt"],
            row["completedAt"],
            None if duration is None else format_duration(duration),
            f"{row['recordsFetched']}/{row['recordsCreated']}/{row['recordsUpdated']}/"
            f"{row['recordsSkipped']}",
            clip(visible(row["errorMessage"] or ""), 60),
        )
    wide_console().print(table)


@cli.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Take thresholds, spool folder and database from this config.",
)
@spool_option
@output_format_option
@db_option
def status(
    config_path: Path | None, spool_dir: str | None, output_format: str, db_url: str | None
) -> None:
    """Head, open and stuck runs, runs by status, projection lag and errors, spool backlog."""
    with library_errors():
        config = load_config(config_path) if config_path else None
    ledger = open_ledger(db_url or (config.database_url if config else None))
    thresholds = config.thresholds.to_thresholds() if config else Thresholds()
    with library_errors():
        local_spool = Spool(spool_dir or (config.spool.dir if config else None))
        report = ledger_status(ledger)
        figures = collect_figures(
            ledger,
            thresholds,
            config.overrides() if config else None,
            local_spool,
            status=report,
        )
    if output_format == "json":
        click.echo(json.dumps(status_json(report, figures), indent=2, default=str))
        return
    click.echo(f"database:   {mask_url(ledger.url)}")
    click.echo(
        f"head:       position {report.head_position}"
        + (f", last append {cell(report.head_recorded_at)} UTC" if report.head_recorded_at else "")
    )
    click.echo(f"head hash:  {report.head_hash}")
    click.echo(
        f"open runs:  {report.open_runs} ({figures.stuck_runs} stuck: no activity for "
        f"{format_duration(thresholds.stale_after)})"
    )
    click.echo(
        "runs:       "
        + ", ".join(f"{count} {name}" for name, count in figures.runs_by_status.items())
    )
    click.echo(f"spool:      {figures.spool_backlog} event(s) waiting in {local_spool.path}")
    for projection in report.projections:
        checkpoint = projection.checkpoint
        click.echo(
            f"projection {projection.name}: checkpoint {checkpoint.position}, lag "
            f"{projection.lag_events} event(s) / {projection.lag_seconds:.1f}s"
        )
        if checkpoint.error_position is not None:
            click.echo(
                f"  STOPPED at position {checkpoint.error_position} "
                f"({cell(checkpoint.error_type)}): {cell(checkpoint.error_message)}"
            )
        for skip in projection.skips:
            click.echo(
                f"  skipped position {skip.position} ({cell(skip.event_type)}) by "
                f"{cell(skip.actor)} at {cell(skip.skipped_at)} UTC: {cell(skip.reason)}"
            )


def status_json(report: LedgerStatus, figures: Figures) -> dict[str, Any]:
    return {
        "head_position": report.head_position,
        "head_hash": report.head_hash,
        "head_recorded_at": iso(report.head_recorded_at) if report.head_recorded_at else None,
        "open_runs": report.open_runs,
        "stuck_runs": figures.stuck_runs,
        "runs_by_status": figures.runs_by_status,
        "spool_backlog": figures.spool_backlog,
        "projections": [
            {
                "name": p.name,
                "checkpoint": p.checkpoint.position,
                "lag_events": p.lag_events,
                "lag_seconds": round(p.lag_seconds, 3),
                "error": None
                if p.checkpoint.error_position is None
                else {
                    "position": p.checkpoint.error_position,
                    "type": p.checkpoint.error_type,
                    "message": p.checkpoint.error_message,
                    "at": p.checkpoint.error_at,
                },
                "skips": [vars(skip) for skip in p.skips],
            }
            for p in report.projections
        ],
    }


def wide_console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=200)


# ---------------------------------------------------------------------- stuck runs


def threshold_options(command: F) -> F:
    command = click.option(
        "--max-runtime",
        type=DURATION,
        default=None,
        help="Also stuck: started longer ago than this (e.g. 6h).",
    )(command)
    return click.option(
        "--older-than",
        type=DURATION,
        default="60m",
        show_default=True,
        help="Stuck: no activity for longer than this.",
    )(command)


def stuck_json(run: StuckRun) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "source_id": run.source_id,
        "connector_name": run.connector_name,
        "started_at": run.started_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "last_event_at": run.last_event_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "version": run.version,
        "rule": run.rule,
    }


def print_stuck_table(runs: list[StuckRun], title: str) -> None:
    table = Table(title=f"{title}: {len(runs)} run(s), times in UTC")
    for column in ("run", "source", "connector", "started", "last activity", "silent for", "rule"):
        table.add_column(column)
    now = utcnow()
    for run in runs:
        add_text_row(
            table,
            run.run_id,
            run.source_id,
            run.connector_name,
            run.started_at,
            run.last_event_at,
            format_duration(now - run.last_event_at),
            f"{run.rule} (> {format_duration(run.threshold)})",
        )
    wide_console().print(table)


@cli.command()
@threshold_options
@output_format_option
@db_option
def stuck(
    older_than: timedelta, max_runtime: timedelta | None, output_format: str, db_url: str | None
) -> None:
    """List runs with no terminal event and no recent activity; exit 1 if there are any."""
    ledger = open_ledger(db_url)
    with library_errors():
        runs = stuck_runs(ledger, older_than=older_than, max_runtime=max_runtime)
    if output_format == "json":
        click.echo(json.dumps([stuck_json(run) for run in runs], indent=2))
    else:
        print_stuck_table(runs, "stuck runs")
    if runs:
        sys.exit(EXIT_PROBLEM)


@cli.command("sweep")
@threshold_options
@click.option("--dry-run", is_flag=True, help="Only show what would be timed out.")
@output_format_option
@db_option
def sweep_command(
    older_than: timedelta,
    max_runtime: timedelta | None,
    dry_run: bool,
    output_format: str,
    db_url: str | None,
) -> None:
    """Append RunTimedOut for every stuck run (RunStarted .. no terminal event)."""
    ledger = open_ledger(db_url)
    with library_errors():
        result = sweep(ledger, dry_run=dry_run, older_than=older_than, max_runtime=max_runtime)
    if output_format == "json":
        click.echo(
            json.dumps(
                {
                    "dry_run": dry_run,
                    "timed_out": [stuck_json(run) for run in result.timed_out],
                    "skipped": [{**stuck_json(run), "why": why} for run, why in result.skipped],
                },
                indent=2,
            )
        )
    else:
        verb = "would time out" if dry_run else "timed out"
        print_stuck_table(result.timed_out, verb)
        for run, why in result.skipped:
            click.echo(f"left run {run.run_id} alone: {visible(why)}")


@runs.command("fail")
@click.argument("run_id", type=click.IntRange(1, MAX_RUN_ID))
@click.option("--reason", required=True, help="Why the run is declared failed (recorded).")
@click.option(
    "--actor",
    default=None,
    callback=check_name,
    help="Who decides (default: $USER); recorded as operator:NAME.",
)
@db_option
def runs_fail(run_id: int, reason: str, actor: str | None, db_url: str | None) -> None:
    """Declare an open run failed: appends RunTimedOut with detected_by=operator:NAME."""
    ledger = open_ledger(db_url)
    actor = actor or default_actor()
    with library_errors():
        position = fail_run(ledger, run_id, reason, actor)
    click.echo(f"run {run_id} failed by {actor} at position {position}: {visible(reason)}")


# ---------------------------------------------------------------------- connectors


def run_options(command: F) -> F:
    for option in reversed(
        [
            click.option(
                "--source-id",
                type=click.IntRange(min=0),
                default=1,
                show_default=True,
                help="The source this run ingests (ingestion_runs.sourceId).",
            ),
            click.option(
                "--trigger",
                default="manual",
                show_default=True,
                help="Why the run happened (recorded in RunStarted's metadata).",
            ),
            click.option(
                "--progress-interval",
                type=click.FloatRange(min=0),
                default=5.0,
                show_default=True,
                help="Seconds between progress events.",
            ),
            click.option(
                "--heartbeat-interval",
                type=click.FloatRange(min=0.01),
                default=60.0,
                show_default=True,
                help="Seconds between heartbeats.",
            ),
            spool_option,
            db_option,
        ]
    ):
        command = option(command)
    return command


@cli.group("run")
def run_group() -> None:
    """Run one shipped connector once, recorded in the ledger (exit 1 unless success)."""


@run_group.command("csv")
@click.option(
    "--path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=SAMPLE_CSV,
    show_default=True,
    help=f"A CSV file with a header row, or JSON Lines (.jsonl). The package ships "
    f"a sample: {SAMPLE_CSV}",
)
@click.option(
    "--key", default="id", show_default=True, help="The column (field) that identifies a record."
)
@run_options
def run_csv(path: Path, key: str, **options: Any) -> None:
    """Upsert the records of a CSV or JSON Lines file into source_records."""
    execute_connector(CsvConnector(options.pop("source_id"), path, key=key), **options)


@run_group.command("http-json")
@click.option("--url", required=True, help="The first page's URL.")
@click.option("--key", default="id", show_default=True, help="The field that identifies a record.")
@click.option(
    "--records-path",
    default="",
    help="Dotted path to the list of records in each page (empty: the page is the list).",
)
@click.option("--page-param", default=None, help="Query parameter to increment per page.")
@click.option("--next-path", default=None, help="Dotted path to the next page's link.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True)
@click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True)
@click.option(
    "--backoff",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    help="First retry delay in seconds, doubled each retry.",
)
@run_options
def run_http_json(
    url: str,
    key: str,
    records_path: str,
    page_param: str | None,
    next_path: str | None,
    timeout: float,
    retries: int,
    backoff: float,
    **options: Any,
) -> None:
    """Page through a JSON API and upsert its records into source_records."""
    if page_param and next_path:
        raise BadInput("give --page-param or --next-path, not both")
    if not url.startswith(("http://", "https://")):
        raise BadInput(f"--url: {url!r} is not an http(s) URL")
    connector = HttpJsonConnector(
        options.pop("source_id"),
        url,
        key=key,
        records_path=records_path,
        page_param=page_param,
        next_path=next_path,
        timeout=timeout,
        retries=retries,
        backoff=backoff,
    )
    execute_connector(connector, **options)


def execute_connector(
    connector: Connector,
    *,
    trigger: str,
    progress_interval: float,
    heartbeat_interval: float,
    spool_dir: str | None,
    db_url: str | None,
) -> None:
    ledger = open_ledger(db_url)
    with library_errors():
        spool = Spool(spool_dir)
    context = connector.context(
        ledger,
        trigger=trigger,
        spool=spool,
        progress_interval=progress_interval,
        heartbeat_interval=heartbeat_interval,
    )
    # SIGTERM ends the run as "interrupted" instead of leaving it open.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    failure: BaseException | None
    with library_errors():
        try:
            result, failure = connector.record(context)
        except (KeyboardInterrupt, SystemExit) as exc:  # recorded failed ("interrupted")
            assert context.result is not None
            result, failure = context.result, exc
    summary = {
        "run_id": result.run_id,
        "connector": connector.name,
        "source_id": connector.source_id,
        "status": result.status,
        **result.totals,
        "error_count": result.error_count,
        "spooled": result.spooled,
    }
    if failure is not None:
        summary["error"] = f"{type(failure).__name__}: {failure}"
    click.echo(json.dumps(summary))
    if result.status != "success":
        sys.exit(EXIT_PROBLEM)


@cli.group()
def spool() -> None:
    """The local spool of events that could not reach the ledger."""


@spool.command("status")
@spool_option
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)
def spool_status(spool_dir: str | None, output_format: str) -> None:
    """Show the backlog (exit 1 if events are waiting or were rejected)."""
    with library_errors():
        local = Spool(spool_dir)
        report = local.status()
        rejected = local.rejected()
    if output_format == "json":
        click.echo(json.dumps({**vars(report), "rejected_events": rejected}, indent=2))
    else:
        click.echo(f"spool:     {report.path}")
        click.echo(
            f"pending:   {report.pending} event(s) of {len(report.runs)} run(s)"
            + (f" {report.runs}" if report.runs else "")
        )
        if report.oldest_spooled_at:
            click.echo(f"oldest:    {report.oldest_spooled_at}")
        click.echo(f"rejected:  {report.rejected}")
        for item in rejected:
            click.echo(
                f"  {cell(item['event_id'])} ({cell(item['type'])} of run "
                f"{cell(item['run_id'])}): {cell(item['reason'])}"
            )
    if report.pending or report.rejected:
        sys.exit(EXIT_PROBLEM)


@spool.command("flush")
@spool_option
@db_option
def spool_flush(spool_dir: str | None, db_url: str | None) -> None:
    """Deliver the backlog to the ledger, in order, exactly once."""
    ledger = open_ledger(db_url)
    with library_errors():
        result = Spool(spool_dir).flush(ledger)
    click.echo(json.dumps(vars(result)))
    if result.remaining or result.rejected:
        sys.exit(EXIT_PROBLEM)


# ---------------------------------------------------------------------- serve


@cli.command("serve")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("ledger.toml"),
    show_default=True,
    help="The TOML config file.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus metrics on PORT (overrides serve.metrics_port; the address is "
    "serve.metrics_host, 127.0.0.1 by default).",
)
def serve_command(config_path: Path, metrics_port: int | None) -> None:
    """Run connectors on their schedules, the projector, the sweeper and spool flushing."""
    with library_errors():
        config = load_config(config_path)
        service = LedgerService(config, metrics_port)
    click.echo(
        f"serving {mask_url(config.database_url)} with "
        f"{sum(c.enabled for c in config.connectors)} scheduled "
        "connector(s); SIGTERM or Ctrl-C to stop",
        err=True,
    )
    with library_errors():
        service.run()
    # Every run is closed and the projector's batch is committed; a connector thread still
    # blocked in I/O (its run already ended "shutdown") must not hold the exit hostage.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_OK)


@cli.group("config")
def config_group() -> None:
    """The ledger serve configuration file."""


@config_group.command("check")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def config_check(path: Path) -> None:
    """Validate a config file; exit 2 naming each bad key."""
    with library_errors():
        config = load_config(path)
    enabled = [c for c in config.connectors if c.enabled]
    click.echo(
        f"{path}: valid; database {mask_url(config.database_url)}; "
        f"{len(enabled)} connector(s) scheduled of {len(config.connectors)}; "
        f"stale after {format_duration(config.thresholds.stale_after)}; sweep every "
        f"{format_duration(config.sweeper.interval)}"
    )


def main() -> NoReturn:
    try:
        cli.main(standalone_mode=True)
    except LedgerError as error:  # a library error that escaped a command: still no traceback
        click.echo(f"Error: {visible_lines(mask_secrets(str(error)))}", err=True)
        sys.exit(exit_code_for(error))
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
