"""A legacy ``ingestion_runs`` table as ``ledger import-legacy`` reads it: found in the ledger's
database or another (``--from-url``), read in pages by id so that it is never held whole, each
page's rows normalised (text, times, counters and details as the facts hold them, a value that
is not what its column should hold naming its row and column), and read again as checked (each
page verified against the digest the first pass kept of it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, MetaData, Table, select
from sqlalchemy.exc import NoSuchTableError
from sqlalchemy.sql import Select

from forensics.dialects import legacy_text_read
from ledger import (
    ConfigurationError,
    DatabaseNotFoundError,
    Ledger,
    SchemaError,
    StorageError,
    ValidationError,
)
from ledger.clock import parse_utc
from ledger.schema import LEGACY_TABLE
from ledger.text import clip, quoted, visible
from ledger.urls import mask_url, sqlite_file_or_none
from projections.fold import Row
from projections.schema import COUNTER_COLUMNS

DEFAULT_SAME_DB_TABLE = LEGACY_TABLE  # where `ledger migrate` put the old table
# The columns an import cannot do without (the others default, as in the legacy table).
LEGACY_KEY_COLUMNS = ("id", "sourceId", "connectorName", "startedAt", "status")


class LegacyTableChangedError(StorageError):
    """The legacy table was not, when the import read it again, what its first pass checked
    (a row added, removed or changed meanwhile): the import stops before appending the page
    (CLI exit 3). What it appended were the table's own facts, idempotent: running it again,
    once the table is left alone, is safe."""


@contextmanager
def open_legacy_table(
    ledger: Ledger, source_url: str | None, table: str, page_rows: int
) -> Iterator[LegacyTable]:
    """The legacy table ``table`` (in ``source_url``'s database, or the ledger's own), to be
    read in pages; its database is closed when the block ends."""
    if page_rows < 1:
        raise ConfigurationError(f"page_rows: {page_rows} is not a positive number of rows")
    # Only read: a mistyped SQLite path must not become an empty file.
    source = ledger
    if source_url:
        try:
            source = Ledger.from_url(source_url, create=False)
        except DatabaseNotFoundError:
            # Not the generic advice ("`ledger migrate` creates a new ledger"): this is the
            # legacy system's database, which nothing here can create.
            path = visible(str(sqlite_file_or_none(source_url)))
            raise DatabaseNotFoundError(
                f"--from-url: no SQLite database at {path} ({mask_url(source_url)}): check the "
                "legacy database's URL"
            ) from None
        except ConfigurationError as error:  # with --db beside it: say which URL is wrong
            raise ConfigurationError(f"--from-url: {error}") from None
    try:
        with source.connect("read legacy table") as conn:
            try:
                legacy = Table(table, MetaData(), autoload_with=conn)
            except NoSuchTableError:
                raise SchemaError(_no_legacy_table_message(source, source_url, table)) from None
            missing = [name for name in LEGACY_KEY_COLUMNS if name not in legacy.c]
            if missing:
                raise SchemaError(
                    f"table {table!r} in {mask_url(source.url)} is not a legacy ingestion_runs "
                    f"table: it has no {', '.join(missing)} column"
                )
            # Times and text as text (SQLite: its bytes), decoded and parsed by _normalise,
            # which names the row of a value that is not UTF-8 or not a time instead of failing
            # inside the driver layer (exit 1, naming no row).
            columns = [
                legacy_text_read(conn, column)
                if column.name in (*_TEXT_COLUMNS, *_TEXT_READ_COLUMNS)
                else column
                for column in legacy.c
            ]
        yield LegacyTable(source, table, legacy.c.id, select(*columns), page_rows)
    finally:
        if source_url:
            source.close()


@dataclass
class LegacyTable:
    """A legacy table read in pages of about ``page_rows`` rows in id order, each page in a
    short read of its own: rows of NULL id first (ORDER BY id puts them there), then by id
    (``WHERE id > last``), a page taking every row of its last id (rows of one id stay on one
    page, where the check of repeated ids finds them)."""

    source: Ledger
    name: str
    id_column: Any
    query: Select[Any]
    page_rows: int

    def pages(self) -> Iterator[list[dict[str, Any]]]:
        """The rows, page by page, as the driver gives them (:func:`normalise` them)."""
        skipped = 0
        while True:  # NULL ids: no key to page by; few (the first of them is refused)
            with self.source.connect("read legacy table") as conn:
                query = self.query.where(self.id_column.is_(None))
                page = self._read(conn, query.limit(self.page_rows).offset(skipped))
            if page:
                yield page
            if len(page) < self.page_rows:
                break
            skipped += len(page)
        last: Any = None
        while True:
            with self.source.connect("read legacy table") as conn:
                query = self.query.where(self.id_column.is_not(None)).order_by(self.id_column)
                if last is not None:
                    query = query.where(self.id_column > last)
                page = self._read(conn, query.limit(self.page_rows))
                full = len(page) == self.page_rows
                if full:  # and every row of its last id
                    last = page[-1]["id"]
                    while page and page[-1]["id"] == last:
                        page.pop()
                    page.extend(self._read(conn, self.query.where(self.id_column == last)))
            if page:
                yield page
            if not full:
                return

    @staticmethod
    def _read(conn: Connection, query: Select[Any]) -> list[dict[str, Any]]:
        return [dict(row) for row in conn.execute(query).mappings()]

    def rows_as_checked(self, digests: list[bytes]) -> Iterator[list[Row]]:
        """The rows again, page by page, normalised; each page verified first against the
        digest pass 1 kept of it (``digests``): a table that is no longer what was checked
        raises :class:`LegacyTableChangedError`."""
        index = -1
        for index, page in enumerate(self.pages()):
            if index >= len(digests) or page_digest(page) != digests[index]:
                raise self.changed()
            yield [normalise(row) for row in page]
        if index + 1 != len(digests):
            raise self.changed()

    def changed(self) -> LegacyTableChangedError:
        """The error of a table that is no longer what pass 1 checked."""
        return LegacyTableChangedError(
            f"table {self.name!r} in {mask_url(self.source.url)} changed during the import "
            "(rows added, removed or changed since it was checked); nothing was appended from "
            "the rows that changed. Running `ledger import-legacy` again is safe: what was "
            "appended are the table's own facts, and a second import appends none twice"
        )


def page_digest(page: list[dict[str, Any]]) -> bytes:
    """A page's rows as read, in a digest: pass 1 keeps one a page, not the rows."""
    digest = hashlib.blake2b(digest_size=16)
    for row in page:
        digest.update(repr(tuple(row.items())).encode("utf-8", "backslashreplace"))
        digest.update(b"\n")
    return digest.digest()


