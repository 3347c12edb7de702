"""Issue 12, item 2: a writer or a projector that vanishes while its socket stays open (a machine
lost, a NAT that keeps the flow) must not block the others for the server's ``wait_timeout``
(8 hours by default), only for the idle bound the URL sets (``?idle_transaction_timeout=``).

The ``FaultProxy`` lets a client's query through, then swallows everything after it and, when
the client process is SIGKILLed, keeps the server's side of its socket open: the server sees an
idle session holding its locks, never a disconnect. MariaDB only (SQLite has no sessions: a dead
process's locks go with it, tests/connectors/test_sdk_run_context.py).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url

from forensics.chain import verify_chain
from ledger import ConfigurationError, Ledger, RunFinished, RunProgressed
from ledger.mysql_engine import IDLE_TRANSACTION_TIMEOUT
from projections import Projector, rebuild
from projections.dialects import projection_session
from projections.rebuild_claims import LOCAL_TTL
from projections.schema import PROJECTION_NAME
from service.cli import cli
from tests.projection_support import replayed_rows, table_rows
from tests.reliability.fault_proxy import FaultProxy, Link
from tests.reliability.summary import Summary
from tests.support import stop_process

REPO = Path(__file__).resolve().parents[2]
IDLE_S = 3  # the bound the tests configure: short, so that no test waits long
SLACK_S = 12.0  # what a loaded 2-CPU machine may add on top of the bound
WAIT_S = 90.0  # deadline for conditions that should hold within seconds
WRITERS = 4
EVENTS_PER_WRITER = 25


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts, killed at its end whatever happened."""
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for process in started:
            stop_process(process, signal.SIGKILL)


def with_idle_bound(url: str, seconds: int | str = IDLE_S, via: FaultProxy | None = None) -> str:
    parsed = make_url(url).update_query_dict({IDLE_TRANSACTION_TIMEOUT: str(seconds)})
    if via is not None:
        parsed = parsed.set(host="127.0.0.1", port=via.port)
    return parsed.render_as_string(hide_password=False)


