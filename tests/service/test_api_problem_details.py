"""A 503 tells the client what happened and when to retry, not where the database is: no
database URL, user, host, port, file path or driver message in a problem's detail or on a web
page (any append token, or anyone when ``[web] public_read``, would read them). The server's
log keeps the whole message."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ledger.schema import SCHEMA_REVISION
from service.api import create_app
from service.config import WebConfig
from tests.reliability.fault_proxy import FaultProxy
from tests.service.conftest import api_config, auth

PAGES = ["/web/runs", "/web/stuck", "/web/proof", "/web/integrity"]


def public_client(db_url: str) -> TestClient:
    config = api_config(db_url)
    web = WebConfig.model_validate(
        {
            "enabled": True,
            "public_read": True,
            "verify_interval": "0s",
            "allowed_hosts": ["testserver"],  # the test client's host name
        }
    )
    config = config.model_copy(update={"web": web})
    return TestClient(create_app(config), raise_server_exceptions=False)


def internals_of(url: str) -> list[str]:
    parsed = make_url(url)
    found = [str(part) for part in (parsed.host, parsed.port, parsed.database) if part]
    if parsed.username:
        found.append(f"{parsed.username}@")
    return found


def assert_nothing_internal(
    client: TestClient, url: str, kind: str, paths: tuple[str, ...], pages: list[str]
) -> None:
    answers = [client.get(path, headers=auth("admin")) for path in paths]
    answers += [client.get(path) for path in pages]
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["retry-after"]) > 0
        for secret in internals_of(url):
            assert secret not in answer.text, (answer.request.url, secret, answer.text)
        assert "Traceback" not in answer.text
    problem = answers[0].json()
    assert problem["type"] == f"urn:run-ledger:problem:{kind}"
    assert "retry" in problem["detail"]


def test_an_unreachable_database_is_not_named_to_clients(
    backend: str, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    if backend != "mysql":
        pytest.skip("needs a server to put a proxy in front of")
    url = make_url(db_url)
    proxy = FaultProxy((url.host or "127.0.0.1", url.port or 3306))
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    caplog.set_level(logging.INFO)
    try:
        with public_client(proxied) as client:
            assert client.get("/v1/runs", headers=auth("admin")).status_code == 200
            proxy.outage()
            assert_nothing_internal(
                client, proxied, "database-unreachable", ("/v1/runs", "/readyz"), PAGES
            )
            client.app.state.web.close()  # type: ignore[attr-defined]
            client.app.state.api.close()  # type: ignore[attr-defined]
    finally:
        proxy.close()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert str(proxy.port) in logged  # the server's log names it


def test_a_schema_not_current_is_not_named_to_clients(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(db_url)
    caplog.set_level(logging.INFO)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE ledger_alembic_version SET version_num = '0001_event_store'"))
        with public_client(db_url) as client:
            # Only /readyz checks the revision (requests read and write the tables they know).
            assert_nothing_internal(client, db_url, "schema-not-current", ("/readyz",), [])
            client.app.state.web.close()  # type: ignore[attr-defined]
            client.app.state.api.close()  # type: ignore[attr-defined]
    finally:
        # The MariaDB database is the session's: the next test finds it at the revision.
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE ledger_alembic_version SET version_num = :v"), {"v": SCHEMA_REVISION}
            )
        engine.dispose()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "0001_event_store" in logged  # what to do is in the server's log
