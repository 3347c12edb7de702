"""MariaDB server settings the ledger depends on (README "MariaDB server settings"):
``binlog_format=STATEMENT`` with the binary log on, which InnoDB refuses for the ledger's READ
COMMITTED transactions (1665), and ``max_allowed_packet``, which bounds one statement (1153).

The shared server's globals are not ours to change: a private ``mariadbd`` is started for this
module, on a port of ``$LEDGER_TEST_PORTS``, in a temporary folder, with the binary log on by
statement and ``max_allowed_packet`` at the documented minimum. It runs with the MariaDB half of
the suite (``$LEDGER_TEST_MYSQL_URL`` set, as CI runs it), where a missing ``mariadbd`` fails.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pytest
from click.testing import CliRunner
from sqlalchemy.exc import OperationalError

from ledger import EventModel, Ledger, RunFinished, ServerSettingError, fail_run
from ledger.batch_checks import MAX_PAYLOAD_BYTES, MIN_SERVER_PACKET_BYTES, event_problems
from ledger.driver_errors import database_unreachable, note_packet_limit, translate_errors
from projections import Projector
from service.api.problems import problem_for
from service.cli import cli
from tests import support

START_DEADLINE_S = 30.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the server before exec: SIGKILL it if pytest dies without its teardown."""
    os.setsid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class PrivateServer:
    port: int

    def url(self, database: str, user: str = "root") -> str:
        return f"mysql+pymysql://{user}@127.0.0.1:{self.port}/{database}"

    def sql(self, *statements: str) -> None:
        connection = pymysql.connect(host="127.0.0.1", port=self.port, user="root")
        try:
            with connection.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
        finally:
            connection.close()

    def new_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:10]}"
        self.sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        return name

    def tables(self, database: str) -> list[str]:
        connection = pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", database=database
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute("SHOW TABLES")
                return sorted(str(row[0]) for row in cursor.fetchall())
        finally:
            connection.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServer]:
    if support.mysql_base_url() is None:
        pytest.skip(f"MariaDB half skipped: set {support.MYSQL_URL_ENV} to run it")
    mariadbd = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/bin")
    install = shutil.which("mariadb-install-db")
    assert mariadbd, "mariadbd is needed for this test"
    assert install, "mariadb-install-db is needed for this test"
    folder = tmp_path_factory.mktemp("mariadbd")
    folder.chmod(0o755)
    data = folder / "data"
    user = ["--user=root"] if os.geteuid() == 0 else []
    subprocess.run(
        [install, "--no-defaults", f"--datadir={data}", "--skip-test-db",
         "--auth-root-authentication-method=normal", *user],
        check=True, capture_output=True, timeout=START_DEADLINE_S,
    )  # fmt: skip
    port = support.free_port()
    process = subprocess.Popen(
        [mariadbd, "--no-defaults", f"--datadir={data}", f"--port={port}",
         "--bind-address=127.0.0.1", f"--socket={folder / 'mariadbd.sock'}",
         f"--pid-file={folder / 'mariadbd.pid'}", f"--log-error={folder / 'error.log'}",
         f"--log-bin={data / 'binlog'}", "--binlog-format=STATEMENT", "--server-id=2",
         f"--max-allowed-packet={MIN_SERVER_PACKET_BYTES}", "--innodb-buffer-pool-size=32M",
         "--skip-innodb-doublewrite", *user],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
    )  # fmt: skip
    try:
        private = PrivateServer(port)
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            try:
                private.sql("SELECT 1")
                break
            except pymysql.err.OperationalError:
                # Not there yet on a busy machine: the server opens it as it starts.
                error_log = folder / "error.log"
                log = error_log.read_text(errors="replace")[-2000:] if error_log.exists() else ""
                assert process.poll() is None, f"mariadbd exited:\n{log}"
                assert time.monotonic() < deadline, f"mariadbd did not answer:\n{log}"
                time.sleep(0.1)  # polling a condition (the server answering), with a deadline
        yield private
    finally:
        support.stop_process(process, read_output=False)


SAMPLE = "examples/sample_events.jsonl"  # runs 1 and 2, both closed
# Run 3, silent since: stuck.
OPEN_RUN = (
    '{"type": "RunStarted", "source_id": 3, "connector_name": "x", '
    '"occurred_at": "2020-01-01T00:00:00Z"}\n'
)


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


