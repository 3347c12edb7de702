"""The contract suite's fixtures: every test that takes ``db_url`` or ``ledger`` runs once on
SQLite (a temp file) and once on MariaDB/MySQL.

MariaDB comes from ``$LEDGER_TEST_MYSQL_URL`` (a server URL; the suite creates and drops its own
database on it). Without that variable the MariaDB half is skipped with a visible reason; with
it, an unreachable server is a failure, never a skip (that is how CI runs).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import freezegun
import pytest

from ledger import Ledger
from ledger.clock import use_clock, utcnow
from tests import support

pytest_plugins = ["pytester"]  # tests/test_test_processes.py runs the safety net in a session

# A command run in the background by a non-interactive shell (`pytest ... &` in a CI script)
# starts with SIGINT ignored, and an ignored signal stays ignored across exec: every process a
# test starts would then shrug off the Ctrl-C that tests send it (the Ctrl-C load test waited
# minutes for a pytest that never saw it). Handled again here, the processes tests start get
# the default action, as from a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# pytest times each test with the clock functions of _pytest.timing; a fixture that yields
# inside freeze_time would otherwise have them frozen too, and --durations (CI's guide to its
# slowest tests) printed the years since the epoch for that test's set-up.
freezegun.configure(extend_ignore_list=["_pytest.timing"])


@pytest.fixture(autouse=True)
def process_clock() -> Iterator[None]:
    """Ledgers opened in this process keep time by its clock, which freezegun drives; without
    this, MariaDB would give them its own. Processes a test starts use the database's clock,
    as in production, and tests of the database clock switch it back (``use_clock(None)``)."""
    previous = use_clock(utcnow)
    try:
        yield
    finally:
        use_clock(previous)


@pytest.fixture(autouse=True)
def no_process_outlives_its_test() -> Iterator[None]:
    """A process the test started and left running (its own clean-up skipped or forgotten) is
    killed when the test ends, and the test fails naming it: it would go on writing to a
    database the next test resets, holding a port, or outlive pytest. Each test still stops its
    processes itself (``support.stop_process`` in a ``finally`` or a fixture's teardown).

    Only children of this pytest process that started while the test ran and still run are
    counted: not a server of a module- or session-scoped fixture (set up before this one, torn
    down after), not a process of another test, not the grandchildren of a command (its session
    or group is killed by whoever started it, ``support.run_to_end``). Autouse for every test;
    tests/cluster turns it off, its session's Galera nodes being children that outlive tests
    by design."""
    before = set(support.running_children())
    yield
    left = {pid: cmd for pid, cmd in support.running_children().items() if pid not in before}
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes outlived the test (killed now): {left}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return support.make_sqlite_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def mysql_database() -> Iterator[str | None]:
    base = support.mysql_base_url()
    if base is None:
        yield None
        return
    url = support.create_mysql_database(base)  # a failure here fails the suite: never a skip
    support.migrate(url)
    try:
        yield url
    finally:
        support.drop_mysql_database(url)


@pytest.fixture(params=["sqlite", "mysql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(
    backend: str,
    tmp_path: Path,
    sqlite_template: Path,
    request: pytest.FixtureRequest,
) -> str:
    """A migrated, empty database of the parametrised backend."""
    if backend == "sqlite":
        return support.sqlite_copy(sqlite_template, tmp_path)
    url: str | None = request.getfixturevalue("mysql_database")
    if url is None:
        pytest.skip(f"MariaDB half skipped: set {support.MYSQL_URL_ENV} to run it")
    support.reset_mysql(url)
    return url


@pytest.fixture
def ledger(db_url: str) -> Iterator[Ledger]:
    store = Ledger.from_url(db_url)
    try:
        yield store
    finally:
        store.close()
