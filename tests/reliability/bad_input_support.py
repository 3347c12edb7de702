"""What the bad-input tests of the reliability suite share: a seeded store and a snapshot of
it (every table's row count and the head) that a refused input must leave as it was, the
``ledger`` command run in process, the check that a refusal names exactly the bad lines, JSON
lines and valid event templates to break, and valid config files (as TOML) to break."""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from click.testing import CliRunner, Result
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from sqlalchemy import func, inspect, select, table

from ledger import Ledger, RunFinished, RunProgressed, RunStarted, RunTimedOut
from ledger.database import create_ledger_engine
from ledger.recorded import LedgerHead
from service.cli import cli

# ---------------------------------------------------------------------- the seeded store

# Seeded by ``seed``: two open runs, a finished one and a timed-out one, so every stream rule
# can be broken; valid lines only ever do what stays valid (progress of the open runs, late
# progress of the timed-out one, new runs of their own).
OPEN_RUNS = (1, 2)
FINISHED_RUN = 3
TIMED_OUT_RUN = 4
SEEDED_RUNS = (*OPEN_RUNS, FINISHED_RUN, TIMED_OUT_RUN)
STORED_PROGRESS_ID = "5d0c6f0e-8a53-4f57-9d0b-6f4c35a1c001"
STORED_PROGRESS = {
    "type": "RunProgressed",
    "event_id": STORED_PROGRESS_ID,
    "run_id": 1,
    "records_fetched": 10,
    "occurred_at": "2025-03-01T08:05:00+00:00",
}


def seed(ledger: Ledger) -> None:
    started_at = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    result = ledger.append(
        RunStarted(source_id=n, connector_name=f"seed-{n}", occurred_at=started_at)
        for n in SEEDED_RUNS
    )
    assert result.allocated_run_ids == list(SEEDED_RUNS)
    ledger.append(
        [
            RunProgressed.model_validate(STORED_PROGRESS),
            RunFinished(run_id=FINISHED_RUN, status="success"),
            RunTimedOut(run_id=TIMED_OUT_RUN, reason="silent for 2h", detected_by="sweeper"),
        ]
    )


@dataclass(frozen=True)
class StoreState:
    """What a refused append must leave exactly as it was."""

    rows: tuple[tuple[str, int], ...]
    head: LedgerHead


@functools.cache
def table_names(url: str) -> tuple[str, ...]:
    """Every table of the migrated database (the same for each test of a backend)."""
    engine = create_ledger_engine(url)
    try:
        return tuple(sorted(inspect(engine).get_table_names()))
    finally:
        engine.dispose()


def store_state(ledger: Ledger) -> StoreState:
    with ledger.engine.connect() as conn:
        rows = tuple(
            (name, conn.execute(select(func.count()).select_from(table(name))).scalar_one())
            for name in table_names(ledger.url)
        )
    return StoreState(rows, ledger.head())


# ---------------------------------------------------------------------- running the CLI


def run_cli(*args: str) -> Result:
    runner = CliRunner(env={"LEDGER_DATABASE_URL": None})
    return runner.invoke(cli, list(args), catch_exceptions=False)


def messages_by_line(stderr: str) -> dict[int, list[str]]:
    """What the output says about each input line it names: ``{N: [text after "line N: "]}``
    (an error about a file's line names the file first: ``Error: FILE: line N: …``)."""
    named: dict[int, list[str]] = {}
    for output_line in stderr.splitlines():
        match = re.match(r"(?:Error: (?:.*?: )?|\s+)line (\d+): (.*)", output_line)
        if match:
            named.setdefault(int(match.group(1)), []).append(match.group(2))
    return named


def assert_refused_naming(result: Result, bad_lines: dict[int, tuple[str, ...]]) -> None:
    """Exit 2, each bad line named with every expected word, no other line, no traceback."""
    assert result.exit_code == 2, result.output[:2000]
    assert "Traceback" not in result.output
    assert result.stdout == ""
    named = messages_by_line(result.stderr)
    assert set(named) == set(bad_lines), (sorted(named), sorted(bad_lines), result.stderr[:2000])
    for number, words in bad_lines.items():
        assert any(all(word in message for word in words) for message in named[number]), (
            number,
            words,
            named[number],
        )


# ---------------------------------------------------------------------- JSON lines

# Markers for what json.dumps cannot write, replaced in the text: a 5,000-digit integer
# (beyond Python's int-to-text limit), 1e400, NaN, bytes that are not UTF-8.
GIANT = "@@giant@@"
NEGATIVE_GIANT = "@@-giant@@"
GIANT_DIGITS = "9" * 5000


def json_line(event: Any, *, ascii_only: bool = False) -> bytes:
    text = json.dumps(event, ensure_ascii=ascii_only, allow_nan=False)
    text = text.replace(f'"{GIANT}"', GIANT_DIGITS)
    text = text.replace(f'"{NEGATIVE_GIANT}"', "-" + GIANT_DIGITS)
    return text.encode("utf-8")


