"""The http-json connector, on SQLite and on MariaDB: its paging options (a page parameter, a
next link at a path of the body), a page that fails then recovers retried, a failed run against
a server that stays broken, and secrets of its URL that never reach the ledger. (Paging by Link
header, and body links it was not told about: test_http_json_paging.py.)"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from connectors import Connector, FetchError, HttpJsonConnector, RunContext, Spool
from ledger import ConfigurationError, Ledger
from service.cli import cli
from tests.connectors.support import finished
from tests.net_support import JsonServer


def paged(query: dict[str, str], _call: int) -> tuple[int, Any]:
    page = int(query.get("page", "1"))
    items = [{"id": f"p{page}-{i}", "n": i} for i in range(3)] if page <= 3 else []
    return 200, {"data": {"items": items}}


def linked(query: dict[str, str], _call: int) -> tuple[int, Any]:
    cursor = int(query.get("cursor", "0"))
    body: dict[str, Any] = {"results": [{"key": f"k{cursor}-{i}"} for i in range(2)]}
    if cursor < 2:
        body["links"] = {"next": f"/linked?cursor={cursor + 1}"}
    return 200, body


def flaky(query: dict[str, str], call: int) -> tuple[int, Any]:
    if call == 2:  # page 2 fails once, then recovers
        return 500, {"error": "try again"}
    return paged(query, call)


def broken(_query: dict[str, str], _call: int) -> tuple[int, Any]:
    return 503, {"error": "down"}


@pytest.fixture
def api() -> Any:
    with JsonServer(
        {"/paged": paged, "/linked": linked, "/flaky": flaky, "/broken": broken}
    ) as server:
        yield server


def test_http_json_pages_by_parameter(ledger: Ledger, spool: Spool, api: JsonServer) -> None:
    connector = HttpJsonConnector(
        3, f"{api.base}/paged", records_path="data.items", page_param="page", backoff=0.01
    )
    result = connector.run(ledger, spool=spool)
    assert (result.status, result.totals["records_fetched"], result.totals["records_created"]) == (
        "success",
        9,
        9,
    )
    assert api.calls["/paged"] == 4  # three pages and the empty one that ends it


def test_http_json_follows_next_links(ledger: Ledger, spool: Spool, api: JsonServer) -> None:
    connector = HttpJsonConnector(
        3, f"{api.base}/linked", key="key", records_path="results", next_path="links.next"
    )
    result = connector.run(ledger, spool=spool)
    assert (result.status, result.totals["records_created"]) == ("success", 6)


def test_http_json_retries_a_page_that_fails_then_recovers(
    ledger: Ledger, spool: Spool, api: JsonServer
) -> None:
    connector = HttpJsonConnector(
        3, f"{api.base}/flaky", records_path="data.items", page_param="page", backoff=0.01
    )
    result = connector.run(ledger, spool=spool)
    assert (result.status, result.totals["records_created"]) == ("success", 9)
    assert api.calls["/flaky"] == 5


@pytest.mark.parametrize(
    ("records_path", "expected"),
    [
        # A new user's first try: no --records-path on a page that is an object. It said
        # "no list at records path ''", naming neither what the page holds nor the option.
        ("", "the page is an object (keys: data), not a list of records"),
        ("data.item", "nothing at records path 'data.item' ('data' has the keys: items)"),
        ("data", "at records path 'data' is an object (keys: items), not a list of records"),
    ],
)
def test_http_json_records_path_that_finds_no_list_names_where_the_list_is(
    ledger: Ledger, spool: Spool, api: JsonServer, records_path: str, expected: str
) -> None:
    connector = HttpJsonConnector(
        3, f"{api.base}/paged", records_path=records_path, page_param="page"
    )
    with pytest.raises(FetchError) as failure:
        connector.run(ledger, spool=spool)
    message = str(failure.value)
    assert expected in message
    assert "a list is at 'data.items': give --records-path data.items" in message
    assert "(records_path in a serve config)" in message
    assert finished(ledger, ledger.head().last_run_id)["status"] == "failed"


def test_http_json_key_the_records_lack_names_the_fields_they_have(
    ledger: Ledger, spool: Spool, api: JsonServer
) -> None:
    connector = HttpJsonConnector(
        3, f"{api.base}/paged", key="uuid", records_path="data.items", page_param="page"
    )
    result = connector.run(ledger, spool=spool)
    assert result.status == "partial"
    assert finished(ledger, result.run_id)["error_message"] == (
        "9 error(s); first: page 1 record 0: missing key 'uuid' (the record has id, n; "
        "--key names the field that identifies a record)"
    )


def test_http_json_against_a_server_that_stays_broken_fails(
    ledger: Ledger, spool: Spool, api: JsonServer
) -> None:
    connector = HttpJsonConnector(3, f"{api.base}/broken", retries=2, backoff=0.01)
    with pytest.raises(FetchError, match="still failing after 2 retries"):
        connector.run(ledger, spool=spool)
    assert api.calls["/broken"] == 3
    run_id = ledger.head().last_run_id
    payload = finished(ledger, run_id)
    assert payload["status"] == "failed"
    assert payload["error_details"]["exception"] == "FetchError"


def test_http_json_told_not_to_retry_does_not_say_retries(
    ledger: Ledger, spool: Spool, api: JsonServer
) -> None:
    """--retries 0 failed with "still failing after 0 retries (HTTP 503)"."""
    connector = HttpJsonConnector(3, f"{api.base}/broken", retries=0)
    with pytest.raises(FetchError) as failure:
        connector.run(ledger, spool=spool)
    assert str(failure.value).endswith("/broken: HTTP 503 (not retried: retries is 0)")
    assert api.calls["/broken"] == 1
    one = HttpJsonConnector(3, f"{api.base}/broken", retries=1, backoff=0.01)
    with pytest.raises(FetchError, match=r"still failing after 1 retry \(HTTP 503\)$"):
        one.run(ledger, spool=spool)


def test_http_json_secrets_never_reach_the_ledger(ledger: Ledger, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    # Credentials in the URL are refused before any run, masked (urllib cannot send them).
    with pytest.raises(ConfigurationError, match="carries credentials") as refused:
        HttpJsonConnector(1, f"http://user:pass-word@127.0.0.1:{port}/x?api_key=TOPSECRET")
    assert "pass-word" not in str(refused.value)
    assert "TOPSECRET" not in str(refused.value)
    connector = HttpJsonConnector(
        1,
        f"http://127.0.0.1:{port}/x?api_key=TOPSECRET",
        retries=1,
        backoff=0.01,
        timeout=1,
    )
    with pytest.raises(Exception, match="still failing"):
        connector.run(ledger, spool=Spool(tmp_path))
    stored = " ".join(e.payload for e in ledger.read_all())
    assert "TOPSECRET" not in stored
    assert "pass-word" not in stored
    assert "api_key=***" in stored


def unsendable_next(link: str) -> Any:
    def route(_query: dict[str, str], _call: int) -> tuple[int, Any]:
        return 200, {"items": [{"id": "c1"}], "next": link}

    return route


@pytest.mark.parametrize(
    ("link", "secret", "problem"),
    [
        ("/ok?token=SEKRET9\u0001x", "SEKRET9", "U+0001 (a control character)"),
        ("/ok?api_key=SEKRET8 x", "SEKRET8", "U+0020 SPACE"),
        ("/ok?x-api-key=SEKRET7\u00e9", "SEKRET7", "U+00E9 LATIN SMALL LETTER E WITH ACUTE"),
    ],
)
def test_http_json_next_link_http_cannot_send_fails_at_once_its_secret_masked(
    ledger: Ledger, db_url: str, tmp_path: Path, link: str, secret: str, problem: str
) -> None:
    """urllib's InvalidURL quotes the path raw: its text reached RunFinished's error_message
    and error_details, stdout and the -v log unmasked, and the error was retried 3 times."""
    with JsonServer({"/ctlnext": unsendable_next(link)}) as api:
        result = CliRunner().invoke(
            cli,
            [
                *("-v", "run", "http-json", "--db", db_url, "--url", f"{api.base}/ctlnext"),
                *("--records-path", "items", "--next-path", "next", "--backoff", "0.01"),
                *("--spool-dir", str(tmp_path / "spool")),
            ],
        )
    assert result.exit_code == 1, result.output
    stored = " ".join(event.payload for event in ledger.read_all())
    for text in (result.stdout, result.stderr, stored):
        assert secret not in text
    assert "retrying" not in result.stderr  # the same URL fails the same way every time
    payload = finished(ledger, ledger.head().last_run_id)
    assert payload["error_message"].startswith(f"FetchError: {api.base}/ok?")
    assert f"the URL holds {problem} at character" in payload["error_message"]
    assert "which an HTTP request cannot carry: refused" in payload["error_message"]
    assert "InvalidURL" not in payload["error_details"]["traceback"]


def test_an_exception_of_any_connector_reaches_the_ledger_and_output_masked(
    ledger: Ledger, spool: Spool
) -> None:
    """The one path from a connector's exception to the ledger, the log and the output."""

    class Leaky(Connector):
        name = "leaky"

        def ingest(self, run: RunContext) -> None:
            run.error("page failed: GET /x?sig=SIGVALUE1", {"url": "/x?access_key=AKVALUE2"})
            raise ValueError("GET https://api.example.com/x?X-Amz-Signature=SIGVALUE3 failed")

    outcome = Leaky(5).run_once(ledger, spool=spool)
    stored = " ".join(event.payload for event in ledger.read_all())
    shown = json.dumps(outcome.to_dict())
    for secret in ("SIGVALUE1", "AKVALUE2", "SIGVALUE3"):
        assert secret not in stored
        assert secret not in shown
    assert "X-Amz-Signature=***" in finished(ledger, outcome.result.run_id)["error_message"]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("timeout", "nan"),
        ("timeout", "inf"),
        ("timeout", "0"),
        ("backoff", "nan"),
        ("backoff", "1e9"),
        ("retries", "-1"),
        ("retries", "100000000"),
        ("max_pages", "0"),
        ("page_deadline", "-inf"),
        ("max_page_bytes", "0"),
    ],
)
def test_http_json_options_of_a_serve_config_are_checked(
    tmp_path: Path, option: str, value: str
) -> None:
    # The CLI's ranges held for `ledger run` only: `timeout = nan` (TOML has nan and inf) in a
    # serve config passed `config check` and failed every scheduled run with a ValueError;
    # `backoff = 1e9` slept for 31 years, the job never ran again.
    config = tmp_path / "ledger.toml"
    config.write_text(
        f'database_url = "sqlite:///{tmp_path / "l.db"}"\n'
        "[[connectors]]\n"
        'name = "api"\n'
        'type = "http-json"\n'
        "source_id = 3\n"
        'schedule = { interval = "5m" }\n'
        f'options = {{ url = "https://api.example.com/items", {option} = {value} }}\n'
    )
    result = CliRunner().invoke(cli, ["config", "check", str(config)])
    assert result.exit_code == 2, result.output
    assert f"connector 'api' (http-json): {option}: expected a" in result.output


