"""Output: JSON, and tables as plain text that fit the terminal (each column with a compact and
a wide form; compact times, durations and counts), data shown through
:func:`ledger.text.visible`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import click
from rich import box
from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ledger.clock import format_utc_seconds, utcnow
from ledger.durations import format_duration
from ledger.text import ABSENT, visible

# ---------------------------------------------------------------------- rendering


def echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2))


def cell(value: object) -> str:
    """A value as people read it; data is made visible (no control or format character)."""
    if value is None:
        return ABSENT
    if isinstance(value, datetime):
        return format_utc_seconds(value)
    return visible(str(value))


# ---------------------------------------------------------------------- tables
#
# One way to draw every table: columns are declared once, with their compact form (the default,
# which fits an 80-column terminal: short headers, ``11-28 19:37``, long text cut with "…") and
# their wide form (``--wide``: full headers, times to the second, every value whole, one line
# per row however long). Times, statuses and counters never wrap: only text columns give way,
# so a narrow terminal shortens an error message, not a date. Counters are compact too (``2.1G``
# for 2,147,483,000): whole, a run's four took 38 cells and pushed a table past 80 columns.

ColumnKind = Literal["text", "word", "time", "duration", "counts"]
# Room to measure a --wide table in: its natural width, whatever the terminal's.
UNBOUNDED = 1_000_000
COLUMN_GAP = 2  # the cells between two columns in the tables' style (print_table)
LEAST_TEXT_CELLS = 4  # what a text column keeps on a tiny terminal: "ab…"
# What a text column that shows full text keeps (runs show, audit): a date and time,
# "2026-01-28 01:12:45", on one line, and a header word unbroken.
LEAST_FULL_TEXT_CELLS = 20
LEAST_LINE_CELLS = 20  # what a line of text output keeps on a tiny terminal


@dataclass(frozen=True)
class TwoForms:
    """A value the code writes in two forms, for a cell of the compact table and of the wide
    one: a stuck run's rule, ``runtime>6h`` and ``max_runtime (> 6h)``."""

    compact: str
    wide: str


@dataclass(frozen=True)
class TableColumn:
    """A column, declared once with both of its forms.

    ``header`` titles it in the compact table, ``wide_header`` (default: the same) with
    ``--wide``; a ``wide_only`` column is left out of the compact table. ``kind`` says how a
    value shows and whether it may give way: ``text`` is data of any length (cut with "…", or
    wrapped in a table that shows full text); ``word`` is a short value the code makes (an id, a
    status), never wrapped; ``time`` is a datetime; ``duration`` is seconds or a
    timedelta (``4d22h`` compact, exact when wide); ``counts`` is a sequence of counters shown
    as ``a/b/c/d`` (each at most 4 cells compact, ``2.1G``; exact when wide). ``limit`` cuts
    a longer value of a ``word`` column in the compact table: for stored words, such as an
    event type, that are short unless a writer made them long.
    """

    header: str
    wide_header: str = ""
    kind: ColumnKind = "text"
    wide_only: bool = False
    limit: int | None = None

    def title(self, wide: bool) -> str:
        return (self.wide_header or self.header) if wide else self.header

    def show(self, value: object, wide: bool, now: datetime) -> str:
        shown = self._shown(value, wide, now)
        return shown if wide else cut_cells(shown, self.limit)

    def _shown(self, value: object, wide: bool, now: datetime) -> str:
        if isinstance(value, TwoForms):
            return visible(value.wide if wide else value.compact)
        if self.kind == "time" and isinstance(value, datetime):
            return format_utc_seconds(value) if wide else compact_time(value, now)
        if self.kind == "duration" and isinstance(value, timedelta | int | float):
            return format_duration(value) if wide else compact_duration(value)
        if self.kind == "counts" and isinstance(value, tuple | list):
            return "/".join(str(count) if wide else compact_count(count) for count in value)
        return cell(value)


def cut_cells(text: str, limit: int | None) -> str:
    """``text`` in at most ``limit`` terminal cells, a cut marked with "…": counted in cells (a
    CJK character or an emoji takes two), and a character is never cut in half."""
    if limit is None or cell_len(text) <= limit:
        return text
    return set_cell_size(text, max(limit - 1, 0)).rstrip() + "…"


def compact_time(value: datetime, now: datetime) -> str:
    """``11-28 19:37`` (UTC, to the minute), with the year when it is not this year's:
    ``2025-11-28 19:37``."""
    utc = value.astimezone(UTC)
    return utc.strftime("%m-%d %H:%M" if utc.year == now.year else "%Y-%m-%d %H:%M")


def compact_duration(value: timedelta | int | float) -> str:
    """The two largest units of :func:`format_duration` (``4d22h`` for 4d22h20m59s): the
    order of magnitude in a few cells; ``--wide`` and ``runs show`` give the exact value."""
    exact = format_duration(value)
    units = re.findall(r"-?\d+[dhms]", exact)
    return "".join(units[:2])


COUNT_UNITS = ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k"))


