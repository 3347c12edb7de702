"""What a page of a JSON API says about the next one, for the ``http-json`` connector: the
standard ``Link: <…>; rel="next"`` header (RFC 8288), the next-page markers public APIs put in
a body (``next``, ``links.next``, ``@odata.nextLink``, ``has_more``…) and the messages that
name them when no paging is set; and what a body holds where the records were expected.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

# Objects of a page body where APIs keep their paging (``meta.next``, ``pagination.next``,
# ``paging.next``, ``links.next.href``, ``pageInfo.hasNextPage``,
# ``response_metadata.next_cursor``): searched, with the top level, for a next-page marker
# when no paging is set. Lower case: matched without regard to case.
PAGING_OBJECTS = frozenset(
    {
        "meta",
        "pagination",
        "paging",
        "links",
        "_links",
        "page_info",
        "pageinfo",
        "response_metadata",
    }
)
# The names public APIs give a next-page marker, compared without case or punctuation
# (:func:`marker_name`): next, next_url, nextLink, @odata.nextLink, nextPageToken,
# response_metadata.next_cursor, has_more, pageInfo.hasNextPage. A list, not a word search: a
# key that merely has "next" or "more" in it (next_run_at, meta.more_info, learn_more) is data.
NEXT_MARKERS = frozenset(
    {
        "next",
        "nextpage",
        "nexturl",
        "nextpageurl",
        "nextlink",
        "nextpagelink",
        "nexthref",
        "odatanextlink",
        "nextcursor",
        "nextpagecursor",
        "nexttoken",
        "nextpagetoken",
        "nextkey",
        "nextoffset",
        "hasmore",
        "hasnext",
        "hasnextpage",
        "morepages",
        "moreresults",
    }
)
# How a marker's value can be followed, best first: the one reported when a page has several.
MARKER_KINDS = ("link", "page", "token", "more")


def dig(document: Any, path: str) -> Any:
    """``a.b.c`` inside nested objects; the empty path is the document itself. A key with a
    dot in its name matches too (OData's ``@odata.nextLink``), when the nested path does not."""
    return _dig(document, [part for part in path.split(".") if part])


def _dig(value: Any, parts: list[str]) -> Any:
    if not parts:
        return value
    if not isinstance(value, dict):
        return None
    for size in range(1, len(parts) + 1):
        key = ".".join(parts[:size])
        if key in value:
            found = _dig(value[key], parts[size:])
            if found is not None:
                return found
    return None


def name_words(name: str) -> list[str]:
    """The lower-case words of a key: ``nextPageToken``, ``next_page_token`` and
    ``@odata.nextLink`` are next/page/token and odata/next/link."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [word.lower() for word in re.split(r"[^A-Za-z0-9]+", spaced) if word]


def marker_name(name: str) -> str:
    """A key as :data:`NEXT_MARKERS` lists it: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def next_markers(document: dict[str, Any], depth: int = 4) -> list[tuple[str, Any]]:
    """(path, value) of the keys named as a next-page marker (:data:`NEXT_MARKERS`), at the
    top level of a page or inside its paging objects (:data:`PAGING_OBJECTS`)."""
    found: list[tuple[str, Any]] = []
    for key, value in document.items():
        name = str(key)
        if marker_name(name) in NEXT_MARKERS:
            found.append((name, value))
        elif isinstance(value, dict) and name.lower() in PAGING_OBJECTS and depth > 1:
            found.extend((f"{name}.{inner}", v) for inner, v in next_markers(value, depth - 1))
    return found


def marker_kind(path: str, value: Any) -> str | None:
    """What a next-page marker holds (one of :data:`MARKER_KINDS`), or None when it says
    there is no next page (null, false, 0, empty)."""
    words = name_words(path.rsplit(".", 1)[-1])
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if "token" in words or "cursor" in words:
            return "token"
        if text.isdigit():
            return "page"
        # A URL, absolute or relative: what --next-path follows. A bare word is a cursor.
        return "link" if "/" in text or "?" in text else "token"
    if not value:  # null, false, 0, [] or {}
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return "page" if "page" in words or words == ["next"] else "more"
    return "more"  # true, a list, an object: more follows, and this connector cannot tell where


def unconfigured_paging_hint(path: str, kind: str) -> str:
    """The options that read every page (or one, knowingly) for a marker of ``kind``."""
    only_this = "--single-page (single_page) to read this one only"
    every_page = "to read every page, or " + only_this
    if kind == "link":
        return f"pass --next-path {path} (next_path in a serve config) {every_page}"
    if kind == "page":
        return f"pass --page-param NAME (page_param in a serve config) {every_page}"
    if kind == "token":
        return (
            "this connector cannot send a page token back (it follows next links, page "
            f"numbers and Link headers): pass {only_this}"
        )
    return (
        "it does not say where: pass --page-param NAME (page_param in a serve config) if the "
        "API numbers its pages, --next-path PATH (next_path) to a next link in the body, or "
        f"{only_this}"
    )


def keys_of(value: dict[str, Any], most: int = 8) -> str:
    """The first keys of an object, as a message lists them."""
    keys = [str(key)[:40] for key in value]  # page data: keys bounded, count too
    return ", ".join(keys[:most]) + (", …" if len(keys) > most else "")


def list_paths(document: Any, depth: int = 3) -> list[str]:
    """Dotted paths to the lists of objects inside ``document`` (objects only, ``depth`` deep):
    where the records probably are."""
    found: list[str] = []
    if not isinstance(document, dict) or depth == 0:
        return found
    for key, value in document.items():
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            found.append(str(key))
        found.extend(f"{key}.{inner}" for inner in list_paths(value, depth - 1))
    return found


def no_records_message(document: Any, path: str) -> str:
    """Why the page has no list of records at ``path``, what is there instead, and the
    ``--records-path`` that would find one: "no list at records path ''" named neither."""
    parts = [part for part in path.split(".") if part]
    found = dig(document, path)
    if not parts:
        what = f"the page is {kind_of(document)}, not a list of records"
    elif found is None:
        parent, reached = document, []
        for part in parts:
            if not isinstance(parent, dict) or part not in parent:
                break
            parent = parent[part]
            reached.append(part)
        where = ".".join(reached) or "the page"
        where = f"'{where}'" if reached else where
        has = (
            f"{where} has the keys: {keys_of(parent)}"
            if isinstance(parent, dict)
            else f"{where} is {kind_of(parent)}"
        )
        what = f"nothing at records path {path!r} ({has})"
    else:
        what = f"at records path {path!r} is {kind_of(found)}, not a list of records"
    candidates = list_paths(document)
    hint = (
        f"; a list is at {candidates[0]!r}: give --records-path {candidates[0]} "
        "(records_path in a serve config)"
        if candidates
        else "; give --records-path to the list of records (records_path in a serve config)"
    )
    return what + hint


def kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object (keys: {keys_of(value)})" if value else "an empty object"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__} ({json.dumps(value)[:40]})"


def link_header_next(values: list[str], base_url: str) -> str | None:
    """The target of the first ``rel="next"`` link in ``Link`` header values (RFC 8288),
    resolved against ``base_url``; None when there is none."""
    for value in values:
        for target, params in parse_link_header(value):
            relations = params.get("rel", "").lower().split()
            if "next" in relations:
                return urllib.parse.urljoin(base_url, target)
    return None


def parse_link_header(value: str) -> list[tuple[str, dict[str, str]]]:
    """``<uri>; name=value; name="quoted, value"`` links, comma separated, as (uri, params).

    Written out rather than split on commas: a comma may sit inside ``<…>`` or a quoted
    string. The first occurrence of a parameter wins (RFC 8288 §3); a malformed link is
    skipped up to the next comma, never guessed at."""
    links: list[tuple[str, dict[str, str]]] = []
    index, end = 0, len(value)
    while index < end:
        index = _skip(value, index, " \t,")
        if index >= end:
            break
        if value[index] != "<":  # malformed: drop it, resume at the next link
            index = _next_link_start(value, index)
            continue
        close = value.find(">", index)
        if close < 0:
            break
        target, index = value[index + 1 : close].strip(), close + 1
        params: dict[str, str] = {}
        while True:
            index = _skip(value, index, " \t")
            if index >= end or value[index] != ";":
                break
            index = _skip(value, index + 1, " \t")
            start = index
            while index < end and value[index] not in "=;, \t":
                index += 1
            name = value[start:index].lower()
            index = _skip(value, index, " \t")
            param_value = ""
            if index < end and value[index] == "=":
                param_value, index = _param_value(value, _skip(value, index + 1, " \t"))
            if name:
                params.setdefault(name, param_value)
        links.append((target, params))
        index = _next_link_start(value, index)
    return links


def _skip(text: str, index: int, characters: str) -> int:
    while index < len(text) and text[index] in characters:
        index += 1
    return index


def _param_value(text: str, index: int) -> tuple[str, int]:
    """A token or a quoted string (with backslash escapes) starting at ``index``."""
    if index < len(text) and text[index] == '"':
        characters: list[str] = []
        index += 1
        while index < len(text) and text[index] != '"':
            if text[index] == "\\" and index + 1 < len(text):
                index += 1
            characters.append(text[index])
            index += 1
        return "".join(characters), index + 1
    start = index
    while index < len(text) and text[index] not in ";, \t":
        index += 1
    return text[start:index], index


def _next_link_start(text: str, index: int) -> int:
    """The index after the comma that ends the current link (commas in quotes do not)."""
    quoted = False
    while index < len(text):
        character = text[index]
        if character == '"':
            quoted = not quoted
        elif character == "\\" and quoted:
            index += 1
        elif character == "," and not quoted:
            return index + 1
        index += 1
    return index
