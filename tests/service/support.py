"""What the service tests share (and the reliability and projection tests borrow): the ``ledger``
command run in process, the shipped sample and JSON lines to append, and the check that output
shows no raw control or format character; ``ledger serve`` as a real process (its config, the
runs it finished and those left open, a connector whose source hangs); the README's grants of a
database role; a projection error and a skip written by hand."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from sqlalchemy import create_engine, func, insert, select, text, update
from sqlalchemy.engine import make_url

from connectors import SAMPLE_CSV
from ledger import Ledger
from ledger.schema import ledger_runs
from ledger.text import is_invisible
from projections.checkpoints import read_checkpoint
from projections.schema import PROJECTION_NAME, projection_checkpoints, projection_skips
from service.cli import cli
from tests.net_support import JsonServer

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_events.jsonl"


def run(*args: str, input: str | bytes | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def lines(*events: dict[str, object]) -> str:
    return "".join(json.dumps(event) + "\n" for event in events)


def shows_no_raw_control(output: str) -> bool:
    return not any(is_invisible(char) for char in output.replace("\n", ""))


REPO = Path(__file__).resolve().parents[2]


def write_config(
    path: Path, db_url: str, spool: Path, connectors: str, grace: str = "10s", serve: str = ""
) -> Path:
    path.write_text(
        f'database_url = "{db_url}"\n'
        '[projector]\ninterval = "1s"\n'
        '[sweeper]\ninterval = "2s"\n'
        f'[spool]\ndir = "{spool}"\nflush_interval = "2s"\n'
        f'[serve]\ngrace_period = "{grace}"\nprogress_interval = "0s"\n{serve}' + connectors,
        encoding="utf-8",
    )
    return path


def serve(config: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from service.cli import main; main()",
            "-v",
            "serve",
            "--config",
            str(config),
            *extra,
        ],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finished_runs(ledger: Ledger, connector: str) -> list[dict[str, Any]]:
    return [
        e.payload_data | {"run_id": e.run_id}
        for e in ledger.read_all()
        if e.type == "RunFinished"
        and any(
            s.type == "RunStarted" and s.payload_data["connector_name"] == connector
            for s in ledger.read_run(e.run_id)[:1]
        )
    ]


def open_runs(ledger: Ledger) -> int:
    with ledger.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(ledger_runs).where(ledger_runs.c.state == "open")
            ).scalar_one()
        )


@contextmanager
def hanging_connector(called: threading.Event | None = None) -> Iterator[str]:
    """The TOML of an http-json connector, ``hanging`` (source 3, every second), whose source
    answers nothing until the block ends: a run that is still going whenever it is asked.
    ``called`` is set once the source is called (the run is then in its read)."""
    release = threading.Event()

    def slow(_query: dict[str, str], _call: int) -> tuple[int, Any]:
        if called is not None:
            called.set()
        release.wait(60)  # a source that hangs
        return 200, []

    with JsonServer({"/slow": slow}) as api:
        try:
            yield f"""
[[connectors]]
name = "hanging"
type = "http-json"
source_id = 3
schedule = {{ interval = "1s" }}
options = {{ url = "{api.base}/slow", timeout = 60, retries = 0 }}
"""
        finally:
            release.set()


STATIONS = f"""
[[connectors]]
name = "stations"
type = "csv"
source_id = 1
schedule = {{ interval = "1s" }}
options = {{ path = "{SAMPLE_CSV}" }}
"""

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_grants(role: str) -> list[str]:
    """The GRANT statements of the README's ```sql block for ``role`` (e.g. ledger_app)."""
    blocks = re.findall(r"```sql\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    grants = [
        line.strip().rstrip(";")
        for block in blocks
        for line in block.splitlines()
        if line.startswith("GRANT") and f"TO '{role}'@" in line
    ]
    assert grants, f"the README documents no grants for {role}"
    return grants


# Spellings of a number that Python's int() (and pydantic's lax int) took as another one, each
# a different run or position than the URL seems to name: 1_0 is 10; +1, " 1", "1 ", 1.0 and
# the Arabic-Indic "١" are 1.
# Spellings a reader takes for an actor the ledger writes itself. Other case and compatibility
# forms (a full-width colon), then look-alikes outside NFKC: Cyrillic dze, ie and o, a modifier
# letter colon and a ratio sign, a hyphen and a non-breaking hyphen.
LOOK_ALIKE_ACTORS = [
    "Operator:all",
    "Sweeper",
    "operator\uff1aoncall",
    "SERVE:h:1",
    "Ledger-Run:h:1",
    "\u0455weeper",
    "sw\u0435eper",
    "operator\ua789all",
    "operator\u2236all",
    "ledger\u2010run:h:1",
    "ledger\u2011run:h:1",
    "\u0455erve:h:1",
    "imp\u043ert:legacy",
]
# Actors in other scripts, or containing a look-alike of a reserved one without reading as it:
# recorded as they are.
OTHER_SCRIPT_ACTORS = [
    "connector:\u0441\u0431\u043e\u0440-\u0434\u0430\u043d\u043d\u044b\u0445",
    "\u0441\u0431\u043e\u0440\u0449\u0438\u043a",
    "connector:\u03c3\u03cd\u03bd\u03b4\u03b5\u03c3\u03bc\u03bf\u03c2@h:1",
    "\u0399\u03c9\u03ac\u03bd\u03bd\u03b7\u03c2",
    "\u0455weepers",
    "connector:\u0455weeper",
]


