"""Helpers shared by the contract suite: databases to test against, and ways to reset them."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from click.testing import Result
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url

from forensics.triggers import check_triggers
from ledger import EventModel, Ledger, RecordedEvent, RunProgressed
from ledger import events as events_module
from ledger.database import create_ledger_engine
from ledger.dialects import create_trigger_statement, expected_triggers
from ledger.events import COUNTER_FIELDS
from ledger.schema import GENESIS_HASH, metadata
from ledger.urls import sqlite_file_of
from migrations.runner import alembic_config, upgrade

MYSQL_URL_ENV = "LEDGER_TEST_MYSQL_URL"
PORTS_ENV = "LEDGER_TEST_PORTS"  # e.g. 18700-18799: the ports this suite's servers may take
TRIGGERS = ("ledger_events_no_update", "ledger_events_no_delete")
# The events that close a run (DESIGN.md §4, I10): what the tests count per run.
TERMINAL_EVENT_TYPES = frozenset({"RunFinished", "RunTimedOut"})


# --- what only the tests ask of the library (kept here, not in the production code)


def runs_read_without_replay(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ids of the runs whose events ``ledger.read_runs`` reads from now on, in a list that
    grows as it does; ``ledger.read_all`` (a replay of the whole history) fails the test."""
    read: list[int] = []
    read_runs = ledger.read_runs

    def counted(run_ids: Any, up_to: int | None = None) -> Any:
        read.extend(run_ids)
        return read_runs(run_ids, up_to)

    def no_replay(*_: Any, **__: Any) -> Any:
        raise AssertionError("the whole history was replayed")

    monkeypatch.setattr(ledger, "read_runs", counted)
    monkeypatch.setattr(ledger, "read_all", no_replay)
    return read


def counter_deltas(event: EventModel) -> dict[str, int]:
    """The counter deltas ``event`` carries (all zero for an event without counters)."""
    return {name: int(getattr(event, name, 0)) for name in COUNTER_FIELDS}


def is_heartbeat(event: RunProgressed) -> bool:
    """A RunProgressed whose counter deltas are all zero (DESIGN.md §5)."""
    return not any(counter_deltas(event).values())


def recorded_event(row: Mapping[Any, Any]) -> RecordedEvent:
    """A selected ``ledger_events`` row (its columns by name) as the ledger hands it back."""
    return RecordedEvent(**{name: row[name] for name in RecordedEvent.__dataclass_fields__})


def head_revision() -> str | None:
    """The newest migration's revision."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL opens (None: in memory), as ``ledger.urls.sqlite_file_of``."""
    return sqlite_file_of(make_url(url))


def mysql_base_url() -> str | None:
    return os.environ.get(MYSQL_URL_ENV) or None


def _server_statements(url: str, *statements: str) -> None:
    """Run statements on the server of ``url``, outside any database."""
    admin = create_engine(make_url(url).set(database=None))
    try:
        with admin.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        admin.dispose()


def create_mysql_database(base_url: str, name: str | None = None) -> str:
    """Create a database next to ``base_url``'s (uniquely named unless ``name`` is given) and
    return its URL. A unique name starts with the base database's own name (``rev2`` gives
    ``rev2_test_…``), so suites run side by side on one server each keep to their own names."""
    prefix = make_url(base_url).database or "ledger"
    name = name or f"{prefix[:40]}_test_{uuid.uuid4().hex[:12]}"
    _server_statements(base_url, f"CREATE DATABASE {_quoted(name)} CHARACTER SET utf8mb4")
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


def kill_session(url: str, session: int) -> None:
    """End the MySQL/MariaDB server session ``session`` from another session: a connection
    lost as a node or network loses it, seen by its client at its next statement."""
    killer = Ledger.from_url(url)
    try:
        with killer.connect() as conn:
            conn.exec_driver_sql(f"KILL CONNECTION {int(session)}")
    finally:
        killer.close()


def drop_mysql_database(url: str) -> None:
    _server_statements(url, f"DROP DATABASE IF EXISTS {_quoted(make_url(url).database or '')}")


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def migrate(url: str) -> None:
    engine = create_ledger_engine(url)
    try:
        upgrade(engine, url)
    finally:
        engine.dispose()


def make_sqlite_template(folder: Path) -> Path:
    """A migrated SQLite file that each test copies instead of migrating again."""
    path = folder / "template.db"
    migrate(f"sqlite:///{path}")
    return path


def sqlite_copy(template: Path, folder: Path) -> str:
    target = folder / "ledger.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


def reset_mysql(url: str) -> None:
    """Empty every table and restore the genesis head; re-create the database if a test
    dropped, redefined or added a trigger on the events (tamper tests do, as a hostile DBA
    would)."""
    engine = create_ledger_engine(url)
    try:
        store = Ledger(engine, url)
        if not check_triggers(store).ok:
            engine.dispose()
            _recreate_mysql(url)
            return
        with engine.begin() as conn:
            for table in inspect(conn).get_table_names():
                if table in metadata.tables:
                    conn.execute(text(f"TRUNCATE TABLE `{table}`"))
            conn.execute(
                text(
                    "INSERT INTO ledger_head (id, last_position, last_hash, last_run_id) "
                    "VALUES (1, 0, :h, 0)"
                ),
                {"h": GENESIS_HASH},
            )
    finally:
        engine.dispose()


