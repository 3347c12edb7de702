"""``audit`` (``audit_run`` and ``ledger audit``), on SQLite and on MariaDB: a run's timeline with
the status after each event, the silences between them and the facts that came late, and a
timeout worded as the projection words it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from freezegun import freeze_time
from sqlalchemy import update

from forensics.audit import audit_run
from forensics.verify import verify_all
from ledger import Ledger, RunFinished, RunProgressed, RunTimedOut
from ledger.durations import format_duration
from ledger.hashing import PREV_HASH, stored_row_hash
from ledger.reads import stored_rows
from ledger.schema import ledger_events
from service.api import create_app
from tests.forensics.support import history, run
from tests.service.conftest import api_client, auth
from tests.service.web.support import web_config
from tests.support import drop_triggers, restore_triggers


def test_audit_shows_the_timeline_silences_and_late_facts(ledger: Ledger, db_url: str) -> None:
    second = history(ledger)
    timeline = audit_run(ledger, second)
    assert [e.event.type for e in timeline] == [
        "RunStarted",
        "RunProgressed",
        "RunTimedOut",
        "RunProgressed",
    ]
    assert [e.status_after for e in timeline] == ["running", "running", "failed", "failed"]
    assert [e.late for e in timeline] == [False, False, False, True]
    assert all(e.hash_ok for e in timeline)
    assert timeline[2].silence_before is not None
    assert timeline[2].silence_before.days == 4
    result = run("audit", str(second), "--format", "json", "--db", db_url)
    entries = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert entries[3]["late"] is True
    assert entries[2]["summary"].startswith("stale by sweeper")
    table = run("audit", str(second), "--wide", "--db", db_url).stdout  # type: ignore[attr-defined]
    assert "LATE: after the timeout" in table
    assert "silent 4d" in table
    assert run("audit", "99", "--db", db_url).exit_code == 2  # type: ignore[attr-defined]


def test_audit_words_a_timeout_as_the_projection_does(ledger: Ledger, db_url: str) -> None:
    """The threshold and the last activity as in ``errorMessage`` and every other time shown
    to people (``1h``, ``2026-01-28 01:30:00 UTC``), not ``3600s`` and a raw ISO string with
    microseconds that an 80-column table broke mid-token."""
    second = history(ledger)
    summary = audit_run(ledger, second)[2].summary
    assert summary == "stale by sweeper, threshold 1h, last activity 2026-01-28 01:30:00 UTC"
    row = run("runs", "show", str(second), "--format", "json", "--db", db_url).stdout  # type: ignore[attr-defined]
    assert "last activity 2026-01-28 01:30:00 UTC" in json.loads(row)["errorMessage"]


def test_audit_words_any_threshold_append_accepts(ledger: Ledger, db_url: str) -> None:
    """``threshold_seconds`` is any whole number ≥ 0 at append: one past what a ``timedelta``
    holds (999,999,999 days) made ``ledger audit`` a traceback (OverflowError), and the API's
    audit and the web's run page, which share it, a 500."""
    huge = 10**14  # about 3.2 million years
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append(
        [RunTimedOut(run_id=run_id, reason="stale", detected_by="sweeper", threshold_seconds=huge)]
    )
    summary = audit_run(ledger, run_id)[1].summary
    assert summary == f"stale by sweeper, threshold {format_duration(huge)}"
    result = run("audit", str(run_id), "--db", db_url)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "threshold 1157407407d9h46m40s" in json.dumps(
        json.loads(run("audit", str(run_id), "--format", "json", "--db", db_url).stdout)  # type: ignore[attr-defined]
    )
    with api_client(db_url) as client:
        answer = client.get(f"/v1/runs/{run_id}/events", headers=auth("reader"))
    client.app.state.api.close()  # type: ignore[attr-defined]
    assert answer.status_code == 200, answer.text
    assert answer.json()[1]["summary"] == summary