LOOSE_INTEGERS = ("1_0", "+1", " 1", "1 ", "1.0", "\u0661", "\u00b2", "0x1")


def integer_parameters(app: Any) -> list[tuple[str, str, str]]:
    """(path, method, parameter) of every integer path or query parameter of every route of
    ``app`` and of the apps mounted in it (the web view), as FastAPI declares them: what the
    tests of loose integers walk, so that a route added later is covered without a new test."""
    from fastapi.routing import APIRoute

    found = []

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                fields = route.dependant.path_params + route.dependant.query_params
                for field in fields:
                    if "int" in str(field.field_info.annotation):
                        found.extend((prefix + route.path, m, field.alias) for m in route.methods)
            elif hasattr(route, "app") and hasattr(route.app, "routes"):
                walk(route.app.routes, prefix + route.path)

    walk(app.routes, "")
    return sorted(found)


def with_integer(path: str, name: str, value: str) -> tuple[str, dict[str, str]]:
    """The URL and query of ``path`` with ``value`` as its parameter ``name`` (in the path,
    quoted, or in the query) and 1 as every other path parameter."""
    from urllib.parse import quote

    url = re.sub(r"{(\w+)}", lambda m: quote(value, safe="") if m[1] == name else "1", path)
    return url, ({} if "{" + name + "}" in path else {name: value})


def wait_for(condition: Callable[[], object], timeout: float = 60.0) -> None:
    """Poll ``condition`` for up to ``timeout`` real seconds (counted in waits: freezegun
    stops ``time.monotonic``)."""
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        threading.Event().wait(0.02)
    assert condition(), "timed out waiting"


class FifoSource:
    """A CSV path on a FIFO whose writer never closes it (opened read-write, which does not
    wait for a reader): a source that never ends. Fed, rows keep coming, so a run reports
    progress; else its read blocks until the test writes. :meth:`end` is the end of the file."""

    def __init__(self, path: Path, feed: bool) -> None:
        self.path = path
        os.mkfifo(path)
        self.writer = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.write("id,name\n")
        self._done = threading.Event()
        self._feeder = threading.Thread(target=self._rows, daemon=True) if feed else None
        if self._feeder is not None:
            self._feeder.start()

    def write(self, text: str) -> None:
        os.write(self.writer, text.encode())

    def _rows(self) -> None:
        row = 0
        while not self._done.wait(0.01):
            with contextlib.suppress(BlockingIOError):  # the pipe full: the reader is slow
                self.write("".join(f"{row + i},x\n" for i in range(100)))
                row += 100

    def end(self) -> None:
        """No more rows: the reader sees the end of the file once it has read what is there.
        Once: a test ends it, then :func:`fifo_source` does. Closed twice, the descriptor's
        number was closed again after the process had given it to another file (a MariaDB
        connection's socket of a thread still reporting): that socket's own close later closed
        the number again, by then the next test's FIFO writer, and its blocked readers saw the
        end of their file ("run 1 finished: success", in CI only)."""
        self._done.set()
        if self._feeder is not None:
            self._feeder.join()
        writer, self.writer = self.writer, -1
        if writer >= 0:
            os.close(writer)


@contextlib.contextmanager
def fifo_source(tmp_path: Path, feed: bool) -> Iterator[FifoSource]:
    source = FifoSource(tmp_path / "never-ending.csv", feed)
    try:
        yield source
    finally:
        source.end()


STOPPED_AT = datetime(2026, 12, 4, 23, 30, 0, 654321, tzinfo=UTC)
SKIPPED_AT = datetime(2026, 12, 4, 23, 40, 0, 123456, tzinfo=UTC)


def stop_and_skip_by_hand(ledger: Ledger, position: int, event_type: str) -> None:
    """A projection error and a skip of the event, written into the tables as the issue's
    repro does (the times chosen with microseconds, which a format may drop)."""
    with ledger.engine.begin() as conn:
        read_checkpoint(conn, PROJECTION_NAME)  # creates the row, as the projector would
        conn.execute(
            update(projection_checkpoints)
            .where(projection_checkpoints.c.name == PROJECTION_NAME)
            .values(
                error_position=position,
                error_type=event_type,
                error_message="cannot apply",
                error_at=STOPPED_AT,
            )
        )
        conn.execute(
            insert(projection_skips).values(
                name=PROJECTION_NAME,
                position=position,
                event_type=event_type,
                reason="r",
                actor="operator:bob",
                skipped_at=SKIPPED_AT,
            )
        )


@contextmanager
def head_lock_held(backend: str, db_url: str) -> Iterator[None]:
    """Another session holding the ``ledger_head`` row lock (SQLite: the write lock)."""
    if backend == "sqlite":
        path = make_url(db_url).database
        assert path is not None
        holder = sqlite3.connect(path, isolation_level=None, timeout=0)
        try:
            holder.execute("BEGIN IMMEDIATE")
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT * FROM ledger_head FOR UPDATE"))
            yield
            conn.rollback()
    finally:
        engine.dispose()
