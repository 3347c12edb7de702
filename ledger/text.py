"""Text from the ledger, shown to people: data may hold any character, output must not be forged.

Connector names, actors, error messages and reasons come from writers. Printed raw, a newline in
an error message can draw a fake section of a report, an ESC or OSC sequence can clear a terminal
or hide a link, a right-to-left override can reverse what a name seems to say. Every
human-readable output passes data through :func:`visible` (and Markdown through
:func:`markdown_cell`); JSON output keeps the exact stored value.

The same definition of an invisible character is the rule for names (:mod:`ledger.events`).
"""

from __future__ import annotations

import json
import re
import unicodedata

# What a value that is not there (None, a run not completed) reads as in every output for
# people: the CLI's tables, the report's text and Markdown, the web view.
ABSENT = "—"

# Control (C0, DEL, C1), format (bidi overrides and isolates, zero-width characters, soft
# hyphen, BOM, tags), line and paragraph separators, lone surrogates, and code points Unicode
# has not assigned (what they will be is unknown: a terminal may take them for anything).
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"})
# Letters to Unicode that print as nothing: only ever used in a name to look like another name.
BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
# Characters that render as nothing though their category is a mark or a symbol: Unicode's
# Default_Ignorable_Code_Point marks (combining grapheme joiner, Khmer inherent vowels, Mongolian
# free variation selectors, variation selectors and their supplement) and the blank braille
# pattern. "SOURCE_1" followed by any of them prints as "SOURCE_1".
_IGNORABLE_RANGES = (
    (0x034F, 0x034F),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x2800, 0x2800),
    (0xFE00, 0xFE0F),
    (0xE0100, 0xE01EF),
)
IGNORABLE_MARKS = frozenset(
    chr(code) for first, last in _IGNORABLE_RANGES for code in range(first, last + 1)
)
SHOWN_AS_ESCAPES = BLANK_LETTERS | IGNORABLE_MARKS
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# What inline Markdown (GitHub's included) reads as more than text: the cell separator, link
# and image brackets, HTML and autolinks, entities, code, emphasis and strikethrough, and the
# backslash itself. ``(``, ``!``, ``#`` and ``+`` mean something only after ``]`` or at the
# start of a line, which data never is.
_MARKDOWN_SPECIAL = frozenset("\\`*_[]<>|~&")


def is_invisible(char: str) -> bool:
    """True for a character that does not show as itself (see :data:`INVISIBLE_CATEGORIES`)."""
    return char in SHOWN_AS_ESCAPES or unicodedata.category(char) in INVISIBLE_CATEGORIES


# Marks that take no room of their own (an accent, an enclosing circle): alone they draw over
# whatever is printed before them, so they cannot carry a reason by themselves.
_MARKS_WITHOUT_ROOM = frozenset({"Mn", "Me"})


def says_something(text: str) -> bool:
    """True when ``text`` holds a character that shows by itself: a reason of spaces, NULs,
    zero-width characters or combining marks alone reads as nothing at all, in every output."""
    return any(_shows_by_itself(char) for char in text)


def _shows_by_itself(char: str) -> bool:
    return (
        not char.isspace()
        and not is_invisible(char)
        and unicodedata.category(char) not in _MARKS_WITHOUT_ROOM
    )


def escape_char(char: str) -> str:
    """``\\n``, ``\\x1b``, ``\\u202e``, ``\\U000e0041``: how :func:`visible` shows a character."""
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def describe_char(char: str) -> str:
    """``U+202E RIGHT-TO-LEFT OVERRIDE``; a character without a name says what it is."""
    code = f"U+{ord(char):04X}"
    name = unicodedata.name(char, "")
    if name:
        return f"{code} {name}"
    kinds = {"Cc": "a control character", "Cs": "a surrogate", "Cn": "unassigned"}
    return f"{code} ({kinds.get(unicodedata.category(char), 'no name')})"


def visible(text: str) -> str:
    """``text`` on one line with every invisible character shown as its escape: a newline as the
    two characters ``\\n``, ESC as ``\\x1b``, U+202E as ``\\u202e``. A backslash already in the
    text is left as it is (Windows paths stay readable); JSON output is the exact form."""
    if text.isprintable() and SHOWN_AS_ESCAPES.isdisjoint(text):  # the usual case, in C
        return text
    return "".join(escape_char(char) if is_invisible(char) else char for char in text)


