"""Schemathesis against /openapi.json on both databases: every operation, no 5xx, every
response valid against the document (status code, content type, headers, body). A small run
is unmarked; the big one (``slow``) generates 150 cases per operation, over 1,500 in all."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.api import create_app
from tests.service.conftest import api_config, auth

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
HEADERS = auth("admin")
HEAD_EXAMPLES = 15


@schemathesis.serializer("application/x-ndjson")
def ndjson(_context: Any, value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


SETTINGS: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": list(HealthCheck),
    "database": None,
}


def run_contract(db_url: str, per_operation: int) -> int:
    """Every operation with ``per_operation`` generated cases; the number of calls made."""
    app = create_app(api_config(db_url))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=HEADERS)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 20  # 9 GETs, their 9 HEADs (service/api/head.py), 2 POSTs
    calls = 0
    try:
        for operation in operations:
            # A HEAD is answered by its GET's code (service/api/head.py): a few cases show it
            # conforms; the GET's own cases cover the inputs.
            examples = per_operation if operation.method.upper() != "HEAD" else HEAD_EXAMPLES

            @given(case=operation.as_strategy())
            @settings(max_examples=min(per_operation, examples), **SETTINGS)
            def check(case: Any) -> None:
                nonlocal calls
                calls += 1
                case.call_and_validate(headers=HEADERS, checks=CHECKS)

            check()
    finally:
        app.state.api.close()
    return calls


def test_every_operation_small(db_url: str) -> None:
    assert run_contract(db_url, 10) >= 11


@pytest.mark.slow
def test_every_operation_big(db_url: str) -> None:
    assert run_contract(db_url, 100) >= 700
