"""Fixtures of the reliability suite: the ``reliability`` marker on every test here, and the
summary table printed at the end of the run (see ``summary.py``), and the fault proxy in front
of MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.reliability.fault_proxy import FaultProxy
from tests.reliability.summary import Summary

HERE = Path(__file__).resolve().parent
SUMMARY = Summary()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.reliability)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def reliability() -> Summary:
    """Record what a test tried and what held: ``reliability.record(area, backend, tried,
    held)``, once the assertions behind it have passed."""
    return SUMMARY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not SUMMARY.rows:
        return
    terminalreporter.section("reliability summary")
    for line in SUMMARY.lines():
        terminalreporter.write_line(line)
    written = SUMMARY.write_markdown_if_asked()
    if written is not None:
        terminalreporter.write_line(f"(table written to {written})")


@pytest.fixture
def proxy(backend: str, db_url: str) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the MariaDB of ``db_url`` (closed afterwards)."""
    if backend != "mysql":
        pytest.skip(
            "a network fault needs a server in front of which to put a proxy: SQLite's "
            "outages (a held write lock) are tested in tests/connectors"
        )
    url = make_url(db_url)
    fault_proxy = FaultProxy((url.host or "127.0.0.1", url.port or 3306))
    try:
        yield fault_proxy
    finally:
        fault_proxy.close()
