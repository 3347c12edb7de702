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
import time
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from typing import Any

from connectors import options
from connectors.base import Connector
from connectors.http_fetch import (
    Deadlines,
    FetchError,
    Page,
    PageDeadline,
    clip_link,
    origin,
    page_opener,
    shown,
    unrequestable,
    url_port_problem,
)
from connectors.http_paging import (
    MARKER_KINDS,
    dig,
    link_header_next,
    marker_kind,
    next_markers,
    no_records_message,
    unconfigured_paging_hint,
)
from connectors.records import RecordStore, unstorable
from connectors.sdk import RunContext
from ledger.errors import ConfigurationError
from ledger.text import clip, visible
from ledger.urls import mask_secrets

log = logging.getLogger(__name__)
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# A page larger than this, or still arriving after this long, fails the run: a server that
# sends an endless or a dribbling body would otherwise fill the memory, or hold the run (and
# serve's job for this connector, one instance at a time) forever, alive by its heartbeats.
MAX_PAGE_BYTES = 64 * 1024 * 1024
PAGE_DEADLINE_S = 300.0
_READ_CHUNK = 64 * 1024
MIN_TIMEOUT_S = 0.1
MAX_RETRIES = 100
MAX_RETRY_DELAY_S = 300.0  # the doubling backoff stops growing here


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
        port_problem = url_port_problem(parts)
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
        # The deadline of the page being fetched, which every read of its exchange (status
        # line, headers, body, and those of its redirects) is held to.
        self._deadlines = Deadlines()
        self._opener = page_opener(url, self._deadlines)

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
            # A request of its own each attempt: urllib counts the redirects a request
            # followed on the request, so a redirect in front of a page that answered 503 was
            # counted once per attempt, and the fifth failed as "an infinite loop".
            request = urllib.request.Request(  # noqa: S310 (the URL is the operator's setting)
                url, headers={"Accept": "application/json", "User-Agent": "run-ledger"}
            )
            self._deadlines.current = PageDeadline(url, self.page_deadline, self.timeout)
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
        """The body, refused past ``max_page_bytes``: the socket timeout bounds each read, not
        a body without end (one sent a byte at a time is held to the page's deadline by each
        read of the response: :class:`connectors.http_fetch.PageDeadline`)."""
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read1(_READ_CHUNK):
            size += len(chunk)
            if size > self.max_page_bytes:
                raise FetchError(
                    f"{shown(url)}: the response is larger than {self.max_page_bytes:,} bytes: "
                    "refused (max_page_bytes)"
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
