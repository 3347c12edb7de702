"""A MariaDB connection of a URL naming no TLS option uses the driver's PREFERRED mode (TLS if
the server offers it, no certificate checked) with one TLS context a process: PyMySQL 2.2 made
one a connection, loading the system's CA certificates each time (24 ms of CPU a connection,
a fifth of the time of a test run). A URL naming a TLS option gets the driver's own context."""

from __future__ import annotations

import ssl

import pymysql.connections
import pytest

from ledger.database import create_ledger_engine
from ledger.mysql_engine import _Connection


def _driver_connection(url: str) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    engine = create_ledger_engine(url, create=False)
    try:
        with engine.connect() as connection:
            return connection.connection.driver_connection  # type: ignore[return-value]
    finally:
        engine.dispose()


def test_connections_share_one_preferred_tls_context_as_the_driver_makes_it(
    backend: str, db_url: str
) -> None:
    if backend == "sqlite":
        pytest.skip("TLS is a MariaDB connection's")
    first, second = _driver_connection(db_url), _driver_connection(db_url)
    if getattr(first, "ctx", None) is None:
        pytest.skip("this PyMySQL makes no TLS context for a URL without TLS options")
    assert first.ctx is second.ctx  # type: ignore[attr-defined]
    # The driver's own, made as it makes it for every connection: the same settings.
    own = pymysql.connections.Connection(host="127.0.0.1", defer_connect=True).ctx  # type: ignore[attr-defined]
    shared = first.ctx  # type: ignore[attr-defined]
    assert shared is not own
    for setting in ("verify_mode", "check_hostname", "verify_flags", "options", "protocol"):
        assert getattr(shared, setting) == getattr(own, setting), setting
    assert shared.verify_mode == ssl.CERT_NONE


def test_a_url_naming_a_tls_option_gets_a_context_of_its_own() -> None:
    plain = _Connection(host="127.0.0.1", defer_connect=True)
    verified = _Connection(host="127.0.0.1", ssl_verify_cert=True, defer_connect=True)
    if getattr(plain, "ctx", None) is None:
        pytest.skip("this PyMySQL makes no TLS context for a URL without TLS options")
    assert verified.ctx is not plain.ctx  # type: ignore[attr-defined]
    assert verified.ctx.verify_mode == ssl.CERT_REQUIRED  # type: ignore[attr-defined]
    assert _Connection(host="127.0.0.1", defer_connect=True).ctx is plain.ctx  # type: ignore[attr-defined]
