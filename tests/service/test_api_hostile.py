"""A hostile review of the HTTP API, on both databases: odd text in stored values and in
problems, numbers and keys JSON allows and the ledger does not, too many events, repeated or
absurd parameters, odd Authorization headers, a client that stalls mid-body, and a read token
asking for history replays over and over."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ledger import Ledger
from ledger.text import quoted
from projections import Projector
from tests.service.conftest import api_client, auth
from tests.support import free_port, stop_process

READ = auth("reader")
APPEND = auth("appender")
HOSTILE = "boom \x1b[31mred\x1b[0m \u2028next \u202eevil \x07 tab\tend \u00e9\U0001f600"
DEADLINE_S = 30.0


def post(client: TestClient, body: str | bytes, kind: str = "application/json") -> Any:
    return client.post("/v1/events", content=body, headers={**APPEND, "content-type": kind})


def started(client: TestClient) -> int:
    event = [{"type": "RunStarted", "source_id": 1, "connector_name": "hostile"}]
    answer = client.post("/v1/events", json=event, headers=APPEND)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["allocated_run_ids"][0])


def test_odd_text_comes_back_exact_and_escaped_from_every_read(
    client: TestClient, ledger: Ledger
) -> None:
    failed = started(client)
    finish = {"type": "RunFinished", "run_id": failed, "status": "failed"}
    finish |= {"error_message": HOSTILE, "error_details": {HOSTILE: [HOSTILE]}}
    assert client.post("/v1/events", json=[finish], headers=APPEND).status_code == 200
    stuck = started(client)
    declared = client.post(
        f"/v1/runs/{stuck}/fail", json={"reason": HOSTILE}, headers=auth("operator")
    )
    assert declared.status_code == 200, declared.text
    assert declared.json()["reason"] == HOSTILE
    Projector(ledger).run_once()
    for path in (
        "/v1/runs",
        f"/v1/runs/{failed}",
        f"/v1/runs/{failed}?at_position=2",
        f"/v1/runs/{failed}/events",
        f"/v1/runs/{stuck}/events",
        "/v1/status",
        "/v1/verify",
    ):
        answer = client.get(path, headers=READ)
        assert answer.status_code == 200, (path, answer.text)
        assert answer.content.isascii(), path  # \u001b, \u2028, \u202e: never the characters
    rows = {row["id"]: row for row in client.get("/v1/runs", headers=READ).json()}
    assert rows[failed]["errorMessage"] == HOSTILE  # exact, once decoded
    detail = client.get(f"/v1/runs/{failed}", headers=READ).json()
    assert detail["row"]["errorDetails"][HOSTILE] == [HOSTILE]
    timeline = client.get(f"/v1/runs/{stuck}/events", headers=READ).json()
    # The reason, quoted as the tool quotes a writer's words beside its own (its invisible
    # characters shown as escapes); the exact text is the event's own field.
    assert timeline[-1]["summary"].startswith(quoted(HOSTILE) + " by operator:")


def test_odd_text_in_problems_is_made_visible(client: TestClient) -> None:
    for body in (
        json.dumps([{"type": "RunStarted", "source_id": 1, "connector_name": "a\x1b[2Jb"}]),
        json.dumps([{"type": "Run\x1b[2J\u2028Started"}]),
        json.dumps([{"type": "RunStarted", "source_id": 1, "connector_name": "x", "\x1b": 1}]),
    ):
        answer = post(client, body)
        assert answer.status_code == 400, answer.text
        assert answer.content.isascii()
        problem = answer.json()
        assert answer.headers["content-type"].startswith("application/problem+json")
        for text in (problem["detail"], *(e["message"] for e in problem["errors"])):
            assert "\x1b" not in text
            assert "\u2028" not in text
    odd_query = client.get("/v1/stuck", params={"older_than": "1\x1b[2J\u2028h"}, headers=READ)
    assert odd_query.status_code == 400
    assert "\x1b" not in odd_query.json()["detail"]


def test_lone_surrogates_numbers_and_duplicate_keys_are_refused(
    client: TestClient, ledger: Ledger
) -> None:
    cases = {
        "lone surrogate": '[{"type": "RunStarted", "source_id": 1, "connector_name": "\\ud800"}]',
        "2**63": '[{"type": "RunStarted", "source_id": 9223372036854775808, '
        '"connector_name": "a"}]',
        "2**31": '[{"type": "RunStarted", "source_id": 2147483648, "connector_name": "a"}]',
        "huge": '[{"type": "RunStarted", "source_id": 1' + "0" * 5000 + ', "connector_name": "a"}]',
        "1e400": '[{"type": "RunStarted", "source_id": 1e400, "connector_name": "a"}]',
        "float": '[{"type": "RunStarted", "source_id": 1.0, "connector_name": "a"}]',
        "NaN": '[{"type": "RunStarted", "source_id": NaN, "connector_name": "a"}]',
        "duplicate key": '[{"type": "RunStarted", "source_id": 1, "source_id": 2, '
        '"connector_name": "a"}]',
        "deep": "[" * 100_000 + "]" * 100_000,
    }
    for name, body in cases.items():
        answer = post(client, body)
        assert answer.status_code == 400, (name, answer.text)
        assert answer.json()["type"].endswith("invalid-input"), name
    # Which event gives the key twice, and where an array written one event a line breaks.
    repeated = post(client, "[{}, " + cases["duplicate key"][1:])
    assert repeated.json()["errors"] == [
        {"message": "given more than once in one object", "field": "source_id", "item": 2}
    ]
    broken = post(client, '[\n{"type": "RunStarted"},\n{"type": "RunStarted" "source_id": 1}\n]')
    assert "(Expecting ',' delimiter at line 3, column 23)" in broken.json()["detail"]
    failed = client.post(
        "/v1/runs/1/fail",
        content=b'{"reason": "\\ud800"}',
        headers={**auth("operator"), "content-type": "application/json"},
    )
    assert failed.status_code == 400
    version = client.post("/v1/events?expected_version=9223372036854775808", headers=APPEND)
    assert version.status_code == 400
    assert ledger.head().last_position == 0


def test_the_fail_body_is_read_by_the_same_rules_as_events(
    client: TestClient, ledger: Ledger
) -> None:
    """A reason given twice is refused, not read as the last one: what a ledger appends stays
    (FastAPI's own JSON parse keeps the last of two keys, and takes NaN)."""
    run_id = started(client)
    operator = {**auth("operator"), "content-type": "application/json"}
    for name, body in {
        "duplicate key": b'{"reason": "host lost", "reason": "nothing wrong, ignore"}',
        "NaN": b'{"reason": "host lost", "extra": NaN}',
    }.items():
        answer = client.post(f"/v1/runs/{run_id}/fail", content=body, headers=operator)
        assert answer.status_code == 400, (name, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"].endswith("invalid-input"), name
        assert name != "duplicate key" or "reason: given more than once" in answer.text
    plain = client.post(
        f"/v1/runs/{run_id}/fail",
        content=b'{"reason": "gone"}',
        headers={**auth("operator"), "content-type": "text/plain"},
    )
    assert plain.status_code == 415, plain.text  # as POST /v1/events answers another type
    unknown = client.post(
        f"/v1/runs/{run_id}/fail", json={"reason": "gone", "operator": "bob"}, headers=operator
    )
    assert unknown.status_code == 400, unknown.text  # not recorded as the token's name silently
    # In words a caller reads (it was pydantic's "Extra inputs are not permitted").
    assert "operator: not a field of this request body" in unknown.json()["detail"]
    state = ledger.run(run_id)
    assert state is not None
    assert state.state == "open"
    refused = client.post(
        f"/v1/runs/{run_id}/fail",
        content=b'{"reason": "a", "reason": "b"}',
        headers={"content-type": "application/json"},
    )
    assert refused.status_code == 401  # the token first, as for every endpoint
    fine = client.post(f"/v1/runs/{run_id}/fail", json={"reason": "host lost"}, headers=operator)
    assert fine.status_code == 200, fine.text
    assert fine.json()["reason"] == "host lost"


def test_too_many_events_in_one_request_are_refused_before_validation(db_url: str) -> None:
    with api_client(db_url, max_events=5) as client:
        many = [{"type": "RunStarted", "source_id": 1, "connector_name": "a"}] * 6
        array = post(client, json.dumps(many))
        assert array.status_code == 400
        assert "6 events in one array; the limit is 5" in array.json()["detail"]
        lines = post(client, "\n".join(json.dumps(e) for e in many), "application/x-ndjson")
        assert lines.status_code == 400
        assert "6 events in one request; the limit is 5" in lines.json()["detail"]
        tiny = post(client, "[" + ",".join(["{}"] * 100_000) + "]")
        assert tiny.status_code == 400
        assert "100,000 events" in tiny.json()["detail"]
        assert post(client, json.dumps(many[:5])).status_code == 200
        assert client.get("/v1/status", headers=READ).json()["head_position"] == 5
    client.app.state.api.close()  # type: ignore[attr-defined]


def test_repeated_and_absurd_query_parameters(client: TestClient, ledger: Ledger) -> None:
    started(client)
    Projector(ledger).run_once()
    for query in (
        "limit=1&limit=2",
        "status=failed&status=running",
        "as_of=2026-01-01&as_of=2027-01-01",
        "limit=1000000000",
        "limit=0",
        "at_position=-1",
        f"at_position={2**63}",
        "as_of=99999-01-01",
        "as_of=2026-01-01T00:00:00%2B25:00",
        "limit=1.5",
    ):
        answer = client.get(f"/v1/runs?{query}", headers=READ)
        assert answer.status_code == 400, (query, answer.text)
    repeated = client.get("/v1/runs?limit=1&limit=2", headers=READ).json()
    assert "limit" in repeated["detail"]
    assert client.get("/v1/runs?as_of=0001-01-01", headers=READ).json() == []
    future = client.get("/v1/runs?as_of=9999-12-31T23:59:59Z", headers=READ)
    assert future.status_code == 200
    assert [row["id"] for row in future.json()] == [1]
    assert client.get("/v1/runs/1?at_position=0", headers=READ).status_code == 404


def test_odd_authorization_headers_are_refused_never_500(client: TestClient) -> None:
    token = auth("reader")["Authorization"].split(" ", 1)[1]
    for header in (
        "Basic " + token,
        "Bearer",
        "Bearer ",
        "Bearer  ",
        f"Bearer {token} {token}",
        f"Bearer {token},{token}",
        f"Token {token}",
        f"{token}",
    ):
        answer = client.get("/v1/status", headers={"Authorization": header})
        assert answer.status_code == 401, header
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert token not in answer.text
    latin = client.get("/v1/status", headers=[(b"authorization", b"Bearer \xe9\xff\x00")])
    assert latin.status_code == 401
    twice = client.get(
        "/v1/status", headers=[(b"authorization", b"Bearer x"), (b"authorization", b"Bearer y")]
    )
    assert twice.status_code == 400  # which one was meant cannot be known
    assert client.get("/v1/status", headers={"Authorization": f"bearer {token}"}).is_success


def test_history_replays_are_limited_to_max_expensive_at_once(db_url: str) -> None:
    with api_client(db_url, max_expensive=1) as client:
        started(client)
        slots = client.app.state.api.expensive_slots  # type: ignore[attr-defined]
        assert slots.acquire(blocking=False)  # one replay in flight
        try:
            for path in ("/v1/verify", "/v1/runs?at_position=1", "/v1/runs/1?as_of=2030-01-01"):
                busy = client.get(path, headers=READ)
                assert busy.status_code == 429, path
                assert busy.headers["retry-after"] == "5"
                assert "max_expensive" in busy.json()["detail"]
            assert client.get("/v1/runs", headers=READ).status_code == 200  # live: no slot
            assert client.get("/v1/runs/1", headers=READ).status_code == 200
        finally:
            slots.release()
        assert client.get("/v1/verify", headers=READ).json()["ok"]
    client.app.state.api.close()  # type: ignore[attr-defined]


def test_a_timeline_page_after_a_cursor_takes_a_slot_the_first_page_does_not(
    db_url: str,
) -> None:
    """A page of ``/v1/runs/{id}/events`` after a cursor starts from the state before it,
    folded from the run's earlier events (a read that grows with the run): with every
    ``[api] max_expensive`` slot taken it is a 429 with Retry-After, not one more scan on a
    worker thread. The first page reads ``limit`` events on the run's key and takes none."""
    with api_client(db_url, max_expensive=1) as client:
        run_id = started(client)
        beat = [{"type": "RunProgressed", "run_id": run_id, "records_fetched": 1}] * 3
        assert client.post("/v1/events", json=beat, headers=APPEND).status_code == 200
        first = client.get(f"/v1/runs/{run_id}/events?limit=2", headers=READ)
        assert first.status_code == 200, first.text
        following = first.headers["link"].split(">")[0].lstrip("<")
        slots = client.app.state.api.expensive_slots  # type: ignore[attr-defined]
        assert slots.acquire(blocking=False)  # the one slot, taken by a replay in flight
        try:
            busy = client.get(following, headers=READ)
            assert busy.status_code == 429, busy.text
            assert busy.headers["retry-after"] == "5"
            assert "timeline" in busy.json()["detail"]
            assert "max_expensive" in busy.json()["detail"]
            again = client.get(f"/v1/runs/{run_id}/events?limit=2", headers=READ)
            assert again.status_code == 200
        finally:
            slots.release()
        assert client.get(following, headers=READ).status_code == 200
    client.app.state.api.close()  # type: ignore[attr-defined]


def test_a_body_that_stalls_is_answered_408_after_read_timeout(db_url: str, tmp_path: Path) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text(
        '[api]\nread_timeout = "1s"\n[[api.tokens]]\nname = "slow"\nscopes = ["append"]\n'
        'env = "API_SLOW_TOKEN"\n',
        encoding="utf-8",
    )
    token = "slow-loris-token-0123456789"
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "service.cli", "api", "--listen", f"127.0.0.1:{port}"),
            *("--config", str(config), "--db", db_url),
        ],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "API_SLOW_TOKEN": token},
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert process.poll() is None, "ledger api exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "no /healthz in time"
            time.sleep(0.05)  # polling interval
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S) as conn:
            conn.sendall(
                f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{".encode()
            )
            started_at = time.monotonic()
            reply = b""
            while chunk := conn.recv(65536):  # the server answers, then closes
                reply += chunk
            waited = time.monotonic() - started_at
        assert reply.startswith(b"HTTP/1.1 408"), reply[:300]
        assert b"read_timeout" in reply
        assert waited < DEADLINE_S
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).is_success
    finally:
        stop_process(process, signal.SIGKILL)


