"""``ledger serve --config BAD`` exits 2 naming the key (or the line) before it touches the
database, on SQLite and on MariaDB: every table's row count and the head stay as they were, and
a SQLite file named in the bad config is never created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ledger import Ledger
from tests.reliability.bad_input_support import (
    BadConfig,
    KeyPath,
    assert_config_refused,
    base_config,
    seed,
    set_at,
    store_state,
    toml_text,
)
from tests.reliability.summary import Summary

REPO = Path(__file__).resolve().parents[2]


SERVE_CASES: dict[str, tuple[KeyPath, Any, tuple[str, ...]]] = {
    "wrong type": (("projector", "batch_size"), "1000", ("projector.batch_size:",)),
    "unknown key": (("sweeper", "intervall"), "5m", ("sweeper.intervall:",)),
    "zero interval": (("sweeper", "interval"), "0s", ("sweeper.interval:",)),
    "negative interval": (
        ("connectors", 0, "schedule", "interval"),
        "-5m",
        ("connectors[0] ('stations-csv', source 1).schedule.interval:",),
    ),
    "unknown option": (
        ("connectors", 0, "options", "pth"),
        "x.csv",
        ("connectors[0] ('stations-csv', source 1).options:",),
    ),
    "bad URL": (("database_url",), "postgresql://app:secret@db/ledger", ("database_url:",)),
    "bad crontab": (
        ("connectors", 1, "schedule", "cron"),
        "61 * * * *",
        ("connectors[1] ('stations-api', source 2).schedule.cron:",),
    ),
}


def serve_once(config: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "LEDGER_DATABASE_URL"}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from service.cli import main; main()",
            "serve",
            "--config",
            str(config),
        ],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,  # a serve that started despite the bad config
        check=False,
    )


def test_serve_refuses_a_bad_config_before_touching_the_database(
    ledger: Ledger, db_url: str, backend: str, tmp_path: Path, reliability: Summary
) -> None:
    seed(ledger)
    before = store_state(ledger)
    fresh = tmp_path / "fresh.db"
    path = tmp_path / "ledger.toml"
    bad_configs: list[BadConfig] = []
    for kind, (key, value, names) in SERVE_CASES.items():
        for database_url in (db_url, f"sqlite:///{fresh}"):
            config = base_config(database_url)
            set_at(config, key, value)
            bad_configs.append(BadConfig(kind, toml_text(config), names))
    url_line = f'database_url = "{db_url}"\n'.encode()
    bad_configs += [
        BadConfig("invalid TOML", url_line + b"[sweeper\n", ("not valid TOML",), 2),
        BadConfig("invalid UTF-8", url_line + b'x = "\xff"\n', ("UTF-8",), 2),
    ]
    for bad in bad_configs:
        path.write_bytes(bad.content)
        result = serve_once(path)
        assert_config_refused(result.stderr, result.returncode, bad)
        assert store_state(ledger) == before, bad.kind
        assert not fresh.exists(), bad.kind
    reliability.record(
        "bad input: serve --config",
        backend,
        f"{len(bad_configs)} `ledger serve` processes on bad configs ({len(SERVE_CASES)} kinds "
        "on this database and on a SQLite file not yet created; invalid TOML; invalid UTF-8)",
        f"{len(bad_configs)} exit 2 naming the key or line, no traceback; every table's row "
        "count and the head unchanged, the new SQLite file never created",
    )
