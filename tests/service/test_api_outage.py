"""A database outage in the API's log: one WARNING as it starts and one INFO as a request gets
through again, however many requests it answered 503 meanwhile (a log line per request
flooded the log during an outage)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.reliability.fault_proxy import FaultProxy
from tests.service.conftest import api_client, auth


def test_an_outage_is_two_lines_in_the_apis_log(
    backend: str, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    if backend != "mysql":
        pytest.skip("needs a server to put a proxy in front of")
    url = make_url(db_url)
    proxy = FaultProxy((url.host or "127.0.0.1", url.port or 3306))
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    caplog.set_level(logging.INFO, logger="service.api")
    try:
        with api_client(proxied) as client:
            assert client.get("/v1/runs", headers=auth("reader")).status_code == 200
            proxy.outage()
            for _ in range(5):
                answer = client.get("/v1/runs", headers=auth("reader"))
                assert answer.status_code == 503, answer.text
            assert client.get("/healthz").status_code == 200  # needs no database: ends nothing
            proxy.restore()
            assert client.get("/v1/runs", headers=auth("reader")).status_code == 200
            client.app.state.api.close()  # type: ignore[attr-defined]
    finally:
        proxy.close()
    ours = [r for r in caplog.records if r.name == "service.api"]
    warnings = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("API requests cannot proceed, retrying until it can: ")
    infos = [r.getMessage() for r in ours if r.levelno == logging.INFO]
    assert len(infos) == 1, infos
    assert infos[0].startswith("API requests proceeding again after ")


def _sqlite_outage(path: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    """A SQLite database away and back: its file moved from under the server (``/readyz``
    503 ``database-file-changed``, logged as an outage), then put back."""
    away = path.with_name("away.db")
    return (lambda: path.rename(away)), (lambda: away.rename(path))


def test_answers_given_without_the_database_do_not_end_an_outage(
    backend: str, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong token (401), a malformed parameter (400) and an unknown path (404) are answered
    before the database is asked: between the 503s of one outage they ended it, so that each
    wrote one more WARNING and a false "proceeding again after 0s"."""
    proxy: FaultProxy | None = None
    url = make_url(db_url)
    if backend == "mysql":
        proxy = FaultProxy((url.host or "127.0.0.1", url.port or 3306))
        served = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        go_away, come_back = proxy.outage, proxy.restore
    else:
        served = db_url
        go_away, come_back = _sqlite_outage(Path(url.database or ""))
    caplog.set_level(logging.INFO, logger="service.api")
    reader, stale = auth("reader"), {"Authorization": "Bearer " + "x" * 24}
    try:
        with api_client(served) as client:
            assert client.get("/v1/runs", headers=reader).status_code == 200
            go_away()
            for _ in range(3):
                assert client.get("/readyz", headers=reader).status_code == 503
                assert client.get("/v1/status", headers=stale).status_code == 401
                assert client.get("/v1/runs?limit=x", headers=reader).status_code == 400
                assert client.get("/v1/nothing-here", headers=reader).status_code == 404
            assert client.get("/readyz", headers=reader).status_code == 503
            come_back()
            assert client.get("/readyz", headers=reader).status_code == 200
            client.app.state.api.close()  # type: ignore[attr-defined]
    finally:
        if proxy is not None:
            proxy.close()
    ours = [r for r in caplog.records if r.name == "service.api"]
    warnings = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    infos = [r.getMessage() for r in ours if r.levelno == logging.INFO]
    assert len(infos) == 1, infos
    assert infos[0].startswith("API requests proceeding again after ")
