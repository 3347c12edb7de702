"""``GET /v1/stuck?as_of=…`` / ``?at_position=…``: the runs stuck at a past moment (``ledger
stuck --as-of``), validated as ``/v1/runs`` validates them (a 400 naming the parameter); paged
with a cursor whose ``Link`` names the same moment, so that pages of a moment never miss or
repeat a run, whatever is appended meanwhile; ``X-Total-Count`` on the first page. On SQLite
and on MariaDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from freezegun import freeze_time

from ledger import Ledger, RunFinished, StuckCursor
from service.api import create_app
from tests.service.conftest import auth
from tests.service.test_api_query_parameters import assert_invalid_request
from tests.service.test_api_stuck_pages import config_with, connector

READ = auth("reader")
T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=6)
HOUR = timedelta(hours=1)
THEN = "2026-03-02T02:30:00Z"


def start_at(ledger: Ledger, when: datetime, connector: str = "SOURCE_1", source: int = 1) -> int:
    with freeze_time(when):
        return ledger.start_run(source, connector, occurred_at=when)


def finish_at(ledger: Ledger, when: datetime, run_id: int) -> None:
    with freeze_time(when):
        ledger.append([RunFinished(run_id=run_id, status="success")])


def get(client: TestClient, url: str, **params: str) -> Any:
    """``url`` at NOW (``params`` given replace the query of ``url``: a Link is sent as it is)."""
    with freeze_time(NOW):
        return client.get(url, params=params or None, headers=READ)


def ids(answer: Any) -> list[int]:
    assert answer.status_code == 200, answer.text
    return [run["run_id"] for run in answer.json()]


def next_of(answer: Any) -> str | None:
    link = answer.headers.get("link")
    return link[1 : link.index(">")] if link else None


def test_a_run_stuck_then_and_finished_since_is_listed_as_of_then_only(
    client: TestClient, ledger: Ledger
) -> None:
    ended = start_at(ledger, T0)
    fresh = start_at(ledger, T0 + 2 * HOUR)  # alive at THEN
    finish_at(ledger, T0 + 3 * HOUR, ended)
    later = start_at(ledger, T0 + 3 * HOUR)  # started after THEN
    finish_at(ledger, NOW - timedelta(minutes=1), fresh)
    assert ids(get(client, "/v1/stuck")) == [later]
    then = get(client, "/v1/stuck", as_of=THEN)
    assert ids(then) == [ended]
    assert then.headers["x-total-count"] == "1"
    assert "link" not in then.headers
    # Position 2 ("fresh"'s start) was recorded at T0+2h: "ended" silent for 2h then.
    assert ids(get(client, "/v1/stuck", at_position="2")) == [ended]
    assert ids(get(client, "/v1/stuck", at_position="1")) == []  # recorded at T0
    assert ids(get(client, "/v1/stuck", at_position="0")) == []
    assert ids(get(client, "/v1/stuck", as_of="2020-01-01T00:00:00Z")) == []


def test_an_offset_is_the_same_moment_however_the_plus_is_sent(
    client: TestClient, ledger: Ledger
) -> None:
    ended = start_at(ledger, T0)
    finish_at(ledger, T0 + 3 * HOUR, ended)
    for text in ("2026-03-02T04:30:00+02:00", "2026-03-01T21:30:00-05:00"):
        assert ids(get(client, "/v1/stuck", as_of=text)) == [ended], text
    with freeze_time(NOW):  # a "+" typed into the URL arrives as a space
        typed = client.get("/v1/stuck?as_of=2026-03-02T04:30:00+02:00", headers=READ)
    assert ids(typed) == [ended]
    # Two hours before the first run started, in a zone ahead of UTC: nothing yet.
    assert ids(get(client, "/v1/stuck", as_of="2026-03-02T00:30:00+02:00")) == []


def test_the_pages_of_a_moment_are_its_runs_once_each_whatever_is_appended_meanwhile(
    client: TestClient, ledger: Ledger
) -> None:
    runs = [start_at(ledger, T0 + i * timedelta(minutes=1)) for i in range(5)]
    finish_at(ledger, T0 + 4 * HOUR, runs[1])
    first = get(client, "/v1/stuck", as_of=THEN, limit="2")
    assert ids(first) == runs[:2]
    assert first.headers["x-total-count"] == "5"
    following = next_of(first)
    assert following is not None
    query = parse_qs(urlsplit(following).query)
    assert query["as_of"] == ["2026-03-02T02:30:00.000000Z"]
    # Meanwhile: the rest end, and a run starts; the moment's answer is the same.
    for run_id in runs[2:]:
        finish_at(ledger, NOW - timedelta(minutes=5), run_id)
    start_at(ledger, NOW - timedelta(minutes=4))
    pages, url, totals = [ids(first)], following, []
    while url is not None:
        answer = get(client, url)
        pages.append(ids(answer))
        totals.append(answer.headers.get("x-total-count"))
        url = next_of(answer)
    assert pages == [runs[:2], runs[2:4], runs[4:]]
    assert totals == [None, None]  # only the first page counts


def test_the_link_pins_a_future_time_and_a_position_past_the_head(
    client: TestClient, ledger: Ledger
) -> None:
    """A future time is judged now and a position past the head is the head (as ``runs``
    reads them); the Link names the moment the first page was of, not the one asked for: a
    link carrying 2999 would be judged later at every page, one carrying a huge position at a
    later head."""
    runs = [start_at(ledger, T0 + i * timedelta(minutes=1)) for i in range(3)]
    start_at(ledger, T0 + 3 * HOUR)  # the head: alive when it was recorded, the rest stuck
    future = get(client, "/v1/stuck", as_of="2999-01-01T00:00:00Z", limit="2")
    assert ids(future) == runs[:2]
    following = next_of(future)
    assert following is not None
    assert parse_qs(urlsplit(following).query)["as_of"] == ["2026-03-02T06:00:00.000000Z"]
    huge = get(client, "/v1/stuck", at_position="9223372036854775807", limit="2")
    assert ids(huge) == runs[:2]
    following = next_of(huge)
    assert following is not None
    query = parse_qs(urlsplit(following).query)
    assert query["at_position"] == [str(ledger.head().last_position)]
    assert "as_of" not in query
    finish_at(ledger, NOW - HOUR, runs[2])  # a new head: the pinned one still has it stuck
    start_at(ledger, NOW - HOUR)
    assert ids(get(client, following)) == runs[2:]


def test_each_connectors_thresholds_apply_as_of_a_moment(db_url: str, ledger: Ledger) -> None:
    config = config_with(db_url, connector("slow", "1d"), connector("fast", "5m"))
    slow = start_at(ledger, T0, "slow")
    fast = start_at(ledger, T0 + 2 * HOUR, "fast")
    plain = start_at(ledger, T0, "SOURCE_1")
    for run_id in (slow, fast, plain):
        finish_at(ledger, T0 + 4 * HOUR, run_id)
    with TestClient(create_app(config), raise_server_exceptions=False) as api:
        then = get(api, "/v1/stuck", as_of=THEN)
        forced = get(api, "/v1/stuck", as_of=THEN, older_than="1m")
        api.app.state.api.close()  # type: ignore[attr-defined]
    assert ids(then) == [plain, fast]  # "slow" may be silent a day
    assert ids(forced) == [slow, plain, fast]


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        ("as_of=yesterday", "as_of", "not an ISO-8601 time"),
        ("as_of=2026-13-01", "as_of", "not an ISO-8601 time"),
        ("as_of=2026-01-01T00:00:00%2B24:00", "as_of", "between -23:59 and +23:59"),
        ("as_of=9999-12-31T23:59:59-14:00", "as_of", "out of range"),
        ("as_of=2026-01-28T03:00:00Z&at_position=3", "as_of", "not both"),
        ("as_of=" + "1" * 101, "as_of", "at most 100"),
        ("at_position=-1", "at_position", "not an integer of ASCII digits"),
        ("at_position=x", "at_position", "not an integer of ASCII digits"),
        ("at_position=9223372036854775808", "at_position", "less than or equal to"),
        ("at_position=1&cursor=x", "cursor", "not a cursor"),
    ],
)
def test_a_bad_moment_is_a_400_naming_it_as_for_runs(
    client: TestClient, query: str, field: str, words: str
) -> None:
    assert_invalid_request(client, f"/v1/stuck?{query}", field, words)
    if field != "cursor":
        assert_invalid_request(client, f"/v1/runs?{query}", field, words)


def test_the_openapi_document_names_the_moment_of_stuck(client: TestClient) -> None:
    document = client.get("/openapi.json", headers=READ).json()
    operation = document["paths"]["/v1/stuck"]["get"]
    parameters = {p["name"] for p in operation["parameters"]}
    assert {"as_of", "at_position", "cursor", "limit"} <= parameters
    assert "429" in operation["responses"]


def test_an_append_recorded_by_the_moment_and_committed_after_the_first_page_is_not_on_the_next(
    client: TestClient, ledger: Ledger
) -> None:
    """A time names the last position recorded by it: an append in flight as the first page
    was read (recorded at that instant, committed after) moved the next page to a later
    position, a run listed there that the first page's count left out. The cursor carries the
    first page's position."""
    runs = [start_at(ledger, NOW - 3 * HOUR + timedelta(seconds=i)) for i in range(3)]
    first = get(client, "/v1/stuck", as_of="2999-01-01T00:00:00Z", limit="2")
    assert ids(first) == runs[:2]
    assert first.headers["x-total-count"] == "3"
    with freeze_time(NOW):  # recorded at the first page's own instant
        late = ledger.start_run(1, "SOURCE_1", occurred_at=NOW - 2 * HOUR)
    following = next_of(first)
    assert following is not None
    assert StuckCursor.decode(parse_qs(urlsplit(following).query)["cursor"][0]).position == late - 1
    second = get(client, following)
    assert ids(second) == runs[2:]
    assert ids(get(client, "/v1/stuck", as_of="2999-01-01T00:00:00Z")) == [*runs, late]


