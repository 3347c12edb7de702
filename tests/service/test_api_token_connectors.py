"""A token bound to connectors (``[[api.tokens]] connectors``): ``POST /v1/events`` and
``POST /v1/runs/{id}/fail`` write only for runs of those connectors (403 naming the item,
nothing appended); reads are not filtered. On SQLite and MariaDB."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.config import LedgerConfig

TOKEN = "stripe-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"


def config(db_url: str, **bound: Any) -> LedgerConfig:
    def token(name: str, secret: str, **extra: Any) -> dict[str, Any]:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        return {"name": name, "sha256": digest, **extra}

    tokens = [
        token("stripe", TOKEN, scopes=["append", "read", "operate"], **bound),
        token("admin", ADMIN, scopes=["append", "read", "operate"]),
    ]
    return LedgerConfig.model_validate({"database_url": db_url, "api": {"tokens": tokens}})


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    app = create_app(config(db_url, connectors=["stripe"]))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    app.state.api.close()


def started(connector: str, ref: str) -> dict[str, Any]:
    return {"type": "RunStarted", "source_id": 1, "connector_name": connector, "run_ref": ref}


def head(client: TestClient) -> int:
    return int(client.get("/v1/status", headers=headers(ADMIN)).json()["head_position"])


def test_a_bound_token_appends_for_its_connectors_only(client: TestClient) -> None:
    own = client.post(
        "/v1/events",
        json=[started("stripe", "a"), {"type": "RunProgressed", "run_ref": "a"}],
        headers=headers(TOKEN),
    )
    assert own.status_code == 200, own.text
    own_run = own.json()["run_refs"]["a"]
    other = client.post("/v1/events", json=[started("hubspot", "b")], headers=headers(ADMIN))
    other_run = other.json()["run_refs"]["b"]
    before = head(client)

    new_run = client.post(
        "/v1/events",
        json=[{"type": "RunProgressed", "run_id": own_run}, started("hubspot", "c")],
        headers=headers(TOKEN),
    )
    assert new_run.status_code == 403, new_run.text
    assert new_run.headers["content-type"] == "application/problem+json"
    body = new_run.json()
    assert body["type"] == "urn:run-ledger:problem:forbidden"
    assert body["detail"].startswith("item 2: the new run is not one of a connector")
    assert "'stripe'" in body["detail"]

    finish = {"type": "RunFinished", "run_id": other_run, "status": "failed"}
    refused = client.post("/v1/events", json=[finish], headers=headers(TOKEN))
    assert refused.status_code == 403, refused.text
    assert refused.json()["run_id"] == other_run
    assert "hubspot" not in refused.text  # the other run's connector is not told
    ndjson = client.post(
        "/v1/events",
        content=b'{"type":"RunFinished","run_id":%d,"status":"failed"}\n' % other_run,
        headers={**headers(TOKEN), "Content-Type": "application/x-ndjson"},
    )
    assert ndjson.status_code == 403
    assert ndjson.json()["detail"].startswith("line 1: ")
    assert head(client) == before, "nothing was appended"

    fail = client.post(
        f"/v1/runs/{other_run}/fail", json={"reason": "host lost"}, headers=headers(TOKEN)
    )
    assert fail.status_code == 403, fail.text
    assert head(client) == before
    # Reads are not filtered; the admin token is not bound.
    assert client.get(f"/v1/runs/{other_run}", headers=headers(TOKEN)).status_code == 200
    ok = client.post(f"/v1/runs/{own_run}/fail", json={"reason": "lost"}, headers=headers(TOKEN))
    assert ok.status_code == 200, ok.text
    assert client.post("/v1/events", json=[finish], headers=headers(ADMIN)).status_code == 200


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"connectors": []}, "at least 1 item"),
        ({"connectors": [" stripe"]}, "whitespace"),
        ({"connectors": ["stripe"], "scopes": ["read"]}, "reads are not filtered"),
    ],
)
def test_connectors_of_a_token_are_names_and_bind_writes(
    db_url: str, extra: dict[str, Any], why: str
) -> None:
    token = {"name": "t", "scopes": ["append"], "sha256": "0" * 64, **extra}
    with pytest.raises(pydantic.ValidationError, match=why):
        LedgerConfig.model_validate({"database_url": db_url, "api": {"tokens": [token]}})


def test_a_line_ahead_of_the_clock_is_named_before_a_foreign_run(client: TestClient) -> None:
    """The lock refuses item 1 (another connector's run) before it meets item 2's time: the
    refusal names item 2 ahead of the clock, as when the clock was read before the append
    (it says nothing of the run)."""
    other = client.post("/v1/events", json=[started("paypal", "p")], headers=headers(ADMIN))
    assert other.status_code == 200, other.text
    run_id = other.json()["run_refs"]["p"]
    ahead = {**started("stripe", "s"), "occurred_at": "2999-01-01T00:00:00Z"}
    before = head(client)
    body = [{"type": "RunProgressed", "run_id": run_id}, ahead]
    response = client.post("/v1/events", json=body, headers=headers(TOKEN))
    assert response.status_code == 400, response.text
    assert "item 2: occurred_at: 2999-01-01" in response.json()["detail"]
    assert head(client) == before
