"""http-json pages through an API it was not told how to page: it follows a standard
``Link: <…>; rel="next"`` header (RFC 8288), refuses a page whose body links to a next page
(instead of reporting ``success`` with the first page only), reads one page with
``single_page``, and refuses a next URL that loops or leaves the first page's host."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from connectors import HttpJsonConnector, Spool
from connectors.http_fetch import FetchError
from connectors.http_paging import link_header_next, parse_link_header
from connectors.schema import source_records
from ledger import ConfigurationError, Ledger
from service.cli import cli
from tests.net_support import JsonServer, Route

PAGES = 3


def items(page: int) -> list[dict[str, Any]]:
    return [{"id": f"p{page}-{i}"} for i in range(2)]


def link_paged(query: dict[str, str], _call: int) -> tuple[Any, ...]:
    """Pages 1..3; each page's Link header carries several links, quoted parameters, a comma
    inside a quoted title and a relative next URL; the next link is not the first one."""
    page = int(query.get("page", "1"))
    links = [f'</linked?page={PAGES}>; rel="last"; title="the end, at last"']
    if page < PAGES:
        links.append(f'<linked?page={page + 1}>; title="next; page"; rel="prefetch NEXT"')
    return 200, items(page), {"Link": ", ".join(links)}


def split_headers(query: dict[str, str], _call: int) -> tuple[Any, ...]:
    """The same links, sent as two Link header lines."""
    page = int(query.get("page", "1"))
    values = ['</split?page=1>; rel="first"']
    if page < PAGES:
        values.append(f"</split?page={page + 1}>; rel=next")
    return 200, items(page), {"Link": values}


def body_next(query: dict[str, str], _call: int) -> tuple[Any, ...]:
    page = int(query.get("page", "1"))
    return 200, {"data": items(page), "links": {"next": f"/body?page={page + 1}"}}


def body_page_number(_query: dict[str, str], _call: int) -> tuple[Any, ...]:
    return 200, {"data": items(1), "next_page": 2}


def body_href(_query: dict[str, str], _call: int) -> tuple[Any, ...]:
    return 200, {"data": items(1), "next": {"href": "/href?page=2"}}


def last_page(_query: dict[str, str], _call: int) -> tuple[Any, ...]:
    return 200, {"data": items(1), "next": None}


def loop(query: dict[str, str], _call: int) -> tuple[Any, ...]:
    page = int(query.get("page", "1"))
    target = 1 if page == 2 else 2  # 1 -> 2 -> 1
    return 200, items(page), {"Link": f"</loop?page={target}>; rel=next"}


@pytest.fixture
def api() -> Iterator[JsonServer]:
    routes: dict[str, Route] = {
        "/linked": link_paged,
        "/split": split_headers,
        "/body": body_next,
        "/numbered": body_page_number,
        "/href": body_href,
        "/last": last_page,
        "/loop": loop,
        "/more": lambda _query, _call: (200, {"data": items(1), "has_more": True}),
        "/unpaged": lambda _query, _call: (
            200,
            {"data": [{"id": 1}, {"id": 2}], "next_page": None},
        ),
    }
    with JsonServer(routes) as server:
        yield server


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


def stored(ledger: Ledger, source_id: int) -> int:
    with ledger.engine.connect() as connection:
        query = select(func.count()).where(source_records.c.source_id == source_id)
        return int(connection.execute(query).scalar_one())


def test_a_link_header_is_followed_without_any_paging_option(
    ledger: Ledger, spool: Spool, api: JsonServer
) -> None:
    result = HttpJsonConnector(5, f"{api.base}/linked").run(ledger, spool=spool)
    assert (result.status, result.totals["records_created"]) == ("success", 2 * PAGES)
    assert api.calls["/linked"] == PAGES


def test_link_headers_sent_on_several_lines_are_all_read(
    ledger: Ledger, spool: Spool, api: JsonServer
) -> None:
    result = HttpJsonConnector(5, f"{api.base}/split").run(ledger, spool=spool)
    assert (result.status, result.totals["records_created"]) == ("success", 2 * PAGES)


def test_a_next_link_in_the_body_is_refused_naming_the_option_before_storing(
    ledger: Ledger, spool: Spool, api: JsonServer
) -> None:
    connector = HttpJsonConnector(5, f"{api.base}/body", records_path="data")
    with pytest.raises(FetchError, match=r"'links\.next'.*--next-path links\.next.*--single-page"):
        connector.run(ledger, spool=spool)
    assert stored(ledger, 5) == 0
    assert api.calls["/body"] == 1


def test_a_page_number_in_the_body_is_refused_naming_page_param(
    ledger: Ledger, spool: Spool, api: JsonServer
) -> None:
    connector = HttpJsonConnector(5, f"{api.base}/numbered", records_path="data")
    with pytest.raises(FetchError, match=r"'next_page'.*--page-param"):
        connector.run(ledger, spool=spool)


def test_a_next_href_in_the_body_is_refused_naming_its_path(
    ledger: Ledger, spool: Spool, api: JsonServer
) -> None:
    connector = HttpJsonConnector(5, f"{api.base}/href", records_path="data")
    with pytest.raises(FetchError, match=r"--next-path next\.href"):
        connector.run(ledger, spool=spool)


def test_an_empty_next_in_the_body_is_the_last_page(
    ledger: Ledger, spool: Spool, api: JsonServer
) -> None:
    result = HttpJsonConnector(5, f"{api.base}/last", records_path="data").run(ledger, spool=spool)
    assert (result.status, result.totals["records_created"]) == ("success", 2)


def test_the_configured_next_path_still_reads_every_page(
    ledger: Ledger, spool: Spool, api: JsonServer
) -> None:
    connector = HttpJsonConnector(
        5, f"{api.base}/body?page=1", records_path="data", next_path="links.next", max_pages=4
    )
    with pytest.raises(FetchError, match="stopped after 4 pages"):
        connector.run(ledger, spool=spool)  # the body route never ends: the page cap stops it
    assert api.calls["/body"] == 4


def test_single_page_reads_exactly_one_page(ledger: Ledger, spool: Spool, api: JsonServer) -> None:
    for route in ("/linked", "/body"):
        connector = HttpJsonConnector(
            5,
            f"{api.base}{route}",
            records_path="data" if route == "/body" else "",
            single_page=True,
        )
        result = connector.run(ledger, spool=spool)
        assert (result.status, result.totals["records_fetched"]) == ("success", 2), route
        assert api.calls[route] == 1


def test_a_next_url_seen_before_is_a_loop(ledger: Ledger, spool: Spool, api: JsonServer) -> None:
    with pytest.raises(FetchError, match=r"/loop\?page=1 was already read: the paging loops"):
        HttpJsonConnector(5, f"{api.base}/loop?page=1").run(ledger, spool=spool)
    assert api.calls["/loop"] == 2


@pytest.mark.parametrize(
    "target",
    ["http://localhost:{port}/linked", "http://127.0.0.1:1/linked", "file:///etc/passwd"],
)
def test_a_next_url_on_another_host_is_refused_naming_it(
    ledger: Ledger, spool: Spool, target: str
) -> None:
    def leaving(_query: dict[str, str], _call: int) -> tuple[Any, ...]:
        return 200, items(1), {"Link": f"<{target.format(port=port)}>; rel=next"}

    with JsonServer({"/leave": leaving}) as server:
        port = server.server.server_address[1]
        with pytest.raises(FetchError) as caught:
            HttpJsonConnector(5, f"{server.base}/leave").run(ledger, spool=spool)
        assert server.calls["/leave"] == 1
    assert target.format(port=port) in str(caught.value)
    assert "not on" in str(caught.value)


def test_the_link_header_is_parsed_as_rfc_8288_says() -> None:
    header = (
        '<https://api.example/items?page=2&x=a,b>; rel="next"; title="a, \\"quoted\\" title", '
        "<https://api.example/items?page=9>; REL=last, not-a-link, "
        '</p1>; rel="prev first"; rel="next"'
    )
    assert parse_link_header(header) == [
        ("https://api.example/items?page=2&x=a,b", {"rel": "next", "title": 'a, "quoted" title'}),
        ("https://api.example/items?page=9", {"rel": "last"}),
        ("/p1", {"rel": "prev first"}),  # the first rel wins (RFC 8288 section 3)
    ]
    assert link_header_next(['<../b>; rel="prev"', "<c?d=1>; rel=NEXT"], "http://h/x/y") == (
        "http://h/x/c?d=1"
    )
    assert link_header_next(['<../b>; rel="nextish"'], "http://h/") is None


def test_the_cli_follows_link_headers_and_refuses_body_links(
    db_url: str, ledger: Ledger, api: JsonServer, tmp_path: Path
) -> None:
    runner = CliRunner()
    common = ["--source-id", "6", "--spool-dir", str(tmp_path / "spool"), "--db", db_url]
    linked = runner.invoke(cli, ["run", "http-json", "--url", f"{api.base}/linked", *common])
    assert linked.exit_code == 0, linked.output
    assert json.loads(linked.stdout)["records_created"] == 2 * PAGES

    url = f"{api.base}/body"
    refused = runner.invoke(
        cli, ["run", "http-json", "--url", url, "--records-path", "data", *common]
    )
    assert refused.exit_code == 1, refused.output
    assert "--next-path links.next" in refused.output
    flagged = [*common, "--url", f"{api.base}/more", "--records-path", "data"]
    more = runner.invoke(cli, ["run", "http-json", *flagged])
    assert more.exit_code == 1, more.output  # issue 15: was 0, "success" with page 1 only
    assert "'has_more' (true)" in more.output

    single = ["run", "http-json", "--url", url, "--records-path", "data", "--single-page"]
    one = runner.invoke(cli, [*single, *common])
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout)["records_fetched"] == 2

    both = runner.invoke(cli, [*single, "--page-param", "page", *common])
    assert both.exit_code == 2
    assert "--single-page" in both.output


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x", "example.org/api"])
def test_a_url_that_is_not_http_is_refused_before_any_run(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"is not an http\(s\) URL"):
        HttpJsonConnector(1, url)


@pytest.mark.parametrize(
    "url", ["http://user:s3cret-pw@127.0.0.1:8/data", "https://user:s3cret pw@example.org/x"]
)
def test_credentials_in_the_url_are_refused_without_printing_them(url: str) -> None:
    with pytest.raises(ConfigurationError, match="carries credentials") as caught:
        HttpJsonConnector(1, url)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("url", ["HTTPS://example.org/api", "http://@example.org/api"])
def test_an_upper_case_scheme_or_an_empty_user_part_is_accepted(url: str) -> None:
    assert HttpJsonConnector(1, url).url == url


def test_two_paging_rules_at_once_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="give only one of"):
        HttpJsonConnector(1, "http://example.org", next_path="next", single_page=True)


def test_a_page_parameter_the_server_ignores_is_named_not_followed_for_ever(
    ledger: Ledger, spool: Spool, api: JsonServer
) -> None:
    """The same records on page 2 as on page 1: the server does not read that parameter."""
    connector = HttpJsonConnector(6, f"{api.base}/unpaged", records_path="data", page_param="page")
    with pytest.raises(FetchError, match="the server ignores page=; give the parameter it reads"):
        connector.run(ledger, spool=spool)
    assert api.calls["/unpaged"] == 2


# The next-page markers of common public APIs, each with the option its refusal names. Before
# issue 15 only next, next_page and links.next were known: these ended "success" with page 1.
MARKERS = [
    ({"meta": {"next": "/more?page=2"}}, r"'meta\.next'.*--next-path meta\.next"),
    ({"next_url": "http://api.example/items?page=2"}, r"'next_url'.*--next-path next_url"),
    ({"nextLink": "/more?skip=2"}, r"--next-path nextLink"),
    ({"@odata.nextLink": "/more?$skip=2"}, r"--next-path @odata\.nextLink"),
    ({"paging": {"next": "/more?after=QVFI"}}, r"--next-path paging\.next"),
    ({"pagination": {"next": "/more?page=2"}}, r"--next-path pagination\.next"),
    ({"links": {"next": {"href": "/more?page=2"}}}, r"--next-path links\.next\.href"),
    ({"_links": {"next": {"href": "/more?page=2"}}}, r"--next-path _links\.next\.href"),
    ({"meta": {"next": 2}}, r"'meta\.next' \(2\).*--page-param"),
    ({"nextPageToken": "CAIQAA"}, r"'nextPageToken'.*cannot send a page token back"),
    ({"next_page_token": "a/b+c=="}, r"'next_page_token'.*cannot send a page token back"),
    ({"next": "c2VjcmV0"}, r"'next'.*cannot send a page token back"),
    ({"has_more": True}, r"'has_more' \(true\).*does not say where.*--single-page"),
    ({"hasMore": True}, r"'hasMore' \(true\).*does not say where"),
    ({"pageInfo": {"hasNextPage": True}}, r"'pageInfo\.hasNextPage' \(true\)"),
    ({"response_metadata": {"next_cursor": "dXNlcjpV"}}, r"page token"),
    ({"meta": {"pagination": {"Has-More": 1}}}, r"'meta\.pagination\.Has-More' \(1\)"),
    # A link is named before a flag beside it: the option that reads every page.
    ({"has_more": True, "meta": {"next": "/more?page=2"}}, r"--next-path meta\.next"),
]


@pytest.mark.parametrize(("marker", "message"), MARKERS, ids=[json.dumps(m) for m, _ in MARKERS])
def test_a_common_next_page_marker_is_refused_naming_it_before_storing(
    ledger: Ledger, spool: Spool, marker: dict[str, Any], message: str
) -> None:
    with JsonServer({"/api": lambda _query, _call: (200, {"data": items(1), **marker})}) as server:
        connector = HttpJsonConnector(5, f"{server.base}/api", records_path="data")
        with pytest.raises(FetchError, match=message):
            connector.run(ledger, spool=spool)
        assert server.calls["/api"] == 1
    assert stored(ledger, 5) == 0


def test_markers_that_say_there_is_no_next_page_end_in_success(
    ledger: Ledger, spool: Spool
) -> None:
    last = {
        "data": items(1),
        "has_more": False,
        "next_url": None,
        "nextPageToken": "",
        "meta": {"next": "", "total": 2},
        "links": {"self": "/api", "next": {"href": None}},
        "pagination": {"next_page": 0},
    }
    with JsonServer({"/api": lambda _query, _call: (200, last)}) as server:
        connector = HttpJsonConnector(5, f"{server.base}/api", records_path="data")
        result = connector.run(ledger, spool=spool)
    assert (result.status, result.totals["records_created"]) == ("success", 2)


def test_data_whose_key_merely_holds_next_or_more_is_no_marker(
    ledger: Ledger, spool: Spool
) -> None:
    """The first version searched key names for the words "next" and "more": an API without
    paging that sends when it next runs, or a link to learn more, then failed every run."""
    data = {
        "data": items(1),
        "next_run_at": "2026-12-05T02:00:00Z",
        "nextUpdate": "/status?at=tomorrow",
        "next_steps": ["rotate the key"],
        "isNextGen": True,
        "learn_more": "https://docs.example/api",
        "meta": {"more_info": "https://docs.example/api", "next_maintenance": "/m?d=1"},
        "pagination": {"more_url": "/about/paging"},
    }
    with JsonServer({"/api": lambda _query, _call: (200, data)}) as server:
        connector = HttpJsonConnector(5, f"{server.base}/api", records_path="data")
        result = connector.run(ledger, spool=spool)
    assert (result.status, result.totals["records_created"]) == ("success", 2)


def test_an_odata_next_link_is_followed_by_its_dotted_name(ledger: Ledger, spool: Spool) -> None:
    """``--next-path @odata.nextLink`` names one key with a dot in it, as the refusal says."""

    def odata(query: dict[str, str], _call: int) -> tuple[Any, ...]:
        page = int(query.get("page", "1"))
        body: dict[str, Any] = {"value": items(page)}
        if page < PAGES:
            body["@odata.nextLink"] = f"/odata?page={page + 1}"
        return 200, body

    with JsonServer({"/odata": odata}) as server:
        connector = HttpJsonConnector(
            5, f"{server.base}/odata", records_path="value", next_path="@odata.nextLink"
        )
        result = connector.run(ledger, spool=spool)
    assert (result.status, result.totals["records_created"]) == ("success", 2 * PAGES)