def compact_count(value: int) -> str:
    """A counter in at most 4 cells: exact below 10,000, else ``12k``, ``1.2M``, ``999M``,
    ``2.1G``, rounded down (never more than the true value); ``--wide`` and ``runs show``
    give it exactly."""
    if value < 10_000:
        return str(value)
    for size, unit in COUNT_UNITS:
        if value >= size:
            whole, rest = divmod(value, size)
            if whole < 10:
                return f"{whole}.{rest * 10 // size}{unit}"
            return f"{whole}{unit}"
    return str(value)  # unreachable: 10,000 and more is at least 1k


def print_table(
    title: str,
    columns: Sequence[TableColumn],
    rows: Iterable[Sequence[object]],
    *,
    wide: bool,
    full_text: bool = False,
    show_header: bool = True,
) -> None:
    """Print ``rows`` (one value per declared column, wide-only ones included) as a table.

    Compact (the default) fits the terminal's width (``$COLUMNS``, else the terminal's, else
    80): text columns share what the other columns leave and a longer value is cut with "…",
    or, with ``full_text`` (``runs show``, ``audit``), wrapped inside its cell. ``wide`` shows
    every column at its full width. Values are made visible (:func:`cell`) and passed as plain
    ``Text``: rich would read a ``str`` cell as markup and emoji codes, so ``[link=…]`` or
    ``[bold red]PASS[/]`` in a stored name would be obeyed."""
    shown = [index for index, column in enumerate(columns) if wide or not column.wide_only]
    now = utcnow()
    texts = [[columns[i].show(row[i], wide, now) for i in shown] for row in rows]
    table = Table(
        title=title,
        show_header=show_header,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        # Centred over a --wide table, a title sat after half its longest value in spaces.
        title_justify="left" if wide else "center",
    )
    least = COLUMN_GAP * (len(shown) - 1)  # the narrowest the table can be, dates whole
    for position, index in enumerate(shown):
        column = columns[index]
        header = column.title(wide)
        if column.kind == "text":
            # Not no_wrap: only such columns may be narrowed by rich; each cell stays on one
            # line through its own no_wrap (below) unless the table shows full text.
            keep = LEAST_FULL_TEXT_CELLS if full_text else LEAST_TEXT_CELLS
            table.add_column(
                header,
                overflow="fold" if full_text else "ellipsis",
                min_width=keep if full_text else None,
            )
            least += keep
        else:
            widest = max((cell_len(row[position]) for row in texts), default=0)
            width = max(widest, cell_len(header))
            table.add_column(header, no_wrap=True, overflow="ellipsis", min_width=width)
            least += width
    one_line = wide or not full_text
    kinds = [columns[index].kind for index in shown]
    for row in texts:
        table.add_row(
            *(
                Text(text, no_wrap=one_line, overflow="ellipsis" if one_line else "fold")
                if kind == "text"
                else Text(text)
                for text, kind in zip(row, kinds, strict=True)
            )
        )
    console = table_console(table, wide, least)
    if not wide:
        console.print(table)
        return
    # As wide as its longest value, rich pads every line to it: a 60,000-character error
    # message made each of the table's lines 60,000 cells, 1 MB of spaces for 60 kB of text.
    with console.capture() as captured:
        console.print(table)
    # Style codes as rich wrote them (rich decides: a terminal, FORCE_COLOR, NO_COLOR; no
    # value holds one, cell makes them visible): click.echo would strip them from a pipe,
    # and FORCE_COLOR=1 ... --wide | less -R lost the colours the compact table keeps.
    for line in captured.get().splitlines():
        click.echo(without_padding(line), color=True)


_STYLE_CODE = re.compile(r"\x1b\[[0-9;]*m")


def without_padding(line: str) -> str:
    """``line`` without the spaces at its end, before the style codes that close it on a
    terminal, in time linear in its length: a regular expression (`` +(codes)*$``) tried each
    space of a line's inner padding (``audit --wide`` of a run with a 60,000-character
    error, its other rows padded to it) and took minutes a line."""
    body, codes = line, ""
    while body.endswith("m"):
        start = body.rfind("\x1b[")
        if start < 0 or not _STYLE_CODE.fullmatch(body, start):
            break
        body, codes = body[:start], body[start:] + codes
    return body.rstrip(" ") + codes


def table_console(table: Table, wide: bool, least: int) -> Console:
    """As wide as the terminal (rich reads ``$COLUMNS``, else the terminal's size, else takes
    80) but never narrower than ``least``: on a tiny terminal rich would crop dates, so the
    terminal wraps the lines instead. With ``wide``, as wide as the table needs: nothing is cut
    or wrapped (a narrower terminal wraps the lines)."""
    terminal = Console()
    if wide:
        natural = terminal.measure(table, options=terminal.options.update_width(UNBOUNDED))
        return Console(width=max(natural.maximum, 1))
    return terminal if terminal.width >= least else Console(width=least)


def echo_fitted(line: str, wide: bool) -> None:
    """A line of text output made visible and cut with "…" to the terminal's width (in cells:
    a wide character takes two, and is never cut in half), or whole with ``wide``."""
    line = visible(line)
    width = max(Console().width, LEAST_LINE_CELLS)
    click.echo(line if wide else cut_cells(line, width))