def _recreate_mysql(url: str) -> None:
    name = make_url(url).database
    _server_statements(
        url, f"DROP DATABASE IF EXISTS `{name}`", f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
    )
    migrate(url)


def drop_triggers(engine: Engine) -> None:
    """What a hostile DBA would do before editing history."""
    with engine.begin() as conn:
        for name in TRIGGERS:
            conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))


def restore_triggers(engine: Engine) -> None:
    """What a careful hostile DBA does after editing history: put the triggers back as they
    were, so that nothing shows they were ever gone."""
    dialect = engine.dialect.name
    with engine.begin() as conn:
        for trigger in expected_triggers(dialect):
            conn.execute(text(f"DROP TRIGGER IF EXISTS {trigger.name}"))
            conn.execute(text(create_trigger_statement(trigger, dialect)))


_examples = itertools.count()


def fresh_store(backend: str, template: Path, tmp_path: Path, mysql_url: str | None) -> Ledger:
    """An empty, migrated store for one hypothesis example (function fixtures run once per
    test, not per example)."""
    if backend == "sqlite":
        folder = tmp_path / f"example-{next(_examples)}"
        folder.mkdir()
        return Ledger.from_url(sqlite_copy(template, folder))
    assert mysql_url is not None
    reset_mysql(mysql_url)
    return Ledger.from_url(mysql_url)


def sqlite_without_schema(path: Path) -> str:
    """The URL of a SQLite database at ``path`` that holds one unrelated table and none of the
    ledger's (an empty file is refused as no database at all)."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE other (x INTEGER)")
    return f"sqlite:///{path}"


@contextmanager
def unmigrated_databases(tmp_path: Path) -> Iterator[Iterator[tuple[str, Ledger]]]:
    """Empty, unmigrated databases: a SQLite file, and a MariaDB database when configured.
    Each is closed (and dropped on MariaDB) afterwards."""
    urls = [f"sqlite:///{tmp_path / 'unmigrated.db'}"]
    base = mysql_base_url()
    if base is not None:
        urls.append(create_mysql_database(base))
    stores = [Ledger.from_url(url) for url in urls]
    try:
        yield iter(zip(urls, stores, strict=True))
    finally:
        for url, store in zip(urls, stores, strict=True):
            store.close()
            if url.startswith("mysql"):
                drop_mysql_database(url)


def names_as_before_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let appends store any name, as run-ledger did before names had a rule: history written
    then (trailing spaces, control characters) must still read, project, verify and show."""
    monkeypatch.setattr(events_module, "name_problem", lambda value: None, raising=False)
    # The checks refer to the rule as NAME_CHECK: (error type, check).
    monkeypatch.setattr(events_module, "NAME_CHECK", ("name_character", lambda value: None))


