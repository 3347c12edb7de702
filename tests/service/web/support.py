"""Helpers of the web view's tests: a demo database with a run left open, tokens, a login."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from ledger import Ledger, RunFinished, RunStarted
from ledger.clock import utcnow
from service.api import create_app
from service.config import LedgerConfig
from service.demo import run_demo
from tests.support import drop_triggers

TOKENS = {
    "reader": ("read-token-0123456789abcdef", ["read"]),
    "oncall": ("oncall-token-0123456789abcdef", ["read", "operate"]),
    "appender": ("append-token-0123456789abcdef", ["append"]),
    "operator": ("operate-token-0123456789abcdef", ["operate"]),
}
SCRIPT = "<script>document.title='pwned'</script>"


def web_config(
    db_url: str,
    bound: dict[str, list[str]] | None = None,
    api: dict[str, Any] | None = None,
    **web: Any,
) -> LedgerConfig:
    """The config of the tests' tokens (those named in ``bound`` bound to its connectors),
    ``api`` more ``[api]`` settings."""
    tokens: list[dict[str, Any]] = [
        {"name": name, "scopes": scopes, "sha256": hashlib.sha256(token.encode()).hexdigest()}
        for name, (token, scopes) in TOKENS.items()
    ]
    for token in tokens:
        if bound and token["name"] in bound:
            token["connectors"] = bound[token["name"]]
    return LedgerConfig.model_validate(
        {
            "database_url": db_url,
            "api": {"tokens": tokens, **(api or {})},
            # "testserver": the test client's host name, under which visitors read without a
            # login only when it is allowed (an IP address needs no entry).
            "web": {
                "enabled": True,
                "verify_interval": "0s",
                "allowed_hosts": ["testserver"],
                **web,
            },
        }
    )


@contextmanager
def web_client(db_url: str, api: dict[str, Any] | None = None, **web: Any) -> Iterator[TestClient]:
    """A client of the API and its web view (the tests' tokens, ``api`` and ``web`` more
    ``[api]`` and the ``[web]`` settings) over ``db_url``; the app's ledgers closed after it."""
    app = create_app(web_config(db_url, api=api, **web))
    try:
        with TestClient(app, raise_server_exceptions=False) as test_client:
            yield test_client
    finally:
        app.state.web.close()
        app.state.api.close()


@contextmanager
def demo_web_client(db_url: str, spool: Path) -> Iterator[TestClient]:
    """:func:`web_client` over :func:`demo_with_open_run`'s database."""
    demo_with_open_run(db_url, spool)
    with web_client(db_url) as test_client:
        yield test_client


def demo_with_open_run(db_url: str, spool: Path) -> dict[str, int]:
    """The demo, a run left open two hours ago (stuck) and a run whose error message is a
    script: their run ids."""
    ledger = Ledger.from_url(db_url)
    try:
        run_demo(ledger, spool)
        open_run = (
            ledger.append(
                [
                    RunStarted(
                        source_id=7,
                        connector_name="night-batch",
                        occurred_at=utcnow() - timedelta(hours=2),
                    )
                ]
            )
            .events[0]
            .run_id
        )
        hostile = (
            ledger.append([RunStarted(source_id=8, connector_name="hostile", run_ref="h")])
            .events[0]
            .run_id
        )
        assert hostile is not None
        assert open_run is not None
        ledger.append(
            [RunFinished(run_id=hostile, status="failed", error_message=SCRIPT)],
            expected_version=1,
        )
        from projections import Projector

        Projector(ledger).run_once()
        return {"open": open_run, "hostile": hostile}
    finally:
        ledger.close()


def tamper(db_url: str) -> None:
    """What a hostile DBA would do: drop the triggers, edit an event."""
    ledger = Ledger.from_url(db_url)
    try:
        drop_triggers(ledger.engine)
        with ledger.engine.begin() as conn:
            conn.execute(text("UPDATE ledger_events SET actor = 'mallory' WHERE position = 1"))
    finally:
        ledger.close()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def log_in(client: TestClient, name: str) -> str:
    """Log in with the token of ``name``; returns the session's CSRF token."""
    page = client.get("/web/login")
    response = client.post(
        "/web/login",
        data={"token": TOKENS[name][0], "csrf": csrf_of(page.text), "next": "/web/runs"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/web/runs").text)
