"""The TOML config of `ledger serve`: validation, per-connector overrides, paths."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ledger import ConfigurationError, Ledger, stuck_runs
from ledger.durations import parse_duration
from service import load_config


def test_connector_overrides_keep_global_fields_and_are_per_source(
    tmp_path: Path, ledger: Ledger
) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text(
        '[thresholds]\nstale_after = "60m"\nmax_runtime = "6h"\n'
        '[[connectors]]\nname = "api"\ntype = "csv"\nsource_id = 2\n'
        'schedule = { interval = "5m" }\nthresholds = { stale_after = "10m" }\n'
        '[[connectors]]\nname = "api"\ntype = "csv"\nsource_id = 3\n'
        'schedule = { interval = "5m" }\nthresholds = { stale_after = "3h" }\n'
    )
    loaded = load_config(config)
    overrides = loaded.overrides()
    assert overrides[("api", 2)].max_runtime == timedelta(hours=6)  # inherited
    assert overrides[("api", 2)].stale_after == timedelta(minutes=10)
    assert overrides[("api", 3)].stale_after == timedelta(hours=3)
    from freezegun import freeze_time

    from ledger.clock import utcnow

    now = utcnow()
    with freeze_time(now - timedelta(minutes=20)):
        two = ledger.start_run(2, "api")
        three = ledger.start_run(3, "api")
    found = {r.run_id for r in stuck_runs(ledger, now=now, overrides=overrides)}
    assert found == {two}
    assert three not in found


def test_absurd_durations_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="longer than 3650 days"):
        parse_duration("999999d", "stale_after")


def test_config_paths_are_relative_to_the_config_file() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "ledger.toml"
    config = load_config(example)
    path = Path(config.connectors[0].options["path"])
    assert path.is_absolute()
    assert path.exists()
