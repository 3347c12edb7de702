"""Bearer tokens and the limits around every request: missing, wrong and wrong-scope tokens,
tokens never in logs, tokens in URLs refused, bodies over the limit, a database outage."""

from __future__ import annotations

import hashlib
import logging
import uuid
from pathlib import Path

import pydantic
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from ledger import ConfigurationError
from service import load_config
from service.cli import cli
from service.config import LedgerConfig
from tests.service.conftest import TOKENS, api_client, auth
from tests.service.support import LOOK_ALIKE_ACTORS, OTHER_SCRIPT_ACTORS

ENDPOINTS = [
    ("post", "/v1/events", "append"),
    ("get", "/v1/runs", "read"),
    ("get", "/v1/runs/1", "read"),
    ("get", "/v1/runs/1/events", "read"),
    ("get", "/v1/stuck", "read"),
    ("get", "/v1/status", "read"),
    ("get", "/v1/verify", "read"),
    ("post", "/v1/runs/1/fail", "operate"),
    ("get", "/metrics", "read"),
    ("get", "/readyz", "read"),
    ("get", "/openapi.json", "read"),
    ("get", "/docs", "read"),
]


@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
def test_every_endpoint_but_healthz_needs_a_token_with_its_scope(
    client: TestClient, method: str, path: str, scope: str
) -> None:
    missing = client.request(method, path)
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = client.request(method, path, headers={"Authorization": "Bearer not-a-token"})
    assert wrong.status_code == 401
    other = next(name for name, (_, scopes) in TOKENS.items() if scope not in scopes)
    forbidden = client.request(method, path, headers=auth(other))
    assert forbidden.status_code == 403
    assert scope in forbidden.json()["detail"]
    allowed = next(name for name, (_, scopes) in TOKENS.items() if scopes == [scope])
    assert client.request(method, path, headers=auth(allowed)).status_code not in (401, 403)
    assert client.get("/healthz").status_code == 200
    assert client.head("/healthz").status_code == 200  # a load balancer's probe
    assert client.head("/v1/runs").status_code == 401  # HEAD opens nothing GET does not