def wait_for(condition: object, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        threading.Event().wait(0.02)


def vanish(proxy: FaultProxy, process: subprocess.Popen[str], what: str) -> Link:
    """Wait for ``process`` to be cut off by the proxy, then SIGKILL it: its socket to the
    server stays open in the proxy. Returns the vanished link."""
    wait_for(lambda: proxy.vanished and proxy.vanished[0].vanished_at, what)
    assert process.poll() is None, f"{what}: the client exited instead of hanging"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    link = proxy.vanished[0]
    assert link.server_closed_at is None, "the server saw the client go: not the fault wanted"
    return link


class Writer(threading.Thread):
    """Appends progress to its own run, one event per transaction, timing its first success."""

    def __init__(self, url: str, run_id: int) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.run_id = run_id
        self.first_success: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        ledger = Ledger.from_url(self.url)
        try:
            for _ in range(EVENTS_PER_WRITER):
                ledger.append([RunProgressed(run_id=self.run_id, records_fetched=1)])
                if self.first_success is None:
                    self.first_success = time.monotonic()
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            ledger.close()


@pytest.mark.parametrize(
    ("marker", "moment", "worker_args"),
    [
        # MariaDB counts a transaction that only locked rows as read-only: the head lock alone.
        (
            b"FOR UPDATE",
            "after locking ledger_head, before its INSERT",
            ["append_worker.py", "99", "1", "1"],
        ),
        # A live append's INSERT travels with the head's UPDATE and the COMMIT; an append too
        # large for one round trip sends them one by one, so there is a moment between.
        (
            b"INSERT INTO",
            "after inserting its events, before the head moved and COMMIT",
            ["large_append_worker.py"],
        ),
    ],
)
def test_a_writer_vanishing_with_the_head_lock_blocks_the_others_only_for_the_idle_bound(
    db_url: str,
    proxy: FaultProxy,
    processes: list[subprocess.Popen[str]],
    reliability: Summary,
    marker: bytes,
    moment: str,
    worker_args: list[str],
) -> None:
    url = with_idle_bound(db_url)
    ledger = Ledger.from_url(url)
    try:
        run_ids = [ledger.start_run(5, f"WRITER_{i}") for i in range(WRITERS)]
        before = ledger.head().last_position
        # The head lock is the append's SELECT … FOR UPDATE; the writer vanishes after it
        # (``moment``): its transaction holds the lock, idle, and the server never sees it go.
        proxy.vanish_after(marker)
        worker = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "tests" / "workers" / worker_args[0]),
                with_idle_bound(db_url, via=proxy),
                *worker_args[1:],
            ],
            cwd=REPO,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(worker)
        link = vanish(proxy, worker, f"the writer to vanish {moment}")
        assert link.marked_at is not None
        writers = [Writer(url, run_id) for run_id in run_ids]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(timeout=WAIT_S)
            assert not writer.is_alive(), "a writer is still blocked"
            assert writer.error is None, f"an append failed: {writer.error}"
        wait_for(lambda: link.server_closed_at, "the server to end the abandoned session")
        assert link.server_closed_at is not None
        resumed = min(w.first_success for w in writers if w.first_success is not None)
        # From the marker query on: the server's idle clock starts when it has answered it.
        outage = resumed - link.marked_at
        # Blocked for real (the abandoned transaction held the lock) but only for the bound,
        # not for innodb_lock_wait_timeout (50 s, which would have failed the appends) nor for
        # wait_timeout (8 h).
        assert IDLE_S - 1 <= outage <= IDLE_S + SLACK_S, outage
        # Nothing lost, nothing extra: the vanished append was rolled back whole (its run
        # never started), every acknowledged append is there once, the chain verifies.
        events = list(ledger.read_all(after=before))
        assert len(events) == WRITERS * EVENTS_PER_WRITER
        assert Counter(e.run_id for e in events) == dict.fromkeys(run_ids, EVENTS_PER_WRITER)
        assert {e.run_id for e in ledger.read_all() if e.type == "RunStarted"} == set(run_ids)
        assert ledger.head().last_position == before + WRITERS * EVENTS_PER_WRITER
        assert verify_chain(ledger).ok
    finally:
        ledger.close()
    reliability.record(
        "12.2 abandoned sessions",
        "mysql",
        f"a writer process is SIGKILLed mid-append, {moment}, while a proxy keeps its socket "
        f"open so the server never sees it go; "
        f"{WRITERS} writers then append {EVENTS_PER_WRITER} events each "
        f"(?{IDLE_TRANSACTION_TIMEOUT}={IDLE_S})",
        f"the server rolled the abandoned transaction back after {IDLE_S}s idle; the writers "
        f"resumed {outage:.1f}s after the writer's last statement (not after "
        f"innodb_lock_wait_timeout or wait_timeout), no append failed, all "
        f"{WRITERS * EVENTS_PER_WRITER} stored once, the vanished append left nothing, "
        "chain verified",
    )


@pytest.mark.parametrize(
    ("marker", "moment"),
    [
        (b"GET_LOCK(", "after taking its named lock, outside any transaction"),
        (b"FOR UPDATE", "mid-batch, with the checkpoint row locked"),
    ],
)
def test_a_projector_vanishing_with_its_lock_blocks_the_next_only_for_the_idle_bound(
    db_url: str,
    proxy: FaultProxy,
    processes: list[subprocess.Popen[str]],
    reliability: Summary,
    marker: bytes,
    moment: str,
) -> None:
    url = with_idle_bound(db_url)
    ledger = Ledger.from_url(url)
    try:
        run_ids = [ledger.start_run(6, f"PROJECTED_{i}") for i in range(3)]
        ledger.append([RunFinished(run_id=run_ids[0], status="success")])
        proxy.vanish_after(marker)
        projector = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from service.cli import main; main()",
                "project",
                "--db",
                with_idle_bound(db_url, via=proxy),
            ],
            cwd=REPO,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(projector)
        link = vanish(proxy, projector, f"the projector to vanish {moment}")
        assert link.marked_at is not None
        # Waits on the named lock (60 s at most) until the server ends the abandoned session.
        applied = Projector(ledger).run_once()
        waited = time.monotonic() - link.marked_at
        assert applied == 4
        assert IDLE_S - 1 <= waited <= IDLE_S + SLACK_S, waited
        assert link.server_closed_at is not None
        assert table_rows(ledger) == replayed_rows(ledger)
    finally:
        ledger.close()
    reliability.record(
        "12.2 abandoned sessions",
        "mysql",
        f"`ledger project` SIGKILLed {moment}, its socket kept open by a proxy "
        f"(?{IDLE_TRANSACTION_TIMEOUT}={IDLE_S})",
        f"the server ended the abandoned session and freed the projection lock; the next "
        f"projector got it {waited:.1f}s later (not after the 60 s lock wait or wait_timeout) "
        "and applied every event; projection = replay",
    )