def test_an_unexpected_error_is_a_500_problem_that_tells_nothing_of_it(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: object) -> None:
        raise RuntimeError("secret internals\nGET /v1/runs 200 caller=admin")

    monkeypatch.setattr("service.api.app.status_report", broken)
    with caplog.at_level(logging.INFO, logger="service.api.app"):
        answer = client.get("/v1/status", headers=auth("reader"))
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["detail"] == "an unexpected error occurred; it is logged on the server"
    assert "secret internals" not in answer.text
    assert "Traceback" not in answer.text
    logged = [r for r in caplog.records if r.getMessage().startswith("unexpected error")]
    assert [r.getMessage() for r in logged] == ["unexpected error answering GET /v1/status"]
    assert logged[0].exc_info is not None  # the traceback goes to the server's log only


@pytest.mark.parametrize("reason", ["", "   ", "\t\n", "\x00", "\u200b"])
def test_a_blank_reason_is_an_invalid_request_naming_reason(
    client: TestClient, ledger: Ledger, reason: str
) -> None:
    """``{"reason": ""}`` was 400 invalid-request naming ``reason``, and ``{"reason": "   "}``
    400 invalid-input naming no field (the library's refusal): now both are the first."""
    run_id = started(client)
    answer = client.post(
        f"/v1/runs/{run_id}/fail", json={"reason": reason}, headers=auth("operator")
    )
    assert answer.status_code == 400, answer.text
    problem = answer.json()
    assert problem["type"] == "urn:run-ledger:problem:invalid-request", problem
    assert [error["field"] for error in problem["errors"]] == ["reason"], problem
    assert "Value error" not in answer.text
    state = ledger.run(run_id)
    assert state is not None
    assert state.state == "open"


def test_many_query_parameters_cost_no_more_than_reading_them(client: TestClient) -> None:
    """The repeated-parameter check, made before the token's, asked the query for each name's
    values in turn: quadratic in the number of names, 0.5 s of CPU (holding the GIL, so every
    other request waited) for a 14 KB query of 3,500 names, sent by anyone without a token.
    12,000 names (60 KB, below httpx's longest URL) took 6 s; counted in one pass, 0.1 s."""
    names = "&".join(f"{number:x}" for number in range(12_000))
    began = time.monotonic()
    answer = client.get(f"/v1/runs?{names}")
    took = time.monotonic() - began
    assert answer.status_code == 401, answer.text
    assert took < 2.0, f"{took:.1f} s for 12,000 query parameters"
    twice = client.get(f"/v1/runs?{names}&f&a", headers=READ)
    assert twice.status_code == 400
    assert twice.json()["detail"] == "each query parameter may be given once: a, f"
