"""``HEAD`` on every ``GET`` of the API and of the web view (service/api/head.py): the same
status and headers as the ``GET``, the same token or session check, no body. Only ``/healthz``
and ``/readyz`` answered it; ``curl -I /v1/runs`` and a monitor's probe of a page got 405."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from httpx import Response

from tests.service.web.support import TOKENS, demo_web_client, log_in

READ = {"Authorization": f"Bearer {TOKENS['reader'][0]}"}
# Headers whose value may differ between two answers to the same URL: a page's length (it
# shows the time it was rendered at) and a fresh login nonce.
PER_ANSWER = {"content-length", "set-cookie"}


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with demo_web_client(db_url, tmp_path / "spool") as test_client:
        yield test_client


def get_paths(client: TestClient) -> list[str]:
    """Every GET route of the app and of the web view mounted in it, run ids as 1."""
    paths = []
    for route in client.app.routes:  # type: ignore[attr-defined]
        routes = getattr(getattr(route, "app", None), "routes", None)
        found = [(route.path + r.path, r) for r in routes] if routes else [(route.path, route)]
        for path, inner in found:
            if isinstance(inner, APIRoute) and "GET" in inner.methods:
                paths.append(
                    path.replace("{run_id}", "1")
                    .replace("{name}", "style.css" if path.startswith("/web") else "init.js")
                    .replace("//", "/")
                )
    return sorted(set(paths))


def assert_like_get(get: Response, head: Response, where: str) -> None:
    assert head.status_code == get.status_code, (where, get.status_code, head.status_code)
    assert head.content == b"", where
    assert set(head.headers) == set(get.headers), (where, get.headers, head.headers)
    for name, value in get.headers.items():
        if name not in PER_ANSWER:
            assert head.headers[name] == value, (where, name)


def test_every_get_answers_head_with_its_status_and_headers_and_no_body(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    paths = get_paths(client)
    assert {"/v1/runs", "/v1/runs/1/events", "/metrics", "/web/runs", "/web/runs/1"} <= set(paths)
    api = [path for path in paths if not path.startswith("/web")]
    for path in api:  # with a read token, without one (401), with too little a scope (403)
        for headers in (READ, {}, {"Authorization": f"Bearer {TOKENS['appender'][0]}"}):
            get = client.get(path, headers=headers, follow_redirects=False)
            head = client.head(path, headers=headers, follow_redirects=False)
            assert_like_get(get, head, f"{path} {sorted(headers)}")
            if path.startswith("/v1/"):
                assert head.status_code != 405, path
    assert client.head("/v1/runs", headers=READ).headers["content-type"] == "application/json"
    # The API's own JSON is the same bytes for GET and HEAD: the length a GET would send.
    answer = client.get("/v1/runs?limit=2", headers=READ)
    assert client.head("/v1/runs?limit=2", headers=READ).headers["content-length"] == str(
        len(answer.content)
    )
    web = [path for path in paths if path.startswith("/web")]
    for path in web:  # no session: a redirect to the login (or the login page itself)
        get = client.get(path, follow_redirects=False)
        assert_like_get(get, client.head(path, follow_redirects=False), path)
    log_in(client, "reader")
    for path in web:
        get = client.get(path, follow_redirects=False)
        assert_like_get(get, client.head(path, follow_redirects=False), path)
    page = client.head("/web/runs/1")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    # A path without a GET answers HEAD as it answers GET: 405, naming its methods.
    for method in ("GET", "HEAD"):
        refused = client.request(method, "/v1/events", headers=READ)
        assert refused.status_code == 405, refused.text
        assert refused.headers["allow"] == "POST"
    caplog.set_level(logging.INFO, logger="ledger.api")
    client.head("/v1/status", headers=READ)
    assert any(r.getMessage().startswith("HEAD /v1/status 200") for r in caplog.records)


def test_the_document_lists_head_for_every_get(client: TestClient) -> None:
    """HEAD is answered for every GET, so the document lists it (a client generated from it
    finds the probe), with the GET's parameters, security and statuses, and no content."""
    document = client.get("/openapi.json", headers=READ).json()
    for path, operations in document["paths"].items():
        assert ("get" in operations) == ("head" in operations), path
        if "get" not in operations:
            continue
        get, head = operations["get"], operations["head"]
        assert head.get("security") == get.get("security"), path
        assert head.get("parameters") == get.get("parameters"), path
        assert set(head["responses"]) == set(get["responses"]), path
        assert all("content" not in r for r in head["responses"].values()), path
        assert head["operationId"] != get["operationId"], path


def test_a_405_names_head_beside_get_in_allow(client: TestClient) -> None:
    """A 405 said ``Allow: GET`` on paths that answer ``HEAD`` too (RFC 9110: ``Allow`` lists
    the methods the resource supports); a path that takes only POST still says ``POST``."""
    for method, path in (("DELETE", "/v1/runs"), ("PUT", "/v1/runs/1"), ("POST", "/healthz")):
        refused = client.request(method, path, headers=READ)
        assert refused.status_code == 405, (method, path, refused.text)
        assert refused.headers["allow"] == "GET, HEAD", (method, path)
        assert client.head(path, headers=READ).status_code != 405, path
    for method in ("GET", "HEAD", "PUT"):
        refused = client.request(method, "/v1/events", headers=READ)
        assert refused.status_code == 405, method
        assert refused.headers["allow"] == "POST", method
