"""Checks of a connector's options, in its constructor: where a serve config's options arrive.

A TOML file can give any option any type (``first_page = "x"``, ``key = 5``,
``next_path = ["a"]``, ``single_page = "false"``). Unchecked, ``ledger config check`` said
"valid" and every scheduled run failed on a TypeError naming no option, or ended ``partial``
with every record "missing key 5". Each check raises a ``ConfigurationError`` naming the
option, what it expects and what was given; the registry adds the connector's name.
"""

from __future__ import annotations

from pathlib import Path

from ledger.errors import ConfigurationError
from ledger.text import clip

MAX_SECONDS = 86_400.0  # a timeout, backoff or deadline: a day at most


def given(value: object) -> str:
    """The value as the message quotes it: its repr (``'1'`` is text, ``1`` a number), cut."""
    return clip(repr(value), 80)


def whole(name: str, value: object, low: int, high: int | None = None) -> None:
    """A whole number from ``low`` (to ``high``); ``true`` and ``1.0`` are not."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        most = f" and at most {high:,}" if high is not None else ""
        raise ConfigurationError(
            f"{name}: expected a whole number >= {low}{most}, got {given(value)}"
        )


def seconds(name: str, value: object, low: float) -> None:
    """A finite number of seconds from ``low`` to a day (TOML has ``nan`` and ``inf``)."""
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    # One chained comparison: nan fails it.
    if number is None or not low <= number <= MAX_SECONDS:
        raise ConfigurationError(
            f"{name}: expected a finite number of seconds from {low:g} to {MAX_SECONDS:g}, "
            f"got {given(value)}"
        )


def text(name: str, value: object, *, empty: bool = False, optional: bool = False) -> None:
    """Text (not empty unless ``empty``); ``None`` (the option left out) when ``optional``."""
    if optional and value is None:
        return
    if not isinstance(value, str) or (not empty and not value):
        what = "text" if empty else "non-empty text"
        raise ConfigurationError(f"{name}: expected {what}, got {given(value)}")


def flag(name: str, value: object) -> None:
    """``true`` or ``false``: the text ``"false"`` would be true."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name}: expected true or false, got {given(value)}")


def file_path(name: str, value: object) -> None:
    """A file's path: non-empty text (or a ``Path``, from Python)."""
    if isinstance(value, Path):
        return
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{name}: expected a file path (text), got {given(value)}")
