"""The peer: the same workloads on the ``eventsourcing`` library, in the harness's process.

Optional: ``eventsourcing`` comes with ``pip install -e '.[bench]'``, and for MariaDB
``eventsourcing-sqlalchemy`` with ``pip install --no-deps -r benchmarks/peer-mysql.txt``;
imported only when ``--peer eventsourcing`` asks for it.

* SQLite: eventsourcing's own SQLite recorder (``PERSISTENCE_MODULE=eventsourcing.sqlite``,
  ``SQLITE_DBNAME`` a file). Its connection pool sets ``journal_mode=WAL`` and no
  ``synchronous`` pragma (the connection keeps the SQLite build's default), so the harness
  sets ``synchronous=FULL`` on each of its connections, as run-ledger and the raw driver have.
* MariaDB: ``eventsourcing-sqlalchemy`` (``PERSISTENCE_MODULE=eventsourcing_sqlalchemy``,
  ``SQLALCHEMY_URL`` a scratch database), durable as the server is configured, as run-ledger is.

The aggregate is a run: ``Started`` (its ``__init__``), ``Progressed`` and ``Finished``, with
the fields of run-ledger's ``RunStarted``, ``RunProgressed`` and ``RunFinished`` events.
"""

from __future__ import annotations

import time
from importlib.metadata import version
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

PAGE = 1000  # notifications per select_notifications call (run-ledger reads pages of 1,000)


class PeerRun(Aggregate):
    """A run, as a user of ``eventsourcing`` would write it."""

    @event("Started")
    def __init__(self, source_id: int, connector_name: str) -> None:
        self.source_id = source_id
        self.connector_name = connector_name
        self.records_fetched = 0
        self.records_created = 0
        self.status = "running"

    @event("Progressed")
    def progress(self, records_fetched: int, records_created: int) -> None:
        self.records_fetched += records_fetched
        self.records_created += records_created

    @event("Finished")
    def finish(self, status: str) -> None:
        self.status = status


def new_run() -> PeerRun:
    """A run with 10 pending events: started, 8 progressed, finished."""
    run = PeerRun(source_id=1, connector_name="bench")
    for _ in range(8):
        run.progress(records_fetched=3, records_created=2)
    run.finish(status="success")
    return run


class Peer:
    """One ``eventsourcing`` application on a scratch SQLite file or MariaDB database."""

    def __init__(self, sqlite_path: str | None = None, url: str | None = None) -> None:
        self.notes: list[str] = []
        if sqlite_path is not None:
            env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": sqlite_path}
            self.app: Application[Any] = Application(env=env)
            self._durable_sqlite()
            self.versions = f"eventsourcing {version('eventsourcing')} (its SQLite recorder)"
        else:
            assert url is not None
            env = {"PERSISTENCE_MODULE": "eventsourcing_sqlalchemy", "SQLALCHEMY_URL": url}
            self.app = Application(env=env)
            self.versions = (
                f"eventsourcing {version('eventsourcing')}, eventsourcing-sqlalchemy "
                f"{version('eventsourcing-sqlalchemy')} (SQLAlchemy {version('SQLAlchemy')}, "
                "ORM session per save)"
            )
        self.events = 0  # events stored so far

    def _durable_sqlite(self) -> None:
        """``synchronous=FULL`` on every connection of eventsourcing's SQLite pool, present and
        future (the pool creates connections lazily), and a note of what it was."""
        pool = self.app.factory.datastore.pool  # type: ignore[attr-defined]
        create = pool._create_connection
        before: list[int] = []

        def full(connection: Any) -> Any:
            raw = connection._sqlite_conn
            before.append(raw.execute("PRAGMA synchronous").fetchone()[0])
            raw.execute("PRAGMA synchronous=FULL")
            return connection

        pool._create_connection = lambda: full(create())
        for connection in [*pool._pool, *pool._in_use.values()]:
            full(connection)
        with self.app.factory.datastore.get_connection(commit=False) as conn:  # type: ignore[attr-defined]
            raw = conn._sqlite_conn
            journal = raw.execute("PRAGMA journal_mode").fetchone()[0]
            synchronous = raw.execute("PRAGMA synchronous").fetchone()[0]
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        was = ", ".join(sorted({names.get(v, str(v)) for v in before})) or "?"
        self.notes.append(
            f"journal_mode={journal} (set by eventsourcing), synchronous="
            f"{names.get(synchronous, synchronous)} (eventsourcing sets no synchronous pragma; "
            f"the connection default was {was}; the harness sets FULL on each connection)"
        )
        if journal.lower() != "wal" or synchronous != 2:
            raise RuntimeError(f"peer SQLite durability differs: {self.notes[-1]}")

    # ------------------------------------------------------------------ workloads

    def live(self, runs: int) -> float:
        """Events/s, one event per durable ``save``: runs of Started + 8 Progressed +
        Finished, each event triggered on the aggregate and saved on its own."""
        save = self.app.save
        started = time.perf_counter()
        for _ in range(runs):
            run = PeerRun(source_id=1, connector_name="bench")
            save(run)
            for _ in range(8):
                run.progress(records_fetched=3, records_created=2)
                save(run)
            run.finish(status="success")
            save(run)
        elapsed = time.perf_counter() - started
        self.events += runs * 10
        return runs * 10 / elapsed

    def batches(self, calls: int, runs_per_call: int) -> float:
        """Events/s, ``runs_per_call`` runs of 10 pending events each per ``save`` call."""
        save = self.app.save
        started = time.perf_counter()
        for _ in range(calls):
            save(*[new_run() for _ in range(runs_per_call)])
        elapsed = time.perf_counter() - started
        self.events += calls * runs_per_call * 10
        return calls * runs_per_call * 10 / elapsed

    def grow(self, target_events: int) -> None:
        """Save complete runs, 100 a call, until the store holds ``target_events`` events (the
        last run left open if the count asks for it)."""
        while self.events < target_events:
            missing = target_events - self.events
            if missing < 10:
                run = PeerRun(source_id=1, connector_name="bench")
                for _ in range(missing - 1):
                    run.progress(records_fetched=3, records_created=2)
                self.app.save(run)
                self.events += missing
                break
            runs = min(100, missing // 10)
            self.app.save(*[new_run() for _ in range(runs)])
            self.events += runs * 10

    def read_decode(self) -> tuple[int, float]:
        """(events, events/s) of reading every event in order, in pages of ``PAGE``
        notifications (``recorder.select_notifications``), each decoded into its domain
        event (``mapper.to_domain_event``)."""
        select, decode = self.app.recorder.select_notifications, self.app.mapper.to_domain_event
        count, start = 0, 1
        started = time.perf_counter()
        while True:
            page = select(start, PAGE)
            for notification in page:
                if decode(notification) is not None:
                    count += 1
            if len(page) < PAGE:
                break
            start = page[-1].id + 1
        return count, count / (time.perf_counter() - started)

    def close(self) -> None:
        self.app.close()
