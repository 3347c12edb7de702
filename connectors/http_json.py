"""The ``http-json`` connector: pages through a JSON API and upserts into ``source_records``.

Pagination follows a next link found in the response (``next_path``), or increments a page
parameter (``page_param``) until a page has no records, or reads a single page
(``single_page``). With none of them it follows the standard ``Link: <…>; rel="next"``
header (RFC 8288), and refuses, before storing anything, a page whose body says a next page
exists (``next``, ``links.next``, ``meta.next``, ``@odata.nextLink``, ``nextPageToken``,
``has_more: true``…: see :func:`next_markers`): reading only the first page of a paginated API
and reporting ``success`` would be silently wrong data. A next URL
seen before (a loop), on another host or not http(s) fails the run, naming it. Connection
errors, timeouts, 429 and 5xx are retried with exponential backoff; anything else, or a page
that still fails after the retries, fails the run. A redirect is followed only on the first
URL's scheme, host and port; a page over ``max_page_bytes`` (64 MiB) or still arriving after
``page_deadline`` (300 s) fails the run, as does a body that is not UTF-8 JSON.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from typing import Any

from connectors import options
from connectors.base import Connector
from connectors.records import RecordStore, unstorable
from connectors.sdk import RunContext
from ledger.errors import ConfigurationError
from ledger.text import clip, describe_char, visible
from ledger.urls import MAX_TCP_PORT, mask_secrets, tcp_port_problem

log = logging.getLogger(__name__)
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
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
# A page larger than this, or still arriving after this long, fails the run: a server that
# sends an endless or a dribbling body would otherwise fill the memory, or hold the run (and
# serve's job for this connector, one instance at a time) forever, alive by its heartbeats.
MAX_PAGE_BYTES = 64 * 1024 * 1024
PAGE_DEADLINE_S = 300.0
_READ_CHUNK = 64 * 1024
MIN_TIMEOUT_S = 0.1
MAX_RETRIES = 100
MAX_RETRY_DELAY_S = 300.0  # the doubling backoff stops growing here


class FetchError(RuntimeError):
    """A page could not be fetched (after the retries, for retryable failures)."""


# What an HTTP request line cannot carry in its URL: http.client refuses a space, a control
# character or DEL (InvalidURL) and cannot encode one outside ASCII (UnicodeEncodeError).
_UNREQUESTABLE = re.compile(r"[^\x21-\x7e]")
_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def shown(url: str) -> str:
    """The URL as it may appear in the ledger, logs and output: credentials and key-like
    query parameters masked (the ledger is immutable: a leaked secret could never be removed).
    A space or control character (a server's next link can hold one) is shown percent-encoded:
    a masked value ends at a space, which left the rest of a secret such as "SEKRET8 x"."""
    return mask_secrets(_SPACE_OR_CONTROL.sub(lambda found: f"%{ord(found[0]):02X}", url))


def unrequestable(url: str, exc: Exception) -> str:
    """Why http.client would not send ``url``, without its own message: that quotes the URL
    raw, unmasked."""
    found = _UNREQUESTABLE.search(url)
    if found is not None:
        return (
            f"the URL holds {describe_char(found[0])} at character {found.start() + 1}, "
            "which an HTTP request cannot carry"
        )
    return f"not a URL HTTP can request ({clip(mask_secrets(visible(str(exc))), 200)})"


def clip_link(link: Any) -> str:
    """A link found in a page, as a message may quote it: masked and at most 200 characters."""
    return clip(shown(str(link)), 200)


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


@dataclass(frozen=True)
class Page:
    """One fetched page: its URL, its JSON document and the next URL its Link header names."""

    url: str
    document: Any
    link_next: str | None


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


def origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, lower-case host and effective port: what a next URL must share with the first."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: no origin matches it
        return (parts.scheme.lower(), "", -1)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return (parts.scheme.lower(), (parts.hostname or "").lower(), port or default)


def _url_port_problem(parts: urllib.parse.SplitResult) -> str | None:
    """Why the URL's port is not one to connect to, or None (no port: the scheme's)."""
    try:
        port = parts.port
    except ValueError:  # out of 0..65535, or not a number: urllib names neither the port
        # Read as urllib does, after the credentials: a password is never quoted.
        text = parts.netloc.rpartition("@")[2].rpartition("]")[2].rpartition(":")[2]
        if text.isascii() and text.isdigit():
            if len(text.lstrip("0")) > len(str(MAX_TCP_PORT)):  # int() refuses 4,300 digits
                return f"port {clip(text, 20)!r} is not a TCP port (1 to {MAX_TCP_PORT})"
            return tcp_port_problem(int(text))
        return f"port {clip(text, 20)!r} is not a number"
    return None if port is None else tcp_port_problem(port)


class HttpJsonConnector(Connector):
    name = "http-json"
    version = "1.0.0"

    def __init__(
        self,
        source_id: int,
        url: str,
        key: str = "id",
        records_path: str = "",
        page_param: str | None = None,
        next_path: str | None = None,
        first_page: int = 1,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_pages: int = 100_000,
        single_page: bool = False,
        max_page_bytes: int = MAX_PAGE_BYTES,
        page_deadline: float = PAGE_DEADLINE_S,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(source_id, name=name)
        # Every option's type first, where a serve config's options arrive too (TOML has nan,
        # inf, text and arrays): `first_page = "x"` or `key = 5` passed `config check`, then
        # every scheduled run failed on a TypeError naming no option, or ended partial.
        options.text("url", url)
        options.text("key", key)
        options.text("records_path", records_path, empty=True)
        options.text("page_param", page_param, optional=True)
        options.text("next_path", next_path, optional=True)
        options.flag("single_page", single_page)
        options.whole("first_page", first_page, 0)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            # urllib would open file:// and ftp:// URLs too: a config must not read local files
            raise ConfigurationError(f"url: {shown(url)!r} is not an http(s) URL")
        port_problem = _url_port_problem(parts)
        if port_problem:
            # urllib would connect anyway, to the port modulo 65536 (84746 reads 19210), and a
            # next link on the wrapped port would be refused as another origin.
            raise ConfigurationError(f"url: {shown(url)!r}: {port_problem}")
        if parts.username or parts.password:
            # urllib would send "user:password@host" to DNS as a host name; and the URL is
            # recorded in the run's metadata, where a password could never be removed. The
            # URL is not repeated: a password with a space would escape the masking.
            raise ConfigurationError(
                "url: carries credentials (user:password@), which this connector does not "
                "send; use an API whose URL needs none (a token in a query parameter is masked)"
            )
        if sum((page_param is not None, next_path is not None, single_page)) > 1:
            raise ConfigurationError("give only one of page_param, next_path and single_page")
        self.url = url
        self.key = key
        self.records_path = records_path
        self.page_param = page_param
        self.next_path = next_path
        self.first_page = first_page
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_pages = max_pages
        self.single_page = single_page
        # Checked here, where a serve config's options arrive too (TOML has nan and inf): the
        # CLI's ranges held for `ledger run` only, and `timeout = nan` or `backoff = 1e9` in a
        # config failed every scheduled run with a ValueError, or slept for 31 years.
        options.whole("max_page_bytes", max_page_bytes, 1)
        options.whole("retries", retries, 0, MAX_RETRIES)
        options.whole("max_pages", max_pages, 1)
        options.seconds("timeout", timeout, MIN_TIMEOUT_S)
        options.seconds("backoff", backoff, 0.0)
        options.seconds("page_deadline", page_deadline, MIN_TIMEOUT_S)
        self.max_page_bytes = max_page_bytes
        self.page_deadline = page_deadline
        self._opener = urllib.request.build_opener(_SameOriginRedirects(url))

    def _key_problem(self, record: object) -> str:
        """Why a record has no key: none at all names the fields it has, so that a --key the
        API does not use shows at the first record."""
        if not isinstance(record, dict) or self.key in record:
            return f"missing key {self.key!r}"
        # visible: a field name is data (a "\ud800" escape, a newline, an ESC)
        fields = ", ".join(clip(visible(str(n)), 40) for n in list(record)[:8]) or "no field"
        return (
            f"missing key {self.key!r} (the record has {fields}; "
            "--key names the field that identifies a record)"
        )

    def ingest(self, run: RunContext) -> None:
        store = RecordStore(run.ledger)
        url: str | None = self._page_url(self.first_page)
        page = self.first_page
        seen: set[str] = set()
        previous: str | None = None  # the last page's records, as canonical JSON
        for _ in range(self.max_pages):
            if url is None:
                return
            seen.add(url)
            fetched = self.fetch_page(url)
            document = fetched.document
            if page == self.first_page:
                self._refuse_unconfigured_paging(fetched)
            records = dig(document, self.records_path)
            if not isinstance(records, list):
                raise FetchError(f"{shown(url)}: {no_records_message(document, self.records_path)}")
            if self.page_param is not None and records:
                # A server that ignores the parameter answers every page alike: without this,
                # max_pages copies of page one, then "is the pagination looping?".
                this_page = json.dumps(records, sort_keys=True, default=str)
                if this_page == previous:
                    raise FetchError(
                        f"page {page} ({shown(url)}) has the same records as page {page - 1}: "
                        f"the server ignores {self.page_param}=; give the parameter it reads, "
                        "or --next-path for a next link in the body"
                    )
                previous = this_page
            good: list[tuple[str, dict[str, Any]]] = []
            for index, record in enumerate(records):
                if not isinstance(record, dict) or record.get(self.key) in (None, ""):
                    problem = self._key_problem(record)
                else:
                    external_id = str(record[self.key]).strip()
                    # A lone surrogate (a "\ud800" escape) or a NaN: an error of this record,
                    # not of the page's upsert and the whole run.
                    unstored = unstorable(external_id, record)
                    if unstored is None:
                        good.append((external_id, record))
                        continue
                    problem = unstored
                run.error(
                    f"page {page} record {index}: {problem}",
                    {"url": shown(url), "index": index},
                )
            counts = store.upsert(self.source_id, good)
            run.progress(
                fetched=len(records),
                created=counts.created,
                updated=counts.updated,
                skipped=counts.skipped,
            )
            page += 1
            url = self._next_url(fetched, page, bool(records))
            if url is not None:
                self._check_next_url(url, seen)
        raise FetchError(f"stopped after {self.max_pages} pages: is the pagination looping?")

    def _page_url(self, page: int) -> str:
        if self.page_param is None:
            return self.url
        parts = urllib.parse.urlsplit(self.url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        query[self.page_param] = str(page)
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    def _paging_configured(self) -> bool:
        return self.single_page or self.page_param is not None or self.next_path is not None

    def _next_url(self, fetched: Page, page: int, had_records: bool) -> str | None:
        if self.single_page:
            return None
        if self.next_path is not None:
            link = dig(fetched.document, self.next_path)
            return (
                urllib.parse.urljoin(fetched.url, link) if isinstance(link, str) and link else None
            )
        if self.page_param is not None:
            return self._page_url(page) if had_records else None
        return fetched.link_next

    def _refuse_unconfigured_paging(self, fetched: Page) -> None:
        """A first page whose body says a next page exists, when nothing says how to page and
        no Link header does either: refused before anything is stored, naming the marker and
        the option, rather than ending ``success`` with one page of a paginated API."""
        if self._paging_configured() or fetched.link_next is not None:
            return
        if not isinstance(fetched.document, dict):
            return
        markers: list[tuple[int, str, Any, str]] = []
        for path, value in next_markers(fetched.document):
            if isinstance(value, dict) and "href" in value:  # {"next": {"href": "…"}} (HAL-like)
                path, value = f"{path}.href", value["href"]
            kind = marker_kind(path, value)
            if kind is not None and path != self.records_path:
                markers.append((MARKER_KINDS.index(kind), path, value, kind))
        if not markers:
            return
        _, path, value, kind = min(markers, key=lambda marker: marker[0])
        quoted = value if isinstance(value, str) else json.dumps(value, default=str)
        raise FetchError(
            f"{shown(fetched.url)}: the page names a next page at {path!r} "
            f"({clip_link(quoted)}) but no paging is configured: "
            f"{unconfigured_paging_hint(path, kind)}"
        )

    def _check_next_url(self, url: str, seen: set[str]) -> None:
        """A next URL must be new (not a loop) and on the first page's scheme, host and port:
        a server's link is no licence to fetch from another host or read a local file."""
        if url in seen:
            raise FetchError(f"the next page {shown(url)} was already read: the paging loops")
        if origin(url) != origin(self.url):
            raise FetchError(
                f"the next page {shown(url)} is not on {shown(self.url)}'s scheme, host and "
                f"port: refused"
            )

    def fetch_page(self, url: str) -> Page:
        """GET ``url`` as JSON with its Link header's next URL, retrying transient failures
        with exponential backoff."""
        request = urllib.request.Request(  # noqa: S310 (the URL is the operator's own setting)
            url, headers={"Accept": "application/json", "User-Agent": "run-ledger"}
        )
        last_error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                delay = min(self.backoff * 2 ** min(attempt - 1, 30), MAX_RETRY_DELAY_S)
                # INFO: the run's failure, when retries run out, is the one WARNING (serve
                # logs it at each tick); a retry that recovers is not a problem to report.
                # The error may quote the server (a garbled status line, raw): made visible,
                # or its ESC, CR and newline would draw on the terminal and forge log lines.
                log.info(
                    "retrying %s in %.2fs (attempt %d): %s",
                    shown(url),
                    delay,
                    attempt + 1,
                    visible(last_error),
                )
                time.sleep(delay)
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    body = self._read_body(response, url)
                    headers: Message = response.headers
                    link_next = link_header_next(headers.get_all("Link") or [], url)
            except (http.client.InvalidURL, UnicodeEncodeError) as exc:
                # Not retried: the same URL is refused the same way every time. "from None": the
                # refusal's own text, in a traceback, quotes the URL raw.
                raise FetchError(f"{shown(url)}: {unrequestable(url, exc)}: refused") from None
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRYABLE_STATUS:
                    raise FetchError(f"{shown(url)}: HTTP {exc.code} {exc.reason}") from exc
                last_error = f"HTTP {exc.code}"
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last_error = mask_secrets(str(getattr(exc, "reason", exc)))
                continue
            except http.client.HTTPException as exc:  # a body cut short, a garbled status line
                last_error = mask_secrets(f"{type(exc).__name__}: {clip(str(exc), 200)}")
                continue
            return Page(url, self._parse(body, url), link_next)
        if self.retries == 0:
            raise FetchError(f"{shown(url)}: {last_error} (not retried: retries is 0)")
        retries = "1 retry" if self.retries == 1 else f"{self.retries} retries"
        raise FetchError(f"{shown(url)}: still failing after {retries} ({last_error})")

    def _read_body(self, response: http.client.HTTPResponse, url: str) -> bytes:
        """The body, refused past ``max_page_bytes`` or ``page_deadline`` seconds: the socket
        timeout bounds each read, not a body sent a byte at a time, nor one without end."""
        deadline = time.monotonic() + self.page_deadline
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read1(_READ_CHUNK):
            size += len(chunk)
            if size > self.max_page_bytes:
                raise FetchError(
                    f"{shown(url)}: the response is larger than {self.max_page_bytes:,} bytes: "
                    "refused (max_page_bytes)"
                )
            if time.monotonic() > deadline:
                raise FetchError(
                    f"{shown(url)}: the response was still arriving after "
                    f"{self.page_deadline:g}s ({size:,} bytes): refused (page_deadline)"
                )
            chunks.append(chunk)
        if response.length:  # read1 ends quietly where the connection did, not the body
            raise http.client.IncompleteRead(b"".join(chunks), response.length)
        return b"".join(chunks)

    @staticmethod
    def _parse(body: bytes, url: str) -> Any:
        """The page's JSON. Invalid UTF-8, a 5,000-digit number or 100,000 nested lists are
        "not JSON" naming the URL, not a UnicodeDecodeError or RecursionError traceback."""
        try:
            return json.loads(body.decode("utf-8-sig"))
        except json.JSONDecodeError as exc:
            raise FetchError(f"{shown(url)}: the response is not JSON ({exc.msg})") from exc
        except UnicodeDecodeError as exc:
            raise FetchError(
                f"{shown(url)}: the response is not JSON (not UTF-8 at byte {exc.start})"
            ) from exc
        except (ValueError, RecursionError) as exc:
            raise FetchError(
                f"{shown(url)}: the response is not JSON this connector can read "
                f"({clip(str(exc), 120)})"
            ) from exc


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects only within the first URL's scheme, host and port: the rule for next links.
    urllib followed any redirect (another host, an internal address, even ftp://), a way
    around the origin check and a way to send the URL's query, a token in it, elsewhere."""

    def __init__(self, first_url: str) -> None:
        self.first_url = first_url

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if origin(newurl) != origin(self.first_url):
            raise FetchError(
                f"{shown(req.full_url)}: HTTP {code} redirects to {clip_link(newurl)}, not on "
                f"{shown(self.first_url)}'s scheme, host and port: refused"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)
