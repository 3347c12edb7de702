"""Every invalid query parameter is the same problem: ``invalid-request`` naming its field,
whether FastAPI refuses it (``limit=0``) or the endpoint's own parse does (a duration, a
time). A client tells "my URL is wrong" from "my events are wrong" (``invalid-input``) by the
type alone."""

from __future__ import annotations

from fastapi.testclient import TestClient

from ledger import Ledger, RunStarted
from tests.service.conftest import auth
from tests.service.support import LOOSE_INTEGERS, integer_parameters, with_integer

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
    offset = "the UTC offset must be between -23:59 and +23:59)"
    assert_invalid_request(client, "/v1/runs?as_of=2026-01-01T00:00:00%2B24:00", "as_of", offset)


def test_the_openapi_document_says_a_bad_query_parameter_is_400(client: TestClient) -> None:
    document = client.get("/openapi.json", headers=READ).json()
    for path in ("/v1/stuck", "/v1/runs", "/v1/runs/{run_id}"):
        assert "400" in document["paths"][path]["get"]["responses"], path


def test_an_unknown_query_parameter_is_refused_not_ignored(
    client: TestClient, ledger: Ledger
) -> None:
    """A misspelt parameter was ignored: ``?expectedVersion=5`` (the TS client's spelling)
    appended with no version check at all, ``?state=failed`` listed every run, and
    ``?older-than=1h`` judged by the config's threshold, each answered 200."""
    append = auth("appender")
    started = [{"type": "RunStarted", "source_id": 1, "connector_name": "spelling"}]
    assert client.post("/v1/events", json=started, headers=append).status_code == 200
    late = [{"type": "RunProgressed", "run_id": 1, "records_fetched": 1}]
    for spelling in ("expectedVersion", "expected-version", "Expected_Version", "version"):
        answer = client.post(f"/v1/events?{spelling}=5", json=late, headers=append)
        assert answer.status_code == 400, (spelling, answer.text)
        problem = answer.json()
        assert problem["type"] == "urn:run-ledger:problem:unknown-parameter", problem
        assert problem["detail"].startswith(f"{spelling}: "), problem
        assert "expected_version" in problem["detail"], problem  # the one it takes
        assert [error["field"] for error in problem["errors"]] == [spelling], problem
    assert ledger.head().last_position == 1  # nothing of it was appended
    for url, field in (
        ("/v1/runs?state=failed", "state"),
        ("/v1/runs?Limit=1", "Limit"),
        ("/v1/runs?connector_name=x&status=failed", "connector_name"),
        ("/v1/runs/1?asof=2026-01-01", "asof"),
        ("/v1/runs/1/events?page=2", "page"),
        ("/v1/stuck?older-than=1h", "older-than"),
        ("/v1/verify?chainOnly=true", "chainOnly"),
        ("/v1/status?verbose=1", "verbose"),
        ("/readyz?x=1", "x"),
    ):
        answer = client.get(url, headers=READ)
        assert answer.status_code == 400, (url, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["errors"][0]["field"] == field, (url, answer.text)
    fail = client.post(
        "/v1/runs/1/fail?operator=bob", json={"reason": "r"}, headers=auth("operator")
    )
    assert fail.status_code == 400, fail.text
    assert ledger.head().last_position == 1
    # What an endpoint takes is still taken, and a token is still checked first.
    assert client.get("/v1/runs?status=running&limit=1", headers=READ).status_code == 200
    assert client.get("/v1/runs?state=failed").status_code == 401


def test_an_authorization_header_given_twice_is_refused(client: TestClient) -> None:
    """Two Authorization headers: the first was used, whatever the second said, so a proxy
    or a client library that adds one in front of the caller's decided who the caller was."""
    right = auth("reader")["Authorization"]
    for headers in (
        [("authorization", right), ("authorization", "Bearer wrong-token")],
        [("authorization", "Bearer wrong-token"), ("authorization", right)],
        [("authorization", right), ("authorization", right)],
    ):
        answer = client.get("/v1/status", headers=headers)
        assert answer.status_code == 400, (headers, answer.text)
        problem = answer.json()
        assert problem["type"] == "urn:run-ledger:problem:repeated-header", problem
        assert "Authorization" in problem["detail"]
        assert right.split()[1] not in answer.text
    assert client.get("/v1/status", headers=[("authorization", right)]).status_code == 200


def test_the_openapi_document_names_the_headers_its_problems_carry(client: TestClient) -> None:
    """Retry-After on every 429 and 503 and WWW-Authenticate on every 401 were sent but not in
    the document, so a client generated from it had no field to read when to retry."""
    document = client.get("/openapi.json", headers=READ).json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            for status, header in (("429", "Retry-After"), ("503", "Retry-After")):
                if status in responses:
                    assert header in responses[status].get("headers", {}), (path, method, status)
            if path != "/healthz":
                assert "WWW-Authenticate" in responses["401"].get("headers", {}), (path, method)
    refused = client.get("/v1/status")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"]


def test_an_integer_in_the_url_is_ascii_digits_only_never_another_run(
    client: TestClient, ledger: Ledger
) -> None:
    """``/v1/runs/1_0`` answered run 10 (int() reads ``1_0`` as 10, ``+1``, `` 1`` and ``١``
    as 1): every integer of every route's path and query, walked from the app's routes, is
    refused for any spelling but ASCII digits, as a 400 naming the parameter; nothing is
    written."""
    for number in range(1, 11):
        ledger.append([RunStarted(source_id=number, connector_name=f"c{number}")])
    head = ledger.head().last_position
    assert client.get("/v1/runs/10", headers=READ).status_code == 200
    admin = auth("admin")
    bodies = {
        "/v1/events": [{"type": "RunProgressed", "run_id": 1, "records_fetched": 1}],
        "/v1/runs/{run_id}/fail": {"reason": "a test"},
    }
    checked = set()
    for path, method, name in integer_parameters(client.app):
        for loose in LOOSE_INTEGERS:
            url, params = with_integer(path, name, loose)
            answer = client.request(
                method, url, params=params, json=bodies.get(path), headers=admin
            )
            assert answer.status_code == 400, (method, url, params, answer.text)
            problem = answer.json()
            assert problem["type"] == "urn:run-ledger:problem:invalid-request", problem
            assert [error["field"] for error in problem["errors"]] == [name], problem
            assert "integer of ASCII digits" in problem["detail"], problem
        checked.add((path, name))
    assert {
        ("/v1/runs/{run_id}", "run_id"),
        ("/v1/runs", "cursor"),
        ("/v1/runs", "at_position"),
        ("/v1/runs/{run_id}/events", "cursor"),
        ("/v1/events", "expected_version"),
    } <= checked
    assert ledger.head().last_position == head  # nothing was appended nor failed
    # ASCII digits are still a number (a leading zero too), within the documented bounds.
    assert client.get("/v1/runs/010", headers=READ).json()["ledger"]["version"] == 1
    assert client.get("/v1/runs?limit=0002", headers=READ).status_code == 200
    assert client.get("/v1/runs?limit=1001", headers=READ).status_code == 400


def test_a_flag_is_true_or_false_as_json_writes_it(client: TestClient) -> None:
    """FastAPI's lax bool took ``chain_only=yes``, ``on``, ``t`` and ``1`` (and ``no``, ``off``,
    ``f``, ``0`` for false): a flag in a URL is written one way."""
    for written in ("yes", "on", "t", "1", "0", "True", "FALSE", ""):
        assert_invalid_request(
            client, f"/v1/verify?chain_only={written}", "chain_only", "not true or false"
        )
    for written in ("true", "false"):
        answer = client.get(f"/v1/verify?chain_only={written}", headers=READ)
        assert answer.status_code == 200, answer.text
        assert answer.json()["ok"] is True
    document = client.get("/openapi.json", headers=READ).json()
    parameters = document["paths"]["/v1/verify"]["get"]["parameters"]
    assert [p["description"] for p in parameters if p["name"] == "chain_only"] == [
        "`true` or `false`"
    ]
