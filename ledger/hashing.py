"""The hash chain (I6): ``hash = sha256(prev_hash + canonical JSON of the row's content)``.

The content covers every column a reader relies on, position included, so an edited, inserted
or deleted row breaks the chain at that position. The payload enters as its stored text, so a
change of even one byte of it is seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from ledger.clock import isoformat_utc
from ledger.mapper import canonical_json

HASHED_COLUMNS = (
    "position",
    "event_id",
    "run_id",
    "version",
    "type",
    "schema_version",
    "payload",
    "occurred_at",
    "recorded_at",
    "actor",
)


def row_content(row: Mapping[str, Any]) -> str:
    """Canonical JSON of the hashed columns of one ``ledger_events`` row."""
    content = {name: row[name] for name in HASHED_COLUMNS}
    content["occurred_at"] = isoformat_utc(row["occurred_at"])
    content["recorded_at"] = isoformat_utc(row["recorded_at"])
    return canonical_json(content)


def chain_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + row_content(row)).encode("utf-8")).hexdigest()