@pytest.mark.parametrize(
    ("port", "problem"),
    [
        ("84746", "port 84746 is not a TCP port (1 to 65535)"),  # urllib dialled 19210
        ("0", "port 0 is not a TCP port (1 to 65535)"),
        ("8o80", "port '8o80' is not a number"),
    ],
)
def test_http_json_url_port_outside_tcp_is_refused_before_the_run(
    ledger: Ledger, db_url: str, tmp_path: Path, port: str, problem: str
) -> None:
    # urllib connected to the port modulo 65536 and fetched another service's records; the
    # port is checked as --db's is, before any run starts, by `run` and by `config check`.
    url = f"http://127.0.0.1:{port}/items"
    with pytest.raises(ConfigurationError, match=re.escape(f"url: {url!r}: {problem}")):
        HttpJsonConnector(3, url)
    spool = str(tmp_path / "spool")
    result = CliRunner().invoke(
        cli,
        ["run", "http-json", "--db", db_url, "--url", url, "--single-page", "--spool-dir", spool],
    )
    assert (result.exit_code, result.output) == (2, f"Error: url: {url!r}: {problem}\n")
    assert list(ledger.read_all()) == []
    config = tmp_path / "ledger.toml"
    config.write_text(
        f'database_url = "{db_url}"\n'
        "[[connectors]]\n"
        'name = "api"\n'
        'type = "http-json"\n'
        "source_id = 3\n"
        'schedule = { interval = "5m" }\n'
        f'options = {{ url = "{url}" }}\n'
    )
    checked = CliRunner().invoke(cli, ["config", "check", str(config)])
    assert checked.exit_code == 2, checked.output
    assert f"connector 'api' (http-json): url: {url!r}: {problem}" in checked.output


