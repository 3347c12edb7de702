"""The reliability suite's summary table: what each test tried and what held, with figures.

Each test records rows through the ``reliability`` fixture. At the end of the session the table
is printed, and written as Markdown to ``$LEDGER_RELIABILITY_TABLE`` when that is set (that is
how ``docs/RELIABILITY.md`` gets its table from a real run).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

TABLE_ENV = "LEDGER_RELIABILITY_TABLE"


@dataclass(frozen=True)
class Row:
    area: str
    backend: str
    tried: str
    held: str
    ok: bool


@dataclass
class Summary:
    rows: list[Row] = field(default_factory=list)

    def record(self, area: str, backend: str, tried: str, held: str, ok: bool = True) -> None:
        """One line of the table. Record only after the assertions that prove ``held``."""
        self.rows.append(Row(area, backend, tried, held, ok))

    def lines(self) -> list[str]:
        """The table for a terminal: one heading line per row, then what was tried and held."""
        out: list[str] = []
        for r in sorted(self.rows, key=lambda r: (r.area, r.backend)):
            out.append(f"[{'held' if r.ok else 'FAILED'}] {r.area} ({r.backend})")
            out.append(f"    tried: {r.tried}")
            out.append(f"    held:  {r.held}")
        return out

    def markdown(self) -> str:
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        out = [
            f"Run on {when}, {platform.node() or 'this machine'}, "
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs.",
            "",
            "| area | backend | what was tried | what held | result |",
            "|---|---|---|---|---|",
        ]
        for r in sorted(self.rows, key=lambda r: (r.area, r.backend)):
            cells = (r.area, r.backend, r.tried, r.held, "held" if r.ok else "**FAILED**")
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(out) + "\n"

    def write_markdown_if_asked(self) -> Path | None:
        target = os.environ.get(TABLE_ENV)
        if not target or not self.rows:
            return None
        path = Path(target)
        path.write_text(self.markdown(), encoding="utf-8")
        return path