def test_a_token_in_the_url_is_refused_and_no_token_reaches_the_log(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = TOKENS["admin"][0]
    in_url = client.get("/v1/runs", params={"access_token": token}, headers=auth("admin"))
    assert in_url.status_code == 400
    assert token not in in_url.text
    client.get("/v1/runs", headers=auth("admin"))
    client.get("/v1/runs", headers={"Authorization": f"Bearer {token}x"})
    client.post("/v1/events", json=[{"type": "nope"}], headers=auth("admin"))
    # The server's log (httpx's own lines are the client's, which put the token in the URL).
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    assert "caller=admin" in logged
    for secret, _ in TOKENS.values():
        assert secret not in logged


def test_a_token_in_the_url_path_never_reaches_the_log(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """``GET /v1/runs/TOKEN`` (a token pasted where a run id goes) was logged with the token,
    and masking the segments that hash to a token missed ``TOKEN.json``, ``TOKEN%0A`` or
    ``xTOKEN``. A request that did not succeed is logged by its route's template (or by its
    first segment when no route matched); a successful one, whose parameters all passed their
    checks, by its path."""
    caplog.set_level(logging.DEBUG)
    token = TOKENS["admin"][0]
    pasted = [
        f"/v1/runs/{token}",
        f"/v1/runs/{token}/events",
        f"/v1/runs/{token}.json",
        f"/v1/runs/{token}%0A",
        f"/v1/runs/%20{token}",
        f"/v1/runs/x{token}",
        f"/{token}",
        f"/web/x/{token}",
        f"/v1/{token}/runs",
    ]
    for path in pasted:
        answer = client.get(path, headers=auth("reader"))
        assert answer.status_code in (400, 404), (path, answer.text)
    assert client.get("/v1/runs/999999", headers=auth("reader")).status_code == 404
    assert client.get("/v1/runs", headers=auth("reader")).status_code == 200
    # The server's log (httpx's own lines are the client's, which put the token in the URL).
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    assert token not in logged
    assert "GET /v1/runs/{run_id} 400" in logged
    assert "GET /v1/runs/{run_id}/events 400" in logged
    assert "GET /v1/runs/{run_id} 404" in logged  # no such run: its id is not shown either
    assert "GET /… (no route) 404" in logged
    assert "GET /v1/… (no route) 404" in logged
    assert "GET /v1/runs 200" in logged


def test_a_long_path_is_neither_hashed_nor_written_to_the_log(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Masking hashed up to 8 runs of segments for each segment of the path, on the event loop
    before authentication: one request of 60,000 slashes held the API for half a second, and
    its line in the log was 120 kB. The log's path is looked up nowhere now, and is short."""
    caplog.set_level(logging.INFO)
    answer = client.get("/v1/" + "a/" * 30_000, headers=auth("reader"))
    assert answer.status_code == 404
    (line,) = [r.getMessage() for r in caplog.records if r.name == "ledger.api"]
    assert line.startswith("GET /v1/… (no route) 404 ")


def test_tokens_from_the_environment(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.api import create_app

    monkeypatch.setenv("API_TEST_TOKEN", "from-the-environment-1234")
    config = LedgerConfig.model_validate(
        {
            "database_url": db_url,
            "api": {"tokens": [{"name": "env", "scopes": ["read"], "env": "API_TEST_TOKEN"}]},
        }
    )
    with TestClient(create_app(config)) as test_client:
        ok = test_client.get(
            "/v1/runs", headers={"Authorization": "Bearer from-the-environment-1234"}
        )
        assert ok.status_code == 200
        assert test_client.get("/v1/runs", headers=auth("admin")).status_code == 401


@pytest.mark.parametrize("token", ["tök€n-0123456789abcdef", "with space-0123456789abcdef"])
def test_a_token_a_client_cannot_send_is_refused_at_start(
    db_url: str, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    """The header carries ASCII: a token with another character was hashed as UTF-8 here and
    could never be matched by any request; a space does not survive a header either."""
    monkeypatch.setenv("API_TEST_TOKEN", token)
    tokens = [{"name": "env", "scopes": ["read"], "env": "API_TEST_TOKEN"}]
    with pytest.raises(pydantic.ValidationError, match="cannot send in an Authorization header"):
        LedgerConfig.model_validate({"database_url": db_url, "api": {"tokens": tokens}})


def test_a_body_over_the_limit_is_413_before_parsing(db_url: str) -> None:
    with api_client(db_url, max_body_bytes=2048) as test_client:
        big = b"[" + b" " * 4096 + b"]"
        declared = test_client.post(
            "/v1/events",
            content=big,
            headers={**auth("admin"), "content-type": "application/json"},
        )
        assert declared.status_code == 413
        assert declared.headers["content-type"] == "application/problem+json"

        def chunks():  # no Content-Length: counted while it is read
            for _ in range(10):
                yield b" " * 1024

        streamed = test_client.post(
            "/v1/events",
            content=chunks(),
            headers={**auth("admin"), "content-type": "application/json"},
        )
        assert streamed.status_code == 413
        fail = test_client.post(
            "/v1/runs/1/fail", json={"reason": "x" * 5000}, headers=auth("admin")
        )
        assert fail.status_code == 413


def test_an_unreachable_database_is_503_with_retry_after() -> None:
    with api_client("mysql+pymysql://ledger:secret@127.0.0.1:1/ledger") as test_client:
        event = {
            "type": "RunStarted",
            "event_id": str(uuid.uuid4()),
            "source_id": 1,
            "connector_name": "x",
        }
        for response in (
            test_client.post("/v1/events", json=[event], headers=auth("admin")),
            test_client.get("/v1/runs", headers=auth("admin")),
            test_client.get("/readyz", headers=auth("admin")),
            test_client.head("/readyz", headers=auth("admin")),
        ):
            assert response.status_code == 503, response.text
            assert int(response.headers["retry-after"]) > 0
            if response.request.method == "HEAD":
                continue  # no body
            assert response.json()["type"].endswith("database-unreachable")
            assert "secret" not in response.text
        assert test_client.get("/healthz").status_code == 200
        metrics = test_client.get("/metrics", headers=auth("admin"))
        assert metrics.status_code == 200
        assert "ledger_database_up 0.0" in metrics.text


@pytest.mark.parametrize(
    ("claim", "why"),
    [
        (
            {
                "type": "RunTimedOut",
                "reason": "gone",
                "threshold_seconds": 60,
                "last_event_at": "2026-01-28T01:00:00Z",
                "detected_by": "connector:c",
            },
            "a RunTimedOut declares a run dead",
        ),
        ({"type": "RunFinished", "status": "success", "actor": "sweeper"}, "actor 'sweeper'"),
        (
            {"type": "RunProgressed", "records_fetched": 1, "actor": "operator:oncall"},
            "actor 'operator:oncall'",
        ),
        (
            {"type": "RunFinished", "status": "failed", "actor": "import:legacy"},
            "actor 'import:legacy'",
        ),
        ({"type": "RunFinished", "status": "failed", "actor": "serve:host:1"}, "actor 'serve:"),
        (
            {"type": "RunFinished", "status": "failed", "actor": "ledger-run:h:1"},
            "actor 'ledger-run:",
        ),
    ],
)
def test_only_a_token_that_may_operate_records_an_operators_act(
    client: TestClient, claim: dict[str, object], why: str
) -> None:
    """An append token reports runs; it cannot fail one (RunTimedOut) nor pass for the sweeper,
    an operator or an import, whom the audit and the report credit with what they did."""
    run = {"type": "RunStarted", "run_ref": "r", "source_id": 1, "connector_name": "c"}
    events = [run, {**claim, "run_ref": "r", "event_id": str(uuid.uuid4())}]
    refused = client.post("/v1/events", json=events, headers=auth("appender"))
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    detail = refused.json()["detail"]
    assert detail.startswith(f"item 2: {why}")
    assert detail.endswith(
        "token 'appender' lacks the 'operate' scope it needs, nothing was appended"
    )
    status = client.get("/v1/status", headers=auth("reader")).json()
    assert status["head_position"] == 0, "nothing was appended"
    accepted = client.post("/v1/events", json=events, headers=auth("admin"))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["appended"] == 2
    connector = {
        "type": "RunProgressed",
        "run_ref": "s",
        "records_fetched": 1,
        "actor": "connector:c",
    }
    own = client.post(
        "/v1/events", json=[{**run, "run_ref": "s"}, connector], headers=auth("appender")
    )
    assert own.status_code == 200, own.text


@pytest.mark.parametrize("look_alike", LOOK_ALIKE_ACTORS)
def test_an_actor_that_reads_as_a_reserved_one_is_refused_for_every_token(
    client: TestClient, look_alike: str
) -> None:
    """``Operator:all`` or ``operator\uff1aoncall`` (a full-width colon) passed an exact prefix
    check, and ``\u0455weeper`` (a Cyrillic dze) or ``operator\ua789all`` (a modifier letter
    colon) a check folding NFKC and case: an append token recorded a run failed "by
    operator:oncall" in the timeline, which the report did not count. Its skeleton (NFKC, case,
    look-alike characters) reads as the reserved actor: refused, whoever asks, naming the item,
    the field and the character, nothing appended."""
    run = {"type": "RunStarted", "run_ref": "r", "source_id": 1, "connector_name": "c"}
    failed = {"type": "RunFinished", "run_ref": "r", "status": "failed", "actor": look_alike}
    for token in ("appender", "admin"):
        refused = client.post("/v1/events", json=[run, failed], headers=auth(token))
        assert refused.status_code == 400, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["errors"][0]["field"] == "actor"
        assert "reads as the reserved actor" in refused.json()["detail"]
        assert "item 2" in refused.json()["detail"]
        assert " at index " in refused.json()["detail"], "names the character that differs"
    status = client.get("/v1/status", headers=auth("reader")).json()
    assert status["head_position"] == 0, "nothing was appended"


@pytest.mark.parametrize("actor", OTHER_SCRIPT_ACTORS)
def test_an_actor_in_another_script_is_accepted_from_an_append_token(
    client: TestClient, actor: str
) -> None:
    """Only look-alikes of ASCII map in the skeleton: a Cyrillic or Greek name
    (``connector:\u0441\u0431\u043e\u0440-\u0434\u0430\u043d\u043d\u044b\u0445``), or
    one that merely contains a look-alike of ``sweeper``, reads as no reserved actor and is
    recorded as it is."""
    run = {"type": "RunStarted", "run_ref": "r", "source_id": 1, "connector_name": "c"}
    progressed = {"type": "RunProgressed", "run_ref": "r", "records_fetched": 1, "actor": actor}
    accepted = client.post("/v1/events", json=[run, progressed], headers=auth("appender"))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["appended"] == 2
    timeline = client.get("/v1/runs/1/events", headers=auth("reader")).json()
    assert timeline[-1]["actor"] == actor, timeline


BAD_BODIES = [b"{bad", b"\xff", b"", b'{"reason": 1}', b"[1]", b'{"reason": "x", "reason": "y"}']


@pytest.mark.parametrize("body", BAD_BODIES)
@pytest.mark.parametrize(("method", "path", "scope"), [e for e in ENDPOINTS if e[0] == "post"])
def test_a_body_is_read_only_once_the_token_is_checked(
    client: TestClient, method: str, path: str, scope: str, body: bytes
) -> None:
    """FastAPI parsed the fail's body (a parameter of the endpoint) before the token's
    dependency: with no token, ``{bad`` was 400 ``field: "1"`` (a column) and ``\\xff`` an
    undocumented ``http-error``; only a valid body reached the 401. Every endpoint with a
    body answers 401 (403 without the scope) whatever the body."""
    json_body = {"Content-Type": "application/json"}
    missing = client.request(method, path, content=body, headers=json_body)
    assert missing.status_code == 401, missing.text
    assert missing.json()["type"] == "urn:run-ledger:problem:unauthorized"
    other = next(name for name, (_, scopes) in TOKENS.items() if scope not in scopes)
    forbidden = client.request(method, path, content=body, headers={**json_body, **auth(other)})
    assert forbidden.status_code == 403, forbidden.text


def test_a_fail_body_that_is_not_json_is_worded_as_the_events_are(client: TestClient) -> None:
    """Not a column number in ``field`` and no ``http-error``: the words and problem types of
    ``POST /v1/events`` for a body that is not JSON, and the field named for a body of the
    wrong shape."""
    run_id = client.app.state.api.ledger.start_run(1, "SOURCE_1")  # type: ignore[attr-defined]
    headers = {"Content-Type": "application/json", **auth("operator")}
    expected = {
        b"{bad": ("invalid-input", "not valid JSON (Expecting property name"),
        b"\xff": ("invalid-input", "not valid UTF-8 (byte 0)"),
        b"": ("invalid-input", "not valid JSON (Expecting value at column 1)"),
        b'{"reason": "x", "reason": "y"}': ("invalid-input", "reason: given more than once"),
        b'{"reason": NaN}': ("invalid-input", "NaN"),
        b'{"reason": 1}': ("invalid-request", "reason: Input should be a valid string"),
        b'{"reason": "x", "operator": "b"}': (
            "invalid-request",
            "operator: not a field of this request body",
        ),
        b"{}": ("invalid-request", "reason: Field required"),
    }
    for body, (slug, words) in expected.items():
        answer = client.post(f"/v1/runs/{run_id}/fail", content=body, headers=headers)
        assert answer.status_code == 400, (body, answer.text)
        problem = answer.json()
        assert problem["type"] == f"urn:run-ledger:problem:{slug}", (body, problem)
        assert words in problem["detail"], (body, problem)
        assert all(not e.get("field", "x").isdigit() for e in problem["errors"]), problem
    document = client.get("/openapi.json", headers=auth("reader")).json()
    body_schema = document["paths"]["/v1/runs/{run_id}/fail"]["post"]["requestBody"]
    assert body_schema["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FailRequest"
    }
    assert document["components"]["schemas"]["FailRequest"]["required"] == ["reason"]
    ok = client.post(f"/v1/runs/{run_id}/fail", json={"reason": "host lost"}, headers=headers)
    assert ok.status_code == 200, ok.text


def _token_entry(name: str, **source: str) -> dict[str, object]:
    return {"name": name, "scopes": ["read"], **source}


@pytest.mark.parametrize("how", ["sha256", "env", "env-and-sha256"])
def test_one_token_under_two_names_is_refused_naming_both(
    db_url: str, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """The last entry that matched decided who a request was (its name in the audit, its
    scopes): one token under two names is a config error naming both entries, never the
    token nor its hash."""
    secret = "the-same-token-0123456789abcdef"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    monkeypatch.setenv("LEDGER_API_TOKEN_ALICE", secret)
    monkeypatch.setenv("LEDGER_API_TOKEN_BOB", secret)
    first = (
        _token_entry("alice", sha256=digest)
        if how == "sha256"
        else _token_entry("alice", env="LEDGER_API_TOKEN_ALICE")
    )
    second = (
        _token_entry("bob", env="LEDGER_API_TOKEN_BOB")
        if how == "env"
        else _token_entry("bob", sha256=digest.upper())
    )
    tokens = [first, _token_entry("carol", sha256="0" * 64), second]
    with pytest.raises(pydantic.ValidationError) as refused:
        LedgerConfig.model_validate({"database_url": db_url, "api": {"tokens": tokens}})
    text = str(refused.value)
    assert "tokens[0] 'alice'" in text
    assert "tokens[2] 'bob'" in text
    assert "are the same token" in text
    assert secret not in text
    assert digest not in text.lower()
    if how == "env":
        assert "$LEDGER_API_TOKEN_ALICE" in text
        assert "$LEDGER_API_TOKEN_BOB" in text


def test_config_check_and_startup_refuse_a_repeated_token(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.api import create_app
    from service.api.auth import Tokens

    secret = "the-same-token-0123456789abcdef"
    monkeypatch.setenv("LEDGER_API_TOKEN_ONE", secret)
    monkeypatch.setenv("LEDGER_API_TOKEN_TWO", secret)
    config = tmp_path / "ledger.toml"
    config.write_text(
        '[[api.tokens]]\nname = "one"\nscopes = ["read"]\nenv = "LEDGER_API_TOKEN_ONE"\n'
        '[[api.tokens]]\nname = "two"\nscopes = ["read", "operate"]\n'
        'env = "LEDGER_API_TOKEN_TWO"\n'
    )
    result = CliRunner().invoke(cli, ["config", "check", str(config)])
    assert result.exit_code == 2, result.output
    assert "tokens[0] 'one' ($LEDGER_API_TOKEN_ONE) and tokens[1] 'two'" in result.output
    assert secret not in result.output
    assert "Traceback" not in result.output
    # Valid at load, then the environment changed before the app read it again: refused too.
    monkeypatch.setenv("LEDGER_API_TOKEN_TWO", "another-token-0123456789abcdef")
    loaded = load_config(config)
    monkeypatch.setenv("LEDGER_API_TOKEN_TWO", secret)
    with pytest.raises(ConfigurationError, match="are the same token"):
        Tokens(loaded.api)
    with pytest.raises(ConfigurationError, match="are the same token"):
        create_app(loaded.model_copy(update={"database_url": db_url}))
