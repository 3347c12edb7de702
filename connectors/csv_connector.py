"""The ``csv`` connector: a CSV or JSON Lines file upserted into ``source_records``."""

from __future__ import annotations

import codecs
import csv
import json
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from connectors import options
from connectors.base import Connector
from connectors.records import RecordStore, unstorable
from connectors.sdk import RunContext
from ledger.text import clip, visible

SAMPLES = Path(__file__).resolve().parent / "samples"
SAMPLE_CSV = SAMPLES / "records.csv"
SAMPLE_JSONL = SAMPLES / "records.jsonl"
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
# The longest line read, in bytes (as http-json's max_page_bytes): a longer one is an error of
# its line, read past in pieces, never held. A 2 GB line was read whole, then decoded: some
# 5 GB of memory, or a bare "MemoryError" failing the run (a 400 MB line under a 1 GB limit),
# or the kernel's OOM killer leaving the run open until the sweeper.
MAX_LINE_BYTES = 64 * 1024 * 1024


def _too_long() -> str:
    return f"longer than {MAX_LINE_BYTES / 2**20:g} MiB, the longest line read"


def _lines(handle: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """The file's lines (1-based, endings kept); None for one over :data:`MAX_LINE_BYTES`.
    What a line takes is bounded by the limit (twice it, for the moment its piece and its
    read buffer are both held), whatever the line's length."""
    number = 0
    while raw := handle.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(raw) <= MAX_LINE_BYTES:
            yield number, raw
            continue
        while raw and not raw.endswith(b"\n"):  # the rest of the line, a MiB at a time
            raw = handle.readline(2**20)
        yield number, None


@dataclass
class _Position:
    """Where the csv parser is in the file, for an error to name its line."""

    line: int = 0  # the last physical line handed to the parser
    row_start: int = 0  # the first non-blank line of the row being read; 0: none yet


def _csv_problem(exc: csv.Error, where: _Position) -> str:
    # The csv module's words for a file that ends inside a quoted field (strict only).
    if str(exc) == "unexpected end of data":
        began = where.row_start or where.line
        return (
            f"line {began}: a quote opened in this row is never closed (the file ends inside "
            f"it, at line {where.line}): close it, or double a quote inside a quoted field "
            '("")'
        )
    # A field over the csv module's limit (131,072 characters), text after a closing quote:
    # it named neither the file nor the line.
    return f"line {where.line}: {exc}"


def _repeated_names(header: Sequence[str]) -> str:
    """The names ``header`` gives more than one column, with their columns (1-based), or ""."""
    columns: dict[str, list[int]] = {}
    for number, name in enumerate(header, start=1):
        columns.setdefault(name, []).append(number)
    return "; ".join(
        f"{clip(name, 40)!r} (columns {', '.join(map(str, numbers))})"
        for name, numbers in columns.items()
        if len(numbers) > 1
    )


class _Unchanged:
    """Whether the file being read is still the one opened: its size and times as at the
    open. A file rewritten in place (an exporter's ``open(path, "w")``) or appended to while
    read was read on at the old offset: the run upserted the first rows of one version and
    the rest of another, a torn line among them, and ended ``success`` or ``partial``."""

    def __init__(self, path: Path, handle: BinaryIO) -> None:
        self.path = path
        self.handle = handle
        # A pipe (a FIFO, /dev/stdin) is a stream, its times move with each write: only a
        # regular file has a version to keep to.
        self.regular = stat.S_ISREG(os.fstat(handle.fileno()).st_mode)
        self.opened = self._stat()

    def _stat(self) -> tuple[int, int, int]:
        status = os.fstat(self.handle.fileno())
        return status.st_size, status.st_mtime_ns, status.st_ctime_ns

    def check(self) -> None:
        """Raise, naming the file, if it changed since it was opened."""
        now = self._stat()
        if self.regular and now != self.opened:
            raise ValueError(
                f"{self.path}: the file changed while it was read ({self.opened[0]:,} bytes "
                f"when opened, {now[0]:,} now): what was read since cannot be trusted; write "
                "the file elsewhere and rename it into place, then run again"
            )


@dataclass
class Batch:
    """Up to ``batch_size`` good records, and the malformed lines met while reading them."""

    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    problems: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    rows_read: int = 0


class CsvConnector(Connector):
    """Reads ``path`` (CSV with a header row, or JSON Lines by suffix) keyed by ``key``."""

    name = "csv"
    version = "1.0.0"

    def __init__(
        self,
        source_id: int,
        path: str | Path,
        key: str = "id",
        batch_size: int = 500,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(source_id, name=name)
        # A config's `key = ["id"]` made every row "missing key", `path = 5` a TypeError.
        options.file_path("path", path)
        options.text("key", key)
        options.whole("batch_size", batch_size, 1)
        self.path = Path(path)
        self.key = key
        self.batch_size = batch_size

    def ingest(self, run: RunContext) -> None:
        store = RecordStore(run.ledger)
        for batch in self.batches():
            for message, details in batch.problems:
                run.error(message, details)
            counts = store.upsert(self.source_id, batch.records)
            run.progress(
                fetched=batch.rows_read,
                created=counts.created,
                updated=counts.updated,
                skipped=counts.skipped,
            )

    def batches(self) -> Iterator[Batch]:
        with self.path.open("rb") as handle:
            unchanged = _Unchanged(self.path, handle)
            rows = (
                self._json_lines(handle)
                if self.path.suffix.lower() in JSON_LINES_SUFFIXES
                else self._csv_rows(handle)
            )
            batch = Batch()
            for line, record, problem in rows:
                batch.rows_read += 1
                external_id = ""
                if problem is None:
                    assert record is not None
                    external_id = str(record[self.key]).strip()
                    # A JSON Lines record with a lone surrogate (a "\ud800" escape) or a NaN:
                    # an error of its line, not of the batch's upsert and the whole run.
                    problem = unstorable(external_id, record)
                if problem is not None:
                    batch.problems.append(
                        (f"line {line}: {problem}", {"line": line, "path": str(self.path)})
                    )
                else:
                    assert record is not None
                    batch.records.append((external_id, record))
                if batch.rows_read >= self.batch_size:
                    unchanged.check()
                    yield batch
                    batch = Batch()
            unchanged.check()
            if batch.rows_read:
                yield batch

    def _csv_rows(
        self, handle: BinaryIO
    ) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        where = _Position()
        # strict: a quote never closed swallowed the rest of the file into one field (the
        # run ended success with one record), and text after a closing quote ("a"x) was
        # glued to the field. Both now fail the run naming the line; a quote inside an
        # unquoted field (Smith "J") and every RFC 4180 form read as before.
        reader = csv.DictReader(self._decoded(handle, where), strict=True)
        try:
            yield from self._csv_records(reader, where)
        except csv.Error as exc:
            raise ValueError(f"{self.path}: {_csv_problem(exc, where)}") from exc

    def _decoded(self, handle: BinaryIO, where: _Position) -> Iterator[str]:
        """The file's lines as text, endings kept (the csv module's ``newline=""``). Decoded
        line by line: a byte that is not UTF-8 names its line, not a position in a buffer."""
        for number, raw in _lines(handle):
            where.line = number
            if raw is None:
                raise ValueError(f"{self.path}: line {number} is {_too_long()}")
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"{self.path}: line {number} is not UTF-8 (byte {exc.start + 1} of the "
                    "line): save the file as UTF-8"
                ) from None
            if not where.row_start and text.strip("\r\n"):
                where.row_start = number
            yield text

    def _csv_records(
        self, reader: csv.DictReader[str], where: _Position
    ) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        header = reader.fieldnames
        where.row_start = 0
        if header is None:  # 0 bytes: it ended "success" with 0 records
            raise ValueError(f"{self.path}: the file is empty (no header row)")
        if not header:
            raise ValueError(
                f"{self.path}: line {reader.line_num} is blank: the header row, naming the "
                "columns, must be the first line"
            )
        repeated = _repeated_names(header)
        if repeated:
            # DictReader keeps the last column of a name: the others' values were dropped.
            raise ValueError(
                f"{self.path}: line {reader.line_num}: the header repeats {repeated}: each "
                "column needs a name of its own"
            )
        if self.key not in header:
            if header[0].lstrip().startswith(("{", "[")):  # JSON in a file named otherwise
                raise ValueError(
                    f"{self.path}: the file holds JSON, read as CSV here: only a file named "
                    f"{' or '.join(JSON_LINES_SUFFIXES)} is read as JSON Lines (one object per "
                    "line; `jq -c '.[]' FILE` turns a JSON array into them)"
                )
            raise ValueError(
                f"{self.path}: no {self.key!r} column in the header ({', '.join(header)}); "
                "--key names the column that identifies a record"
            )
        width = len(header)
        for row in reader:
            line = reader.line_num
            where.row_start = 0
            if None in row or any(value is None for value in row.values()):
                extra = len(row.get(None) or [])
                got = width + extra if extra else sum(v is not None for v in row.values())
                yield line, None, f"expected {width} fields, got {got}"
            elif not row[self.key].strip():
                yield line, None, f"empty key {self.key!r}"
            else:
                yield line, dict(row), None

    def _json_lines(
        self, handle: BinaryIO
    ) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        for line, raw in _lines(handle):
            if raw is None:
                yield line, None, _too_long()
                continue
            if line == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            # Each line on its own, like an invalid one: a Latin-1 byte, a 5,000-digit
            # number or 100,000 nested lists failed the whole run (a UnicodeDecodeError,
            # ValueError or RecursionError naming no line).
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield line, None, f"not UTF-8 (byte {exc.start + 1} of the line)"
                continue
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                yield line, None, f"not valid JSON ({exc.msg})"
                continue
            except (ValueError, RecursionError) as exc:
                yield line, None, f"not valid JSON ({clip(str(exc), 120)})"
                continue
            if not isinstance(record, dict):
                yield line, None, f"expected a JSON object, got {type(record).__name__}"
            elif self.key not in record:
                # visible: a field name is data (a "\ud800" escape, a newline, an ESC)
                fields = ", ".join(clip(visible(str(n)), 40) for n in list(record)[:8])
                yield (
                    line,
                    None,
                    f"missing key {self.key!r} (the record has {fields or 'no field'}; "
                    "--key names the field that identifies a record)",
                )
            elif record[self.key] in (None, ""):
                yield line, None, f"empty key {self.key!r}"
            else:
                yield line, record, None
