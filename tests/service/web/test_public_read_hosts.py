"""``[web] public_read`` reads without a login only under host names no other site can have.

A visitor without a login was let in under any ``Host``: a page of ``rebound.attacker.example``,
whose DNS the attacker points at the ledger's internal address once the page has loaded (DNS
rebinding), read every run through an employee's browser and sent it home. Only the login was
safe (its cookie is never sent to the attacker's name). Now such a visitor reads under an IP
address, ``localhost`` or a name in ``[web] allowed_hosts``; on SQLite and MariaDB.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.api import create_app
from service.config import LedgerConfig
from service.config.http import WebConfig
from tests.service.web.support import demo_with_open_run, log_in, tamper, web_config

PAGES = ["/web/runs", "/web/stuck", "/web/proof", "/web/proof.md", "/web/integrity"]


@pytest.fixture
def demo(db_url: str, tmp_path: Path) -> dict[str, int]:
    return demo_with_open_run(db_url, tmp_path / "spool")


def public_client(config: LedgerConfig) -> Iterator[TestClient]:
    with TestClient(create_app(config), raise_server_exceptions=False) as client:
        yield client
    client.app.state.web.close()  # type: ignore[attr-defined]
    client.app.state.api.close()  # type: ignore[attr-defined]


@pytest.fixture
def client(db_url: str, demo: dict[str, int]) -> Iterator[TestClient]:
    config = web_config(db_url, public_read=True, allowed_hosts=["Ledger.Internal."])
    yield from public_client(config)


def test_a_name_not_allowed_reads_nothing_without_a_login(
    client: TestClient, demo: dict[str, int]
) -> None:
    for host in ["rebound.attacker.example", "rebound.attacker.example:8080", "testserver"]:
        for path in [*PAGES, f"/web/runs/{demo['open']}", "/web/runs/days.svg"]:
            answer = client.get(path, headers={"Host": host})
            assert answer.status_code == 403, (host, path, answer.text)
            assert "allowed_hosts" in answer.text
            assert "demo-stations" not in answer.text


def test_an_address_localhost_or_an_allowed_name_reads(client: TestClient) -> None:
    for host in [
        "127.0.0.1",
        "10.1.2.3:8080",
        "[::1]:8080",
        "localhost:8080",
        "ledger.internal",
        "LEDGER.INTERNAL:8080",
        "ledger.internal.",
    ]:
        answer = client.get("/web/runs", headers={"Host": host})
        assert answer.status_code == 200, (host, answer.text)
        assert "demo-stations" in answer.text


def test_a_name_that_only_ends_in_an_address_is_a_name(client: TestClient) -> None:
    """Starlette's ``request.url.hostname`` reads ``evil@127.0.0.1`` as ``127.0.0.1``."""
    for host in ["evil.example@127.0.0.1", "127.0.0.1.evil.example", "ledger.internal.evil"]:
        assert client.get("/web/runs", headers={"Host": host}).status_code == 403, host


def test_the_red_banner_only_under_a_name_that_may_read(client: TestClient, db_url: str) -> None:
    """An error page shows the red banner to those who may read: the visitor under a foreign
    name learns from the 403 page neither the runs nor that the ledger failed its verify."""
    tamper(db_url)
    assert "PROBLEMS" in client.get("/web/integrity", headers={"Host": "127.0.0.1"}).text
    assert 'id="verify-banner"' in client.get("/web/runs", headers={"Host": "127.0.0.1"}).text
    refused = client.get("/web/runs", headers={"Host": "rebound.attacker.example"})
    assert refused.status_code == 403
    assert 'id="verify-banner"' not in refused.text


def test_a_login_reads_under_any_name(client: TestClient) -> None:
    """The cookie is the proof there: a browser never sends it to another site's name."""
    log_in(client, "reader")
    answer = client.get("/web/runs", headers={"Host": "any.name.example"})
    assert answer.status_code == 200, answer.text
    assert "demo-stations" in answer.text


def test_an_internal_name_with_an_underscore_may_be_allowed() -> None:
    web = WebConfig.model_validate({"enabled": True, "allowed_hosts": ["Ledger_Host.internal"]})
    assert web.allowed_hosts == ["ledger_host.internal"]


@pytest.mark.parametrize("name", ["http://ledger.internal", "ledger.internal:8080", "", "a b"])
def test_an_allowed_host_must_be_a_host_name(name: str) -> None:
    with pytest.raises(ValidationError, match=r"(?s)allowed_hosts.*is not a host name"):
        WebConfig.model_validate({"enabled": True, "public_read": True, "allowed_hosts": [name]})
