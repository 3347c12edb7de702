"""``GET /v1/stuck`` a page at a time, as ``GET /v1/runs`` pages: ``limit`` (default 50, at
most 1000), ``cursor`` from the ``Link: <…>; rel="next"`` header, a 400 naming the parameter
for a bad one; ``X-Total-Count`` on the first page. On SQLite and on MariaDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from freezegun import freeze_time

from ledger import Ledger, RunFinished
from service.api import create_app
from service.config import LedgerConfig
from tests.service.conftest import api_config, auth
from tests.service.test_api_query_parameters import assert_invalid_request

READ = auth("reader")
MINUTE = timedelta(minutes=1)


def connector(name: str, stale_after: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "csv",
        "source_id": 1,
        "schedule": {"interval": "5m"},
        "options": {"path": f"{name}.csv"},
        "thresholds": {"stale_after": stale_after},
    }


def config_with(db_url: str, *connectors: dict[str, Any]) -> LedgerConfig:
    parsed = LedgerConfig.model_validate({"connectors": list(connectors)}).connectors
    return api_config(db_url).model_copy(update={"connectors": parsed})


def start_ago(ledger: Ledger, ago: timedelta, name: str) -> int:
    when = datetime.now(UTC) - ago
    with freeze_time(when):
        return ledger.start_run(1, name, occurred_at=when)


def walk(api: TestClient, url: str) -> tuple[list[list[int]], list[str | None]]:
    """Each page's run ids and each page's X-Total-Count, following the Link header."""
    pages, totals = [], []
    next_url: str | None = url
    while next_url:
        answer = api.get(next_url, headers=READ)
        assert answer.status_code == 200, answer.text
        pages.append([run["run_id"] for run in answer.json()])
        totals.append(answer.headers.get("x-total-count"))
        link = answer.headers.get("link")
        next_url = link[1 : link.index(">")] if link else None
        if link:
            assert link.endswith('>; rel="next"'), link
    return pages, totals


def test_pages_follow_the_link_past_runs_a_connectors_own_threshold_leaves_out(
    db_url: str, ledger: Ledger
) -> None:
    """ "slow" may be silent a day: its runs lie between the stuck ones of the order, and every
    page is still full; together the pages are the whole list, and the CLI's."""
    config = config_with(db_url, connector("slow", "1d"), connector("fast", "5m"))
    stuck = []
    for step in range(5):
        ago = timedelta(hours=3) - step * 10 * MINUTE
        stuck.append(start_ago(ledger, ago, "SOURCE_1"))
        start_ago(ledger, ago - MINUTE, "slow")
        stuck.append(start_ago(ledger, ago - 2 * MINUTE, "fast"))
    with TestClient(create_app(config), raise_server_exceptions=False) as api:
        pages, totals = walk(api, "/v1/stuck?limit=3")
        whole = api.get("/v1/stuck?limit=1000", headers=READ)
        api.app.state.api.close()  # type: ignore[attr-defined]
    assert pages == [stuck[0:3], stuck[3:6], stuck[6:9], stuck[9:]]
    assert totals == ["10", None, None, None]
    assert [run["run_id"] for run in whole.json()] == stuck
    assert "link" not in whole.headers


def test_the_link_keeps_the_thresholds_and_the_limit(client: TestClient, ledger: Ledger) -> None:
    runs = [start_ago(ledger, timedelta(hours=2) - i * MINUTE, "SOURCE_1") for i in range(3)]
    first = client.get("/v1/stuck?older_than=30m&limit=2", headers=READ)
    link = first.headers["link"]
    assert link.startswith("</v1/stuck?older_than=30m&limit=2&cursor="), link
    second = client.get(link[1 : link.index(">")], headers=READ)
    assert [run["run_id"] for run in first.json() + second.json()] == runs
    assert "link" not in second.headers


def test_the_default_page_is_50_runs_as_for_runs(client: TestClient, ledger: Ledger) -> None:
    for i in range(51):
        start_ago(ledger, timedelta(hours=2) - i * timedelta(seconds=1), "SOURCE_1")
    first = client.get("/v1/stuck", headers=READ)
    assert len(first.json()) == 50
    assert first.headers["x-total-count"] == "51"
    rest = client.get(first.headers["link"][1 : first.headers["link"].index(">")], headers=READ)
    assert len(rest.json()) == 1


def test_a_run_ended_between_pages_is_not_listed_and_none_twice(
    client: TestClient, ledger: Ledger
) -> None:
    runs = [start_ago(ledger, timedelta(hours=2) - i * MINUTE, "SOURCE_1") for i in range(4)]
    first = client.get("/v1/stuck?limit=2", headers=READ)
    for run_id in (runs[1], runs[2]):  # one listed, one not yet
        ledger.append([RunFinished(run_id=run_id, status="success")])
    fresh = start_ago(ledger, timedelta(minutes=90), "SOURCE_1")
    link = first.headers["link"]
    second = client.get(link[1 : link.index(">")], headers=READ)
    listed = [run["run_id"] for run in first.json() + second.json()]
    assert listed == [runs[0], runs[1], runs[3], fresh]


@pytest.mark.parametrize(
    "cursor",
    ["x", "12", "-5", "1-2-3", "1.5-2", "\u0661-2", "1-" + "9" * 11, "9" * 18 + "-1", "1 -2"],
)
def test_a_cursor_no_page_wrote_is_a_400_naming_it(client: TestClient, cursor: str) -> None:
    assert_invalid_request(client, f"/v1/stuck?cursor={cursor}", "cursor", "not a cursor")


def test_a_cursor_too_long_or_given_twice_is_a_400(client: TestClient) -> None:
    assert_invalid_request(client, "/v1/stuck?cursor=" + "1" * 71, "cursor", "at most 70")
    twice = client.get("/v1/stuck?cursor=1-1&cursor=2-2", headers=READ)
    assert twice.status_code == 400, twice.text


def test_a_cursor_edited_to_any_place_is_a_page_from_there(
    client: TestClient, ledger: Ledger
) -> None:
    """A cursor is where the page starts, nothing more: one moved by hand is no error."""
    runs = [start_ago(ledger, timedelta(hours=2) - i * MINUTE, "SOURCE_1") for i in range(2)]
    start = client.get("/v1/stuck?cursor=0-0", headers=READ)
    assert [run["run_id"] for run in start.json()] == runs
    assert "x-total-count" not in start.headers  # only the first page counts
    beyond = client.get("/v1/stuck?cursor=253402300799999999-1", headers=READ)
    assert beyond.json() == []
    assert "link" not in beyond.headers


def test_limit_bounds_are_those_of_runs(client: TestClient) -> None:
    assert_invalid_request(client, "/v1/stuck?limit=0", "limit", "greater than or equal to 1")
    assert_invalid_request(client, "/v1/stuck?limit=1001", "limit", "less than or equal to 1000")
    assert_invalid_request(client, "/v1/stuck?limit=x", "limit", "integer")
    for limit in (1, 1000):
        assert client.get(f"/v1/stuck?limit={limit}", headers=READ).status_code == 200


def test_the_openapi_document_names_the_paging_of_stuck(client: TestClient) -> None:
    document = client.get("/openapi.json", headers=READ).json()
    operation = document["paths"]["/v1/stuck"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert {"limit", "cursor", "older_than", "max_runtime"} <= set(parameters)
    assert parameters["limit"]["schema"]["default"] == 50
    assert parameters["limit"]["schema"]["maximum"] == 1000
    assert set(operation["responses"]["200"]["headers"]) == {"Link", "X-Total-Count"}