# ---------------------------------------------------------------------- valid events to break

TEMPLATES: dict[str, dict[str, Any]] = {
    "RunStarted": {
        "type": "RunStarted",
        "source_id": 7,
        "connector_name": "stations",
        "metadata": {"region": "north"},
    },
    "RunProgressed": {"type": "RunProgressed", "run_id": 1, "records_fetched": 5},
    "RunFinished": {
        "type": "RunFinished",
        "run_id": 1,
        "status": "partial",
        "error_message": "3 rows skipped",
        "error_details": {"rows": [4, 9, 12]},
    },
    "RunTimedOut": {
        "type": "RunTimedOut",
        "run_id": 2,
        "reason": "silent for 2h",
        "detected_by": "sweeper",
        "threshold_seconds": 3600,
        "last_event_at": "2025-03-01T09:00:00Z",
    },
}
ENVELOPE = {
    "event_id": "0b7e3a5c-1d2f-4e6a-8b9c-0d1e2f3a4b5c",
    "occurred_at": "2025-06-01T12:00:00+00:00",
    "actor": "connector:stations@host:42",
}
FINITE_FLOATS = st.floats(allow_nan=False, allow_infinity=False)
SMALL_LISTS = st.lists(st.integers(-9, 9), max_size=2)
SMALL_OBJECTS = st.dictionaries(st.text(max_size=3), st.integers(-9, 9), max_size=2)


def template(event_type: str) -> dict[str, Any]:
    """A valid event of that type, every field given, to break one field of."""
    return copy.deepcopy(TEMPLATES[event_type] | ENVELOPE)


INVALID_UTF8 = st.sampled_from(
    [
        b"\xff",
        b"\xfe\xff",
        b"\xc0\xaf",  # overlong "/"
        b"\xed\xa0\x80",  # an encoded surrogate
        b"\xf4\x90\x80\x80",  # above U+10FFFF
        b"\xe2\x82",  # truncated
        b"\x80",  # a lone continuation byte
        b"\xf8\x88\x80\x80\x80",
    ]
)


HYPOTHESIS_SETTINGS = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


# ---------------------------------------------------------------------- config files


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(
            ch
            if ch not in '"\\' and (ch == "\t" or ord(ch) >= 0x20) and ord(ch) != 0x7F
            else f"\\u{ord(ch):04x}"
            for ch in value
        )
        return f'"{escaped}"'
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_lines(config: dict[str, Any]) -> list[str]:
    """The config as TOML, one statement a line: scalars, [tables], [[connectors]]."""
    lines = [f"{toml_value(k)} = {toml_value(v)}" for k, v in config.items() if not _is_table(v)]
    for key, value in config.items():
        if isinstance(value, dict):
            lines.append(f"[{toml_value(key)}]")
            lines += [f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()]
        elif _is_table(value):
            for item in value:
                lines.append(f"[[{toml_value(key)}]]")
                lines += [f"{toml_value(k)} = {toml_value(v)}" for k, v in item.items()]
    return lines


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(i, dict) for i in value)
    )


def base_config(database_url: str) -> dict[str, Any]:
    """A valid config using every section (examples/ledger.toml's shape)."""
    return {
        "database_url": database_url,
        "thresholds": {"stale_after": "60m", "max_runtime": "6h"},
        "sweeper": {"interval": "15m"},
        "projector": {"interval": "1s", "batch_size": 1000},
        "spool": {"dir": "spool", "flush_interval": "1m"},
        "serve": {
            "grace_period": "30s",
            "metrics_port": 9464,
            "progress_interval": "5s",
            "heartbeat_interval": "60s",
        },
        "connectors": [
            {
                "name": "stations-csv",
                "type": "csv",
                "source_id": 1,
                "schedule": {"interval": "15m"},
                "options": {"path": "stations.csv", "key": "id"},
                "thresholds": {"stale_after": "30m"},
                "enabled": True,
            },
            {
                "name": "stations-api",
                "type": "http-json",
                "source_id": 2,
                "schedule": {"cron": "*/30 * * * *"},
                "options": {"url": "https://api.example.com/stations", "retries": 3},
                "thresholds": {"stale_after": "20m", "max_runtime": "2h"},
                "enabled": False,
            },
        ],
    }


def set_at(config: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    parent: Any = config
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value


KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class BadConfig:
    kind: str
    content: bytes
    names: tuple[str, ...]  # each must appear in the message
    line: int | None = None  # for TOML and UTF-8 errors: the line the message must name


Config = dict[str, Any]


def toml_text(config: Config) -> bytes:
    return "\n".join(toml_lines(config)).encode() + b"\n"


def assert_config_refused(output: str, exit_code: int, bad: BadConfig) -> None:
    assert exit_code == 2, output[:2000]
    assert "Traceback" not in output
    for name in bad.names:
        assert name in output, (name, output[:2000])
    if bad.line is not None:
        assert re.search(rf"\bat line {bad.line}\b", output), (bad.line, output[:2000])