def test_an_event_dated_before_its_run_started_is_flagged_everywhere(
    ledger: Ledger, db_url: str
) -> None:
    """The audit's run that finished "before it started": RunStarted at 01:00, RunProgressed at
    00:10, RunFinished at 23:00 the day before, all accepted (a spool or a skewed writer must
    not lose facts), and the audit flagged nothing (negative silences only). The two earlier
    events are flagged in the library, the table, the JSON, the API's pages (one after a
    cursor too) and the web's run page."""
    started = datetime(2026, 1, 28, 1, 0, tzinfo=UTC)
    with freeze_time(started + timedelta(minutes=1)):
        run_id = ledger.start_run(1, "SOURCE_1", occurred_at=started)
        ledger.append(
            [
                RunProgressed(
                    run_id=run_id, records_fetched=1, occurred_at=started - timedelta(minutes=50)
                ),
                RunFinished(
                    run_id=run_id, status="success", occurred_at=started - timedelta(hours=2)
                ),
            ]
        )
        timeline = audit_run(ledger, run_id)
        entries = json.loads(run("audit", str(run_id), "--format", "json", "--db", db_url).stdout)  # type: ignore[attr-defined]
        table = run("audit", str(run_id), "--wide", "--db", db_url).stdout  # type: ignore[attr-defined]
    with api_client(db_url) as client:
        first = client.get(f"/v1/runs/{run_id}/events?limit=2", headers=auth("reader"))
        cursor = first.json()[1]["position"]
        after = client.get(f"/v1/runs/{run_id}/events?cursor={cursor}", headers=auth("reader"))
    client.app.state.api.close()  # type: ignore[attr-defined]
    config = web_config(db_url, public_read=True)
    with TestClient(create_app(config), raise_server_exceptions=False) as web:
        page = web.get(f"/web/runs/{run_id}").text
    web.app.state.web.close()  # type: ignore[attr-defined]
    web.app.state.api.close()  # type: ignore[attr-defined]
    assert [e.before_start for e in timeline] == [False, True, True]
    assert [e["before_start"] for e in entries] == [False, True, True]
    assert table.count("occurred before the run started") == 2
    assert [e["before_start"] for e in first.json() + after.json()] == [False, True, True]
    assert page.count("before start</span>") == 2


def rehash_in_place(ledger: Ledger, position: int, old: str, new: str) -> None:
    """A DBA's edit of the payload at ``position`` with that row's own hash recomputed (its
    prev_hash kept): the row checks alone; only what was chained to it tells."""
    drop_triggers(ledger.engine)
    try:
        with ledger.engine.begin() as conn:
            row = list(stored_rows(conn, position - 1, 1)[0])
            assert old in row[6]
            row[6] = row[6].replace(old, new)
            conn.execute(
                update(ledger_events)
                .where(ledger_events.c.position == position)
                .values(payload=row[6], hash=stored_row_hash(row[PREV_HASH], row))
            )
    finally:
        restore_triggers(ledger.engine)


def test_a_run_s_last_event_rewritten_with_its_hash_recomputed_is_broken_in_its_audit(
    ledger: Ledger, db_url: str
) -> None:
    """The audit checked an event's hash and its link to the row before, not the row after:
    a RunFinished turned from success to failed with its hash recomputed read 'ok' (exit 0),
    the next row being another run's; and verify named that other run's row."""
    first = ledger.start_run(1, "SOURCE_1")
    finished = ledger.append([RunFinished(run_id=first, status="success")]).last_position
    second = ledger.start_run(2, "SOURCE_2")
    last = ledger.append([RunFinished(run_id=second, status="success")]).last_position
    assert all(entry.hash_ok for entry in audit_run(ledger, first))
    assert all(entry.hash_ok for entry in audit_run(ledger, second))  # its last is the head's
    rehash_in_place(ledger, finished, '"status":"success"', '"status":"failed"')
    rehash_in_place(ledger, last, '"status":"success"', '"status":"partial"')  # the head's
    # The second run's start is chained to the rewritten row: broken at its link, as before.
    for run_id, broken in ((first, [finished]), (second, [finished + 1, last])):
        result = run("audit", str(run_id), "--format", "json", "--db", db_url)
        assert result.exit_code == 1, result.output  # type: ignore[attr-defined]
        entries = json.loads(result.stdout)  # type: ignore[attr-defined]
        assert [e["position"] for e in entries if not e["hash_ok"]] == broken
    assert "BROKEN" in run("audit", str(first), "--db", db_url).stdout  # type: ignore[attr-defined]
    report = verify_all(ledger)
    assert [(p.check, p.position) for p in report.by_check("chain")] == [("chain", finished)]
    assert f"the row at {finished} was altered and its hash recomputed" in (
        report.by_check("chain")[0].message
    )
