"""The projection's commands on both databases: ``ledger rebuild`` and ``ledger status`` (the
lag before and after), and an event the projector cannot apply stopping ``ledger project``,
shown by ``status``, skipped with a reason and an actor."""

from __future__ import annotations

import json

from ledger import Ledger
from tests.service.support import SAMPLE, run


def test_rebuild_and_status(db_url: str) -> None:
    run("append", str(SAMPLE), "--db", db_url)
    status = json.loads(run("status", "--format", "json", "--db", db_url).stdout)
    assert (status["head_position"], status["open_runs"]) == (7, 0)
    assert status["projections"][0]["lag_events"] == 7
    result = run("rebuild", "--batch-size", "2", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "rebuilt ingestion_runs: 7 event(s), 2 run(s)" in result.stdout
    assert "replayed 7/7 events" in result.stderr
    status = json.loads(run("status", "--format", "json", "--db", db_url).stdout)
    assert status["projections"][0]["lag_events"] == 0
    text = run("status", "--db", db_url).stdout
    assert "checkpoint 7, lag 0 event(s)" in text


def test_poison_event_skip_through_the_cli(ledger: Ledger, db_url: str) -> None:
    from tests.projection_support import append_raw

    run_id = ledger.start_run(1, "SOURCE_1")
    poison = append_raw(ledger, run_id, "RunPaused", "{}")
    stopped = run("project", "--db", db_url)
    assert stopped.exit_code == 1
    assert f"cannot project position {poison} (RunPaused)" in stopped.stderr
    status = run("status", "--db", db_url).stdout
    assert f"STOPPED at position {poison} (RunPaused)" in status
    no_reason = run("project", "--skip-position", str(poison), "--db", db_url)
    assert no_reason.exit_code == 2
    for nobody in ("", "operator:"):  # an operator's act by no one (issue 15)
        unnamed = run(
            "project", "--skip-position", str(poison), "--reason", "r", "--actor", nobody,
            "--db", db_url,
        )  # fmt: skip
        assert unnamed.exit_code == 2, unnamed.output
        assert "names no one" in unnamed.stderr
        assert f"STOPPED at position {poison}" in run("status", "--db", db_url).stdout
    skipped = run(
        "project",
        "--skip-position",
        str(poison),
        "--reason",
        "from a newer writer",
        "--actor",
        "operator:al",
        "--db",
        db_url,
    )
    assert skipped.exit_code == 0, skipped.output
    assert f"checkpoint at {poison}" in skipped.stdout
    status = run("status", "--db", db_url).stdout
    assert "STOPPED" not in status
    assert f"skipped position {poison} (RunPaused) by operator:al" in status


def test_a_skips_reason_or_actor_without_its_position_is_refused(db_url: str) -> None:
    """``ledger project --reason poison`` (``--skip-position`` forgotten) dropped the reason
    without a word and applied every pending event, the poison one included; ``--skip-position``
    without ``--reason`` was refused. Each half of a skip needs the other: exit 2, nothing
    applied."""
    run("append", str(SAMPLE), "--db", db_url)
    for args in (["--reason", "poison"], ["--actor", "alice"], ["--reason", "x", "--actor", "a"]):
        result = run("project", *args, "--db", db_url)
        assert result.exit_code == 2, (args, result.output)
        assert "go with --skip-position" in result.stderr, (args, result.stderr)
    status = json.loads(run("status", "--format", "json", "--db", db_url).stdout)
    assert status["projections"][0]["lag_events"] == 7  # nothing applied
