"""The ``http-json`` connector: pages through a JSON API and upserts into ``source_records``.

Pagination follows a next link found in the response (``next_path``), or increments a page
parameter (``page_param``) until a page has no records, or reads a single page. Connection
errors, timeouts, 429 and 5xx are retried with exponential backoff; anything else, or a page
that still fails after the retries, fails the run.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from connectors.base import Connector
from connectors.records import RecordStore
from connectors.sdk import RunContext
from ledger.urls import mask_secrets

log = logging.getLogger(__name__)
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class FetchError(RuntimeError):
    """A page could not be fetched (after the retries, for retryable failures)."""


def shown(url: str) -> str:
    """The URL as it may appear in the ledger, logs and output: credentials and key-like
    query parameters masked (the ledger is immutable: a leaked secret could never be removed)."""
    return mask_secrets(url)


def dig(document: Any, path: str) -> Any:
    """``a.b.c`` inside nested objects; the empty path is the document itself."""
    value = document
    for part in filter(None, path.split(".")):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


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
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(source_id, name=name)
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

    def ingest(self, run: RunContext) -> None:
        store = RecordStore(run.ledger)
        url: str | None = self._page_url(self.first_page)
        page = self.first_page
        for _ in range(self.max_pages):
            if url is None:
                return
            document = self.fetch(url)
            records = dig(document, self.records_path)
            if not isinstance(records, list):
                raise FetchError(f"{shown(url)}: no list at records path {self.records_path!r}")
            good: list[tuple[str, dict[str, Any]]] = []
            for index, record in enumerate(records):
                if not isinstance(record, dict) or record.get(self.key) in (None, ""):
                    run.error(
                        f"page {page} record {index}: missing key {self.key!r}",
                        {"url": shown(url), "index": index},
                    )
                else:
                    good.append((str(record[self.key]).strip(), record))
            counts = store.upsert(self.source_id, good)
            run.progress(
                fetched=len(records),
                created=counts.created,
                updated=counts.updated,
                skipped=counts.skipped,
            )
            page += 1
            url = self._next_url(url, document, page, bool(records))
        raise FetchError(f"stopped after {self.max_pages} pages: is the pagination looping?")

    def _page_url(self, page: int) -> str:
        if self.page_param is None:
            return self.url
        parts = urllib.parse.urlsplit(self.url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        query[self.page_param] = str(page)
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    def _next_url(self, current: str, document: Any, page: int, had_records: bool) -> str | None:
        if self.next_path is not None:
            link = dig(document, self.next_path)
            return urllib.parse.urljoin(current, link) if isinstance(link, str) and link else None
        if self.page_param is not None and had_records:
            return self._page_url(page)
        return None

    def fetch(self, url: str) -> Any:
        """GET ``url`` as JSON, retrying transient failures with exponential backoff."""
        request = urllib.request.Request(  # noqa: S310 (the URL is the operator's own setting)
            url, headers={"Accept": "application/json", "User-Agent": "run-ledger"}
        )
        last_error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1)
                log.warning(
                    "retrying %s in %.2fs (attempt %d): %s",
                    shown(url),
                    delay,
                    attempt + 1,
                    last_error,
                )
                time.sleep(delay)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRYABLE_STATUS:
                    raise FetchError(f"{shown(url)}: HTTP {exc.code} {exc.reason}") from exc
                last_error = f"HTTP {exc.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last_error = str(getattr(exc, "reason", exc))
            except json.JSONDecodeError as exc:
                raise FetchError(f"{shown(url)}: the response is not JSON ({exc.msg})") from exc
        raise FetchError(f"{shown(url)}: still failing after {self.retries} retries ({last_error})")