def test_http_json_retry_delays_stop_growing(
    ledger: Ledger, spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The backoff doubled without end: the 40th retry of a 1 s backoff waited 17,000 years.
    delays: list[float] = []
    monkeypatch.setattr("connectors.http_json.time.sleep", delays.append)
    with socket.socket() as unused:  # bound, never listening: every attempt is refused
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        connector = HttpJsonConnector(3, f"http://127.0.0.1:{port}/", retries=40, backoff=1)
        with pytest.raises(FetchError, match="still failing after 40 retries"):
            connector.run(ledger, spool=spool)
    assert delays[:3] == [1, 2, 4]
    assert max(delays) == 300


def test_a_redirect_before_a_page_that_recovers_is_followed_at_every_retry(
    ledger: Ledger, spool: Spool
) -> None:
    """An API whose first URL redirects (``/v1/items`` to ``/v1/items/``) in front of a page
    that answers 503 a few times: every retry follows the redirect afresh. The redirects of
    all the attempts were counted as one request's, and the fifth attempt failed the run with
    urllib's "redirect error that would lead to an infinite loop", whatever ``retries`` said."""

    def moved(_query: dict[str, str], _call: int) -> tuple[int, Any, dict[str, str]]:
        return 301, {}, {"Location": "/recovering"}

    def recovering(_query: dict[str, str], call: int) -> tuple[int, Any]:
        if call <= 5:
            return 503, {"error": "warming up"}
        return 200, [{"id": "a"}, {"id": "b"}]

    with JsonServer({"/moved": moved, "/recovering": recovering}) as server:
        connector = HttpJsonConnector(
            3, f"{server.base}/moved", single_page=True, retries=6, backoff=0
        )
        result = connector.run(ledger, spool=spool)
        calls = dict(server.calls)
    assert (result.status, result.totals["records_created"]) == ("success", 2)
    assert calls == {"/moved": 6, "/recovering": 6}
