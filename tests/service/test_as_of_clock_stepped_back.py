"""A moment after the ledger's clock stepped back: the appends made since are stamped with the
last ``recorded_at`` (it never goes back), ahead of the clock. A time asked for then stands at
the last event recorded by it, on every surface, and is judged at it or now, whichever is
earlier: ``ledger runs list``, ``ledger stuck`` and ``ledger report`` with ``--as-of``, ``GET
/v1/runs``, ``/v1/stuck`` (every page, its Link followed) and the web's Runs and Stuck pages
agree with each other and with a replay of the events up to that position. Before review50 the
reads that judge runs (stuck, report, the web) stood at the last event recorded by *now*, so a
time ahead of the clock showed a past the ledger had left (no runs at all, where ``runs list``
showed the head), and the API's later stuck pages stood there too (a run missed). On SQLite
and on MariaDB."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from freezegun import freeze_time

from ledger import Ledger, RunFinished, stuck_runs_as_of
from projections import runs_as_of
from service.cli import cli
from tests.service.conftest import auth
from tests.service.web.support import web_client

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
STEPPED_BACK = T0 - HOUR  # where the clock stood after the step
NOW = T0 + timedelta(minutes=30)  # still behind the head's recorded_at (T0 + 1h)

MOMENTS = [
    "2030-01-01T00:00:00Z",  # ahead of the clock and of every recorded_at: now, the head
    "2026-03-02T11:00:00Z",  # the head's recorded_at exactly, ahead of the clock
    "2026-03-02T16:30:00+05:30",  # the same moment, in another zone
    "2026-03-02T10:45:00",  # ahead of the clock, before the appends stamped T0 + 1h (no zone)
    "2026-03-02T10:00:00Z",  # the first event's recorded_at, behind the clock
    "2026-03-02T09:59:59.9999999Z",  # before the first event, a fraction past the µs
]


@pytest.fixture
def history(ledger: Ledger) -> None:
    """Run 1 started at T0; run 2 at T0 + 1h; then the clock stepped back 2 hours: run 1
    finished, runs 3 and 4 started (their events dated by the stepped clock, recorded at
    T0 + 1h, as the last append was)."""
    with freeze_time(T0):
        first = ledger.start_run(1, "SOURCE_1")
    with freeze_time(T0 + HOUR):
        ledger.start_run(1, "SOURCE_2")
    with freeze_time(STEPPED_BACK):
        ledger.append([RunFinished(run_id=first, status="success")])
        ledger.start_run(1, "SOURCE_3")
        ledger.start_run(2, "SOURCE_3")


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with web_client(db_url, public_read=True) as test_client:
        yield test_client


def recorded_by(ledger: Ledger, when: datetime) -> int:
    """The truth, from the events themselves: the last position recorded at or before
    ``when``."""
    return max((e.position for e in ledger.read_all() if e.recorded_at <= when), default=0)


def cli_json(db_url: str, *args: str) -> tuple[int, object]:
    with freeze_time(NOW):
        result = CliRunner().invoke(cli, [*args, "--format", "json", "--db", db_url])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def api_stuck_pages(client: TestClient, as_of: str) -> list[int]:
    found: list[int] = []
    url: str | None = "/v1/stuck"
    params: dict[str, str] | None = {"as_of": as_of, "limit": "1"}
    while url is not None:
        with freeze_time(NOW):
            answer = client.get(url, params=params, headers=auth("reader"))
        assert answer.status_code == 200, answer.text
        found += [run["run_id"] for run in answer.json()]
        link = answer.headers.get("link")
        url, params = (link[1 : link.index(">")] if link else None), None
    return found


def web_rows(client: TestClient, path: str, as_of: str) -> list[int]:
    with freeze_time(NOW):
        page = client.get(path, params={"as_of": as_of})
    assert page.status_code == 200, page.text
    return [int(run_id) for run_id in re.findall(r'<td><a href="/web/runs/(\d+)', page.text)]


@pytest.mark.usefixtures("history")
@pytest.mark.parametrize("as_of", MOMENTS)
def test_every_surface_stands_at_the_last_event_recorded_by_the_time(
    ledger: Ledger, db_url: str, client: TestClient, as_of: str
) -> None:
    asked = datetime.fromisoformat(as_of.replace("Z", "+00:00").replace(".9999999", ".999999"))
    asked = asked if asked.tzinfo else asked.replace(tzinfo=UTC)
    position = recorded_by(ledger, asked)
    replayed = runs_as_of(ledger, position)
    truth = sorted(((run_id, row["status"]) for run_id, row in replayed.items()), reverse=True)
    stuck_truth = [r.run_id for r in stuck_runs_as_of(ledger, position, min(asked, NOW))]

    _, listed = cli_json(db_url, "runs", "list", "--as-of", as_of)
    assert [(row["id"], row["status"]) for row in listed] == truth  # type: ignore[attr-defined]
    with freeze_time(NOW):
        api = client.get("/v1/runs", params={"as_of": as_of}, headers=auth("reader"))
    assert [(row["id"], row["status"]) for row in api.json()] == truth
    assert web_rows(client, "/web/runs", as_of) == [run_id for run_id, _ in truth]

    code, stuck = cli_json(db_url, "stuck", "--as-of", as_of)
    assert [run["run_id"] for run in stuck] == stuck_truth  # type: ignore[attr-defined]
    assert code == (1 if stuck_truth else 0)
    assert api_stuck_pages(client, as_of) == stuck_truth
    assert web_rows(client, "/web/stuck", as_of) == stuck_truth

    _, report = cli_json(db_url, "report", "--as-of", as_of)
    assert report["as_of"]["position"] == position  # type: ignore[index]


@pytest.mark.usefixtures("history")
def test_a_time_ahead_of_the_clock_finds_the_runs_stuck_now(ledger: Ledger, db_url: str) -> None:
    """The moments above are checked against one another; this one against the live read: a
    time ahead of the clock is now, and runs 3 and 4, silent since the step, are stuck now."""
    _, live = cli_json(db_url, "stuck")
    _, then = cli_json(db_url, "stuck", "--as-of", "2030-01-01T00:00:00Z")
    assert [run["run_id"] for run in then] == [run["run_id"] for run in live] == [3, 4]  # type: ignore[attr-defined]


@pytest.mark.usefixtures("history")
def test_the_web_pins_a_time_ahead_of_a_stepped_back_clock_to_its_position(
    client: TestClient,
) -> None:
    """Its links would name the clock's time, which stands before the runs shown (those
    recorded ahead of the clock): they name the position shown."""
    with freeze_time(NOW):
        page = client.get("/web/runs", params={"as_of": "2030-01-01T00:00:00Z"})
    assert page.status_code == 200, page.text
    links = set(re.findall(r'href="(/web/[^"]*)"', page.text))
    pinned = {link for link in links if "at_position=" in link or "as_of=" in link}
    assert pinned, links
    assert all("at_position=5" in link and "as_of" not in link for link in pinned), pinned


def test_the_later_stuck_pages_are_judged_when_the_first_was(
    ledger: Ledger, client: TestClient
) -> None:
    """A time ahead of a clock stepped back is judged now, at a position no time names: the
    ``Link`` pins the position, and its cursor the time the first page was judged at. Pinned
    by the position alone, the next page, asked a quarter of an hour later, was judged at its
    own now: run 4 (silent 65 minutes by then, 50 when the first page was read) came on it,
    where the first page's ``X-Total-Count`` said 2."""
    with freeze_time(T0 + 3 * HOUR):
        ledger.start_run(1, "SOURCE_1")  # recorded T0 + 3h; the clock then steps back to T0
    for minutes, source in ((0, "SOURCE_2"), (20, "SOURCE_3"), (40, "SOURCE_4")):
        with freeze_time(T0 + timedelta(minutes=minutes)):
            ledger.start_run(1, source)  # recorded T0 + 3h, silent since T0 + minutes
    first_read = T0 + timedelta(minutes=90)  # still behind every recorded_at
    truth = [run.run_id for run in stuck_runs_as_of(ledger, 4, first_read)]
    assert truth == [2, 3]

    found: list[int] = []
    totals: list[str] = []
    url: str | None = "/v1/stuck"
    params: dict[str, str] | None = {"as_of": "2030-01-01T00:00:00Z", "limit": "1"}
    asked_at = first_read
    while url is not None:
        with freeze_time(asked_at):
            answer = client.get(url, params=params, headers=auth("reader"))
        assert answer.status_code == 200, answer.text
        found += [run["run_id"] for run in answer.json()]
        totals += [answer.headers["x-total-count"]] if "x-total-count" in answer.headers else []
        link = answer.headers.get("link")
        url, params = (link[1 : link.index(">")] if link else None), None
        asked_at += timedelta(minutes=15)
    assert totals == ["2"]
    assert found == truth
