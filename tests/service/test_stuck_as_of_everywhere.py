"""The runs stuck as of a moment are the same runs on the web's Stuck page, from ``GET
/v1/stuck`` (every page, its Link followed) and from ``ledger stuck --as-of/--at-position``,
for the same moment however it is written: a time with an offset, without a zone (UTC), ahead
of the clock (now), a position, position 0, a position past the head. The three pin the
moment through ``projections.as_of`` (review 35 checked that they cannot drift apart: the page
judged a position by ``moment_time``, the API and the CLI by ``judged_moment``). On SQLite and
on MariaDB."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from freezegun import freeze_time

from ledger import Ledger, RunFinished
from service.cli import cli
from tests.service.conftest import auth
from tests.service.web.support import web_client

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=6)
HOUR = timedelta(hours=1)

MOMENTS: list[dict[str, str]] = [
    {"as_of": "2026-03-02T02:30:00Z"},
    {"as_of": "2026-03-02T04:30:00+02:00"},  # the same moment, written in another zone
    {"as_of": "2026-03-01T23:30:00-05:00"},  # 04:30 UTC: another day in its own zone
    {"as_of": "2026-03-02T05:00:00"},  # no zone: UTC
    {"as_of": "2026-03-02T05:59:59.999999Z"},
    {"as_of": "2027-01-01T00:00:00Z"},  # ahead of the clock: now
    {"as_of": "2020-01-01T00:00:00Z"},  # before the first event
    # Before the Unix epoch (no event is older): no run, as on /v1/runs, not an error naming
    # the library's own `at` (review 56).
    {"as_of": "1969-12-31T23:59:59.999999Z"},
    {"as_of": "0001-01-01T00:00:00Z"},
    {"at_position": "0"},
    {"at_position": "1"},
    {"at_position": "3"},
    {"at_position": "5"},
    {"at_position": "999"},  # past the head: the head
]


@pytest.fixture
def history(ledger: Ledger) -> None:
    """Runs started, active and ended at different hours, so that each moment stands apart."""
    runs: list[int] = []
    for hour, connector in [(0, "SOURCE_1"), (1, "SOURCE_2"), (2, "SOURCE_1"), (3, "SOURCE_3")]:
        when = T0 + hour * HOUR
        with freeze_time(when):
            runs.append(ledger.start_run(1, connector, occurred_at=when))
    for hour, run_id in [(3, runs[0]), (5, runs[2])]:
        with freeze_time(T0 + hour * HOUR):
            ledger.append([RunFinished(run_id=run_id, status="success")])


@pytest.fixture
def web(db_url: str) -> Iterator[TestClient]:
    with web_client(db_url, public_read=True) as test_client:
        yield test_client


def web_page(web: TestClient, moment: dict[str, str]) -> list[int]:
    with freeze_time(NOW):
        page = web.get("/web/stuck", params=moment)
    assert page.status_code == 200, page.text
    rows = re.findall(r'<tr class="stuck">\s*<td><a href="/web/runs/(\d+)', page.text)
    return [int(run_id) for run_id in rows]


def api_pages(web: TestClient, moment: dict[str, str]) -> list[int]:
    found: list[int] = []
    url: str | None = "/v1/stuck"
    params: dict[str, str] | None = {**moment, "limit": "1"}
    while url is not None:
        with freeze_time(NOW):
            answer = web.get(url, params=params, headers=auth("reader"))
        assert answer.status_code == 200, answer.text
        found += [run["run_id"] for run in answer.json()]
        link = answer.headers.get("link")
        url, params = (link[1 : link.index(">")] if link else None), None
    return found


def cli_list(db_url: str, moment: dict[str, str]) -> list[int]:
    (name, value), *_ = moment.items()
    option = "--as-of" if name == "as_of" else "--at-position"
    with freeze_time(NOW):
        result = CliRunner().invoke(
            cli, ["stuck", option, value, "--format", "json", "--db", db_url]
        )
    assert result.exit_code in (0, 1), result.output
    found = [run["run_id"] for run in json.loads(result.stdout)]
    assert result.exit_code == (1 if found else 0)
    return found


@pytest.mark.usefixtures("history")
def test_the_web_page_the_api_and_the_cli_list_the_same_runs_for_each_moment(
    web: TestClient, db_url: str
) -> None:
    seen = set()
    for moment in MOMENTS:
        on_the_page = web_page(web, moment)
        assert api_pages(web, moment) == on_the_page, moment
        assert cli_list(db_url, moment) == on_the_page, moment
        seen.add(tuple(on_the_page))
    assert len(seen) >= 3  # the moments do tell the runs apart
