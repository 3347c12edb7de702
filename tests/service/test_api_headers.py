"""Every answer of the API says ``X-Content-Type-Options: nosniff`` (a browser never reads a
connector's ``<script>`` in JSON as HTML) and, but for Swagger UI's own files, ``Cache-Control:
no-store`` (ledger data and problems stay out of a browser's or a proxy's cache), errors and
the guard's own answers included."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.service.conftest import auth


def test_every_api_answer_is_nosniff_and_not_stored(client: TestClient) -> None:
    answers = [
        client.get("/v1/runs", headers=auth("reader")),
        client.get("/v1/runs/1", headers=auth("reader")),  # 404 problem
        client.get("/v1/runs"),  # 401 problem
        client.get("/v1/status", headers=auth("appender")),  # 403 problem
        client.get("/v1/runs?limit=0", headers=auth("reader")),  # 400 problem
        client.get("/healthz"),
        client.get("/readyz", headers=auth("reader")),
        client.get("/metrics", headers=auth("reader")),
        client.get("/openapi.json", headers=auth("reader")),
        client.get("/docs", headers=auth("reader")),
        client.get("/no-such-path"),
        client.post(
            "/v1/events",
            content=b"[" + b" " * (11 * 1024 * 1024) + b"]",
            headers={**auth("appender"), "content-type": "application/json"},
        ),  # the guard's own 413
    ]
    for answer in answers:
        where = (answer.request.method, answer.request.url.path, answer.status_code)
        assert answer.headers.get("x-content-type-options") == "nosniff", where
        assert answer.headers.get("cache-control") == "no-store", where
    asset = client.get("/docs/assets/swagger-ui.css")
    assert asset.status_code == 200
    assert asset.headers["x-content-type-options"] == "nosniff"
    assert asset.headers["cache-control"].startswith("public")
