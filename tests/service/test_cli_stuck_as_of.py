"""``ledger stuck --as-of TIME | --at-position N``: the runs stuck at a past moment, replayed
from the runs open then and judged then (silent for counts to it), by the thresholds of the
options or the config as now; ``--limit`` cuts; exit 1 when a run was stuck then. A time ahead
of the clock is now and a position past the head is the head, as for ``runs list``. On SQLite
and on MariaDB."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from freezegun import freeze_time

from ledger import Ledger, RunFinished
from service.cli import cli

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=6)
HOUR = timedelta(hours=1)


def start_at(ledger: Ledger, when: datetime, connector: str = "SOURCE_1", source: int = 1) -> int:
    with freeze_time(when):
        return ledger.start_run(source, connector, occurred_at=when)


def finish_at(ledger: Ledger, when: datetime, run_id: int) -> None:
    with freeze_time(when):
        ledger.append([RunFinished(run_id=run_id, status="success")])


def stuck_command(db_url: str, *options: str) -> Result:
    with freeze_time(NOW):
        return CliRunner().invoke(cli, ["stuck", *options, "--db", db_url, "--wide"])


def listed(result: Result) -> list[int]:
    return [run["run_id"] for run in json.loads(result.stdout)]


def table_run_ids(output: str) -> list[int]:
    firsts = [line.split()[0] for line in output.splitlines() if line.strip()]
    return [int(first) for first in firsts if first.isdigit()]


@pytest.fixture
def history(ledger: Ledger) -> dict[str, int]:
    """``ended``: silent from T0, finished at T0+3h; ``fresh``: started at T0+2h (alive then);
    ``later``: started at T0+3h, silent since (stuck now)."""
    ended = start_at(ledger, T0)
    fresh = start_at(ledger, T0 + 2 * HOUR)
    finish_at(ledger, T0 + 3 * HOUR, ended)
    later = start_at(ledger, T0 + 3 * HOUR)
    finish_at(ledger, NOW - timedelta(minutes=1), fresh)
    return {"ended": ended, "fresh": fresh, "later": later}


def test_a_run_stuck_then_and_finished_since_is_listed_as_of_then_and_not_now(
    db_url: str, history: dict[str, int]
) -> None:
    now = stuck_command(db_url, "--format", "json")
    assert now.exit_code == 1, now.output
    assert listed(now) == [history["later"]]
    then = stuck_command(db_url, "--as-of", "2026-03-02T02:30:00Z", "--format", "json")
    assert then.exit_code == 1, then.output
    assert listed(then) == [history["ended"]]  # not "later": it started after that moment
    assert json.loads(then.stdout)[0]["last_event_at"] == "2026-03-02T00:00:00.000000Z"


def test_the_table_says_the_moment_and_counts_silence_to_it(
    db_url: str, history: dict[str, int]
) -> None:
    then = stuck_command(db_url, "--as-of", "2026-03-02T02:30:00")  # no zone: UTC
    assert then.exit_code == 1, then.output
    assert "as of 2026-03-02 02:30:00 UTC (position 2): silent until then" in then.output
    assert "stuck runs then: 1 run(s)" in then.output
    assert table_run_ids(then.output) == [history["ended"]]
    row = next(line for line in then.output.splitlines() if line.startswith(str(history["ended"])))
    assert " 2h30m " in row  # to the moment, not to now (6h)


def test_an_offset_is_the_same_moment_in_utc(db_url: str, history: dict[str, int]) -> None:
    for text in ("2026-03-02T04:30:00+02:00", "2026-03-01T21:30:00-05:00"):
        then = stuck_command(db_url, "--as-of", text, "--format", "json")
        assert listed(then) == [history["ended"]], text
        assert "02:30:00" in stuck_command(db_url, "--as-of", text).output


def test_at_a_position_the_runs_are_judged_when_it_was_recorded(
    db_url: str, ledger: Ledger, history: dict[str, int]
) -> None:
    # Position 2 is "fresh"'s RunStarted, recorded at T0+2h: "ended" silent for 2h then.
    at_two = stuck_command(db_url, "--at-position", "2")
    assert at_two.exit_code == 1, at_two.output
    assert table_run_ids(at_two.output) == [history["ended"]]
    assert "as of 2026-03-02 02:00:00 UTC (position 2)" in at_two.output
    # Position 1, recorded at T0: "ended" had just started, no one was stuck.
    at_one = stuck_command(db_url, "--at-position", "1", "--format", "json")
    assert at_one.exit_code == 0, at_one.output
    assert listed(at_one) == []


def test_nothing_was_stuck_before_the_first_event_or_at_position_0(
    db_url: str, history: dict[str, int]
) -> None:
    for options in (("--at-position", "0"), ("--as-of", "2020-01-01T00:00:00Z")):
        result = stuck_command(db_url, *options, "--format", "json")
        assert result.exit_code == 0, (options, result.output)
        assert listed(result) == []
        table = stuck_command(db_url, *options)
        assert table.exit_code == 0
        assert "(position 0)" in table.output


def test_a_future_time_is_now_and_a_position_past_the_head_is_the_head(
    db_url: str, ledger: Ledger, history: dict[str, int]
) -> None:
    """As ``runs list --as-of`` reads them: no error, the ledger as it stands."""
    head = ledger.head().last_position
    future = stuck_command(db_url, "--as-of", "2999-01-01T00:00:00Z", "--format", "json")
    assert future.exit_code == 1, future.output
    assert listed(future) == [history["later"]]  # judged now, not in 2999 (every run stuck)
    assert f"(position {head})" in stuck_command(db_url, "--as-of", "2999-01-01").output
    huge = stuck_command(db_url, "--at-position", "9223372036854775807")
    assert huge.exit_code == 1, huge.output
    # Judged when the head was recorded (NOW - 1m): "later" silent for 2h59m then.
    assert f"(position {head})" in huge.output
    assert table_run_ids(huge.output) == [history["later"]]


def test_each_connectors_thresholds_apply_as_of_a_moment(
    db_url: str, ledger: Ledger, tmp_path: Path
) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text(
        '[thresholds]\nstale_after = "60m"\n'
        '[[connectors]]\nname = "backfill"\ntype = "csv"\nsource_id = 1\n'
        'schedule = { interval = "1d" }\noptions = { path = "x.csv" }\n'
        'thresholds = { stale_after = "6h" }\n'
    )
    patient = start_at(ledger, T0, "backfill", 1)
    other = start_at(ledger, T0, "backfill", 2)  # not configured: the global 60m
    finish_at(ledger, T0 + 4 * HOUR, patient)
    finish_at(ledger, T0 + 4 * HOUR, other)
    with_config = ["--config", str(config), "--format", "json"]
    then = stuck_command(db_url, "--as-of", "2026-03-02T03:00:00Z", *with_config)
    assert then.exit_code == 1, then.output
    assert listed(then) == [other]
    forced = stuck_command(db_url, "--as-of", "2026-03-02T03:00:00Z", "--older-than", "2h")
    assert table_run_ids(forced.output) == [patient, other]
    patient_too = stuck_command(
        db_url, "--as-of", "2026-03-02T03:00:00Z", "--older-than", "2h", *with_config
    )
    assert listed(patient_too) == [patient, other]  # --older-than replaces every threshold
    assert stuck_command(db_url, "--format", "json", *with_config).exit_code == 0  # both ended


def test_a_limit_cuts_the_runs_of_a_moment(db_url: str, ledger: Ledger) -> None:
    runs = [start_at(ledger, T0 + i * timedelta(minutes=1)) for i in range(5)]
    for run_id in runs:
        finish_at(ledger, T0 + 4 * HOUR, run_id)
    at = ("--as-of", "2026-03-02T03:00:00Z")
    table = stuck_command(db_url, *at, "--limit", "2")
    assert table.exit_code == 1, table.output
    assert table_run_ids(table.output) == runs[:2]
    assert "stuck runs then: 5 run(s)" in table.output
    assert "… and 3 more: --limit 0 shows every one" in table.output
    cut = stuck_command(db_url, *at, "--limit", "2", "--format", "json")
    assert listed(cut) == runs[:2]
    every = stuck_command(db_url, *at, "--format", "json")
    assert listed(every) == runs
    assert table_run_ids(stuck_command(db_url, *at, "--limit", "0").output) == runs


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (("--as-of", "2026-03-02T03:00:00Z", "--at-position", "3"), "--at-position"),
        (("--as-of", "yesterday"), "--as-of"),
        (("--as-of", "2026-13-01"), "--as-of"),
        (("--as-of", "2026-03-02T03:00:00+24:00"), "--as-of"),
        (("--as-of", ""), "--as-of"),
        (("--at-position", "-1"), "--at-position"),
        (("--at-position", "x"), "--at-position"),
        (("--at-position", "9223372036854775808"), "--at-position"),
    ],
)
def test_a_bad_moment_is_the_callers_mistake_naming_the_option(
    db_url: str, options: tuple[str, ...], named: str
) -> None:
    result = stuck_command(db_url, *options)
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert "Traceback" not in result.output
