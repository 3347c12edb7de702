"""Which storage error a database failure is (issue 15, item 7): one that is not there, one that
cannot be reached, one that refused access. Each stays a StorageError, so the SDK still spools
and serve still waits on them as before."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from ledger import (
    AccessDeniedError,
    ConfigurationError,
    DatabaseNotFoundError,
    DatabaseUnreachableError,
    Ledger,
    StorageError,
)
from ledger.driver_errors import database_unreachable, is_duplicate_key, lock_wait_exceeded
from ledger.store import MAX_LOCK_WAITS
from service.cli import cli
from tests import support


def server_url(**parts: str) -> str:
    base = support.mysql_base_url()
    if base is None:
        pytest.skip(f"MariaDB half skipped: set {support.MYSQL_URL_ENV} to run it")
    return make_url(base).set(**parts).render_as_string(hide_password=False)


def failure_of(url: str) -> StorageError:
    store = Ledger.from_url(url)
    try:
        with pytest.raises(StorageError) as caught:
            store.head()
    finally:
        store.close()
    return caught.value


def test_a_closed_port_is_unreachable() -> None:
    error = failure_of("mysql+pymysql://app:pw-closed@127.0.0.1:1/ledger")
    assert isinstance(error, DatabaseUnreachableError)
    assert database_unreachable(error)  # what serve waits on, unchanged
    assert "pw-closed" not in str(error)


def test_refused_credentials_are_access_denied() -> None:
    error = failure_of(server_url(username="ledger_nobody", password="pw-refused"))
    assert isinstance(error, AccessDeniedError)
    assert "pw-refused" not in str(error)


def test_an_unknown_database_is_not_found() -> None:
    name = f"ledger_no_such_{uuid.uuid4().hex[:8]}"
    error = failure_of(server_url(database=name))
    assert isinstance(error, DatabaseNotFoundError)
    assert name in str(error)


@pytest.mark.parametrize("url", ["mysql+pymysql://u:pw@h:3306", "mysql+pymysql://u:pw@h:3306/"])
def test_a_url_naming_no_database_is_refused_before_connecting(url: str) -> None:
    with pytest.raises(ConfigurationError, match="names no database") as caught:
        Ledger.from_url(url)
    assert "e.g. mysql+pymysql://u:***@h:3306/ledger" in str(caught.value)


@pytest.mark.parametrize("port", [0, 65536, 99999])
def test_a_port_out_of_range_is_refused_before_connecting(port: int) -> None:
    """A port no TCP connection can use is the URL's mistake, not a refused connection."""
    with pytest.raises(ConfigurationError, match=f"port {port} is not a TCP port"):
        Ledger.from_url(f"mysql+pymysql://u:pw@127.0.0.1:{port}/ledger")


def test_a_sqlite_folder_that_does_not_exist_is_not_found(tmp_path: Path) -> None:
    error = failure_of(f"sqlite:///{tmp_path}/no-folder/x.db")
    assert isinstance(error, DatabaseNotFoundError)
    assert f"the folder {tmp_path}/no-folder does not exist" in str(error)


def test_the_urls_lock_wait_bounds_an_append_behind_a_held_head(backend: str, db_url: str) -> None:
    """``?lock_wait_timeout=1``: an append behind a session that holds the ``ledger_head``
    lock fails after three lock waits, about three seconds (the server's 1205, waited out
    ``MAX_LOCK_WAITS`` times, then a storage error the SDK spools on), not after InnoDB's
    50 s; the error says the database is busy, not unreachable."""
    if backend != "mysql":
        pytest.skip("a MySQL/MariaDB URL parameter (SQLite has its busy timeout)")
    bounded = make_url(db_url).update_query_dict({"lock_wait_timeout": "1"})
    ledger = Ledger.from_url(bounded.render_as_string(hide_password=False))
    holder = create_engine(db_url)
    try:
        ledger.start_run(1, "bounded")
        with holder.connect() as conn:
            conn.execute(text("SELECT * FROM ledger_head FOR UPDATE"))
            begun = time.monotonic()
            with pytest.raises(StorageError) as failed:
                ledger.start_run(1, "bounded")
            took = time.monotonic() - begun
            conn.rollback()
        assert MAX_LOCK_WAITS - 0.5 <= took < 15, f"waited {took:.1f} s"
        assert lock_wait_exceeded(failed.value)
        assert not database_unreachable(failed.value)
        assert ledger.start_run(1, "bounded") > 0
    finally:
        ledger.close()
        holder.dispose()


