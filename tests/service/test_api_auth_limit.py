"""Failed tokens are limited per client address: after ``[api] max_auth_failures`` refused
tokens (API requests and web logins together) within ``auth_failure_window``, that address's
next attempts are answered 429 with Retry-After *without checking the token*, so a guess
cannot be told right from wrong until the window passes; other addresses are not affected.
Behind a reverse proxy listed in ``trusted_proxies``, the address is the client's from
``X-Forwarded-For``."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.api.limits import AuthFailures
from service.config import ApiConfig, LedgerConfig
from tests.service.conftest import TOKENS, auth

BAD = {"Authorization": "Bearer not-a-token-0123456789abcdef"}


@contextmanager
def limited_app(
    db_url: str, address: str = "203.0.113.7", **api: object
) -> Iterator[tuple[TestClient, LedgerConfig]]:
    tokens = [
        {"name": name, "scopes": scopes, "sha256": hashlib.sha256(token.encode()).hexdigest()}
        for name, (token, scopes) in TOKENS.items()
    ]
    # A window far longer than any test takes on a busy machine (failures that aged out before
    # the limit was reached made a test flaky); the test of forgiveness sets a short one.
    settings = {"max_auth_failures": 3, "auth_failure_window": "60s", "tokens": tokens, **api}
    config = LedgerConfig.model_validate(
        {
            "database_url": db_url,
            "api": settings,
            "web": {"enabled": True, "verify_interval": "0s"},
        }
    )
    app = create_app(config)
    try:
        with TestClient(app, raise_server_exceptions=False, client=(address, 50000)) as client:
            yield client, config
    finally:
        app.state.api.close()
        app.state.web.close()


def other_client(client: TestClient, address: str) -> TestClient:
    return TestClient(client.app, raise_server_exceptions=False, client=(address, 50000))


def assert_limited(answer_status: int, headers: dict[str, str], window_s: int = 60) -> None:
    assert answer_status == 429
    assert 1 <= int(headers["retry-after"]) <= window_s


def test_failed_tokens_are_limited_per_address_then_forgiven(db_url: str) -> None:
    with limited_app(db_url, auth_failure_window="5s") as (client, _config):
        for _ in range(3):
            assert client.get("/v1/runs", headers=BAD).status_code == 401
        refused = client.get("/v1/runs", headers=BAD)
        assert_limited(refused.status_code, dict(refused.headers), window_s=5)
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"] == "urn:run-ledger:problem:too-many-failures"
        assert "not-a-token" not in refused.text
        # The right token too: while limited, no token from this address is checked.
        right = client.get("/v1/runs", headers=auth("reader"))
        assert right.status_code == 429
        assert client.get("/healthz").status_code == 200  # needs no token
        # Another address is not affected.
        assert (
            other_client(client, "198.51.100.9").get("/v1/runs", headers=auth("reader")).status_code
            == 200
        )
        deadline = time.monotonic() + 20
        while client.get("/v1/runs", headers=auth("reader")).status_code != 200:
            assert time.monotonic() < deadline, "still limited after the window"
        # A success does not wipe the failures of a guesser that also holds a token: they
        # age out of the window instead.
        assert client.get("/v1/runs", headers=BAD).status_code == 401


def test_web_logins_count_with_the_api_and_are_limited(db_url: str) -> None:
    with limited_app(db_url) as (client, _config):
        assert client.get("/v1/runs", headers=BAD).status_code == 401
        for _ in range(2):
            page = client.get("/web/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None
            refused = client.post(
                "/web/login", data={"token": "wrong-0123456789abcdef", "csrf": csrf.group(1)}
            )
            assert refused.status_code == 401, refused.text
        page = client.get("/web/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        limited = client.post(
            "/web/login",
            data={"token": TOKENS["reader"][0], "csrf": csrf.group(1)},
            follow_redirects=False,
        )
        assert_limited(limited.status_code, dict(limited.headers))
        assert limited.headers["content-type"].startswith("text/html")
        assert "ledger_web_session" not in limited.headers.get("set-cookie", "")
        assert "Content-Security-Policy" in limited.headers
        assert client.get("/v1/runs", headers=auth("reader")).status_code == 429


def test_behind_a_trusted_proxy_the_forwarded_client_is_limited(db_url: str) -> None:
    with limited_app(db_url, address="127.0.0.1", trusted_proxies=["127.0.0.1"]) as (
        client,
        _config,
    ):
        guesser = {**BAD, "X-Forwarded-For": "203.0.113.66"}
        for _ in range(3):
            assert client.get("/v1/runs", headers=guesser).status_code == 401
        assert client.get("/v1/runs", headers=guesser).status_code == 429
        # Another client behind the same proxy still gets in.
        honest = {**auth("reader"), "X-Forwarded-For": "198.51.100.20"}
        assert client.get("/v1/runs", headers=honest).status_code == 200
        # A forged first hop does not help the guesser: the proxy appends the real address.
        forged = {**auth("reader"), "X-Forwarded-For": "10.9.9.9, 203.0.113.66"}
        assert client.get("/v1/runs", headers=forged).status_code == 429


def test_an_untrusted_peer_cannot_pick_its_address(db_url: str) -> None:
    with limited_app(db_url) as (client, _config):
        for number in range(3):
            spoofed = {**BAD, "X-Forwarded-For": f"192.0.2.{number}"}
            assert client.get("/v1/runs", headers=spoofed).status_code == 401
        assert (
            client.get("/v1/runs", headers={**BAD, "X-Forwarded-For": "192.0.2.99"}).status_code
            == 429
        )


def test_zero_turns_the_limit_off(db_url: str) -> None:
    with limited_app(db_url, max_auth_failures=0) as (client, _config):
        for _ in range(10):
            assert client.get("/v1/runs", headers=BAD).status_code == 401
        assert client.get("/v1/runs", headers=auth("reader")).status_code == 200


def test_the_table_of_addresses_is_bounded() -> None:
    failures = AuthFailures(3, 60.0, capacity=100)
    for number in range(1000):
        failures.attempt(f"10.0.{number // 256}.{number % 256}", right=False)
    assert len(failures) <= 100


def test_the_defaults() -> None:
    config = ApiConfig()
    assert config.max_auth_failures == 10
    assert config.auth_failure_window.total_seconds() == 60
    assert config.trusted_proxies == []


@pytest.mark.parametrize("proxy", ["not-an-address", "10.0.0.0/33"])
def test_trusted_proxies_are_addresses_or_networks(proxy: str) -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        ApiConfig.model_validate({"trusted_proxies": [proxy]})


def test_the_limit_is_bounded_so_the_table_is() -> None:
    """Each address keeps at most max_auth_failures times: 10,000 addresses of 10,000 each."""
    with pytest.raises(ValueError, match="max_auth_failures"):
        ApiConfig.model_validate({"max_auth_failures": 10_001})
    assert ApiConfig.model_validate({"max_auth_failures": 10_000}).max_auth_failures == 10_000


def test_a_port_a_mapped_or_an_ipv6_interface_is_the_same_address(db_url: str) -> None:
    """A proxy that writes the client's port, an IPv4-mapped address, or a guesser with a whole
    IPv6 /64 (every subscriber has one) does not get a fresh count a request."""
    with limited_app(db_url, address="127.0.0.1", trusted_proxies=["127.0.0.1"]) as (
        client,
        _config,
    ):
        for hop in ("203.0.113.66:5001", "[::ffff:203.0.113.66]:5002", "203.0.113.66"):
            # The proxy's own hop, with its port, is still the trusted proxy's.
            forwarded = {**BAD, "X-Forwarded-For": f"{hop}, 127.0.0.1:8080"}
            assert client.get("/v1/runs", headers=forwarded).status_code == 401
        limited = client.get(
            "/v1/runs", headers={**auth("reader"), "X-Forwarded-For": "203.0.113.66:6000"}
        )
        assert_limited(limited.status_code, dict(limited.headers))
        other = {**auth("reader"), "X-Forwarded-For": "[2001:db8:1:3::1]:443"}
        assert client.get("/v1/runs", headers=other).status_code == 200
    with limited_app(db_url, address="2001:db8:1:2::1") as (client, _config):
        for number in range(3):
            guesser = other_client(client, f"2001:db8:1:2:{number:x}::{number + 7:x}")
            assert guesser.get("/v1/runs", headers=BAD).status_code == 401
        refused = other_client(client, "2001:db8:1:2:ffff::1").get("/v1/runs", headers=BAD)
        assert_limited(refused.status_code, dict(refused.headers))
        neighbour = other_client(client, "2001:db8:1:3::1")
        assert neighbour.get("/v1/runs", headers=auth("reader")).status_code == 200


def test_concurrent_guesses_cannot_all_pass_the_check(db_url: str) -> None:
    """The limit is checked and a failure counted in one step: 12 guesses whose token checks
    all overlap get max_auth_failures 401s and the rest 429 (checking the limit before the
    token and counting after it let all 12 through)."""
    with limited_app(db_url) as (client, _config):
        tokens = client.app.state.api.tokens  # type: ignore[attr-defined]
        compare = tokens.caller
        together = threading.Barrier(12, timeout=30)

        def overlapping(token: str) -> object:
            together.wait()  # every request is inside its token check at once
            return compare(token)

        tokens.caller = overlapping
        with ThreadPoolExecutor(12) as pool:
            statuses = sorted(
                pool.map(lambda _: client.get("/v1/runs", headers=BAD).status_code, range(12))
            )
        assert statuses.count(401) == 3, statuses
        assert statuses.count(429) == 9, statuses


def test_a_right_token_while_limited_is_refused_and_not_counted() -> None:
    failures = AuthFailures(2, 60.0, clock=lambda: 100.0)
    assert failures.attempt("192.0.2.1", right=True).wait is None
    assert not failures.attempt("192.0.2.1", right=False).reaches_limit
    assert failures.attempt("192.0.2.1", right=False).reaches_limit
    assert failures.attempt("192.0.2.1", right=True).wait == 60
    assert failures.attempt("192.0.2.1", right=False).wait == 60
    assert len(failures) == 1