# --- binlog_format=STATEMENT


def test_a_statement_logging_server_is_written_by_a_user_who_may_set_row(
    server: PrivateServer, tmp_path: Path
) -> None:
    """Root may set the session's binlog_format: every session of the ledger logs rows."""
    url = server.url(server.new_database())
    (tmp_path / "open.jsonl").write_text(OPEN_RUN)
    for args in (
        ["migrate"],
        ["append", SAMPLE],
        ["append", str(tmp_path / "open.jsonl")],
        ["project"],
        ["runs", "fail", "3", "--reason", "gone"],
    ):
        code, output = run_cli(*args, "--db", url)
        assert code == 0, (args, output)
    ledger = Ledger.from_url(url)
    try:
        assert [e.type for e in ledger.read_run(3)] == ["RunStarted", "RunTimedOut"]
    finally:
        ledger.close()


@pytest.fixture
def no_binlog_admin(server: PrivateServer) -> Iterator[str]:
    """A user with every right on its databases but BINLOG ADMIN (nor SUPER)."""
    name = f"app_{uuid.uuid4().hex[:6]}"
    server.sql(f"CREATE USER '{name}'@'%'", f"GRANT ALL ON `t\\_%`.* TO '{name}'@'%'")
    try:
        yield name
    finally:
        server.sql(f"DROP USER '{name}'@'%'")


def test_migrate_refuses_before_any_ddl_where_the_session_must_log_statements(
    server: PrivateServer, no_binlog_admin: str
) -> None:
    database = server.new_database()
    code, output = run_cli("migrate", "--db", server.url(database, no_binlog_admin))
    assert code == 3, output
    for words in ("binlog_format=STATEMENT", "binlog_format=ROW", "BINLOG ADMIN", "nothing was"):
        assert words in output, output
    assert "Traceback" not in output
    assert server.tables(database) == []