def _no_legacy_table_message(source: Ledger, source_url: str | None, table: str) -> str:
    where = f"no legacy table {table!r} in {mask_url(source.url)}"
    if source_url:
        return f"{where}: give the legacy table's name with --table"
    return (
        f"{where}: `ledger migrate` renames an existing ingestion_runs to "
        f"{DEFAULT_SAME_DB_TABLE}; for a table elsewhere give --from-url URL and --table NAME"
    )


_TIME_COLUMNS = ("startedAt", "completedAt", "createdAt")
# errorDetails as its text too: a JSON column's type would decode the JSON text null into
# None, which is SQL NULL.
_TEXT_READ_COLUMNS = (*_TIME_COLUMNS, "errorDetails")
_TEXT_COLUMNS = ("connectorName", "status", "errorMessage")


class _JsonNull:
    """A legacy ``errorDetails`` holding the JSON text ``null``, which is not SQL NULL. A fact
    cannot hold it apart from no details (``error_details`` None), so its run projects NULL
    and the comparison reports the difference."""

    def __repr__(self) -> str:
        return "JSON_NULL"


JSON_NULL = _JsonNull()


def normalise(row: dict[str, Any]) -> Row:
    # A table without completedAt still has its runs' ends compared (NULL: the ledger dates a
    # RunFinished at the start), one without createdAt has nothing to compare: that column
    # stays absent (it was reported as "createdAt was null", exit 1, for every row).
    row.setdefault("completedAt", None)
    for column in (*_TEXT_COLUMNS, *_TEXT_READ_COLUMNS):
        if isinstance(row.get(column), bytes):
            row[column] = _text(row, column)
    for column in _TIME_COLUMNS:
        if column not in row:
            continue
        value = row[column]
        if isinstance(value, str):
            written = value
            try:
                # No zone: UTC, as the sessions run. An offset the text gives is kept: the
                # time goes into legacy_created_at as it was written (see facts_for).
                value = parse_utc(written, naive="utc", keep_offset=True)
            except ValueError:
                raise _not_a(row, column, written, "time") from None
        elif value is not None and not isinstance(value, datetime):
            # A number or bytes a SQLite column holds whatever its declared type: it was
            # an AttributeError's traceback (createdAt) or a confusing message later.
            raise _not_a(row, column, value, "time")
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # sessions run in UTC
        row[column] = value
    for column in COUNTER_COLUMNS.values():
        if row.get(column) is not None:  # refused here, before anything is appended; NULL
            row[column] = legacy_count(row, column)  # stays NULL: it is compared as it was
    details = row.get("errorDetails")
    if isinstance(details, str | bytes):
        try:
            decoded = json.loads(details)
        except ValueError:
            decoded = {"legacy_error_details": details}
        row["errorDetails"] = JSON_NULL if decoded is None else decoded
    return row


def _text(row: dict[str, Any], column: str) -> str:
    """A legacy text column's bytes (a BLOB, a binary column) as the text they encode: the
    fact holds that text, and the comparison compares it (bytes were a TypeError traceback
    after the import, when the comparison quoted them); bytes that are not UTF-8 name the row
    and column."""
    value: bytes = row[column]
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"legacy row id {row.get('id')}: {column}: {quoted(clip(repr(value), 60))} is not "
            f"UTF-8 text (byte {exc.start + 1}); nothing was imported"
        ) from None


def legacy_count(row: dict[str, Any], column: str) -> int:
    """A legacy counter as a whole number (absent: 0). Text of digits is one, as a VARCHAR
    column gives it; anything else (``'12 rows'``, bytes, ``1.5``) names the row and column:
    ``int()`` of it was a ValueError's traceback, or cut ``1.5`` to 1 without a word."""
    value = row.get(column)
    if value is None:
        return 0
    if isinstance(value, bool):  # an int to Python, never a count
        raise _not_a(row, column, value, "whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():  # not inf or NaN either
        return int(value)
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    raise _not_a(row, column, value, "whole number")


def _not_a(row: dict[str, Any], column: str, value: Any, kind: str) -> ValidationError:
    """The error of a legacy value that is not what its column should hold: the row, the
    column and the value, quoted JSON-style (it is data: a newline shows as ``\\n``, not as
    a line of the message, nor doubled as ``repr`` of the escape did), and that nothing was
    imported."""
    written = value if isinstance(value, str) else repr(value)
    return ValidationError(
        f"legacy row id {row.get('id')}: {column}: {quoted(clip(written, 60))} "
        f"is not a {kind}; nothing was imported"
    )