def test_a_rebuild_vanishing_between_its_rename_and_its_checkpoint_is_recovered_in_bounded_time(
    db_url: str,
    proxy: FaultProxy,
    processes: list[subprocess.Popen[str]],
    reliability: Summary,
) -> None:
    """The hardest moment: RENAME TABLE has swapped the tables (and committed on its own),
    the checkpoint has not moved yet, and the session holds the projector's named lock outside
    any transaction. The next projector must get the lock within the bound and finish the
    swap from the marker the rebuild left."""
    url = with_idle_bound(db_url)
    ledger = Ledger.from_url(url)
    try:
        run_ids = [ledger.start_run(8, f"REBUILT_{i}") for i in range(3)]
        ledger.append([RunFinished(run_id=run_ids[1], status="partial")])
        assert Projector(ledger).run_once() == 4
        proxy.vanish_after(b"RENAME TABLE")
        rebuilder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from service.cli import main; main()",
                "rebuild",
                "--db",
                with_idle_bound(db_url, via=proxy),
            ],
            cwd=REPO,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(rebuilder)
        link = vanish(proxy, rebuilder, "the rebuild to vanish after its RENAME")
        assert link.marked_at is not None
        ledger.append([RunFinished(run_id=run_ids[2], status="failed")])
        applied = Projector(ledger).run_once()
        waited = time.monotonic() - link.marked_at
        assert applied == 1
        assert IDLE_S - 1 <= waited <= IDLE_S + SLACK_S, waited
        assert Projector(ledger).checkpoint().position == ledger.head().last_position
        assert table_rows(ledger) == replayed_rows(ledger)
        # The vanished rebuild's claim names this node: it lapses once a renewal is missed.
        with freeze_time(datetime.now(UTC) + LOCAL_TTL + timedelta(seconds=1)):
            assert rebuild(ledger).position == ledger.head().last_position  # nothing left
        assert table_rows(ledger) == replayed_rows(ledger)
    finally:
        ledger.close()
    reliability.record(
        "12.2 abandoned sessions",
        "mysql",
        "`ledger rebuild` SIGKILLed right after its RENAME TABLE swap, before moving the "
        "checkpoint, holding the projector's named lock outside a transaction; its socket kept "
        f"open by a proxy (?{IDLE_TRANSACTION_TIMEOUT}={IDLE_S})",
        f"the next projector got the lock {waited:.1f}s later, finished the swap from the "
        "rebuild's marker and applied the newer event; projection = replay; a new rebuild ran "
        "once the vanished one's claim lapsed",
    )


# ---------------------------------------------------------------------- the session settings


