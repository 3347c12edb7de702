"""Fixtures of the HTTP API's tests: a client on the parametrised database with three tokens,
one per scope, and one with every scope."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.config import LedgerConfig

TOKENS = {
    "appender": ("append-token-0123456789abcdef", ["append"]),
    "reader": ("read-token-0123456789abcdef", ["read"]),
    "operator": ("operate-token-0123456789abcdef", ["operate"]),
    "admin": ("admin-token-0123456789abcdef", ["append", "read", "operate"]),
}


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


def api_config(db_url: str, **api: Any) -> LedgerConfig:
    tokens = [
        {"name": name, "scopes": scopes, "sha256": hashlib.sha256(token.encode()).hexdigest()}
        for name, (token, scopes) in TOKENS.items()
    ]
    return LedgerConfig.model_validate({"database_url": db_url, "api": {"tokens": tokens, **api}})


def api_client(db_url: str, **api: Any) -> TestClient:
    return TestClient(create_app(api_config(db_url, **api)), raise_server_exceptions=False)


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with api_client(db_url) as test_client:
        yield test_client
    test_client.app.state.api.close()  # type: ignore[attr-defined]
