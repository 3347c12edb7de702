"""The read endpoints and ``fail`` on both databases: the JSON of the CLI's ``--format json``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from freezegun import freeze_time
from sqlalchemy import event, make_url

from forensics.anchors import anchor_at
from forensics.verify import verify_all
from ledger import Ledger, RunFinished
from ledger.clock import isoformat_utc
from ledger.errors import StoredEventError
from projections import Projector
from projections.schema import PROJECTION_NAME, ingestion_runs
from service.api import create_app
from service.api.shapes import IngestionRun
from service.cli import cli
from service.cli import cli as cli_command
from service.config import LedgerConfig, SpoolConfig, ThresholdsConfig
from service.status import SPOOL_UNREADABLE, status_report
from tests.service.conftest import TOKENS, api_client, api_config, auth
from tests.service.support import SKIPPED_AT, STOPPED_AT, stop_and_skip_by_hand

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_events.jsonl"
READ = auth("reader")


def cli_json(db_url: str, *args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--format", "json", "--db", db_url])
    return json.loads(result.output)


def load_sample(client: TestClient, ledger: Ledger, runs: int = 0) -> None:
    body = SAMPLE.read_bytes()  # with the sweeper's RunTimedOut: a token that may operate
    headers = {**auth("admin"), "content-type": "application/x-ndjson"}
    assert client.post("/v1/events", content=body, headers=headers).status_code == 200
    for number in range(runs):
        event = {"type": "RunStarted", "source_id": 9, "connector_name": f"extra-{number}"}
        assert client.post("/v1/events", json=[event], headers=auth("appender")).status_code == 200
    Projector(ledger).run_once()


def test_runs_list_and_show_are_the_cli_json(
    client: TestClient, ledger: Ledger, db_url: str
) -> None:
    load_sample(client, ledger)
    listed = client.get("/v1/runs", headers=READ)
    assert listed.status_code == 200
    assert listed.json() == cli_json(db_url, "runs", "list")
    shown = client.get("/v1/runs/1", headers=READ).json()
    assert shown["row"] == cli_json(db_url, "runs", "show", "1")
    filtered = client.get("/v1/runs", params={"status": "success"}, headers=READ).json()
    assert filtered == cli_json(db_url, "runs", "list", "--status", "success")
    at = client.get("/v1/runs", params={"at_position": 3}, headers=READ).json()
    assert at == cli_json(db_url, "runs", "list", "--at-position", "3")
    both = client.get("/v1/runs", params={"at_position": 3, "as_of": "2026-01-01"}, headers=READ)
    assert both.status_code == 400
    assert "not both" in both.json()["detail"]
    bad_time = client.get("/v1/runs", params={"as_of": "yesterday\x1b"}, headers=READ)
    assert bad_time.status_code == 400
    assert "\x1b" not in bad_time.text


def test_cursor_paging_walks_every_run_once(client: TestClient, ledger: Ledger) -> None:
    load_sample(client, ledger, runs=5)
    seen: list[int] = []
    url = "/v1/runs?limit=3"
    while url:
        page = client.get(url, headers=READ)
        assert page.status_code == 200
        seen.extend(row["id"] for row in page.json())
        link = page.headers.get("link")
        url = link[1 : link.index(">")] if link else ""
    assert seen == [7, 6, 5, 4, 3, 2, 1]
    forged = client.get("/v1/runs", params={"cursor": 2**63}, headers=READ)
    assert forged.status_code == 400
    beyond = client.get("/v1/runs", params={"cursor": 1}, headers=READ)
    assert beyond.json() == []


def test_run_ids_out_of_range_and_unknown(client: TestClient, ledger: Ledger) -> None:
    load_sample(client, ledger)
    for bad in ("0", "-1", str(2**63), "x"):
        assert client.get(f"/v1/runs/{bad}", headers=READ).status_code == 400
    missing = client.get("/v1/runs/99", headers=READ)
    assert missing.status_code == 404
    assert missing.json()["detail"] == "run 99 does not exist"
    assert missing.json()["run_id"] == 99
    assert client.get("/v1/runs/99/events", headers=READ).status_code == 404
    assert client.get("/v1/nothing-here", headers=READ).status_code == 404


def test_events_stuck_status_verify_are_the_cli_json(
    client: TestClient, ledger: Ledger, db_url: str
) -> None:
    load_sample(client, ledger)
    timeline = client.get("/v1/runs/1/events", headers=READ).json()
    assert timeline == cli_json(db_url, "audit", "1")
    with freeze_time("2026-06-01"):
        stuck = client.get("/v1/stuck", headers=READ).json()
        assert stuck == cli_json(db_url, "stuck")
    assert client.get("/v1/stuck", params={"older_than": "soon"}, headers=READ).status_code == 400
    status = client.get("/v1/status", headers=READ).json()
    assert status["head_position"] == 7
    cli_status = cli_json(db_url, "status")
    assert "spool_path" not in status
    del cli_status["spool_path"]  # a file of the server's, the API does not show
    del cli_status["schema_warning"]  # the API's is /readyz (names the database's URL)
    assert {**status, "database": None} == {**cli_status, "database": None}
    verify = client.get("/v1/verify", headers=READ).json()
    assert verify == cli_json(db_url, "verify")
    assert client.get("/v1/verify", params={"chain_only": True}, headers=READ).json()["ok"]
    assert "ledger_events_appended" in client.get("/metrics", headers=READ).text
    assert client.get("/readyz", headers=READ).json() == {"status": "ready"}
    assert client.head("/readyz", headers=READ).status_code == 200  # a load balancer's probe
    assert client.head("/readyz").status_code == 401


def test_fail_records_the_token_name(client: TestClient, ledger: Ledger) -> None:
    load_sample(client, ledger, runs=1)
    open_run = 3
    failed = client.post(
        f"/v1/runs/{open_run}/fail", json={"reason": "host lost\n"}, headers=auth("operator")
    )
    assert failed.status_code == 200, failed.text
    assert failed.json()["actor"] == "operator:operator"
    again = client.post(
        f"/v1/runs/{open_run}/fail", json={"reason": "again"}, headers=auth("operator")
    )
    assert again.status_code == 409
    blank = client.post("/v1/runs/1/fail", json={"reason": " "}, headers=auth("operator"))
    assert blank.status_code in (400, 409)
    assert client.post("/v1/runs/1/fail", json={}, headers=auth("operator")).status_code == 400


def test_run_detail_has_the_write_side_state_even_before_projection(
    client: TestClient, ledger: Ledger, db_url: str
) -> None:
    load_sample(client, ledger)
    started = {"type": "RunStarted", "source_id": 5, "connector_name": "late-one"}
    assert client.post("/v1/events", json=[started], headers=auth("appender")).status_code == 200
    lagging = client.get("/v1/runs/3", headers=READ)
    assert lagging.status_code == 200, lagging.text
    body = lagging.json()
    state = ledger.run(3)
    assert state is not None
    assert body["row"] is None
    assert not body["projected"]
    assert body["as_of_position"] is None
    assert body["ledger"] == state.to_dict()
    assert body["ledger"]["connector_name"] == "late-one"
    assert body["ledger"]["version"] == 1
    assert body["ledger"]["state"] == "open"
    cli = CliRunner().invoke(cli_command, ["runs", "show", "3", "--db", db_url])
    assert body["note"] in cli.stderr  # the same words as the CLI's
    assert "not yet in ingestion_runs" in body["note"]

    Projector(ledger).run_once()
    projected = client.get("/v1/runs/3", headers=READ).json()
    assert projected["projected"]
    assert projected["note"] is None
    assert projected["row"] == cli_json(db_url, "runs", "show", "3")
    assert projected["ledger"] == body["ledger"]


def test_run_detail_as_of_replays_the_write_side_state_too(
    client: TestClient, ledger: Ledger
) -> None:
    load_sample(client, ledger)
    history = ledger.read_run(1)
    first, last = history[0], history[-1]
    early = client.get("/v1/runs/1", params={"at_position": first.position}, headers=READ)
    assert early.status_code == 200, early.text
    assert early.json()["as_of_position"] == first.position
    assert early.json()["ledger"]["version"] == 1
    assert early.json()["ledger"]["state"] == "open"
    assert early.json()["row"]["status"] == "running"
    final = client.get("/v1/runs/1", params={"at_position": last.position}, headers=READ).json()
    live = ledger.run(1)
    assert live is not None
    assert final["ledger"] == live.to_dict()
    later_run = ledger.read_run(2)[0].position
    before = client.get("/v1/runs/2", params={"at_position": later_run - 1}, headers=READ)
    assert before.status_code == 404
    assert before.json()["detail"] == f"run 2 did not exist yet as of position {later_run - 1}"


def test_as_of_with_its_offset_written_raw_in_the_url(client: TestClient, ledger: Ledger) -> None:
    """``?as_of=…T04:00:00+01:00`` typed into a URL: the query string's ``+`` arrives as a space,
    and that time is meant, not refused as "not an ISO-8601 time"."""
    load_sample(client, ledger)
    first = ledger.read_run(1)[0]
    local = first.recorded_at.astimezone(timezone(timedelta(hours=1))).isoformat()
    assert "+01:00" in local
    raw = client.get(f"/v1/runs/1?as_of={local}", headers=READ)
    assert raw.status_code == 200, raw.text
    encoded = client.get("/v1/runs/1", params={"as_of": local}, headers=READ)
    assert raw.json() == encoded.json()
    assert raw.json()["as_of_position"] == ledger.position_at(first.recorded_at)
    west = first.recorded_at.astimezone(timezone(timedelta(hours=-5))).isoformat()
    assert client.get(f"/v1/runs/1?as_of={west}", headers=READ).status_code == 200
    for bad in ["2026-01-01T00:00:00 1", "00:00 01:00", "2026-01-01T00:00 01:00 01:00"]:
        refused = client.get("/v1/runs", params={"as_of": bad}, headers=READ)
        assert refused.status_code == 400, bad


def test_openapi_documents_the_run_detail_shape(client: TestClient) -> None:
    document = client.get("/openapi.json", headers=READ).json()
    ok = document["paths"]["/v1/runs/{run_id}"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/RunDetail"}
    detail = document["components"]["schemas"]["RunDetail"]
    assert set(detail["required"]) >= {"run_id", "row", "ledger", "projected"}
    listed = document["paths"]["/v1/runs"]["get"]["responses"]["200"]
    assert listed["content"]["application/json"]["schema"]["items"] == {
        "$ref": "#/components/schemas/IngestionRun"
    }


def test_the_documented_row_is_the_legacy_table_column_for_column() -> None:
    """IngestionRun is spelled out for its clients: it must stay the table's shape, every
    column in its order, each nullable column (and only those) optional."""
    fields = IngestionRun.model_fields
    assert list(fields) == [column.name for column in ingestion_runs.columns]
    for column in ingestion_runs.columns:
        if column.name == "errorDetails":  # Any: null is one of its JSON values
            continue
        annotation = str(fields[column.name].annotation)
        assert ("None" in annotation) == column.nullable, column.name


def test_stuck_uses_the_configs_thresholds_as_status_and_the_web_do(db_url: str) -> None:
    """Without older_than, /v1/stuck judges by the config's thresholds (global and per
    connector), so it agrees with /v1/status; a value given still replaces them."""
    config = api_config(db_url).model_copy(
        update={"thresholds": ThresholdsConfig(stale_after=timedelta(minutes=5))}
    )
    with TestClient(create_app(config), raise_server_exceptions=False) as api:
        now = datetime.now(UTC)
        with freeze_time(now - timedelta(minutes=10)):
            run_id = Ledger.from_url(db_url).start_run(1, "silent")
        stuck = api.get("/v1/stuck", headers=READ).json()
        assert [run["run_id"] for run in stuck] == [run_id]
        assert api.get("/v1/status", headers=READ).json()["stuck_runs"] == 1
        assert api.get("/v1/stuck", params={"older_than": "1h"}, headers=READ).json() == []
        api.app.state.api.close()  # type: ignore[attr-defined]


def test_stuck_with_one_threshold_given_keeps_each_connectors_other(db_url: str) -> None:
    """max_runtime given: a connector's own stale_after still judges its runs."""
    fast = {
        "name": "fast",
        "type": "csv",
        "source_id": 1,
        "schedule": {"interval": "5m"},
        "options": {"path": "fast.csv"},
        "thresholds": {"stale_after": "5m"},
    }
    config = api_config(db_url).model_copy(
        update={"connectors": [LedgerConfig.model_validate({"connectors": [fast]}).connectors[0]]}
    )
    with TestClient(create_app(config), raise_server_exceptions=False) as api:
        with freeze_time(datetime.now(UTC) - timedelta(minutes=10)):
            run_id = Ledger.from_url(db_url).start_run(1, "fast")
        listed = api.get("/v1/stuck", params={"max_runtime": "6h"}, headers=READ).json()
        assert [run["run_id"] for run in listed] == [run_id]
        api.app.state.api.close()  # type: ignore[attr-defined]