class Ghost(threading.Thread):
    """A session of a lost host, as the server sees it: it asks for the head lock, then says
    nothing more with its socket open (the connection kept, never used again), so the server
    ends it only after the idle bound. One that has to wait for the lock is queued there."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__(daemon=True)
        self.connection = ledger.engine.raw_connection()  # the ledger's own session settings
        cursor = self.connection.cursor()
        cursor.execute("SELECT CONNECTION_ID()")
        self.session_id = int(cursor.fetchone()[0])
        self.connection.commit()  # not idle in a transaction until it asks for the lock
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            cursor = self.connection.cursor()
            cursor.execute("BEGIN")
            cursor.execute("SELECT last_position FROM ledger_head FOR UPDATE")
        except BaseException as exc:  # the server ended the session while it waited
            self.error = exc


def wait_for_lock_state(ledger: Ledger, session_id: int, state: str) -> None:
    """Wait until a session's InnoDB transaction is in ``state`` (RUNNING, LOCK WAIT). Polled
    every 0.2 s: InnoDB refreshes what INNODB_TRX shows only when it was last read over 0.1 s
    ago, so a quicker poll would read the same stale rows for ever."""
    deadline = time.monotonic() + WAIT_S
    while True:
        with ledger.engine.connect() as conn:
            found = conn.exec_driver_sql(
                "SELECT trx_state FROM information_schema.INNODB_TRX "
                "WHERE trx_mysql_thread_id = %s",
                (session_id,),
            ).scalar_one_or_none()
        if found == state:
            return
        assert time.monotonic() < deadline, f"session {session_id} never got to {state}"
        threading.Event().wait(0.2)


def test_appends_outlast_two_sessions_of_a_lost_host_one_queued_behind_the_other(
    backend: str, db_url: str, reliability: Summary
) -> None:
    """A lost host may leave more than one session behind: one holding the head lock, one
    already queued for it. Each is ended by the server only after the idle bound, so the
    honest appends queued behind both wait about twice the bound: past InnoDB's lock wait
    (here 4 s, against a 3 s bound), and they used to fail with 1205."""
    if backend != "mysql":
        pytest.skip("sessions and their idle bound are the server's")
    lock_wait = IDLE_S + 1
    url = (
        make_url(with_idle_bound(db_url))
        .update_query_dict({"lock_wait_timeout": str(lock_wait)})
        .render_as_string(hide_password=False)
    )
    ledger = Ledger.from_url(url)
    ghosts: list[Ghost] = []
    try:
        run_id = ledger.start_run(5, "HONEST")
        before = ledger.head().last_position
        ghosts = [Ghost(ledger), Ghost(ledger)]
        ghosts[0].start()
        wait_for_lock_state(ledger, ghosts[0].session_id, "RUNNING")
        ghosts[1].start()
        wait_for_lock_state(ledger, ghosts[1].session_id, "LOCK WAIT")
        started = time.monotonic()
        writer = Writer(url, run_id)
        writer.start()
        writer.join(timeout=WAIT_S)
        assert not writer.is_alive(), "the writer is still blocked"
        assert writer.error is None, f"an append failed: {writer.error}"
        assert writer.first_success is not None
        outage = writer.first_success - started
        # Longer than one lock wait (the first 1205 came and was waited out), bounded by the two
        # sessions' idle bounds, not by wait_timeout (8 h).
        assert lock_wait - 1 <= outage <= 2 * IDLE_S + SLACK_S, outage
        events = list(ledger.read_all(after=before))
        assert [e.run_id for e in events] == [run_id] * EVENTS_PER_WRITER
        assert verify_chain(ledger).ok
    finally:
        for ghost in ghosts:
            ghost.connection.invalidate()  # the server ended them; nothing to give back
        ledger.close()
    reliability.record(
        "12.2 abandoned sessions",
        "mysql",
        f"two sessions of a lost host: one holds the head lock, one queued behind it, each "
        f"idle once it has it (?{IDLE_TRANSACTION_TIMEOUT}={IDLE_S}&lock_wait_timeout="
        f"{lock_wait}); an honest writer appends {EVENTS_PER_WRITER} events behind them",
        f"the server ended each after {IDLE_S}s idle; the writer's append waited out its "
        f"1205 and went on {outage:.1f}s after it began, no append failed, chain verified",
    )


def session_value(conn: Connection, variable: str) -> int:
    return int(conn.exec_driver_sql(f"SELECT @@SESSION.{variable}").scalar_one())


def test_sessions_get_the_idle_bound_and_lock_holders_a_wait_timeout(
    backend: str, db_url: str
) -> None:
    if backend != "mysql":
        pytest.skip("idle-transaction timeouts are the server's")
    default, configured = Ledger.from_url(db_url), Ledger.from_url(with_idle_bound(db_url, 7))
    try:
        for store, bound in ((default, 30), (configured, 7)):
            with store.engine.connect() as conn:
                server_wait = session_value(conn, "wait_timeout")
                for variable in (
                    "idle_write_transaction_timeout",
                    "idle_readonly_transaction_timeout",
                ):
                    assert session_value(conn, variable) == bound
            with projection_session(store.engine, PROJECTION_NAME) as conn:
                assert session_value(conn, "wait_timeout") == bound
            with store.engine.connect() as conn:  # the pooled session is idle-safe again
                assert session_value(conn, "wait_timeout") == server_wait
    finally:
        default.close()
        configured.close()


def test_a_stricter_server_setting_is_kept(backend: str, db_url: str) -> None:
    if backend != "mysql":
        pytest.skip("idle-transaction timeouts are the server's")
    store = Ledger.from_url(with_idle_bound(db_url, 20))

    # What a DBA's global setting gives each new session (a global cannot be changed here:
    # other tests share the server).
    @event.listens_for(store.engine, "connect", insert=True)
    def _server_default(dbapi_connection: object, _record: object) -> None:
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        cursor.execute("SET SESSION idle_transaction_timeout = 4, wait_timeout = 5")
        cursor.close()

    try:
        with store.engine.connect() as conn:
            for variable in ("idle_write_transaction_timeout", "idle_readonly_transaction_timeout"):
                assert session_value(conn, variable) == 4
        with projection_session(store.engine, PROJECTION_NAME) as conn:
            assert session_value(conn, "wait_timeout") == 5
    finally:
        store.close()


def test_a_server_without_idle_timeouts_bounds_sessions_with_wait_timeout(
    backend: str, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MySQL has no idle-transaction timeout: its error 1193 ("unknown system variable") is met
    here by naming variables MariaDB does not have either."""
    if backend != "mysql":
        pytest.skip("idle-transaction timeouts are the server's")
    monkeypatch.setattr(
        "ledger.mysql_engine.MARIADB_IDLE_VARIABLES", ("no_such_idle_timeout", "nor_this_one")
    )
    store = Ledger.from_url(with_idle_bound(db_url, 9))
    try:
        for _ in range(2):  # a second session goes straight to the fallback
            with store.engine.connect() as conn:
                assert session_value(conn, "wait_timeout") == 9
            store.engine.dispose()
        run_id = store.start_run(1, "FALLBACK")  # and the ledger works
        assert store.run(run_id) is not None
        with projection_session(store.engine, PROJECTION_NAME) as conn:
            assert session_value(conn, "wait_timeout") == 9
        # The rebuild lock's session is exempt while it holds the lock, and bounded again after.
        assert rebuild(store).events == 1
        for _ in range(3):
            with store.engine.connect() as conn:
                assert session_value(conn, "wait_timeout") == 9
    finally:
        store.close()


