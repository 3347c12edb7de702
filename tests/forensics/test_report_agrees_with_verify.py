"""The proof report against a DBA who edits tables around the ledger, on SQLite and on MariaDB:
whatever ``ledger verify`` finds fails the report too, beside the section that read the edited
table (an edited transition in section D, a registry hiding a stuck run from section E, a
dropped trigger that no section shows); and the chain's condition says that a history rewritten
with its hashes recomputed passes without an anchor, and fails with one (``report --anchor``).
Before, each of these printed "Result: 5/5 conditions pass" and exited 0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from freezegun import freeze_time
from sqlalchemy import Connection, update

from forensics.anchors import current_anchor
from ledger import Ledger, RunFinished, RunProgressed
from ledger.hashing import HASH, POSITION, PREV_HASH, stored_row_hash
from ledger.reads import stored_rows
from ledger.schema import GENESIS_HASH, ledger_events, ledger_head, ledger_runs
from projections import Projector, rebuild
from projections.schema import ingestion_run_transitions
from service.cli import cli
from tests.support import drop_triggers, restore_triggers

VERIFY = "ledger verify finds no problem"
IN_SYNC = "projection in sync with the ledger"
STUCK = "no stuck runs"
CHAIN = "hash chain verifies"


def report(db_url: str, *options: str) -> tuple[Result, dict[str, dict[str, Any]]]:
    result = CliRunner().invoke(cli, ["report", "--format", "json", *options, "--db", db_url])
    conditions = {c["name"]: c for c in json.loads(result.stdout)["conditions"]}
    return result, conditions


def honest_ledger(ledger: Ledger) -> tuple[int, int]:
    """A finished run, then one left open long enough ago to be stuck now; projected. Returns
    (the finished run, the open run)."""
    with freeze_time("2026-01-28 01:00:00"):
        done = ledger.start_run(1, "SOURCE_1")
        ledger.append([RunProgressed(run_id=done, records_fetched=4, records_created=4)])
        ledger.append([RunFinished(run_id=done, status="success")])
        left_open = ledger.start_run(2, "SOURCE_2")
    Projector(ledger).run_once()
    return done, left_open


def edit(ledger: Ledger, statement: Any) -> None:
    """``statement`` run as a DBA would, around the library."""
    with ledger.engine.begin() as conn:
        conn.execute(statement)


def test_an_edited_transition_fails_the_report_naming_it(ledger: Ledger, db_url: str) -> None:
    """Section D counts transitions by actor: the sweeper's transition given to an operator
    read 'operators: 1 to failed' beside 5/5 PASS."""
    done, _ = honest_ledger(ledger)
    position = ledger.read_run(done, 0, 10)[-1].position  # its RunFinished: to success
    edit(
        ledger,
        update(ingestion_run_transitions)
        .where(ingestion_run_transitions.c.position == position)
        .values(actor="operator:alice"),
    )
    result, conditions = report(db_url)
    assert result.exit_code == 1, result.output
    assert not conditions[IN_SYNC]["passed"]
    assert (
        f"ingestion_run_transitions position {position}: actor is 'operator:alice'"
        in (conditions[IN_SYNC]["detail"])
    )
    assert not conditions[VERIFY]["passed"]
    assert "[transitions]" in conditions[VERIFY]["detail"]


def test_a_registry_that_hides_a_stuck_run_fails_the_report(ledger: Ledger, db_url: str) -> None:
    """Section E reads the stuck runs from ``ledger_runs``: a run set to finished there by
    hand vanished from it, and 'no stuck runs' passed while the run was silent for days."""
    _, left_open = honest_ledger(ledger)
    with freeze_time("2026-01-28 02:00:00"):
        done_after = ledger.start_run(3, "SOURCE_3")  # the latest run is terminal
        ledger.append([RunFinished(run_id=done_after, status="success")])
    Projector(ledger).run_once()
    with freeze_time("2026-01-30 00:00:00"):
        _, conditions = report(db_url)
        assert not conditions[STUCK]["passed"]  # honest: run 2 is stuck
        edit(
            ledger,
            update(ledger_runs).where(ledger_runs.c.run_id == left_open).values(state="finished"),
        )
        result, conditions = report(db_url)
    assert result.exit_code == 1, result.output
    stuck = conditions[STUCK]
    assert not stuck["passed"]
    assert "the run registry they are read from disagrees" in stuck["detail"]
    assert f"run {left_open}: ledger_runs.state is 'finished'" in stuck["detail"]
    assert not conditions[VERIFY]["passed"]


def test_a_dropped_trigger_fails_the_report(ledger: Ledger, db_url: str) -> None:
    honest_ledger(ledger)
    with freeze_time("2026-01-28 01:10:00"):  # before the open run is stuck
        _, conditions = report(db_url)
        assert conditions[VERIFY]["passed"], conditions[VERIFY]
        assert "triggers checked" in conditions[VERIFY]["detail"]
        drop_triggers(ledger.engine)
        try:
            result, conditions = report(db_url)
        finally:
            restore_triggers(ledger.engine)
    assert result.exit_code == 1, result.output
    assert not conditions[VERIFY]["passed"]
    assert (
        "trigger ledger_events_no_update on ledger_events is missing"
        in (conditions[VERIFY]["detail"])
    )
    assert "[triggers]" in result.stdout


def rewrite_history(ledger: Ledger, position: int) -> None:
    """What a DBA who knows the hash scheme does: edit the payload at ``position``, recompute
    every hash from there on and set the head to the new last hash."""
    drop_triggers(ledger.engine)
    try:
        with ledger.engine.begin() as conn:
            rows = [list(row) for row in stored_rows(conn, 0, 10_000)]
            payload = rows[position - 1][6].replace('"records_fetched":4', '"records_fetched":400')
            assert payload != rows[position - 1][6]
            rows[position - 1][6] = payload
            _rechain(conn, rows)
    finally:
        restore_triggers(ledger.engine)
    rebuild(ledger)


def _rechain(conn: Connection, rows: list[list[Any]]) -> None:
    prev = GENESIS_HASH
    for row in rows:
        row[PREV_HASH] = prev
        row[HASH] = stored_row_hash(prev, row)
        conn.execute(
            update(ledger_events)
            .where(ledger_events.c.position == row[POSITION])
            .values(payload=row[6], prev_hash=row[PREV_HASH], hash=row[HASH])
        )
        prev = row[HASH]
    conn.execute(update(ledger_head).values(last_hash=prev))


def test_a_rewritten_history_passes_the_chain_alone_and_fails_an_anchor(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    """Without an anchor the report cannot see a history rewritten with every hash
    recomputed, and now says so; ``report --anchor FILE`` fails it, as ``verify --anchor``."""
    honest_ledger(ledger)
    anchors = tmp_path / "anchors.txt"
    anchors.write_text(current_anchor(ledger).line() + "\n")
    with freeze_time("2026-01-28 01:10:00"):
        _, conditions = report(db_url, "--anchor", str(anchors))
        assert conditions[CHAIN]["passed"]
        assert "1 anchor(s) held" in conditions[CHAIN]["detail"]
        rewrite_history(ledger, 2)  # the first run's RunProgressed
        _, conditions = report(db_url)
        assert conditions[CHAIN]["passed"]  # nothing in the database tells
        assert conditions[VERIFY]["passed"]
        assert (
            "no anchor given: a history rewritten with its hashes recomputed"
            in (conditions[CHAIN]["detail"])
        )
        result, conditions = report(db_url, "--anchor", str(anchors))
        assert result.exit_code == 1, result.output
        assert not conditions[CHAIN]["passed"]
        assert f"anchor {anchors}:1: position 4 hash" in conditions[CHAIN]["detail"]
        assert (
            "the history up to that position is not the one anchored"
            in (conditions[CHAIN]["detail"])
        )
        # As of a past position the anchors are checked too; a malformed one is exit 2.
        result, conditions = report(db_url, "--at-position", "3", "--anchor", str(anchors))
        assert result.exit_code == 1
        assert not conditions[CHAIN]["passed"]
        bad = CliRunner().invoke(cli, ["report", "--expect-head", "3:ab", "--db", db_url])
        assert bad.exit_code == 2
        assert "--expect-head '3:ab'" in bad.output


def test_an_honest_ledger_passes_the_new_condition(ledger: Ledger, db_url: str) -> None:
    """No false alarm: an empty ledger and an honest one with an open run pass verify's
    condition (the empty one fails only the conditions about runs, as before)."""
    result, conditions = report(db_url)
    assert conditions[VERIFY]["passed"], conditions
    assert conditions[CHAIN]["passed"], conditions
    honest_ledger(ledger)
    with freeze_time("2026-01-28 01:10:00"):
        result, conditions = report(db_url)
    assert result.exit_code == 1  # run 2, still open, is the latest run
    assert [name for name, c in conditions.items() if not c["passed"]] == [
        "latest run terminal with completedAt"
    ]