def as_another_user(work: Callable[[], list[tuple[str, Result]]]) -> list[tuple[str, int, str]]:
    """``work``'s (name, exit code, output) as a user who does not own the test's files."""

    def summary(results: list[tuple[str, Result]]) -> list[tuple[str, int, str]]:
        return [(name, result.exit_code, result.output) for name, result in results]

    if os.geteuid() != 0:
        return summary(work())
    nobody = 65534
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child reports through the pipe)
        code = 1
        try:
            os.close(read_end)
            os.setgid(nobody)
            os.setuid(nobody)
            os.write(write_end, json.dumps(summary(work())).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        data = reader.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    return [(name, code, output) for name, code, output in json.loads(data)]


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """The process's umask set to ``mask`` for the block, the previous one restored after."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    """The permission bits of ``path`` (0o600, 0o755, …)."""
    return stat.S_IMODE(path.stat().st_mode)


# --- processes and ports a test uses

STOP_TIMEOUT_S = 60.0  # how long a stopped process may take to exit before it is killed


def stop_process(
    process: subprocess.Popen[Any],
    sig: int = signal.SIGTERM,
    timeout: float = STOP_TIMEOUT_S,
    read_output: bool = True,
    group: bool = False,
) -> tuple[Any, Any]:
    """Stop ``process`` and reap it, whatever state it and the test are in: send ``sig`` if it
    still runs, give it ``timeout`` seconds to exit, then SIGKILL it. Every test that starts a
    process calls this in a ``finally`` (or a fixture's teardown).

    ``communicate`` or ``wait`` with a timeout raise TimeoutExpired and leave the child running:
    in a ``finally`` that error replaced the test's own and the process outlived pytest. This
    never raises for a process that will not stop: its ``returncode`` (-9) says it was killed,
    for the test to assert. The process's pipes are read meanwhile (a full pipe would keep it
    from exiting) and returned as (stdout, stderr), unless ``read_output`` is False: a thread
    of the test reads them (both are then None). ``group``: the process leads a session of
    its own (``start_new_session=True``) and the signals go to its whole process group, so the
    children it started die with it."""

    def signal_it(number: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # gone already (a group: all of it)
            if group:
                os.killpg(process.pid, number)
            elif process.poll() is None:
                process.send_signal(number)

    def finish(seconds: float) -> tuple[Any, Any]:
        if read_output:
            return process.communicate(timeout=seconds)
        process.wait(timeout=seconds)
        return None, None

    if process.poll() is None:
        signal_it(sig)
    try:
        output = finish(timeout)
    except subprocess.TimeoutExpired:
        signal_it(signal.SIGKILL)
        process.wait()  # SIGKILL cannot be refused: this returns
        try:
            output = finish(timeout)  # the pipes' rest, unless something it started holds them
        except subprocess.TimeoutExpired:
            output = (None, None)
    if group:
        signal_it(signal.SIGKILL)  # whatever it started and left behind
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None and read_output:
            stream.close()
    return output


def wait_for_exit(
    process: subprocess.Popen[Any], timeout: float, group: bool = False
) -> tuple[Any, Any]:
    """``process.communicate(timeout=timeout)`` for a process expected to exit by itself: its
    (stdout, stderr). One still running after ``timeout`` seconds is killed and reaped (its
    whole process group with ``group``, see ``stop_process``) and the test fails saying so,
    with what it printed: ``communicate`` would raise TimeoutExpired and leave it running."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = stop_process(process, signal.SIGKILL, group=group)
        pytest.fail(
            f"{process.args!r} did not exit within {timeout:g}s (killed)\n"
            f"--- stdout\n{out}\n--- stderr\n{err}"
        )


def run_to_end(
    args: list[str], timeout: float, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(args, capture_output=True, text=True, timeout=timeout)`` for a command
    that may start processes of its own (the benchmark harness starts a ``ledger api`` and
    writers, a README block any command): it leads a session of its own, and its whole process
    group is killed when it does not exit within ``timeout`` (the test then fails with its
    output), when the test is interrupted, and after it exits (what it left behind).
    ``subprocess.run`` kills only the command, and its children outlived the test."""
    process = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = wait_for_exit(process, timeout, group=True)
    finally:
        stop_process(process, signal.SIGKILL, group=True)
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def running_children() -> dict[int, str]:
    """The processes this one started that still run (not those that exited, unreaped):
    pid → command line. Read from /proc, so it finds them whoever started them."""
    found = {}
    for pid in _child_pids():
        entry = Path("/proc") / str(pid)
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            if int(ppid) != os.getpid() or state == "Z":
                continue  # another's, or exited: its command line is not read (every test asks)
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):  # exited meanwhile
            continue
        found[pid] = command.strip()
    return found


def _child_pids() -> set[int]:
    """The pids that may be this process's children: those its threads' ``children`` files
    name (a few reads, where scanning every process of the machine took 4 ms twice a test),
    or every process, on a kernel without those files (CONFIG_PROC_CHILDREN). A thread that
    ends hands its children to one still running: if one ended while the files were read, its
    children may be in no file as read, and they are read again."""
    for _ in range(5):
        tasks = list(Path(f"/proc/{os.getpid()}/task").iterdir())
        pids: set[int] = set()
        for task in tasks:
            try:
                pids.update(int(pid) for pid in (task / "children").read_text().split())
            except FileNotFoundError:
                if task.exists():  # the thread runs: this kernel has no such files
                    return _every_pid()
            except OSError:  # the thread ended meanwhile
                continue
        if all(_thread_runs(task) for task in tasks):  # none ended: no child moved
            return pids
    return _every_pid()  # threads keep ending: every process, as running_children checks


def _thread_runs(task: Path) -> bool:
    """Whether a thread has not reached its exit yet (an ended one hands its children on)."""
    try:
        return (task / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X", "x")
    except (OSError, IndexError):  # ended, and gone
        return False


def _every_pid() -> set[int]:
    return {int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()}


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now: one of ``$LEDGER_TEST_PORTS``
    (``LOW-HIGH``) when it is set, else the system's choice. The range keeps suites that share
    a machine on ports of their own, and below the ephemeral range, where the system may give
    the port to any outgoing connection before the test's server binds it (the TypeScript
    client's helpers, clients/typescript/testing/live-ledger.mjs, read the same variable)."""
    bounds = os.environ.get(PORTS_ENV, "").split("-")
    if len(bounds) != 2 or not all(bound.isdigit() for bound in bounds):
        return _bound_port(0)
    low, high = int(bounds[0]), int(bounds[1])
    ports = list(range(low, high + 1))
    random.shuffle(ports)  # two tests of one run must not keep meeting on the lowest port
    for port in ports:
        with contextlib.suppress(OSError):  # taken: the next one
            return _bound_port(port)
    raise AssertionError(f"no free port in {PORTS_ENV}={os.environ[PORTS_ENV]}")


def _bound_port(port: int) -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        return int(sock.getsockname()[1])


def not_broken(text: str) -> str:
    """``text`` without its white space: ``ledger verify`` breaks a long line for 80 columns,
    at a space or inside a long word (a path), so a line is looked for whatever its breaks."""
    return "".join(text.split())
