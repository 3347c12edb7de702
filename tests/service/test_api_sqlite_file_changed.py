"""A SQLite file moved, deleted or replaced under a running API (or any process holding a
Ledger): its connections go on writing the old file, which nothing else reads and which an
unlink makes vanish when they close. ``/readyz`` said ready and appends were acknowledged into
it; now both answer 503 ``database-file-changed`` and nothing is written. Gone before the
first request, the file was made again, empty, by the first connection: now no connection
makes one."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from ledger import DatabaseFileChangedError, Ledger, RunProgressed, StorageError
from ledger.sqlite_engine import SqliteFile
from service.config import LedgerConfig
from service.serve import LedgerService
from tests.service.conftest import api_client, auth


def _moved(path: Path) -> None:
    path.rename(path.with_name("moved.db"))


def _deleted(path: Path) -> None:
    path.unlink()


def _replaced(path: Path) -> None:
    """A copy put in its place (a restore from a backup): the same content, another file."""
    copy = path.with_name("copy.db")
    shutil.copyfile(path, copy)
    os.replace(copy, path)


CHANGES: dict[str, Callable[[Path], None]] = {
    "moved": _moved,
    "deleted": _deleted,
    "replaced": _replaced,
}


def _sqlite_only(backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("a MariaDB database is not a file this process opened by its path")


@pytest.mark.parametrize("change", CHANGES)
def test_a_database_file_changed_under_the_api_is_not_ready_and_takes_no_append(
    backend: str, db_url: str, change: str, caplog: pytest.LogCaptureFixture
) -> None:
    _sqlite_only(backend)
    path = Path(make_url(db_url).database or "")
    caplog.set_level(logging.WARNING, logger="service.api")
    with api_client(db_url) as client:
        ledger = client.app.state.api.ledger  # type: ignore[attr-defined]
        run_id = ledger.start_run(1, "SOURCE_1")
        assert client.get("/readyz", headers=auth("reader")).json() == {"status": "ready"}
        head = ledger.head().last_position
        CHANGES[change](path)
        for _ in range(3):
            probe = client.get("/readyz", headers=auth("reader"))
            assert probe.status_code == 503, probe.text
            assert probe.json()["type"] == "urn:run-ledger:problem:database-file-changed"
            assert probe.headers["Retry-After"].isdigit()
        assert str(path) not in probe.text  # the server's file is not told to clients
        report = [{"type": "RunProgressed", "run_id": run_id, "records_fetched": 3}]
        refused = client.post("/v1/events", json=report, headers=auth("appender"))
        assert refused.status_code == 503, refused.text
        assert refused.json()["type"] == "urn:run-ledger:problem:database-file-changed"
        failed = client.post(
            f"/v1/runs/{run_id}/fail", json={"reason": "x"}, headers=auth("operator")
        )
        assert failed.status_code == 503, failed.text
        assert ledger.head().last_position == head  # the old file got nothing either
    client.app.state.api.close()  # type: ignore[attr-defined]
    warnings = [r.getMessage() for r in caplog.records if r.name == "service.api"]
    assert len(warnings) == 1, warnings  # once as it starts, not once per probe
    assert str(path) in warnings[0]  # the log says which file


@pytest.mark.parametrize("change", CHANGES)
def test_a_ledger_refuses_to_append_once_its_file_changed(
    backend: str, db_url: str, change: str
) -> None:
    """The library itself: a StorageError (exit 3, a connector spools its events) naming the
    path and what became of the file; a file put back is the ledger again."""
    _sqlite_only(backend)
    path = Path(make_url(db_url).database or "")
    ledger = Ledger.from_url(db_url)
    try:
        run_id = ledger.start_run(1, "SOURCE_1")
        ledger.check_schema()
        CHANGES[change](path)
        with pytest.raises(DatabaseFileChangedError) as refused:
            ledger.append([RunProgressed(run_id=run_id)])
        assert isinstance(refused.value, StorageError)
        assert str(path) in str(refused.value)
        assert "since this process opened it" in str(refused.value)
        with pytest.raises(DatabaseFileChangedError):
            ledger.check_schema(max_age_s=3600)  # a pass just before does not cover it
        if change == "moved":
            path.with_name("moved.db").rename(path)
            ledger.check_schema()
            ledger.append([RunProgressed(run_id=run_id)])
            assert ledger.run(run_id).version == 2  # type: ignore[union-attr]
    finally:
        ledger.close()


def test_a_file_that_stays_is_checked_for_nothing_else(backend: str, db_url: str) -> None:
    """Written to, grown and checkpointed in place, the file is still the one opened."""
    ledger = Ledger.from_url(db_url)
    try:
        run_id = ledger.start_run(1, "SOURCE_1")
        for _ in range(50):
            ledger.append([RunProgressed(run_id=run_id, records_fetched=1)])
        if backend == "sqlite":
            with ledger.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        ledger.check_schema()
        ledger.check_file()
    finally:
        ledger.close()


@pytest.mark.parametrize("first", ["/readyz", "/v1/runs", "/v1/events"])
@pytest.mark.parametrize("change", ["moved", "deleted"])
def test_a_database_file_gone_before_the_first_request_is_not_made_again(
    backend: str, db_url: str, change: str, first: str
) -> None:
    """The file an API was started on, moved or deleted before any request was answered: the
    first request is 503 ``database-file-changed``, as any later one, and no connection made
    an empty file at the path (which ``/readyz`` then told the operator to migrate, and which
    took appends once migrated)."""
    _sqlite_only(backend)
    path = Path(make_url(db_url).database or "")
    with api_client(db_url) as client:
        CHANGES[change](path)
        if first == "/v1/events":
            report = [{"type": "RunStarted", "run_id": 1, "connector": "SOURCE_1"}]
            answer = client.post(first, json=report, headers=auth("appender"))
        else:
            answer = client.get(first, headers=auth("admin"))
        assert answer.status_code == 503, answer.text
        assert answer.json()["type"] == "urn:run-ledger:problem:database-file-changed"
        assert client.get("/metrics", headers=auth("reader")).status_code == 200
        assert not path.exists()
    client.app.state.api.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("read_first", [False, True])
def test_no_connection_makes_a_new_file_where_the_ledger_was(
    backend: str, db_url: str, read_first: bool
) -> None:
    """The library: once a ledger's file is known (as the ledger is made, when it is there),
    a new connection, the first or one more in the pool, is refused rather than let SQLite
    make an empty database at the path."""
    _sqlite_only(backend)
    path = Path(make_url(db_url).database or "")
    ledger = Ledger.from_url(db_url)
    try:
        if read_first:
            ledger.head()
        path.unlink()
        with ledger.connect() as held:  # the pool's connection, or none to give
            held.exec_driver_sql("SELECT 1")
            with pytest.raises(DatabaseFileChangedError), ledger.connect() as another:
                another.exec_driver_sql("SELECT 1")
    except DatabaseFileChangedError:
        assert not read_first  # no connection was open: the first one is refused
    finally:
        ledger.close()
    assert not path.exists()


def test_serve_started_on_a_file_makes_no_new_one_once_it_is_gone(
    backend: str, db_url: str
) -> None:
    """``ledger serve`` creates a missing ledger before it starts (by design); once started
    on a file, none of its engines (the jobs', the scrapes', the stop's) makes another."""
    _sqlite_only(backend)
    path = Path(make_url(db_url).database or "")
    service = LedgerService(LedgerConfig.model_validate({"database_url": db_url}))
    try:
        path.unlink()
        with pytest.raises(DatabaseFileChangedError):
            service.wait_for_database()
        for ledger in (service.scrape_ledger, service.shutdown_ledger):
            with pytest.raises(DatabaseFileChangedError):
                ledger.head()
    finally:
        service.close_ledgers()
    assert not path.exists()


def test_a_file_gone_between_the_check_and_the_open_is_not_made_either(
    backend: str, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the stat cannot see (the file unlinked between it and SQLite's open): a known
    file is opened ``mode=rw``, so the open fails instead of making an empty database."""
    _sqlite_only(backend)
    path = Path(make_url(db_url).database or "")
    ledger = Ledger.from_url(db_url)
    try:
        path.unlink()
        monkeypatch.setattr(SqliteFile, "problem", lambda _self: None)  # the stat saw it there
        with pytest.raises(StorageError, match="unable to open database file"):
            ledger.head()
    finally:
        ledger.close()
    assert not path.exists()
