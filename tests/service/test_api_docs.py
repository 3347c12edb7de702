"""``/docs``: Swagger UI served from this machine with the OpenAPI document embedded."""

from __future__ import annotations

import json
import re

from fastapi.testclient import TestClient

from tests.service.conftest import auth


def test_docs_embed_the_document_and_use_only_this_servers_files(client: TestClient) -> None:
    page = client.get("/docs", headers=auth("reader"))
    assert page.status_code == 200
    assert "cdn." not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    embedded = re.search(r'id="openapi-document">(.*?)</script>', page.text, re.S)
    assert embedded is not None
    assert (
        json.loads(embedded.group(1)) == client.get("/openapi.json", headers=auth("reader")).json()
    )
    for path in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        asset = client.get(path)  # no token: Swagger UI's own files hold no ledger data
        assert asset.status_code == 200, path
        assert asset.headers["content-type"].startswith(("text/css", "text/javascript"))


def test_only_the_listed_assets_are_served(client: TestClient) -> None:
    for name in ("index.css", "LICENSE", "..%2F..%2Fpyproject.toml", "swagger-ui.js.map"):
        response = client.get(f"/docs/assets/{name}")
        assert response.status_code == 404, name
        assert response.headers["content-type"] == "application/problem+json"


def test_no_text_in_the_document_can_close_its_element() -> None:
    from service.api.docs import docs_page

    page = docs_page({"info": {"description": "</script><script>alert(1)</script>&"}}, "t")
    body = bytes(page.body).decode()
    assert "</script><script>alert" not in body
    assert body.count("</script>") == 3  # the data element and the two script files


def test_the_document_lists_head_of_the_probes_as_they_are_answered(client: TestClient) -> None:
    """``HEAD /readyz`` (a load balancer's probe, with a read token) and ``HEAD /healthz`` are
    answered: the document says so, with the same statuses as their GET."""
    document = client.get("/openapi.json", headers=auth("reader")).json()
    ready = document["paths"]["/readyz"]
    assert "head" in ready, sorted(ready)
    assert {"200", "401", "403", "503"} <= set(ready["head"]["responses"])
    assert ready["head"]["security"] == ready["get"]["security"]
    health = document["paths"]["/healthz"]
    assert "head" in health, sorted(health)
    assert "security" not in health["head"]
    assert client.head("/readyz", headers=auth("reader")).status_code == 200
    assert client.head("/readyz").status_code == 401
    assert client.head("/healthz").status_code == 200
