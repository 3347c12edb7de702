"""Every invalid query parameter is the same problem: ``invalid-request`` naming its field,
whether FastAPI refuses it (``limit=0``) or the endpoint's own parse does (a duration, a
time). A client tells "my URL is wrong" from "my events are wrong" (``invalid-input``) by the
type alone."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.service.conftest import auth

READ = auth("reader")


def assert_invalid_request(client: TestClient, url: str, field: str, words: str) -> None:
    answer = client.get(url, headers=READ)
    assert answer.status_code == 400, (url, answer.text)
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["type"] == "urn:run-ledger:problem:invalid-request", (url, problem)
    assert problem["title"] == "Invalid request"
    assert problem["detail"].startswith(f"{field}: "), problem
    assert words in problem["detail"], problem
    assert [error["field"] for error in problem["errors"]] == [field], problem
    assert words in problem["errors"][0]["message"], problem


def test_a_bad_duration_or_time_is_an_invalid_request_like_a_bad_limit(
    client: TestClient,
) -> None:
    assert_invalid_request(client, "/v1/runs?limit=0", "limit", "greater than or equal to 1")
    assert_invalid_request(client, "/v1/stuck?older_than=abc", "older_than", "not a duration")
    assert_invalid_request(client, "/v1/stuck?older_than=0s", "older_than", "longer than zero")
    assert_invalid_request(client, "/v1/stuck?max_runtime=9999d", "max_runtime", "3650 days")
    assert_invalid_request(client, "/v1/runs?as_of=yesterday", "as_of", "not an ISO-8601 time")
    assert_invalid_request(client, "/v1/runs/1?as_of=soon", "as_of", "not an ISO-8601 time")
    assert_invalid_request(
        client, "/v1/runs?as_of=2026-01-28T03:00:00Z&at_position=3", "as_of", "not both"
    )
    assert_invalid_request(
        client, "/v1/runs?as_of=9999-12-31T23:59:59-14:00", "as_of", "out of range"
    )


def test_the_openapi_document_says_a_bad_query_parameter_is_400(client: TestClient) -> None:
    document = client.get("/openapi.json", headers=READ).json()
    for path in ("/v1/stuck", "/v1/runs", "/v1/runs/{run_id}"):
        assert "400" in document["paths"][path]["get"]["responses"], path
