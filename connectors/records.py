"""The upsert that decides whether an ingested record is created, updated or skipped."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, bindparam, insert, select, update

from connectors.schema import source_records
from ledger import ConstraintError, Ledger, ValidationError
from ledger.clock import utcnow
from ledger.conflicts import retrying_conflicts
from ledger.mapper import canonical_json
from ledger.reads import chunks
from ledger.store import as_ledger
from ledger.text import clip, describe_char, visible

# The longest key source_records holds, in characters (what MariaDB's utf8mb4 VARCHAR counts,
# as len() does). SQLite keeps any length: a longer key passed there and, on MariaDB, failed
# the whole run ("Data too long for column 'external_id'", nothing counted).
MAX_KEY_CHARS: int = source_records.c.external_id.type.length  # type: ignore[attr-defined]


@dataclass(frozen=True)
class UpsertCounts:
    created: int = 0
    updated: int = 0
    skipped: int = 0


def unstorable(external_id: str, payload: dict[str, Any]) -> str | None:
    """Why ``source_records`` cannot hold this record, or None: a key longer than the column
    (:data:`MAX_KEY_CHARS`), text UTF-8 cannot carry (a lone surrogate, read from a
    ``\\ud800`` JSON escape) in its key or its fields, or a number JSON has no form for
    (``NaN``, which Python's JSON reader accepts). Checked per record by the connectors, so
    that one such record is an error of that record (the run ends ``partial``), the same on
    every database: in a batch, it failed the whole upsert and the run, with nothing
    counted."""
    if len(external_id) > MAX_KEY_CHARS:
        return (
            f"not storable: its key is {len(external_id):,} characters long "
            f"({clip(visible(external_id), 40)}); the longest a key can be is {MAX_KEY_CHARS}"
        )
    try:
        external_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        return _not_utf8("its key", exc)
    try:
        canonical_json(payload).encode("utf-8")
    except UnicodeEncodeError as exc:
        return _not_utf8("its fields", exc)
    except (ValueError, TypeError, RecursionError) as exc:
        return f"not storable as JSON ({clip(visible(str(exc)), 120)})"
    return None


def _not_utf8(where: str, exc: UnicodeEncodeError) -> str:
    near = visible(exc.object[max(exc.start - 30, 0) : exc.end + 30])
    return (
        f"not storable: {describe_char(exc.object[exc.start])} in {where} (…{near}…); "
        "UTF-8 has no form for a lone surrogate"
    )


def content_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


class RecordStore:
    """``source_records`` of the ledger's database: one transaction per batch of records.

    Takes the ledger (``RecordStore(run.ledger)``), or an Engine and its URL.
    """

    def __init__(self, database: Ledger | Engine, url: str | None = None) -> None:
        self.ledger = as_ledger(database, url)

    def upsert(self, source_id: int, records: Sequence[tuple[str, dict[str, Any]]]) -> UpsertCounts:
        """Upsert ``(external_id, payload)`` pairs; a repeat inside the batch counts against
        the earlier one. Run again, bounded (:func:`ledger.conflicts.retrying_conflicts`), when
        a concurrent run wrote one of the same keys first: on one server that is the unique
        key's ConstraintError; on a Galera cluster, a run on another node that wrote the same
        (source_id, external_id) wins the certification and this transaction is rolled back
        with 1213 at COMMIT. The next attempt reads the winner's rows and counts against
        them. A key longer than the column is refused before the database is asked, on every
        database (SQLite stored it; MariaDB failed the batch), naming the key: a connector
        makes such a record an error of its own with :func:`unstorable` first."""
        for external_id, _payload in records:
            if len(external_id) > MAX_KEY_CHARS:
                raise ValidationError(
                    f"record key {clip(visible(external_id), 40)!r} is {len(external_id):,} "
                    f"characters long; the longest a key can be is {MAX_KEY_CHARS}"
                )
        return retrying_conflicts(
            lambda: self._upsert_once(source_id, records),
            f"upsert of records of source {source_id}",
            also=(ConstraintError,),
        )

    def _upsert_once(
        self, source_id: int, records: Sequence[tuple[str, dict[str, Any]]]
    ) -> UpsertCounts:
        now = utcnow()
        table = source_records
        with self.ledger.transaction("upsert records") as conn:  # BEGIN IMMEDIATE on SQLite
            keys = sorted({external_id for external_id, _ in records})
            known: dict[str, str] = {}
            for chunk in chunks(keys):
                query = select(table.c.external_id, table.c.content_hash).where(
                    table.c.source_id == source_id,
                    table.c.external_id.in_(chunk),
                )
                known.update({row.external_id: row.content_hash for row in conn.execute(query)})
            created: dict[str, dict[str, Any]] = {}
            changed: dict[str, dict[str, Any]] = {}
            counts = {"created": 0, "updated": 0, "skipped": 0}
            for external_id, payload in records:
                digest = content_hash(payload)
                row = {
                    "source_id": source_id,
                    "external_id": external_id,
                    "content_hash": digest,
                    "payload": canonical_json(payload),
                }
                if external_id not in known:
                    counts["created"] += 1
                    created[external_id] = row
                elif known[external_id] != digest:
                    counts["updated"] += 1
                    if external_id in created:
                        created[external_id] = row
                    else:
                        changed[external_id] = row
                else:
                    counts["skipped"] += 1
                known[external_id] = digest
            if created:
                conn.execute(
                    insert(table),
                    [{**row, "first_seen_at": now, "updated_at": now} for row in created.values()],
                )
            if changed:
                conn.execute(
                    update(table)
                    .where(
                        table.c.source_id == bindparam("b_source_id"),
                        table.c.external_id == bindparam("b_external_id"),
                    )
                    .values(
                        content_hash=bindparam("content_hash"),
                        payload=bindparam("payload"),
                        updated_at=bindparam("updated_at"),
                    ),
                    [
                        {
                            "b_source_id": r["source_id"],
                            "b_external_id": r["external_id"],
                            "content_hash": r["content_hash"],
                            "payload": r["payload"],
                            "updated_at": now,
                        }
                        for r in changed.values()
                    ],
                )
        return UpsertCounts(**counts)