@pytest.mark.parametrize("value", ["0", "abc", "99999999999"])
def test_the_lock_wait_is_whole_seconds(value: str) -> None:
    url = f"mysql+pymysql://root@127.0.0.1:3306/ledger?lock_wait_timeout={value}"
    with pytest.raises(ConfigurationError, match="lock_wait_timeout must be a whole number"):
        Ledger.from_url(url)


def _refuse_every_event(store: Ledger, backend: str, refusal: str) -> None:
    """An operator's trigger ``test_policy`` refusing every insert into ``ledger_events`` with
    ``refusal`` (the test drops it)."""
    with store.engine.begin() as conn:
        if backend == "sqlite":
            statement = f"BEGIN SELECT RAISE(ABORT, '{refusal}'); END"
        else:
            statement = f"FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{refusal}'"
        conn.execute(text(f"CREATE TRIGGER test_policy BEFORE INSERT ON ledger_events {statement}"))


def test_a_refusal_quoting_text_is_one_line_after_error(backend: str, db_url: str) -> None:
    """A database's refusal quotes what it likes (an operator's trigger, SQLite's RAISE text as
    written): its line breaks and ESC sequences are shown as escapes in the storage error, or
    ``ledger append`` printed a line of the refusal's own after "Error:"."""
    store = Ledger.from_url(db_url)
    _refuse_every_event(store, backend, "policy\nappended 1 event(s): OK\x1b[2J")
    line = '{"type": "RunStarted", "source_id": 1, "connector_name": "S"}'
    try:
        result = CliRunner().invoke(cli, ["append", "-", "--db", db_url], input=line)
        assert store.head().last_position == 0
    finally:
        with store.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER IF EXISTS test_policy"))
        store.close()
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    (error,) = [shown for shown in lines if shown.startswith("Error:")]
    assert "policy\\nappended 1 event(s): OK" in error
    assert "\x1b" not in result.stderr
    assert not any(shown.startswith("appended 1 event(s)") for shown in lines)


def test_a_refusal_that_is_not_a_duplicate_key_is_not_retried(
    backend: str, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The append retries once when a unique constraint refuses its row (a writer past the head
    lock stored it first: the retry finds it). SQLite reports a CHECK's or an operator's
    trigger's refusal as the same IntegrityError: it was retried as "append hit a unique
    constraint" (the refusal's text logged raw, line breaks and all) and refused again."""
    store = Ledger.from_url(db_url)
    _refuse_every_event(store, backend, "policy\nforged line")
    caplog.set_level(logging.WARNING)
    try:
        with pytest.raises(StorageError, match="policy"):
            store.start_run(1, "S")
        assert store.head().last_position == 0
    finally:
        with store.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER IF EXISTS test_policy"))
        store.close()
    said = [record.getMessage() for record in caplog.records]
    assert not [line for line in said if "unique constraint" in line], said


def test_a_duplicate_key_is_told_from_other_refusals(backend: str, db_url: str) -> None:
    """:func:`is_duplicate_key` on the real errors of both databases: a primary key's and a
    unique index's refusal are duplicates; a NOT NULL's is not."""
    store = Ledger.from_url(db_url)
    try:
        with store.engine.begin() as conn:
            conn.execute(
                text("CREATE TABLE test_keys (id INTEGER PRIMARY KEY, k INTEGER NOT NULL)")
            )
            conn.execute(text("CREATE UNIQUE INDEX test_keys_k ON test_keys (k)"))
            conn.execute(text("INSERT INTO test_keys (id, k) VALUES (1, 1)"))
        refusals = {}
        for name, statement in (
            ("primary key", "INSERT INTO test_keys (id, k) VALUES (1, 2)"),
            ("unique index", "INSERT INTO test_keys (id, k) VALUES (2, 1)"),
            ("not null", "INSERT INTO test_keys (id, k) VALUES (3, NULL)"),
        ):
            with pytest.raises(IntegrityError) as refused, store.engine.begin() as conn:
                conn.execute(text(statement))
            refusals[name] = is_duplicate_key(refused.value)
        assert refusals == {"primary key": True, "unique index": True, "not null": False}
    finally:
        with store.engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS test_keys"))
        store.close()