def test_a_token_named_as_an_operator_is_recorded_as_the_cli_records_it(
    db_url: str, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``operator:oncall`` once, as ``ledger runs fail --actor operator:oncall`` records it."""
    monkeypatch.setitem(TOKENS, "operator:oncall", ("oncall-token-0123456789abcdef", ["operate"]))
    with api_client(db_url) as client:
        run_id = ledger.start_run(1, "SOURCE_1")
        failed = client.post(
            f"/v1/runs/{run_id}/fail", json={"reason": "host lost"}, headers=auth("operator:oncall")
        )
    assert failed.status_code == 200, failed.text
    assert failed.json()["actor"] == "operator:oncall"
    assert ledger.read_run(run_id)[-1].actor == "operator:oncall"


@pytest.mark.parametrize("payload", ["[1]", '"text"', "{not json"])
def test_a_stored_event_that_cannot_be_read_is_the_servers_problem_not_the_callers(
    client: TestClient, ledger: Ledger, db_url: str, payload: str
) -> None:
    """A row no append wrote (a DBA's edit after dropping the triggers): a replay through it
    is a 500 naming the event, not a 400 "invalid input" the caller can do nothing about; the
    timeline shows it as an entry (it crashed on a payload that is JSON but not an object);
    the CLI exits 1 (a problem found), not 2 (the caller's mistake)."""
    from sqlalchemy import text

    from tests.support import drop_triggers

    run_id = ledger.start_run(1, "tampered")
    ledger.append([RunFinished(run_id=run_id, status="success")])
    drop_triggers(ledger.engine)
    with ledger.engine.begin() as conn:
        conn.execute(
            text("UPDATE ledger_events SET payload = :p WHERE position = 2"), {"p": payload}
        )
    replay = client.get(f"/v1/runs/{run_id}?at_position=2", headers=auth("reader"))
    assert replay.status_code == 500, replay.text
    assert replay.json()["type"] == "urn:run-ledger:problem:stored-event-unreadable"
    assert "position 2" in replay.json()["detail"]
    timeline = client.get(f"/v1/runs/{run_id}/events", headers=auth("reader"))
    assert timeline.status_code == 200, timeline.text
    assert timeline.json()[1]["summary"].startswith("(cannot read: ")
    assert timeline.json()[1]["hash_ok"] is False
    shown = CliRunner().invoke(
        cli, ["runs", "show", str(run_id), "--at-position", "2", "--db", db_url]
    )
    assert shown.exit_code == 1, shown.output


# A timestamp no append writes, as each database lets a hand edit store it: SQLite keeps any
# text; MariaDB, strict by default, takes the zero date once the session's sql_mode allows it.
# NULL is refused by both (occurred_at and recorded_at are NOT NULL), so it cannot be stored.
UNREADABLE_TIME = {"sqlite": "'yesterday'", "mysql": "'0000-00-00 00:00:00'"}


@pytest.mark.parametrize("column", ["recorded_at", "occurred_at"])
def test_a_stored_time_that_cannot_be_read_is_the_same_named_500_everywhere(
    ledger: Ledger, db_url: str, tmp_path: Path, column: str
) -> None:
    """A ``recorded_at`` edited to 'yesterday' (MariaDB: a zero date): a run's timeline, its
    pages and replays through it raised SQLAlchemy's bare ValueError, a 500 without a word
    (the web: Starlette's plain "Internal Server Error"). Every read of it is now the
    ``stored-event-unreadable`` answer naming the position, API and web alike."""
    from sqlalchemy import text

    from tests.service.web.support import log_in, web_config
    from tests.support import drop_triggers

    run_id = ledger.start_run(1, "tampered")
    ledger.append([RunFinished(run_id=run_id, status="success")])
    other = ledger.start_run(2, "untouched")
    drop_triggers(ledger.engine)
    dialect = ledger.engine.dialect.name
    with ledger.engine.begin() as conn:
        if dialect != "sqlite":
            conn.execute(text("SET SESSION sql_mode = ''"))
        conn.execute(
            text(
                f"UPDATE ledger_events SET {column} = {UNREADABLE_TIME[dialect]} WHERE position = 1"
            )
        )
    config = web_config(db_url)
    read = {"Authorization": "Bearer read-token-0123456789abcdef"}
    with TestClient(create_app(config), raise_server_exceptions=False) as client:
        try:
            for url in (
                f"/v1/runs/{run_id}/events",
                f"/v1/runs/{run_id}/events?limit=1&cursor=1",  # its state before page 2
                f"/v1/runs/{run_id}?at_position=2",
                "/v1/runs?at_position=3",
            ):
                answer = client.get(url, headers=read)
                assert answer.status_code == 500, (url, answer.text)
                problem = answer.json()
                assert problem["type"] == "urn:run-ledger:problem:stored-event-unreadable", url
                assert "position 1 cannot be read" in problem["detail"], (url, problem)
            log_in(client, "reader")
            for url in (
                f"/web/runs/{run_id}",
                f"/web/runs/{run_id}?at_position=2",
                "/web/runs?at_position=3",
                "/web/stuck?at_position=1",  # the run was open then: its events are read
            ):
                page = client.get(url)
                assert page.status_code == 500, (url, page.text[:300])
                assert page.headers["content-type"].startswith("text/html"), url
                assert "Stored event unreadable" in page.text, (url, page.text[:300])
                assert "position 1 cannot be read" in page.text, url
            if column == "recorded_at":  # the moment a page pinned there stands at; its anchor
                banner = client.get("/web/runs?at_position=1")
                assert banner.status_code == 500, banner.text[:300]
                assert "position 1 cannot be read" in banner.text
                with pytest.raises(StoredEventError, match="position 1 cannot be read"):
                    ledger.recorded_at(1)
                with pytest.raises(StoredEventError, match="position 1 cannot be read"):
                    anchor_at(ledger, 1)
            # What does not read that row still answers; verify names it.
            assert client.get(f"/v1/runs/{other}/events", headers=read).status_code == 200
            assert client.get("/web/runs").status_code == 200
            # Stuck as of after the run closed replays the runs open then, not that one.
            assert client.get("/web/stuck?at_position=3").status_code == 200
            verified = client.get("/v1/verify", headers=read).json()
            assert verified["ok"] is False
            assert any(p.get("position") == 1 for p in verified["problems"]), verified
        finally:
            client.app.state.web.close()  # type: ignore[attr-defined]
            client.app.state.api.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("table", "column", "key"),
    [
        ("ledger_runs", "last_event_at", "run_id"),
        ("ingestion_runs", '"startedAt"', "id"),
        ("ledger_head", "last_recorded_at", "id"),
    ],
)
def test_a_table_row_with_an_unreadable_time_is_named_everywhere(
    ledger: Ledger, db_url: str, table: str, column: str, key: str
) -> None:
    """A time of ``ledger_runs``, ``ingestion_runs`` or ``ledger_head`` edited by hand (SQLite:
    'yesterday', MariaDB: a zero date) was SQLAlchemy's ValueError: a traceback from
    ``status``, ``runs show``, ``stuck``, ``verify``, a bare 500 from the API. Each reader now
    says which table's row (its key) and column: the CLI exit 1, the API's 500
    ``stored-row-unreadable``, the web's error page."""
    from sqlalchemy import text

    from tests.service.web.support import log_in, web_config

    run_id = ledger.start_run(1, "tampered")
    Projector(ledger).run_once()
    dialect = ledger.engine.dialect.name
    column_sql = column if dialect == "sqlite" else column.replace('"', "`")
    with ledger.engine.begin() as conn:
        if dialect != "sqlite":
            conn.execute(text("SET SESSION sql_mode = ''"))
        # Below every real time (the stuck query selects it by its last activity).
        bad = "'1 day ago'" if dialect == "sqlite" else UNREADABLE_TIME[dialect]
        conn.execute(text(f"UPDATE {table} SET {column_sql} = {bad}"))
    named = f"the {table} row of {'id' if table == 'ledger_head' else 'run'} "
    readers = {
        "ledger_runs": (["status"], ["runs", "show", str(run_id)], ["stuck"], ["verify"]),
        "ingestion_runs": (["runs", "list"], ["runs", "show", str(run_id)], ["verify"]),
        "ledger_head": (["status"], ["anchor"], ["verify"]),
    }[table]
    for args in readers:
        result = CliRunner().invoke(cli, [*args, "--db", db_url])
        assert result.exit_code == 1, (args, result.output)
        assert named in result.output, (args, result.output)
        assert "Traceback" not in result.output
    if table != "ledger_head":  # without a head there is no chain to check
        # One problem of its check, not the end of verify: the other checks still report.
        report = verify_all(ledger)
        (problem,) = report.problems
        check = "registry" if table == "ledger_runs" else "projection"
        assert (problem.check, problem.run_id) == (check, run_id), problem
        assert named in problem.message
        assert report.triggers is not None
        assert report.triggers.checked
    urls = {
        "ledger_runs": ("/v1/status", f"/v1/runs/{run_id}", "/v1/stuck?older_than=1s"),
        "ingestion_runs": ("/v1/runs", f"/v1/runs/{run_id}"),
        "ledger_head": ("/v1/status",),
    }[table]
    read = {"Authorization": "Bearer read-token-0123456789abcdef"}
    with TestClient(create_app(web_config(db_url)), raise_server_exceptions=False) as client:
        try:
            for url in urls:
                answer = client.get(url, headers=read)
                assert answer.status_code == 500, (url, answer.text)
                problem = answer.json()
                assert problem["type"] == "urn:run-ledger:problem:stored-row-unreadable", url
                assert named in problem["detail"], problem
                assert problem["table"] == table
            log_in(client, "reader")
            page = client.get(f"/web/runs/{run_id}" if table != "ledger_head" else "/web/runs")
            if table != "ledger_head":  # the head is not read by the runs pages
                assert page.status_code == 500, page.text
                assert "row of run" in page.text
        finally:
            client.app.state.web.close()  # type: ignore[attr-defined]
            client.app.state.api.close()  # type: ignore[attr-defined]


def test_status_and_verify_write_every_time_as_the_cli_json_does(
    client: TestClient, ledger: Ledger, db_url: str
) -> None:
    """/v1/status wrote a skip's and the projection error's time as str(datetime), /v1/verify
    the same skip's as isoformat_utc: one format now, the CLI's --format json."""
    with freeze_time("2026-12-04 23:00:00"):
        run_id = ledger.start_run(1, "SOURCE_1")
    position = ledger.head().last_position
    stop_and_skip_by_hand(ledger, position, "RunStarted")
    with freeze_time("2026-12-05 00:00:00"):
        status = client.get("/v1/status", headers=READ).json()
        verify = client.get("/v1/verify", headers=READ).json()
        cli_status = cli_json(db_url, "status")
        assert verify == cli_json(db_url, "verify")
    (projection,) = status["projections"]
    assert projection["error"]["at"] == isoformat_utc(STOPPED_AT)
    (skip,) = projection["skips"]
    assert skip["skipped_at"] == isoformat_utc(SKIPPED_AT)
    assert verify["skips"] == [{"name": PROJECTION_NAME, **skip, "run_id": run_id}]
    assert status["head_recorded_at"] == "2026-12-04T23:00:00.000000Z"
    # The library's public form is the CLI's, less the server's file and database's URL.
    del cli_status["spool_path"]
    del cli_status["schema_warning"]
    assert status == {**cli_status, "database": ledger.database_kind}


def test_status_names_the_kind_of_database_never_its_url(
    client: TestClient, ledger: Ledger, db_url: str
) -> None:
    """Any read token read the database's URL (user, host, database) or SQLite file there."""
    answer = client.get("/v1/status", headers=READ)
    assert answer.status_code == 200
    expected = {"sqlite"} if ledger.is_sqlite else {"mysql", "mariadb"}
    assert answer.json()["database"] in expected
    url = make_url(db_url)
    for secret in (url.database, url.host, url.username, db_url):
        assert not secret or secret not in answer.text
    assert "spool_path" not in answer.json()  # a file of the server's


def test_status_does_not_check_the_schema_it_leaves_out(client: TestClient) -> None:
    """/v1/status drops ``schema_warning``; it still made the schema check's catalogue read and
    query on every request (a status poll's cost up by two statements, for nothing)."""
    api_ledger = client.app.state.api.ledger  # type: ignore[attr-defined]
    statements: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(api_ledger.engine, "before_cursor_execute", note)
    try:
        answer = client.get("/v1/status", headers=READ)
    finally:
        event.remove(api_ledger.engine, "before_cursor_execute", note)
    assert answer.status_code == 200
    assert "schema_warning" not in answer.json()
    assert statements
    assert not [s for s in statements if "alembic_version" in s]


def test_status_says_the_spool_is_unreadable_without_naming_its_file(
    db_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool-folder"
    spool.mkdir()
    (spool / "spool.db").write_bytes(b"not a database " * 100)  # a spool that cannot be read
    config = api_config(db_url).model_copy(update={"spool": SpoolConfig(dir=str(spool))})
    with TestClient(create_app(config), raise_server_exceptions=False) as client:
        answer = client.get("/v1/status", headers=READ)
        ledger = client.app.state.api.ledger  # type: ignore[attr-defined]
        assert status_report(ledger, config).spool_error  # the CLI's status says why
    client.app.state.api.close()  # type: ignore[attr-defined]
    assert answer.json()["spool_error"] == SPOOL_UNREADABLE
    assert str(tmp_path) not in answer.text


def test_a_run_as_of_a_skipped_unreadable_event_reads_like_the_rest(
    client: TestClient, ledger: Ledger, db_url: str
) -> None:
    """A newer writer's type the projector stopped at and an operator skipped: the run as of
    that position is shown by the CLI and the API alike (the write-side state survives the
    event it cannot read, by the ledger's one replay), as ``runs list --at-position`` and the
    live ``runs show`` are; the run stays open, its version and activity counted."""
    from projections.errors import PoisonEventError
    from tests.projection_support import append_raw

    run_id = ledger.start_run(1, "SOURCE_1")
    poison = append_raw(ledger, run_id, "RunPaused", '{"why":"newer writer"}')
    assert poison == 2
    projector = Projector(ledger)
    with pytest.raises(PoisonEventError):
        projector.run_once()
    projector.skip(poison, "written by a newer run-ledger", "operator:alice")
    projector.run_once()
    live = ledger.run(run_id)
    assert live is not None
    for args in (
        ["show", "1"],
        ["list", "--at-position", "2"],
        ["show", "1", "--at-position", "2"],
    ):
        shown = CliRunner().invoke(cli, ["runs", *args, "--db", db_url])
        assert shown.exit_code == 0, shown.output
    replay = client.get(f"/v1/runs/{run_id}?at_position={poison}", headers=READ)
    assert replay.status_code == 200, replay.text
    assert replay.json()["row"] == cli_json(db_url, "runs", "show", "1", "--at-position", "2")
    assert replay.json()["row"]["status"] == "running"
    assert replay.json()["ledger"]["state"] == "open"
    assert replay.json()["ledger"] == live.to_dict()  # the append's own registry row


def test_a_run_whose_start_the_projection_skips_is_told_alike_by_the_cli_and_the_api(
    client: TestClient, ledger: Ledger, db_url: str
) -> None:
    """As of a position, a run that had started (the ledger's state says so) but has no row,
    its RunStarted skipped by an operator: one rule (``RunView.not_started``, ``note``) for
    the CLI and the API. The CLI said "did not exist yet" (a usage error) where the API
    answered the run; both now say the projection skips its RunStarted."""
    first = ledger.start_run(1, "SOURCE_1")
    ledger.start_run(2, "SOURCE_2")
    stop_and_skip_by_hand(ledger, 1, "RunStarted")
    Projector(ledger).run_once()
    said = f"run {first} was in the ledger as of position 1 but not in ingestion_runs"
    shown = CliRunner().invoke(
        cli, ["runs", "show", str(first), "--at-position", "1", "--db", db_url]
    )
    assert shown.exit_code == 1, shown.output
    assert said in shown.stderr
    answer = client.get(f"/v1/runs/{first}?at_position=1", headers=READ)
    assert answer.status_code == 200, answer.text
    assert answer.json()["row"] is None
    assert answer.json()["ledger"]["state"] == "open"
    assert said in answer.json()["note"]
    before = CliRunner().invoke(cli, ["runs", "show", "2", "--at-position", "1", "--db", db_url])
    assert before.exit_code == 2, before.output
    assert "run 2 did not exist yet as of position 1" in before.stderr
    assert client.get("/v1/runs/2?at_position=1", headers=READ).status_code == 404
    # Live, too: not "the projection is behind" (it has passed the RunStarted and skips it).
    now = f"run {first} is in the ledger but not in ingestion_runs: the projection skips its"
    live = CliRunner().invoke(cli, ["runs", "show", str(first), "--db", db_url])
    assert live.exit_code == 1, live.output
    assert now in live.stderr
    assert "behind" not in live.stderr
    answer = client.get(f"/v1/runs/{first}", headers=READ)
    assert answer.status_code == 200, answer.text
    assert now in answer.json()["note"]