def test_a_cursor_of_a_moment_is_refused_live_or_at_another_position(
    client: TestClient, ledger: Ledger
) -> None:
    runs = [start_at(ledger, T0 + i * timedelta(minutes=1)) for i in range(3)]
    start_at(ledger, T0 + 3 * HOUR)
    first = get(client, "/v1/stuck", at_position="4", limit="2")
    following = next_of(first)
    assert following is not None
    cursor = parse_qs(urlsplit(following).query)["cursor"][0]
    assert StuckCursor.decode(cursor).position == 4
    assert ids(get(client, following)) == runs[2:]
    for query in (f"cursor={cursor}", f"cursor={cursor}&at_position=3"):
        assert_invalid_request(client, f"/v1/stuck?{query}", "cursor", "as of position 4")
    # As of a time, the cursor's position is where the page stands (the time judges it).
    assert ids(get(client, "/v1/stuck", cursor=cursor, as_of="2026-03-02T03:00:00Z")) == runs[2:]


def test_a_cursor_edited_past_the_time_asked_for_stands_at_that_time(
    client: TestClient, ledger: Ledger
) -> None:
    """A cursor's position is where a page as of a time stands, but never past the last
    position recorded by that time: a cursor edited to a later one showed a run the ledger
    did not hold then."""
    first = start_at(ledger, T0)
    second = start_at(ledger, T0 + timedelta(minutes=1))
    with freeze_time(T0 + 3 * HOUR):  # recorded hours later, its activity dated before
        late = ledger.start_run(1, "SOURCE_1", occurred_at=T0 + timedelta(seconds=30))
    edited = StuckCursor(T0, first, position=3).encode()
    then = {"as_of": "2026-03-02T00:02:00Z", "older_than": "10s"}
    assert ids(get(client, "/v1/stuck", cursor=edited, **then)) == [second]
    assert ids(get(client, "/v1/stuck", at_position="3", older_than="10s")) == [first, late, second]
