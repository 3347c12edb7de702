"""The audit in pages, on SQLite and on MariaDB: ``audit_page`` from a given event with the
state before it, ``GET /v1/runs/{id}/events`` paged like ``GET /v1/runs`` (``limit``,
``cursor``, ``Link: <…>; rel="next"``) and the web's run page in parts. Every event comes
exactly once, in order, with the status after it, the silence before it and the late flag
as the whole timeline has them, across page boundaries."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from freezegun import freeze_time

from forensics.audit import audit_page, audit_run, iter_audit
from ledger import Ledger, RunFinished, RunProgressed, RunTimedOut, UnknownRunError
from ledger.errors import ValidationError
from tests.forensics.support import run
from tests.service.conftest import api_client, auth
from tests.service.web.support import log_in, web_config

READ = auth("reader")


def long_run(ledger: Ledger) -> tuple[int, int]:
    """A run of eight events (two progress, a timeout, three late facts, a late finish)
    interleaved with another run's, so its positions are not contiguous: (run, other)."""
    with freeze_time("2026-03-01 00:00:00"):
        run_id = ledger.start_run(1, "SOURCE_1")
        other = ledger.start_run(2, "SOURCE_2")
    with freeze_time("2026-03-01 00:10:00"):
        ledger.append([RunProgressed(run_id=run_id, records_fetched=5)])
        ledger.append([RunProgressed(run_id=other, records_fetched=1)])
    with freeze_time("2026-03-01 00:20:00"):
        ledger.append([RunProgressed(run_id=run_id, records_fetched=7)])
    with freeze_time("2026-03-01 03:00:00"):
        ledger.append(
            [
                RunTimedOut(
                    run_id=run_id, reason="stale", detected_by="sweeper", threshold_seconds=60
                )
            ]
        )
        ledger.append([RunFinished(run_id=other, status="success")])
    with freeze_time("2026-03-01 03:05:00"):
        ledger.append([RunProgressed(run_id=run_id, records_fetched=1)])  # late
        ledger.append([RunProgressed(run_id=run_id, records_fetched=2)])  # late
        ledger.append([RunProgressed(run_id=run_id, records_fetched=3)])  # late
    with freeze_time("2026-03-01 03:30:00"):
        ledger.append([RunFinished(run_id=run_id, status="success")])  # late: failed stays
    return run_id, other


def as_facts(entries: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (e.event.position, e.status_after, e.late, e.hash_ok, e.silence_before, e.summary)
        for e in entries
    ]


def test_audit_pages_join_into_the_whole_timeline(ledger: Ledger) -> None:
    run_id, _ = long_run(ledger)
    whole = audit_run(ledger, run_id)
    assert [e.status_after for e in whole] == ["running"] * 3 + ["failed"] * 5
    assert [e.late for e in whole] == [False] * 4 + [True] * 4
    assert as_facts(list(iter_audit(ledger, run_id, batch_size=3))) == as_facts(whole)
    for limit in (1, 2, 3, 5, 8, 50):
        pages, after = [], 0
        while True:
            page = audit_page(ledger, run_id, after, limit)
            assert len(page.entries) <= limit
            pages.extend(page.entries)
            if not page.more:
                break
            after = page.entries[-1].event.position
        assert as_facts(pages) == as_facts(whole), limit


def test_audit_page_refuses_a_position_not_of_the_run_and_an_unknown_run(ledger: Ledger) -> None:
    run_id, other = long_run(ledger)
    with pytest.raises(UnknownRunError):
        audit_page(ledger, 99, 0, 10)
    with pytest.raises(UnknownRunError):
        audit_page(ledger, 99, 1, 10)
    with pytest.raises(UnknownRunError):
        list(iter_audit(ledger, 99))
    other_position = audit_run(ledger, other)[0].event.position
    with pytest.raises(ValidationError, match=f"position {other_position} is not an event"):
        audit_page(ledger, run_id, other_position, 10)
    last = audit_run(ledger, run_id)[-1].event.position
    assert audit_page(ledger, run_id, last, 10).entries == []
    assert audit_page(ledger, run_id, last, 10).more is False


def walk(client: TestClient, url: str) -> tuple[list[dict[str, Any]], int]:
    entries: list[dict[str, Any]] = []
    pages = 0
    while url:
        answer = client.get(url, headers=READ)
        assert answer.status_code == 200, answer.text
        pages += 1
        entries.extend(answer.json())
        link = answer.headers.get("link")
        if link is not None:
            assert link.endswith('>; rel="next"')
        url = link[1 : link.index(">")] if link else ""
    return entries, pages


