"""The hash chain (I6): ``hash = sha256(prev_hash + canonical JSON of the row's content)``.

The content covers every column a reader relies on, position included, so an edited, inserted
or deleted row breaks the chain at that position. The payload enters as its stored text, so a
change of even one byte of it is seen.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from operator import itemgetter
from typing import Any

from ledger.clock import isoformat_utc
from ledger.dialects import stored_time_text

# One JSON string literal, as json.dumps(value, ensure_ascii=False) writes it: the encoder's own
# C function, without the dispatch of JSONEncoder.encode (this runs for every column verified).
_string: Callable[[str], str] = json.encoder.encode_basestring

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
# Every column of a ledger_events row, in this order wherever rows travel as plain tuples (the
# append's executemany, verify's scan, the replay's pages): the hashed columns, then the chain.
# The one statement of that order: code reading such rows takes their columns by name, through
# hashed_values and the indexes below.
EVENT_COLUMNS = (*HASHED_COLUMNS, "prev_hash", "hash")
POSITION, RUN_ID, OCCURRED_AT, RECORDED_AT, PREV_HASH, HASH = (
    EVENT_COLUMNS.index(name)
    for name in ("position", "run_id", "occurred_at", "recorded_at", "prev_hash", "hash")
)


def row_reader(*names: str) -> Callable[[Sequence[Any]], Sequence[Any]]:
    """A function from a ``ledger_events`` row as a plain tuple (:data:`EVENT_COLUMNS` order)
    to the values of the columns ``names`` (two or more), in that order: how a hot path takes
    a row's columns by name, in one C call (``operator.itemgetter``; a slice of the row where
    the columns stand in a run, as quick as slicing it by hand)."""
    if len(names) < 2:  # itemgetter of one index answers the value, not a tuple
        raise ValueError("row_reader takes two or more columns")
    indexes = [EVENT_COLUMNS.index(name) for name in names]
    run = slice(indexes[0], indexes[0] + len(indexes))
    if indexes == list(range(run.start, run.stop)):
        return itemgetter(run)
    return itemgetter(*indexes)


def rows_reader(
    *names: str,
) -> Callable[[Iterable[Sequence[Any]]], Iterable[Sequence[Any]]]:
    """:func:`row_reader` of ``names`` for each of many rows; the rows themselves, not copied,
    when ``names`` are :data:`EVENT_COLUMNS` in their order: a replay reads every column by
    name without paying for it while the two orders are one."""
    if names == EVENT_COLUMNS:
        return _as_they_are
    return partial(map, row_reader(*names))


def _as_they_are(rows: Iterable[Sequence[Any]]) -> Iterable[Sequence[Any]]:
    return rows


# A row's hashed columns in HASHED_COLUMNS order (content_from_values's): what the replay's
# fold and verify read of a row.
hashed_values = row_reader(*HASHED_COLUMNS)


def row_content(row: Mapping[str, Any]) -> str:
    """Canonical JSON of the hashed columns of one ``ledger_events`` row.

    Equal, character for character, to ``canonical_json`` of those columns (sorted keys, no
    spaces; a test checks it), but assembled directly: this runs for every event appended,
    verified and audited.
    """
    return content_from_values(
        row["position"],
        row["event_id"],
        row["run_id"],
        row["version"],
        row["type"],
        row["schema_version"],
        row["payload"],
        isoformat_utc(row["occurred_at"]),
        isoformat_utc(row["recorded_at"]),
        row["actor"],
    )


def content_from_values(
    position: int,
    event_id: str,
    run_id: int,
    version: int,
    event_type: str,
    schema_version: int,
    payload: str,
    occurred_at: str,
    recorded_at: str,
    actor: str | None,
) -> str:
    """:func:`row_content` from column values, timestamps already in canonical text."""
    return "".join(
        (
            '{"actor":',
            "null" if actor is None else _string(actor),
            ',"event_id":',
            _string(event_id),
            ',"occurred_at":"',
            occurred_at,
            '","payload":',
            _string(payload),
            ',"position":',
            str(int(position)),
            ',"recorded_at":"',
            recorded_at,
            '","run_id":',
            str(int(run_id)),
            ',"schema_version":',
            str(int(schema_version)),
            ',"type":',
            _string(event_type),
            ',"version":',
            str(int(version)),
            "}",
        )
    )


def chain_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    return link(prev_hash, row_content(row))


def stored_row_hash(prev_hash: str, row: Sequence[Any]) -> str:
    """:func:`chain_hash` of a row as stored (:data:`EVENT_COLUMNS` order, timestamps as the
    database stores them, see :func:`ledger.dialects.stored_time_text`): what ``ledger verify``
    recomputes, with no model and no type conversion in between (its fast path)."""
    return stored_row_link(prev_hash, row)[0]


def stored_row_link(prev_hash: str, row: Sequence[Any]) -> tuple[str, str]:
    """:func:`stored_row_hash`, and the row's ``recorded_at`` as the canonical text it hashed:
    verify's scan compares that text with the previous row's, converted once a row."""
    position, event_id, run_id, version, type_, schema, payload, occurred, recorded, actor = (
        hashed_values(row)
    )
    if not type(position) is type(run_id) is type(version) is type(schema) is int:
        # The content takes each as str(int(value)), which SQLite's dynamic typing would let
        # a hand edit pass: run_id 3.5 (or the text '٣', '0_3') hashes as run 3, while every
        # read by run (``run_id = 3``: the run's timeline, an as-of replay) passes it by.
        raise TypeError(_not_whole(position, run_id, version, schema))
    recorded_text = stored_time_text(recorded)
    content = content_from_values(
        position,
        event_id,
        run_id,
        version,
        type_,
        schema,
        payload,
        stored_time_text(occurred),
        recorded_text,
        actor,
    )
    return link(prev_hash, content), recorded_text


def _not_whole(*values: Any) -> str:
    """Which whole-number column of a stored row holds something else, and what."""
    for name, value in zip(
        ("position", "run_id", "version", "schema_version"), values, strict=True
    ):
        if type(value) is not int:
            return f"{name} holds {value!r} ({type(value).__name__}), not a whole number"
    return "every whole-number column holds a whole number"


def link(prev_hash: str, content: str) -> str:
    """The hash of an event: its content (:func:`content_from_values`) chained to the one
    before it."""
    return hashlib.sha256((prev_hash + content).encode("utf-8")).hexdigest()
