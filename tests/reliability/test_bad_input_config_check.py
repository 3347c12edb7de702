"""``ledger config check FILE`` refuses every generated bad config file naming the key: hypothesis
writes config files with one defect (wrong types, unknown keys and connector options, zero or
negative intervals, bad durations, database URLs, crontabs and ranges, invalid TOML, invalid
UTF-8); each exits 2 naming the key (``connectors[0].schedule.interval``) or, for TOML and
UTF-8 errors, the line, and no database is created."""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reliability.bad_input_support import (
    FINITE_FLOATS,
    HYPOTHESIS_SETTINGS,
    INVALID_UTF8,
    SMALL_LISTS,
    SMALL_OBJECTS,
    BadConfig,
    Config,
    KeyPath,
    assert_config_refused,
    base_config,
    run_cli,
    set_at,
    toml_lines,
    toml_text,
)
from tests.reliability.summary import Summary

CONFIG_EXAMPLES = 400


def key_name(path: tuple[str | int, ...], config: Config) -> str:
    """How a config problem names a key: ``connectors[0].schedule.interval``; a key inside a
    connector names the connector too, by the name and source its table (in ``config``, as
    written) gives, each left out when it is not text or an integer or is the key itself:
    ``connectors[0] ('stations-csv', source 1).schedule.interval``."""
    text = ""
    for number, part in enumerate(path):
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
        if number == 1 and path[0] == "connectors" and len(path) > 2:
            table = config["connectors"][part]
            named = []
            if isinstance(table.get("name"), str) and path[2] != "name":
                named.append(repr(table["name"]))
            source = table.get("source_id")
            if type(source) is int and path[2] != "source_id":
                named.append(f"source {source}")
            text += f" ({', '.join(named)})" if named else ""
    return text


TYPED_KEYS: dict[KeyPath, str] = {
    ("database_url",): "str",
    ("thresholds",): "table",
    ("thresholds", "stale_after"): "duration",
    ("thresholds", "max_runtime"): "duration",
    ("sweeper",): "table",
    ("sweeper", "interval"): "duration",
    ("projector", "interval"): "duration",
    ("projector", "batch_size"): "int",
    ("spool", "dir"): "str",
    ("spool", "flush_interval"): "duration",
    ("serve", "grace_period"): "duration",
    ("serve", "metrics_port"): "int",
    ("serve", "progress_interval"): "duration",
    ("serve", "heartbeat_interval"): "duration",
    ("connectors",): "list",
    ("connectors", 0): "table",
    ("connectors", 0, "name"): "str",
    ("connectors", 0, "type"): "str",
    ("connectors", 0, "source_id"): "int",
    ("connectors", 0, "schedule"): "table",
    ("connectors", 0, "schedule", "interval"): "duration",
    ("connectors", 0, "options"): "table",
    ("connectors", 0, "thresholds", "stale_after"): "duration",
    ("connectors", 0, "enabled"): "bool",
    ("connectors", 1, "schedule", "cron"): "str",
    ("connectors", 1, "source_id"): "int",
    ("connectors", 1, "enabled"): "bool",
    ("connectors", 1, "thresholds", "max_runtime"): "duration",
}
DURATION_KEYS = [path for path, kind in TYPED_KEYS.items() if kind == "duration"]
INT64 = st.integers(-(2**63), 2**63 - 1)  # TOML's integers
TOML_DATES = st.one_of(st.datetimes(timezones=st.none() | st.just(UTC)), st.dates(), st.times())
CONFIG_WRONG_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "int": st.one_of(
        st.text(max_size=8), FINITE_FLOATS, st.booleans(), SMALL_LISTS, SMALL_OBJECTS, TOML_DATES
    ),
    "str": st.one_of(
        INT64,
        FINITE_FLOATS,
        st.booleans(),
        SMALL_LISTS,
        SMALL_OBJECTS,
        TOML_DATES,
    ),
    "duration": st.one_of(
        INT64,
        FINITE_FLOATS,
        st.booleans(),
        SMALL_LISTS,
        SMALL_OBJECTS,
        TOML_DATES,
    ),
    "bool": st.one_of(
        st.integers(0, 1), st.sampled_from(["true", "yes", "on"]), FINITE_FLOATS, SMALL_LISTS
    ),
    "table": st.one_of(INT64, st.text(max_size=8), st.booleans(), SMALL_LISTS),
    "list": st.one_of(INT64, st.text(max_size=8), st.booleans(), SMALL_OBJECTS),
}
_DURATION = re.compile(r"(?:\d+[smhdw])+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def is_valid_duration(text: str) -> bool:
    """The README's durations: ``90s``, ``15m``, ``1h30m``; above zero, at most ten years."""
    compact = text.strip().lower().replace(" ", "")
    if not _DURATION.fullmatch(compact):
        return False
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in re.findall(r"(\d+)([smhdw])", compact))
    return 0 < seconds <= 3650 * 86400