def quoted(text: str) -> str:
    """``text`` between double quotes, JSON-style: a backslash and a quote inside are escaped
    (``\\\\``, ``\\"``), then the rest made :func:`visible`. For a writer's free text (an error
    message, a reason, metadata) shown in one line or cell with the tool's own words: where the
    quotes are, it cannot pass for them (a message ending in ``· by sweeper`` shows as
    ``"… · by sweeper"``, not as the audit's actor). A real ESC shows as ``\\x1b``, the four
    characters a writer typed as ``\\\\x1b``."""
    return '"' + visible(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


# A name made only of these cannot hold a space, a quote or a separator: it reads as one word.
_BARE_NAME = re.compile(r"[\w.:@/+-]+")


def shown_name(name: str) -> str:
    """A name (a connector, an actor) beside the tool's own words: as it is when it is one word
    of letters, digits and ``_ . : @ / + -`` (``sweeper``, ``operator:alice``), else
    :func:`quoted` (``"Jane Doe"``, ``"x · by sweeper"``, ``"—"``): a name cannot pass for the
    words around it."""
    return visible(name) if _BARE_NAME.fullmatch(name) else quoted(name)


def shown_value(value: object) -> str:
    """A stored JSON value beside the tool's own words: text :func:`quoted`, anything else as
    compact JSON (``12``, ``true``, ``["a"]``: its strings quoted too), made visible."""
    if isinstance(value, str):
        return quoted(value)
    return visible(json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")))


# Surrogate code points: UTF-8 has no encoding for them, so neither database can store one.
_SURROGATES = re.compile("[\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` as the ledger can store it: each surrogate code point written as its escape,
    the six characters ``\\udcfe``, everything else kept as it is.

    Python text can hold what UTF-8 cannot: a lone ``\\ud800`` read from a JSON escape, or
    the ``\\udcfe`` a byte 0xFE of a file name that is not UTF-8 is decoded to. The ledger
    refuses an event holding one, so a connector's message holding one lost the run's whole
    outcome. The escape, as :func:`visible` shows it, keeps which byte or escape it was
    (U+FFFD, what the TypeScript client writes, would not); a backslash already in the text
    is left as it is, like :func:`visible` does."""
    if text.isascii() or _SURROGATES.search(text) is None:  # the usual case, in C
        return text
    return _SURROGATES.sub(lambda match: escape_char(match.group()), text)


def cells(char: str) -> int:
    """How many terminal cells ``char`` takes: 2 for a wide East Asian character, 0 for a
    combining mark, else 1."""
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def wrap_cells(text: str, width: int, indent: str) -> list[str]:
    """``text`` as lines of at most ``width`` cells, broken at the last space that fits (or
    anywhere in a longer word), every line after the first starting with ``indent``: what
    follows a break never stands at the start of a line, where a terminal's own wrapping of
    a long value could have put a forged line of a report."""
    lines: list[str] = []
    current, used = "", 0
    for char in text:
        wide = cells(char)
        if used + wide > width and len(current) > (len(indent) if lines else 0):
            cut = current.rfind(" ")
            rest = current[cut + 1 :] if cut > 0 else ""
            rest_cells = sum(cells(c) for c in rest)
            if cut <= 0 or len(indent) + rest_cells + wide > width:
                cut, rest, rest_cells = len(current), "", 0  # no space that helps: break here
            lines.append(current[:cut].rstrip())
            current, used = indent + rest, len(indent) + rest_cells
        current += char
        used += wide
    lines.append(current.rstrip())
    return lines


def visible_lines(text: str) -> str:
    """Each line of a message made :func:`visible`, the message's own line breaks kept: for
    text composed by the code (an error listing problems) with data inside its lines."""
    return "\n".join(visible(line) for line in text.split("\n"))


def markdown_cell(text: str) -> str:
    """``text`` made :func:`visible`, then escaped so that in a Markdown table cell (or any
    inline Markdown) it stays literal text: it cannot end the cell or the row, or become a link,
    an image, HTML, an entity, code or emphasis."""
    shown = visible(text)
    return "".join("\\" + char if char in _MARKDOWN_SPECIAL else char for char in shown)


def clip(
    text: str,
    limit: int = 80,
    *,
    ellipsis: str = "…",
    count_cut: bool = False,
    keep_end: bool = False,
) -> str:
    """At most ``limit`` characters, ``ellipsis`` marking a cut (clip after :func:`visible`, so
    an escape cannot be hidden past the cut).

    With ``count_cut``, ``limit`` characters are kept and a note says how many were cut
    (``…[1200 characters cut]``); ``keep_end`` keeps the end instead of the start (where a
    traceback says what failed).
    """
    if len(text) <= limit:
        return text
    if not count_cut:
        return text[: limit - len(ellipsis)] + ellipsis
    note = f"[{len(text) - limit} characters cut]"
    return note + ellipsis + text[-limit:] if keep_end else text[:limit] + ellipsis + note


def safe_repr(value: object) -> str:
    """``repr(value)``, or what stopped it: a message that quotes a caller's value must not
    fail itself. ``repr`` raises for an int of more than 4,300 digits (Python's limit on an
    int as text), for an object whose ``__repr__`` fails, and for one nested past the
    recursion limit."""
    try:
        return repr(value)
    except Exception as exc:
        return f"<{type(value).__name__}: repr() failed with {type(exc).__name__}>"


def safe_str(value: object) -> str:
    """``str(value)``, or what stopped it, as :func:`safe_repr`: ``str`` raises for an int of
    more than 4,300 digits and for an object whose ``__str__`` fails."""
    try:
        return str(value)
    except Exception as exc:
        return f"<{type(value).__name__}: str() failed with {type(exc).__name__}>"


def is_ascii_integer(text: str) -> bool:
    """``[0-9]+``: ``str.isdigit`` alone takes ``²`` and ``\u0661`` (an Arabic-Indic one),
    ``int()`` takes ``_``, ``+``, spaces and every script's decimal digits. A run id or a count
    typed or sent is written one way only (the API's URLs, the CLI's options)."""
    return text.isascii() and text.isdigit()


__all__ = [
    "BLANK_LETTERS",
    "IGNORABLE_MARKS",
    "INVISIBLE_CATEGORIES",
    "cells",
    "clip",
    "describe_char",
    "escape_char",
    "is_ascii_integer",
    "is_invisible",
    "markdown_cell",
    "quoted",
    "safe_repr",
    "safe_str",
    "shown_name",
    "shown_value",
    "storable",
    "visible",
    "visible_lines",
    "wrap_cells",
]