def test_writes_under_statement_logging_are_the_environment_not_a_refused_row(
    server: PrivateServer, no_binlog_admin: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Migrated by root, then written by a user that cannot log rows: every write exits 3
    naming the setting; the projector does not take it for an event the database refused."""
    database = server.new_database()
    (tmp_path / "open.jsonl").write_text(OPEN_RUN)
    assert run_cli("migrate", "--db", server.url(database))[0] == 0
    for file in (SAMPLE, str(tmp_path / "open.jsonl")):
        assert run_cli("append", file, "--db", server.url(database))[0] == 0
    url = server.url(database, no_binlog_admin)
    for args in (
        ["append", str(tmp_path / "open.jsonl")],
        ["project"],
        ["sweep"],
        ["runs", "fail", "3", "--reason", "gone"],
    ):
        code, output = run_cli(*args, "--db", url)
        assert code == 3, (args, output)
        assert "binlog_format=ROW" in output, (args, output)
        assert "one event at a time" not in output + caplog.text, output
    code, output = run_cli("project", "--db", server.url(database))
    assert code == 0, output
    assert "applied 8 event(s)" in output, output  # nothing was skipped


# --- max_allowed_packet


def _largest(make: Callable[[str], EventModel], unit: str) -> EventModel:
    """The event ``make`` builds from the most repeats of ``unit`` the payload limit accepts."""
    low, high = 1, MAX_PAYLOAD_BYTES
    while low < high:
        middle = (low + high + 1) // 2
        if event_problems(make(unit * middle), None)[1]:
            high = middle - 1
        else:
            low = middle
    return make(unit * low)


def worst_case_events(ledger: Ledger) -> list[EventModel]:
    """Events at the payload limit whose statements grow most on the wire: backslashes and
    quotes (escaped, twice the bytes) and 2- and 4-byte characters in error_details (the
    projection's JSON writes them as \\uXXXX), and a late outcome of a timed-out run."""
    events: list[EventModel] = []
    for unit in ("\\", "'", "Ж", "😀"):
        run = ledger.start_run(1, "worst")
        events.append(
            _largest(lambda t, r=run: RunFinished(run_id=r, status="failed", error_message=t), unit)
        )
        run = ledger.start_run(1, "worst")
        events.append(
            _largest(
                lambda t, r=run: RunFinished(run_id=r, status="failed", error_details={"e": t}),
                unit,
            )
        )
    late = ledger.start_run(1, "worst")
    fail_run(ledger, late, reason="gone", operator="tester")
    events.append(
        _largest(
            lambda t: RunFinished(
                run_id=late,
                status="failed",
                error_message=t[: len(t) // 2],
                error_details={"e": t[len(t) // 2 :]},
            ),
            "Ж",
        )
    )
    return events


def _append_and_project_worst_cases(ledger: Ledger) -> None:
    events = worst_case_events(ledger)
    for event in events:
        ledger.append([event])
    assert Projector(ledger).run_once() == ledger.head().last_position
    stored = {e.event_id: e.payload_data for e in ledger.read_all()}
    for event in events:
        assert isinstance(event, RunFinished)
        payload = stored[str(event.event_id)]
        assert (payload["error_message"], payload["error_details"]) == (
            event.error_message,
            event.error_details,
        )


def test_the_largest_events_append_and_project_at_the_documented_minimum(
    server: PrivateServer,
) -> None:
    url = server.url(server.new_database())
    assert run_cli("migrate", "--db", url)[0] == 0
    ledger = Ledger.from_url(url)
    try:
        _append_and_project_worst_cases(ledger)
    finally:
        ledger.close()


def test_the_largest_events_append_and_project_on_both_databases(ledger: Ledger) -> None:
    _append_and_project_worst_cases(ledger)


@pytest.mark.parametrize(
    ("packet", "lines"),
    [
        # RunStarted and a RunFinished of 515,000 backslashes: ~1,030,000 bytes of payload,
        # under the event limit, twice that once escaped.
        (
            1024 * 1024,
            [
                {"type": "RunStarted", "source_id": 1, "connector_name": "x", "run_ref": "a"},
                {"type": "RunFinished", "run_ref": "a", "status": "failed"}
                | {"error_message": "\\" * 515_000},
            ],
        ),
        # 800 small events: one INSERT of them all, as the driver splits it (~1 MB).
        (
            64 * 1024,
            [
                {"type": "RunStarted", "source_id": i, "connector_name": "x"}
                | {"metadata": {"pad": "y" * 200}}
                for i in range(800)
            ],
        ),
    ],
)
def test_a_statement_over_max_allowed_packet_is_the_environment_naming_it(
    server: PrivateServer, tmp_path: Path, packet: int, lines: list[dict[str, object]]
) -> None:
    url = server.url(server.new_database())
    assert run_cli("migrate", "--db", url)[0] == 0
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    server.sql(f"SET GLOBAL max_allowed_packet = {packet}")
    try:
        code, output = run_cli("append", str(source), "--db", url)
    finally:
        server.sql(f"SET GLOBAL max_allowed_packet = {MIN_SERVER_PACKET_BYTES}")
    assert code == 3, output
    assert f"max_allowed_packet (it is {packet:,} bytes)" in output, output
    assert f"at least {MIN_SERVER_PACKET_BYTES:,} bytes" in output, output
    assert "Traceback" not in output
    ledger = Ledger.from_url(url)
    try:
        assert ledger.head().last_position == 0  # nothing written
    finally:
        ledger.close()
    code, output = run_cli("append", str(source), "--db", url)
    assert code == 0, output  # at the documented minimum, the same file appends


def test_an_oversized_statement_the_server_hung_up_on_is_not_an_outage() -> None:
    """The server often closes the connection on a statement over its max_allowed_packet
    (2006 "gone away", not 1153). The ledger names the setting; the API and serve must not
    then take it for an outage to wait out (503 ``database-unreachable``, Retry-After, the
    outage log; serve's start retrying): no retry can pass it."""
    url = "mysql+pymysql://root@127.0.0.1:19999/x"
    note_packet_limit(url, 1024 * 1024)
    hung_up = OperationalError(
        "INSERT INTO ledger_events (payload) VALUES (%(p)s)",
        {"p": "\\" * 600_000},
        pymysql.err.OperationalError(2006, "MySQL server has gone away"),
    )
    with pytest.raises(ServerSettingError) as raised, translate_errors(url, "append"):
        raise hung_up
    assert "max_allowed_packet" in str(raised.value)
    assert not database_unreachable(raised.value)
    problem = problem_for(raised.value)
    assert problem.status == 503
    assert problem.slug == "database-error"  # the server's log names the setting