BAD_DURATIONS = st.one_of(
    st.sampled_from(
        [
            "0s",
            "0m",
            "0",
            "-5m",
            "-1s",
            "5 parsecs",
            "",
            "fast",
            "1.5h",
            "15",
            "m",
            "99999d",
            "3651d",
            "1h-5m",
            "PT5M",
            "∞",
        ]
    ),
    st.text(max_size=10).filter(lambda text: not is_valid_duration(text)),
)
BAD_URLS = st.sampled_from(
    [
        "",
        "not a url",
        "postgresql://app:secret@db/ledger",
        "mysql://app@db/ledger",
        "mysql+mysqlconnector://app@db/ledger",
        "oracle://app@db/ledger",
        "mysql+pymysql://app:p@ss@db/ledger",
        "mysql+pymysql://app@db:notaport/ledger",
        "sqlite//ledger.db",
        "sqlite+pysqlcipher:///ledger.db",
        "http://example.com/ledger",
        "://",
    ]
)
BAD_CRONTABS = st.sampled_from(
    [
        "* * *",
        "61 * * * *",
        "",
        "every day",
        "* * * * * *",
        "*/0 * * * *",
        "0 25 * * *",
        "0 0 32 * *",
        "0 0 * 13 *",
        "0 0 * * 8",
    ]
)
KNOWN_KEYS: dict[KeyPath, set[str]] = {
    (): {"database_url", "thresholds", "sweeper", "projector", "spool", "serve", "connectors"},
    ("thresholds",): {"stale_after", "max_runtime"},
    ("sweeper",): {"interval"},
    ("projector",): {"interval", "batch_size"},
    ("spool",): {"dir", "flush_interval"},
    ("serve",): {
        "grace_period",
        "metrics_port",
        "progress_interval",
        "heartbeat_interval",
        "run_at_start",
    },
    ("connectors", 0): {
        "name",
        "type",
        "source_id",
        "schedule",
        "options",
        "thresholds",
        "enabled",
    },
    ("connectors", 0, "schedule"): {"interval", "cron", "run_at_start"},
    ("connectors", 1, "thresholds"): {"stale_after", "max_runtime"},
    ("connectors", 0, "options"): {"path", "key", "batch_size"},
    ("connectors", 1, "options"): {
        "url",
        "key",
        "records_path",
        "page_param",
        "next_path",
        "first_page",
        "timeout",
        "retries",
        "backoff",
        "max_pages",
        "single_page",
    },
}
CONFIG_KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
BROKEN_TOML_LINES = [
    "broken = ",
    '"unterminated = 1',
    'broken = "unterminated',
    "[table",
    "= 5",
    "broken = 1 2",
    "broken = tru",
    "broken = 1979-13-45",
    "broken = {a = 1",
    "broken..key = 1",
    "broken = 0x",
    "broken = 'single",
]
# A defect of the config's values: changes the config, returns what the message must contain.
ValueDefect = Callable[[st.DrawFn, Config], tuple[str, ...]]