@pytest.mark.parametrize(
    "value", ["0", "-1", "abc", "1.5", "31536001", "99999999999999999999", "²", " 5"]
)
def test_a_bad_idle_bound_is_refused_naming_the_parameter(
    backend: str, db_url: str, value: str
) -> None:
    if backend != "mysql":
        pytest.skip("a MySQL URL parameter")
    bad = with_idle_bound(db_url, value)
    with pytest.raises(ConfigurationError, match=IDLE_TRANSACTION_TIMEOUT):
        Ledger.from_url(bad)
    result = CliRunner().invoke(cli, ["events", "--db", bad])
    assert result.exit_code == 2, result.output
    assert IDLE_TRANSACTION_TIMEOUT in result.stderr


def test_the_idle_bound_given_twice_is_refused(backend: str, db_url: str) -> None:
    if backend != "mysql":
        pytest.skip("a MySQL URL parameter")
    twice = f"{db_url}?{IDLE_TRANSACTION_TIMEOUT}=5&{IDLE_TRANSACTION_TIMEOUT}=6"
    with pytest.raises(ConfigurationError, match="given more than once"):
        Ledger.from_url(twice)


def test_rebuild_and_large_projector_batches_stay_within_a_tight_idle_bound(
    backend: str, db_url: str, reliability: Summary
) -> None:
    """Legit work is never idle between its statements for long: a rebuild (one transaction
    per batch, then the catch-up and swap) and a projector batch of 20,000 events run with a
    2 s bound, on a busy 2-CPU machine, and are not cut off."""
    if backend != "mysql":
        pytest.skip("idle-transaction timeouts are the server's")
    ledger = Ledger.from_url(with_idle_bound(db_url, 2))
    try:
        run_ids = [ledger.start_run(7, f"BULK_{i}") for i in range(50)]
        ledger.append(
            [RunProgressed(run_id=run_ids[i % 50], records_fetched=1) for i in range(20_000)]
        )
        ledger.append([RunFinished(run_id=run_id, status="success") for run_id in run_ids])
        head = ledger.head().last_position
        assert Projector(ledger, batch_size=20_000).run_once() == head
        result = rebuild(ledger, batch_size=5000)
        assert result.position == head
        assert table_rows(ledger) == replayed_rows(ledger)
    finally:
        ledger.close()
    reliability.record(
        "12.2 abandoned sessions",
        "mysql",
        f"a 20,000-event append batch, a projector batch of 20,000 events and a rebuild of "
        f"{head} events with ?{IDLE_TRANSACTION_TIMEOUT}=2",
        "none was cut off: legit transactions are not idle between their statements; "
        "projection = replay",
    )