def test_the_api_pages_a_run_with_more_events_than_a_page(ledger: Ledger, db_url: str) -> None:
    run_id, other = long_run(ledger)
    with api_client(db_url) as client:
        whole = client.get(f"/v1/runs/{run_id}/events", headers=READ)
        assert whole.status_code == 200
        assert "link" not in whole.headers  # a run that fits one page: the answer as before
        assert whole.json() == json.loads(
            run("audit", str(run_id), "--format", "json", "--db", db_url).stdout
        )  # type: ignore[attr-defined]
        assert len(whole.json()) == 8
        for limit in (1, 2, 3, 7):
            entries, pages = walk(client, f"/v1/runs/{run_id}/events?limit={limit}")
            assert entries == whole.json(), limit  # every event once, in order, same facts
            assert pages == -(-8 // limit)  # a Link only when more events follow
        third = client.get(f"/v1/runs/{run_id}/events", params={"limit": 3}, headers=READ)
        cursor = third.json()[-1]["position"]
        assert f"cursor={cursor}" in third.headers["link"]
        assert "limit=3" in third.headers["link"]
        after = client.get(
            f"/v1/runs/{run_id}/events", params={"limit": 3, "cursor": cursor}, headers=READ
        ).json()
        assert [e["status_after"] for e in after] == ["failed", "failed", "failed"]
        assert [e["late"] for e in after] == [False, True, True]
        assert after[0]["type"] == "RunTimedOut"
        assert after[0]["silence_before_seconds"] == 9600  # since 00:20, on the page before
        assert (
            client.get(f"/v1/runs/{other}/events", headers=READ).json()[-1]["status_after"]
            == "success"
        )
    client.app.state.api.close()  # type: ignore[attr-defined]


def assert_invalid(client: TestClient, url: str, field: str, words: str) -> None:
    answer = client.get(url, headers=READ)
    assert answer.status_code == 400, (url, answer.text)
    problem = answer.json()
    assert problem["type"] == "urn:run-ledger:problem:invalid-request", problem
    assert problem["detail"].startswith(f"{field}: "), problem
    assert words in problem["detail"], problem
    assert [error["field"] for error in problem["errors"]] == [field], problem


def test_bad_cursors_and_limits_are_400_naming_the_field_unknown_runs_404(
    ledger: Ledger, db_url: str
) -> None:
    run_id, other = long_run(ledger)
    other_position = audit_run(ledger, other)[0].event.position
    base = f"/v1/runs/{run_id}/events"
    with api_client(db_url) as client:
        assert_invalid(client, f"{base}?limit=0", "limit", "greater than or equal to 1")
        assert_invalid(client, f"{base}?limit=1001", "limit", "less than or equal to 1000")
        assert_invalid(client, f"{base}?limit=x", "limit", "integer")
        assert_invalid(client, f"{base}?cursor=0", "cursor", "greater than or equal to 1")
        assert_invalid(client, f"{base}?cursor=-3", "cursor", "no sign")  # digits only
        assert_invalid(client, f"{base}?cursor=abc", "cursor", "integer")
        assert_invalid(client, f"{base}?cursor={2**63}", "cursor", "less than or equal to")
        assert_invalid(
            client, f"{base}?cursor={other_position}", "cursor", f"not an event of run {run_id}"
        )
        assert_invalid(client, f"{base}?cursor=9999", "cursor", f"not an event of run {run_id}")
        for url in ("/v1/runs/99/events", "/v1/runs/99/events?cursor=1&limit=5"):
            missing = client.get(url, headers=READ)
            assert missing.status_code == 404, missing.text
            assert missing.json()["run_id"] == 99
        document = client.get("/openapi.json", headers=READ).json()
        operation = document["paths"]["/v1/runs/{run_id}/events"]["get"]
        assert {p["name"] for p in operation["parameters"]} >= {"run_id", "limit", "cursor"}
        assert "Link" in operation["responses"]["200"].get("headers", {})
    client.app.state.api.close()  # type: ignore[attr-defined]


def next_part(page: str) -> str:
    found = re.search(r'<a href="([^"]+)" rel="next" id="next-part"', page)
    return "" if found is None else html.unescape(found.group(1))


def test_the_web_run_page_shows_the_timeline_in_parts(ledger: Ledger, db_url: str) -> None:
    from service.api import create_app

    run_id, _ = long_run(ledger)
    with TestClient(create_app(web_config(db_url)), raise_server_exceptions=False) as client:
        log_in(client, "reader")
        first = client.get(f"/web/runs/{run_id}", params={"limit": 3})
        assert first.status_code == 200
        assert next_part(first.text)
        assert "ingestion_runs row" in first.text  # the legacy row beside it, as today
        assert first.text.count('<tr class="') == 3
        seen, texts = 3, [first.text]
        url = next_part(first.text)
        while url:
            part = client.get(url)
            assert part.status_code == 200, part.text
            seen += part.text.count('<tr class="')
            texts.append(part.text)
            assert "ingestion_runs row" in part.text
            url = next_part(part.text)
        assert seen == 8
        assert '<tr class="late">' in texts[-1]  # the late finish, on the last part
        assert '<tr class="late">' not in texts[0]
        assert client.get(f"/web/runs/{run_id}", params={"after": 9999}).status_code == 400
        assert client.get(f"/web/runs/{run_id}", params={"limit": 0}).status_code == 400
    client.app.state.web.close()  # type: ignore[attr-defined]
    client.app.state.api.close()  # type: ignore[attr-defined]


def test_ledger_audit_json_is_written_an_entry_at_a_time_as_before(
    ledger: Ledger, db_url: str
) -> None:
    """``ledger audit --format json`` streams the entries; the text is the one array
    ``json.dumps(..., indent=2)`` made of the whole timeline."""
    run_id, _ = long_run(ledger)
    whole = [entry.to_dict() for entry in audit_run(ledger, run_id)]
    result = run("audit", str(run_id), "--format", "json", "--db", db_url)
    assert result.stdout == json.dumps(whole, indent=2) + "\n"  # type: ignore[attr-defined]
    missing = run("audit", "99", "--format", "json", "--db", db_url)
    assert missing.exit_code == 2  # type: ignore[attr-defined]
    assert "[" not in missing.stdout  # type: ignore[attr-defined]
