"""Integers taken from a URL (a path segment, a query parameter), for the API and the web view:
ASCII digits only, then the route's own bounds.

Python's ``int()`` (and pydantic's lax int, which FastAPI uses) reads ``1_0`` as 10, ``+1``
and `` 1 `` as 1, ``1.0`` as 1 and ``١`` (an Arabic-Indic one) as 1: ``/v1/runs/1_0`` showed
run 10. A URL names a run or a position one way only, so anything but ``[0-9]+`` is refused,
naming the parameter, before any number is made of it.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import Path, Query
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError
from starlette.datastructures import QueryParams

from ledger.events import MAX_RUN_ID
from ledger.schema import MAX_POSITION
from ledger.text import is_ascii_integer

NOT_DIGITS = "not an integer of ASCII digits 0-9 (no sign, space, _ or .)"


def _ascii_digits(value: object) -> object:
    if isinstance(value, str) and not is_ascii_integer(value):
        raise PydanticCustomError("ascii_digits", NOT_DIGITS)
    return value


# Goes into every ``Annotated[int, Path(...)|Query(...), ...]`` of a route (checked by
# tests/service/test_api_query_parameters.py for every integer parameter of every route).
ASCII_DIGITS = BeforeValidator(_ascii_digits)

RunIdPath = Annotated[int, Path(ge=1, le=MAX_RUN_ID), ASCII_DIGITS]

NOT_TRUE_OR_FALSE = "not true or false"


def _true_or_false(value: object) -> object:
    """pydantic's lax bool (FastAPI's) takes ``yes``, ``on``, ``t``, ``1`` and their
    opposites: a flag in a URL is written one way, as JSON writes it."""
    if isinstance(value, str) and value not in ("true", "false"):
        raise PydanticCustomError("true_or_false", NOT_TRUE_OR_FALSE)
    return value


FlagQuery = Annotated[bool, Query(description="`true` or `false`"), BeforeValidator(_true_or_false)]
AtPositionQuery = Annotated[int | None, Query(ge=0, le=MAX_POSITION), ASCII_DIGITS]


def url_integer(text: str, high: int) -> int | None:
    """``text`` as an integer from 0 to ``high`` (None: not ``[0-9]+``, or over ``high``), for
    a parameter a page reads itself; the length first, as ``int()`` refuses more than 4,300
    digits with a ValueError, and without the leading zeros, which count towards that limit
    (``000…01`` is 1, not a 500)."""
    if not is_ascii_integer(text):
        return None
    significant = text.lstrip("0") or "0"
    if len(significant) > len(str(high)):
        return None
    number = int(significant)
    return number if number <= high else None


def repeated_parameters(params: QueryParams) -> list[str]:
    """The names given more than once in a query, counted in one pass: the API and the web
    view check this before the token or the session, for anyone, and asking the query for
    each name's values in turn (``getlist``) was quadratic: half a second of CPU, holding the
    GIL, for a 14 KB query of 3,500 names."""
    counts = Counter(name for name, _ in params.multi_items())
    return sorted(name for name, count in counts.items() if count > 1)


__all__ = [
    "ASCII_DIGITS",
    "NOT_DIGITS",
    "NOT_TRUE_OR_FALSE",
    "AtPositionQuery",
    "FlagQuery",
    "RunIdPath",
    "is_ascii_integer",
    "repeated_parameters",
    "url_integer",
]
