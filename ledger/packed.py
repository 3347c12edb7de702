"""Rows of the append's reads on MySQL/MariaDB as one text column and the free-text columns.

PyMySQL, a pure-Python driver, parses a description of every column of every result set it
receives: for the append's two reads (the head, locked; the dedupe lookup and the registry rows)
that was 20 columns, and a third of the client's time on each append (issue 14's profile).
Here the numbers, timestamps and short fixed-form strings of a row travel in one column,
``CONCAT_WS`` of their text, and the text a writer chose (a payload, an actor, a connector name)
in columns of their own, untouched. :func:`unpacker` gives back the row as the plain select
would have had it, timestamps as their stored text (read with
:func:`ledger.dialects.stored_time_reader`).

The packed text is exact for every value: numbers and ``CAST(DATETIME(6) AS CHAR)`` hold no
comma, strings go as ``HEX`` of their bytes, and NULL (which ``CONCAT_WS`` would skip) is ``-``,
which neither a number, a timestamp nor hex can be.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

# How a column travels: a number, a timestamp or a short string inside the packed text, or
# a text column of its own.
Kind = Literal["number", "time", "hex", "text"]
Column = tuple[str, Kind]  # (an SQL expression, its kind); the expression "NULL" for none

_NULL = "-"
_SEPARATOR = ","


def packed_columns(columns: Sequence[Column]) -> str:
    """The select list: ``CONCAT_WS`` of the packed columns, then the text columns in order."""
    packed: list[str] = []
    texts: list[str] = []
    for expression, kind in columns:
        if kind == "text":
            texts.append(expression)
        elif expression == "NULL":
            packed.append(f"'{_NULL}'")
        elif kind == "number":
            packed.append(f"COALESCE({expression}, '{_NULL}')")
        elif kind == "time":
            packed.append(f"COALESCE(CAST({expression} AS CHAR), '{_NULL}')")
        else:
            packed.append(f"COALESCE(HEX({expression}), '{_NULL}')")
    return ", ".join([f"CONCAT_WS('{_SEPARATOR}', {', '.join(packed)})", *texts])


def plain_columns(columns: Sequence[Column]) -> str:
    """The same columns as a plain select list (SQLite, whose driver has no such cost)."""
    return ", ".join(expression for expression, _ in columns)


def unpacker(kinds: Sequence[Kind]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """What turns a row of :func:`packed_columns` of columns of these kinds back into the row
    of :func:`plain_columns`: numbers as int, timestamps as their text, NULL as None."""
    readers = [_READERS[kind] for kind in kinds if kind != "text"]
    text_at = [index for index, kind in enumerate(kinds) if kind == "text"]

    def unpack(row: Sequence[Any]) -> tuple[Any, ...]:
        parts = row[0].split(_SEPARATOR)
        if len(parts) != len(readers):
            raise ValueError(f"a packed row has {len(parts)} values where {len(readers)} belong")
        values = [
            None if part == _NULL else read(part) for read, part in zip(readers, parts, strict=True)
        ]
        for offset, index in enumerate(text_at, start=1):
            values.insert(index, row[offset])
        return tuple(values)

    return unpack


def _from_hex(text: str) -> str:
    return bytes.fromhex(text).decode("utf-8")


def _as_is(text: str) -> str:
    return text


_READERS: dict[str, Callable[[str], Any]] = {"number": int, "time": _as_is, "hex": _from_hex}