def key_problem(path: KeyPath, config: Config) -> str:
    """The start of a problem about one key, as ``ledger config check`` lists it."""
    return key_name(path, config) + ":"


def wrong_type_in_config(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    path = draw(st.sampled_from(sorted(TYPED_KEYS, key=str)))
    set_at(config, path, draw(CONFIG_WRONG_VALUES[TYPED_KEYS[path]]))
    return (key_problem(path, config),)


def unknown_key_in_config(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    table_path = draw(st.sampled_from(sorted(KNOWN_KEYS, key=str)))
    key = draw(CONFIG_KEYS.filter(lambda k: k not in KNOWN_KEYS[table_path]))
    set_at(config, (*table_path, key), draw(INT64 | st.text(max_size=5)))
    if table_path[-1:] == ("options",):  # a connector's options: its constructor's arguments
        return (key_problem(table_path, config), key)
    return (key_problem((*table_path, key), config),)


def missing_key_in_config(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    field = draw(st.sampled_from(["name", "type", "source_id", "schedule"]))
    del config["connectors"][0][field]
    return (key_problem(("connectors", 0, field), config),)


def bad_duration_in_config(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    path = draw(st.sampled_from(DURATION_KEYS))
    durations = BAD_DURATIONS
    if path == ("serve", "progress_interval"):  # zero is allowed there: every call reports
        durations = BAD_DURATIONS.filter(lambda v: v.strip().rstrip("smhdw") != "0")
    set_at(config, path, draw(durations))
    return (key_problem(path, config),)


def bad_url_in_config(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    config["database_url"] = draw(BAD_URLS)
    return (key_problem(("database_url",), config),)


RANGES: dict[KeyPath, st.SearchStrategy[int]] = {
    ("connectors", 0, "source_id"): st.integers(-(2**63), -1) | st.integers(2**31, 2**63 - 1),
    ("projector", "batch_size"): st.integers(-(2**63), 0) | st.integers(100_001, 2**63 - 1),
    ("serve", "metrics_port"): st.integers(-(2**63), 0) | st.integers(65_536, 2**63 - 1),
}


def out_of_range_in_config(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    path = draw(st.sampled_from(sorted(RANGES, key=str)))
    set_at(config, path, draw(RANGES[path]))
    return (key_problem(path, config),)


def bad_cron_in_config(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    config["connectors"][1]["schedule"]["cron"] = draw(BAD_CRONTABS)
    return (key_problem(("connectors", 1, "schedule", "cron"), config),)


def bad_schedule_shape(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    both = {"interval": "5m", "cron": "*/5 * * * *"}
    config["connectors"][0]["schedule"] = draw(st.sampled_from([{}, both]))
    return (key_problem(("connectors", 0, "schedule"), config), "exactly one")


def bad_connector_type(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    known = ("csv", "http-json")
    config["connectors"][0]["type"] = draw(st.text(max_size=10).filter(lambda t: t not in known))
    return (key_problem(("connectors", 0, "type"), config),)


def bad_connector_name(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    config["connectors"][0]["name"] = draw(st.just("") | st.text(min_size=101, max_size=120))
    return (key_problem(("connectors", 0, "name"), config),)


def duplicate_connector(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    config["connectors"][1] = copy.deepcopy(config["connectors"][0])
    return (key_problem(("connectors",), config), "configured twice")


def nul_in_csv_path(draw: st.DrawFn, config: Config) -> tuple[str, ...]:
    config["connectors"][0]["options"]["path"] = draw(st.sampled_from(["\0", "a\0.csv"]))
    return (key_problem(("connectors", 0, "options", "path"), config),)


VALUE_DEFECTS: dict[str, ValueDefect] = {
    "wrong type": wrong_type_in_config,
    "unknown key or option": unknown_key_in_config,
    "missing key": missing_key_in_config,
    "bad duration": bad_duration_in_config,
    "bad database URL": bad_url_in_config,
    "out of range": out_of_range_in_config,
    "bad crontab": bad_cron_in_config,
    "interval and cron": bad_schedule_shape,
    "unknown connector type": bad_connector_type,
    "bad connector name": bad_connector_name,
    "connector twice": duplicate_connector,
    "NUL in a path": nul_in_csv_path,
}


def toml_syntax_error(draw: st.DrawFn, lines: list[bytes]) -> tuple[tuple[str, ...], int]:
    index = draw(st.integers(0, len(lines)))
    lines.insert(index, draw(st.sampled_from(BROKEN_TOML_LINES)).encode())
    return ("not valid TOML",), index + 1


def toml_key_twice(draw: st.DrawFn, lines: list[bytes]) -> tuple[tuple[str, ...], int]:
    index = draw(st.sampled_from([i for i, line in enumerate(lines) if b" = " in line]))
    lines.insert(index + 1, lines[index])
    return ("not valid TOML",), index + 2


def config_not_utf8(draw: st.DrawFn, lines: list[bytes]) -> tuple[tuple[str, ...], int]:
    index = draw(st.sampled_from([i for i, line in enumerate(lines) if b'= "' in line]))
    lines[index] = lines[index].replace(b'= "', b'= "' + draw(INVALID_UTF8), 1)
    return ("UTF-8",), index + 1


TextDefect = Callable[[st.DrawFn, list[bytes]], tuple[tuple[str, ...], int]]
TEXT_DEFECTS: dict[str, TextDefect] = {
    "TOML syntax": toml_syntax_error,
    "TOML key twice": toml_key_twice,
    "invalid UTF-8": config_not_utf8,
}
CONFIG_DEFECT_KINDS = sorted([*VALUE_DEFECTS, *TEXT_DEFECTS])


@st.composite
def bad_configs(draw: st.DrawFn, database_url: str) -> BadConfig:
    """The valid base config with one defect of its values, or of its text."""
    config = base_config(database_url)
    kind = draw(st.sampled_from(CONFIG_DEFECT_KINDS))
    if kind in VALUE_DEFECTS:
        names = VALUE_DEFECTS[kind](draw, config)
        return BadConfig(kind, toml_text(config), names)
    lines = [line.encode() for line in toml_lines(config)]
    names, line = TEXT_DEFECTS[kind](draw, lines)
    return BadConfig(kind, b"\n".join(lines) + b"\n", names, line)


def test_every_generated_bad_config_is_refused_by_key(tmp_path: Path, reliability: Summary) -> None:
    database_url = f"sqlite:///{tmp_path / 'never-created.db'}"
    path = tmp_path / "ledger.toml"
    path.write_bytes(toml_text(base_config(database_url)))
    (tmp_path / "stations.csv").write_text("id\n1\n")  # config check looks for the csv file
    valid = run_cli("config", "check", str(path))
    assert valid.exit_code == 0, valid.output  # the base is valid: each refusal is the defect's
    checked: Counter[str] = Counter()

    @settings(HYPOTHESIS_SETTINGS, max_examples=CONFIG_EXAMPLES)
    @given(bad=bad_configs(database_url))
    def check_is_refused(bad: BadConfig) -> None:
        path.write_bytes(bad.content)
        result = run_cli("config", "check", str(path))
        assert_config_refused(result.stderr, result.exit_code, bad)
        assert result.stdout == ""
        checked[bad.kind] += 1

    check_is_refused()
    assert not (tmp_path / "never-created.db").exists()
    assert set(checked) == set(CONFIG_DEFECT_KINDS)
    files = sum(checked.values())
    reliability.record(
        "bad input: config check",
        "—",
        f"{files:,} generated config files, {len(checked)} defect kinds (wrong types, unknown "
        "keys and connector options, zero/negative/garbage durations, bad URLs, crontabs and "
        "ranges, invalid TOML, invalid UTF-8)",
        f"{files:,} exit 2 naming the key (or the line), no traceback, no database created",
    )
