"""``ledger report`` for reading: the report :func:`forensics.report.build_report` makes, as
JSON, as text laid out for a terminal, or as Markdown (the CLI, the web view's download and the
demo's story show it through these)."""

from __future__ import annotations

import json
from typing import Any

from ledger.clock import labelled_utc, parse_utc
from ledger.text import ABSENT, markdown_cell, quoted, shown_name, visible, wrap_cells


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)


# The runs' times, in each section: ISO-8601 in the data, to the second with their zone where
# people read them, beside the humanised durations (generated_at and as_of's time are shown as
# they are: the text forms always did).
_RUN_TIMES = {
    "latest_runs": ("started", "completed"),
    "stuck_runs": ("started_at", "last_event_at"),
}


def for_people(report: dict[str, Any]) -> dict[str, Any]:
    """The report as its text, Markdown and HTML forms show it: a copy whose runs' times read
    ``2026-01-28 03:00:07 UTC``, each key in its place."""
    shown = dict(report)
    for section, keys in _RUN_TIMES.items():
        shown[section] = [
            {**run, **{key: _labelled(run[key]) for key in keys}} for run in report[section]
        ]
    return shown


def _labelled(text: str | None) -> str | None:
    return None if text is None else labelled_utc(parse_utc(text, naive="refuse"))


REPORT_WIDTH = 80  # the text report's columns
CONTINUATION = "      "  # how a wrapped line of the text report goes on


def render_text(report: dict[str, Any], markdown: bool = False) -> str:
    """The report for people. Every value from the database goes through ``show``: made visible
    (a newline in an error message cannot start a fake section) and, in Markdown, escaped (a
    ``|`` cannot break the table, ``[x](…)`` cannot become a link). The text form is laid out
    for :data:`REPORT_WIDTH` columns with a hanging indent, so that nothing a value holds
    (padding, a long message) stands at the start of a line where a terminal would wrap it:
    every line that starts at the left margin is the report's own."""
    report = for_people(report)
    out: list[str] = []

    def show(value: object) -> str:
        text = str(value)
        return markdown_cell(text) if markdown else visible(text)

    def heading(text: str) -> None:
        out.append(f"\n## {text}\n" if markdown else f"\n{text}\n{'-' * len(text)}")

    def line(text: str = "") -> None:
        if markdown:  # read through a Markdown viewer, which lays out its own lines
            out.append(text)
            return
        for part in text.split("\n"):
            out.extend(wrap_cells(part, REPORT_WIDTH, CONTINUATION))

    item = "- " if markdown else "  "
    title = "ingestion_runs proof report"
    line(f"# {title}" if markdown else f"{title.upper()}\n{'=' * len(title)}")
    # Two list items in Markdown: two plain lines would join into one paragraph.
    about = "- " if markdown else ""
    line(f"{about}Generated: {show(report['generated_at'])} (UTC)")
    line(f"{about}Database:  {show(report['database'])}")
    as_of = report.get("as_of")
    if as_of:
        line(
            f"{about}As of:     position {as_of['position']} ({show(as_of['at'])} UTC): runs, "
            "transitions, stuck runs and the chain as the ledger stood then; the schema is the "
            "live table's, and the projection's sync and verify's other checks (questions about "
            "now) are not judged"
        )
    schema = report["schema"]
    heading("A. Schema: live ingestion_runs against the legacy shape")
    for column in schema["columns"]:
        line(
            f"{item}{show(column['name'])} {show(column['type'])} "
            f"{'NULL' if column['nullable'] else 'NOT NULL'}"
        )
    # Markdown: a blank line first, or the line would continue the last column's list item.
    line(("\n" if markdown else "") + "Mismatches: " + ("none" if not schema["mismatches"] else ""))
    for problem in schema["mismatches"]:
        line(f"  - {show(problem)}")
    heading("B. Status distribution")
    for status, count in report["status_distribution"].items():
        line(f"{item}{show(status)}: {count}")
    heading(f"C. Latest {len(report['latest_runs'])} run(s), times in UTC")
    if markdown:
        line(
            "| id | connector | status | started | completed | duration | "
            "fetched/created/updated/skipped | error |"
        )
        line("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in report["latest_runs"]:
        values = [
            show(value or ABSENT)
            for value in (
                run["id"],
                run["connector"],
                run["status"],
                run["started"],
                run["completed"],
                run["duration"],
                run["fetched_created_updated_skipped"],
                run["error"],
            )
        ]
        if markdown:  # each value in a cell of its own
            line("| " + " | ".join(values) + " |")
        else:  # one line: the connector's name and message quoted, not read as the report's
            error = quoted(run["error"]) if run["error"] else ABSENT
            line(
                f"  run {values[0]} ({shown_name(run['connector'])}): {values[2]}; started "
                f"{values[3]}; completed {values[4]}; duration {values[5]}; "
                f"fetched/created/updated/skipped {values[6]}; error {error}"
            )
    heading("D. Where status transitions come from")
    if not report["transitions"]:
        line("  none")
    for kind, by_status in sorted(report["transitions"].items()):
        line(
            f"{item}{show(kind)}: "
            + ", ".join(f"{count} to {show(status)}" for status, count in sorted(by_status.items()))
        )
    heading("E. Stuck runs (from the ledger)")
    if not report["stuck_runs"]:
        line("  none")
    for run in report["stuck_runs"]:
        line(
            f"{item}run {run['run_id']} ({show(shown_name(run['connector_name']))}, "
            f"source {run['source_id']}): started {show(run['started_at'])}, silent for "
            f"{show(run['silent_for'])} ({show(run['rule'])})"
        )
    heading("F. Stop conditions")
    for condition in report["conditions"]:
        verdict = "PASS" if condition["passed"] else "FAIL"
        line(f"{item}{verdict}  {show(condition['name'])}: {show(condition['detail'])}")
    passed = sum(c["passed"] for c in report["conditions"])
    line(
        f"\nResult: {passed}/{len(report['conditions'])} conditions pass"
        + ("" if passed == len(report["conditions"]) else " — FAIL")
    )
    return "\n".join(out) + "\n"
