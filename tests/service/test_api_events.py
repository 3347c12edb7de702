"""``POST /v1/events`` on both databases: the append of ``ledger append``, over HTTP."""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from ledger import Ledger
from ledger.schema import SCHEMA_REVISION
from service.cli import cli
from tests import support
from tests.service.conftest import auth

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_events.jsonl"
NDJSON = {"content-type": "application/x-ndjson"}


def post(client: TestClient, body: Any, who: str = "appender", **params: Any) -> Any:
    if isinstance(body, bytes):
        return client.post(
            "/v1/events", content=body, headers={**auth(who), **NDJSON}, params=params
        )
    return client.post("/v1/events", json=body, headers=auth(who), params=params)


def started(run_id: int | None = None, **extra: Any) -> dict[str, Any]:
    event = {
        "type": "RunStarted",
        "event_id": str(uuid.uuid4()),
        "source_id": 1,
        "connector_name": "api-test",
        **extra,
    }
    if run_id is not None:
        event["run_id"] = run_id
    return event


def stored_rows(db_url: str) -> list[tuple[Any, ...]]:
    """The ledger's rows as a writer cannot choose them differently: without times of
    recording and hashes (which include them)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [
                tuple(row)
                for row in conn.execute(
                    text(
                        "SELECT position, event_id, run_id, version, type, schema_version, "
                        "payload, occurred_at, actor FROM ledger_events ORDER BY position"
                    )
                )
            ]
    finally:
        engine.dispose()


def test_the_sample_through_http_and_the_cli_gives_the_same_rows_and_summary(
    client: TestClient, db_url: str, backend: str, tmp_path: Path, sqlite_template: Path
) -> None:
    # The sample holds the sweeper's RunTimedOut: recording it takes a token that may operate.
    assert post(client, SAMPLE.read_bytes()).status_code == 403
    response = post(client, SAMPLE.read_bytes(), "admin")
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["appended"] == 7
    assert summary["run_refs"] == {"nightly-source-1": 1, "nightly-source-2": 2}

    # The same file through `ledger append`, into a fresh database of the same backend.
    if backend == "sqlite":
        folder = tmp_path / "cli"
        folder.mkdir()
        other = support.sqlite_copy(sqlite_template, folder)
    else:
        base = support.mysql_base_url()
        assert base is not None
        other = support.create_mysql_database(base)
        support.migrate(other)
    try:
        result = CliRunner().invoke(cli, ["append", str(SAMPLE), "--db", other])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == summary
        assert stored_rows(other) == stored_rows(db_url)
    finally:
        if backend != "sqlite":
            support.drop_mysql_database(other)


def test_array_and_ndjson_both_append_and_retries_are_idempotent(
    client: TestClient, ledger: Ledger
) -> None:
    first = started(run_ref="a")
    progress = {
        "type": "RunProgressed",
        "run_ref": "a",
        "event_id": str(uuid.uuid4()),
        "records_fetched": 3,
    }
    response = post(client, [first, progress])
    assert response.status_code == 200, response.text
    assert response.json()["appended"] == 2
    again = post(client, (json.dumps(first) + "\n" + json.dumps(progress) + "\n").encode())
    assert again.status_code == 200, again.text
    assert again.json()["appended"] == 0
    assert again.json()["duplicates"] == 2
    assert ledger.head().last_position == 2


def test_one_bad_event_appends_nothing_and_names_item_and_field(
    client: TestClient, ledger: Ledger
) -> None:
    response = post(
        client, [started(), {"type": "RunProgressed", "run_id": 1, "records_fetched": -3}]
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("invalid-input")
    assert problem["status"] == 400
    assert "item 2: records_fetched" in problem["detail"]
    assert problem["errors"][0]["field"] == "records_fetched"
    assert problem["errors"][0]["item"] == 2
    assert ledger.head().last_position == 0


def test_ndjson_problems_name_the_line_like_the_cli(client: TestClient, db_url: str) -> None:
    body = b'{"type":"RunProgressed","run_id":1,"records_fetched":-3}\n'
    response = post(client, body)
    assert response.status_code == 400
    cli_result = CliRunner().invoke(cli, ["append", "-", "--db", db_url], input=body)
    assert cli_result.exit_code == 2
    assert response.json()["detail"] in cli_result.output
    assert response.json()["errors"][0]["line"] == 1


def test_expected_version_over_several_runs_is_400_saying_nothing_was_appended(
    client: TestClient, ledger: Ledger
) -> None:
    """expected_version is for a batch about one run: over two runs it is refused, and the
    problem says, as every refused input does, that nothing was appended (it did not)."""
    response = post(client, [started(), started()], expected_version=0)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith("invalid input, nothing was appended:"), detail
    assert "expected_version applies to a batch about one run" in detail
    assert ledger.head().last_position == 0


def test_expected_version_conflict_is_409(client: TestClient, ledger: Ledger) -> None:
    assert post(client, [started(run_id=5)]).status_code == 200
    late = {"type": "RunProgressed", "run_id": 5, "event_id": str(uuid.uuid4())}
    response = post(client, [late], expected_version=3)
    assert response.status_code == 409
    problem = response.json()
    assert problem["type"].endswith("version-conflict")
    assert (problem["run_id"], problem["expected_version"], problem["actual_version"]) == (5, 3, 1)
    assert post(client, [late], expected_version=1).status_code == 200


def test_stream_rule_and_reused_event_id_are_conflicts(client: TestClient) -> None:
    first = started(run_id=7)
    assert post(client, [first]).status_code == 200
    twice = post(client, [started(run_id=7)])
    assert twice.status_code == 409
    assert twice.json()["type"].endswith("stream-rule")
    assert twice.json()["run_id"] == 7
    other_fact = {**first, "type": "RunProgressed"}
    del other_fact["source_id"], other_fact["connector_name"]
    reused = post(client, [other_fact])
    assert reused.status_code == 409
    assert reused.json()["type"].endswith("event-id-reused")


def test_body_shapes_and_types_refused(client: TestClient) -> None:
    wrong_type = client.post(
        "/v1/events", content=b"[]", headers={**auth("appender"), "content-type": "text/plain"}
    )
    assert wrong_type.status_code == 415
    assert post(client, {"type": "RunStarted"}).status_code == 400
    deep = b"[" * 100_000 + b"]" * 100_000
    nested = client.post(
        "/v1/events", content=deep, headers={**auth("appender"), "content-type": "application/json"}
    )
    assert nested.status_code == 400
    assert "nested too deeply" in nested.json()["detail"]
    not_utf8 = client.post(
        "/v1/events",
        content=b"[\xff]",
        headers={**auth("appender"), "content-type": "application/json"},
    )
    assert not_utf8.status_code == 400
    empty = post(client, [])
    assert empty.status_code == 200
    assert empty.json()["appended"] == 0


def test_a_compressed_body_is_refused_naming_the_encoding(client: TestClient) -> None:
    """A gzip body was answered 400 "not valid UTF-8 (byte 1)"."""
    body = gzip.compress(json.dumps([started()]).encode())
    for path, who in (("/v1/events", "appender"), ("/v1/runs/1/fail", "operator")):
        headers = {**auth(who), "content-type": "application/json", "content-encoding": "gzip"}
        refused = client.post(path, content=body, headers=headers)
        assert refused.status_code == 415, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["detail"].startswith("Content-Encoding 'gzip' is not supported")
    plain = {**auth("appender"), "content-encoding": "identity"}
    assert client.post("/v1/events", json=[started()], headers=plain).status_code == 200
    # A second header counts too (only the first was read: 400 "not valid UTF-8 (byte 1)").
    twice = [
        *auth("appender").items(),
        ("content-type", "application/json"),
        ("content-encoding", "identity"),
        ("content-encoding", "gzip"),
    ]
    refused = client.post("/v1/events", content=body, headers=twice)
    assert refused.status_code == 415, refused.text
    assert refused.json()["detail"].startswith("Content-Encoding 'identity, gzip' is not")


def test_a_body_declared_in_another_charset_than_utf8_is_refused(
    client: TestClient, db_url: str
) -> None:
    """The body was read as UTF-8 whatever its Content-Type declared: ``charset=iso-8859-1``
    on the bytes of "café" in UTF-8 stored "café" where the client meant "cafÃ©", and a
    UTF-16 declaration on ASCII bytes was appended. A charset other than UTF-8 (or ASCII) is
    415 naming it, nothing appended, on both endpoints that take a body."""
    body = json.dumps([started(connector_name="café")], ensure_ascii=False).encode("utf-8")
    for charset in ("iso-8859-1", "utf-16", '"windows-1252"', "Latin1"):
        for kind in ("application/json", "application/x-ndjson"):
            content = body if kind == "application/json" else body[1:-1]
            headers = {**auth("appender"), "content-type": f"{kind}; charset={charset}"}
            refused = client.post("/v1/events", content=content, headers=headers)
            assert refused.status_code == 415, (charset, kind, refused.text)
            assert refused.headers["content-type"] == "application/problem+json"
            named = charset.strip('"').lower()
            assert f"charset '{named}' is not supported" in refused.json()["detail"], charset
        fail = client.post(
            "/v1/runs/1/fail",
            content=b'{"reason": "host lost"}',
            headers={**auth("operator"), "content-type": f"application/json; charset={charset}"},
        )
        assert fail.status_code == 415, (charset, fail.text)
    assert stored_rows(db_url) == []
    for charset in ("utf-8", '"UTF-8"', "utf8", "us-ascii"):
        headers = {**auth("appender"), "content-type": f"application/json;charset={charset}"}
        body = json.dumps([started(connector_name="café")], ensure_ascii=False).encode()
        taken = client.post("/v1/events", content=body, headers=headers)
        assert taken.status_code == 200, (charset, taken.text)
    names = {json.loads(row[6])["connector_name"] for row in stored_rows(db_url)}
    assert names == {"café"}


def test_control_characters_come_back_escaped(client: TestClient) -> None:
    name = "evil\x1b[2J\u202e\nname"
    response = post(client, [started(connector_name=name)])
    assert response.status_code == 400  # the ledger's name rule refuses it
    body = response.content
    assert b"\x1b" not in body
    assert "\u202e".encode() not in body
    assert response.json()["errors"]


def test_writes_are_refused_once_the_schema_is_not_current(
    client: TestClient, ledger: Ledger, db_url: str
) -> None:
    """``/readyz`` said 503 schema-not-current after ``alembic_version`` changed under the
    running server, yet appends went on. Writes (an append, a run failed by hand) now ask too
    (a pass stands for a few seconds: tests/ledger/test_schema.py): 503 naming the remedy,
    nothing written; a failed check is not kept, so the first write after the fix goes
    through."""
    engine = create_engine(db_url)
    try:
        run_id = ledger.start_run(1, "api-test")
        with engine.begin() as conn:
            conn.execute(text("UPDATE ledger_alembic_version SET version_num = '0001_event_store'"))
        refused = post(client, [started()])
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) > 0
        problem = refused.json()
        assert problem["type"] == "urn:run-ledger:problem:schema-not-current"
        assert "ledger migrate" in problem["detail"]
        assert "deploy the run-ledger version that matches it" in problem["detail"]
        path = f"/v1/runs/{run_id}/fail"
        fail = client.post(path, json={"reason": "gone"}, headers=auth("admin"))
        assert fail.status_code == 503, fail.text
        assert ledger.head().last_position == 1, "nothing was written"
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE ledger_alembic_version SET version_num = :v"), {"v": SCHEMA_REVISION}
            )
        assert post(client, [started()]).status_code == 200
    finally:
        with engine.begin() as conn:  # the MariaDB database is the session's
            conn.execute(
                text("UPDATE ledger_alembic_version SET version_num = :v"), {"v": SCHEMA_REVISION}
            )
        engine.dispose()


def test_a_line_ahead_of_the_clock_is_named_before_a_version_conflict(
    client: TestClient, ledger: Ledger
) -> None:
    """The lock meets the version conflict of item 1 before item 2's time: the refusal names
    item 2 ahead of the clock (400), as when the clock was read before the append."""
    assert post(client, [started(run_id=5)]).status_code == 200
    late = {"type": "RunProgressed", "run_id": 5, "event_id": str(uuid.uuid4())}
    ahead = {**late, "event_id": str(uuid.uuid4()), "occurred_at": "2999-01-01T00:00:00Z"}
    for body in ([late, ahead], (json.dumps(late) + "\n" + json.dumps(ahead) + "\n").encode()):
        response = post(client, body, expected_version=3)
        assert response.status_code == 400, response.text
        assert "2: occurred_at: 2999-01-01" in response.json()["detail"]
    assert ledger.head().last_position == 1
