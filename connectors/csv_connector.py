"""The ``csv`` connector: a CSV or JSON Lines file upserted into ``source_records``."""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors import options
from connectors.base import Connector
from connectors.records import RecordStore, unstorable
from connectors.sdk import RunContext
from ledger.text import clip, visible

SAMPLES = Path(__file__).resolve().parent / "samples"
SAMPLE_CSV = SAMPLES / "records.csv"
SAMPLE_JSONL = SAMPLES / "records.jsonl"
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")


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
        rows = (
            self._json_lines()
            if self.path.suffix.lower() in JSON_LINES_SUFFIXES
            else self._csv_rows()
        )
        batch = Batch()
        for line, record, problem in rows:
            batch.rows_read += 1
            external_id = ""
            if problem is None:
                assert record is not None
                external_id = str(record[self.key]).strip()
                # A JSON Lines record with a lone surrogate (a "\ud800" escape) or a NaN: an
                # error of its line, not of the batch's upsert and the whole run.
                problem = unstorable(external_id, record)
            if problem is not None:
                batch.problems.append(
                    (f"line {line}: {problem}", {"line": line, "path": str(self.path)})
                )
            else:
                assert record is not None
                batch.records.append((external_id, record))
            if batch.rows_read >= self.batch_size:
                yield batch
                batch = Batch()
        if batch.rows_read:
            yield batch

    def _csv_rows(self) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        with self.path.open("rb") as handle:
            read = [0]  # physical lines handed to the parser: the line an error is on
            reader = csv.DictReader(self._decoded(handle, read))
            try:
                yield from self._csv_records(reader)
            except csv.Error as exc:
                # A field over the csv module's limit (131,072 characters): it named neither
                # the file nor the line.
                raise ValueError(f"{self.path}: line {read[0]}: {exc}") from exc

    def _decoded(self, handle: Iterable[bytes], read: list[int]) -> Iterator[str]:
        """The file's lines as text, endings kept (the csv module's ``newline=""``). Decoded
        line by line: a byte that is not UTF-8 names its line, not a position in a buffer."""
        for number, raw in enumerate(handle, start=1):
            read[0] = number
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"{self.path}: line {number} is not UTF-8 (byte {exc.start + 1} of the "
                    "line): save the file as UTF-8"
                ) from None

    def _csv_records(
        self, reader: csv.DictReader[str]
    ) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        if reader.fieldnames is None:
            return
        if self.key not in reader.fieldnames:
            raise ValueError(
                f"{self.path}: no {self.key!r} column in the header "
                f"({', '.join(reader.fieldnames)})"
            )
        width = len(reader.fieldnames)
        for row in reader:
            line = reader.line_num
            if None in row or any(value is None for value in row.values()):
                extra = len(row.get(None) or [])
                got = width + extra if extra else sum(v is not None for v in row.values())
                yield line, None, f"expected {width} fields, got {got}"
            elif not row[self.key].strip():
                yield line, None, f"empty key {self.key!r}"
            else:
                yield line, dict(row), None

    def _json_lines(self) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        with self.path.open("rb") as handle:
            for line, raw in enumerate(handle, start=1):
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
