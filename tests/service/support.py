"""What the service tests share: the ``ledger`` command run in process, the shipped sample and
JSON lines to append, and the check that output shows no raw control or format character."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from ledger.text import is_invisible
from service.cli import cli

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_events.jsonl"


def run(*args: str, input: str | bytes | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def lines(*events: dict[str, object]) -> str:
    return "".join(json.dumps(event) + "\n" for event in events)


def shows_no_raw_control(output: str) -> bool:
    return not any(is_invisible(char) for char in output.replace("\n", ""))
