"""The raw driver limits: plain sqlite3 / PyMySQL doing the same work on rows shaped like
ledger events, in a table with the same keys, on the same database server."""

from __future__ import annotations

import hashlib
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pymysql
from sqlalchemy.engine import make_url

PAYLOAD = (
    '{"claims_created":0,"coverage_cells_updated":0,"records_created":7,'
    '"records_fetched":10,"records_skipped":1,"records_updated":2}'
)
COLUMNS = (
    "position, event_id, run_id, version, type, schema_version, payload, occurred_at, "
    "recorded_at, actor, prev_hash, hash"
)
SQLITE_TABLE = """CREATE TABLE raw_events (
  position INTEGER PRIMARY KEY, event_id VARCHAR(36) NOT NULL UNIQUE, run_id INTEGER NOT NULL,
  version INTEGER NOT NULL, type VARCHAR(64) NOT NULL, schema_version INTEGER NOT NULL,
  payload TEXT NOT NULL, occurred_at DATETIME NOT NULL, recorded_at DATETIME NOT NULL,
  actor VARCHAR(200), prev_hash VARCHAR(64) NOT NULL, hash VARCHAR(64) NOT NULL,
  UNIQUE (run_id, version))"""
MYSQL_TABLE = """CREATE TABLE raw_events (
  position BIGINT PRIMARY KEY, event_id VARCHAR(36) NOT NULL UNIQUE, run_id INT NOT NULL,
  version INT NOT NULL, type VARCHAR(64) NOT NULL, schema_version INT NOT NULL,
  payload LONGTEXT NOT NULL, occurred_at DATETIME(6) NOT NULL, recorded_at DATETIME(6) NOT NULL,
  actor VARCHAR(200), prev_hash VARCHAR(64) NOT NULL, hash VARCHAR(64) NOT NULL,
  UNIQUE KEY (run_id, version)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""


def insert_sql(sqlite: bool) -> str:
    """The raw table's INSERT of one row, in the driver's parameter style."""
    marks = ", ".join("?" if sqlite else "%s" for _ in range(12))
    return f"INSERT INTO raw_events ({COLUMNS}) VALUES ({marks})"


def rows(start: int, count: int, sqlite: bool) -> Iterator[tuple[Any, ...]]:
    now = datetime.now(UTC).replace(tzinfo=None)
    stamp: Any = now.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else now
    for position in range(start, start + count):
        digest = hashlib.sha256(str(position).encode()).hexdigest()
        yield (
            position,
            str(uuid.uuid4()),
            position // 10 + 1,
            position % 10 + 1,
            "RunProgressed",
            1,
            PAYLOAD,
            stamp,
            stamp,
            "connector:bench",
            digest,
            digest,
        )


def mysql_connection(url: str, **options: Any) -> Any:
    """A plain PyMySQL connection to the database ``url`` names."""
    parsed = make_url(url)
    return pymysql.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 3306,
        user=parsed.username or "root",
        password=parsed.password or "",
        database=parsed.database,
        charset="utf8mb4",
        **options,
    )


class RawDatabase:
    """One raw connection to a scratch table next to the ledger's database."""

    def __init__(self, url: str, sqlite_path: str | None) -> None:
        self.sqlite = sqlite_path is not None
        if sqlite_path is not None:
            self.conn: Any = sqlite3.connect(sqlite_path, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("DROP TABLE IF EXISTS raw_events")
            self.conn.execute(SQLITE_TABLE)
        else:
            self.conn = mysql_connection(url, autocommit=False)
            with self.conn.cursor() as cursor:
                cursor.execute("DROP TABLE IF EXISTS raw_events")
                cursor.execute(MYSQL_TABLE)
            self.conn.commit()
        self.next_position = 1
        self.insert = insert_sql(self.sqlite)

    def _begin(self) -> Any:
        if self.sqlite:
            self.conn.execute("BEGIN")
            return self.conn
        return self.conn.cursor()

    def _commit(self, cursor: Any) -> None:
        if self.sqlite:
            self.conn.execute("COMMIT")
        else:
            cursor.close()
            self.conn.commit()

    def single_inserts(self, count: int) -> float:
        """Rows/s, one row per transaction (BEGIN + INSERT + COMMIT on SQLite; INSERT + COMMIT
        on MariaDB)."""
        batch = list(rows(self.next_position, count, self.sqlite))
        self.next_position += count
        started = time.perf_counter()
        for row in batch:
            cursor = self._begin()
            cursor.execute(self.insert, row)
            self._commit(cursor)
        return count / (time.perf_counter() - started)

    def batch_inserts(self, batches: int, size: int = 1000) -> float:
        """Rows/s, ``size`` rows per executemany and transaction (BEGIN + executemany +
        COMMIT)."""
        prepared = [
            list(rows(self.next_position + i * size, size, self.sqlite)) for i in range(batches)
        ]
        self.next_position += batches * size
        started = time.perf_counter()
        for batch in prepared:
            cursor = self._begin()
            cursor.executemany(self.insert, batch)
            self._commit(cursor)
        return batches * size / (time.perf_counter() - started)

    def close(self) -> None:
        self.conn.close()


def raw_scan(url: str, sqlite_path: str | None, hash_rows: bool = False) -> float:
    """Rows/s of a plain ordered scan of ``ledger_events`` (and sha256 of each row, if asked):
    the raw limit of replaying or verifying history."""
    if sqlite_path is not None:
        conn: Any = sqlite3.connect(sqlite_path)
        cursor = conn.cursor()
    else:
        conn = mysql_connection(url, cursorclass=pymysql.cursors.SSCursor)
        cursor = conn.cursor()
    started = time.perf_counter()
    cursor.execute(f"SELECT {COLUMNS} FROM ledger_events ORDER BY position")
    count = 0
    while chunk := cursor.fetchmany(5000):
        count += len(chunk)
        if hash_rows:
            for row in chunk:
                hashlib.sha256(repr(row).encode()).hexdigest()
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed if elapsed else 0.0
