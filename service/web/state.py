"""What every page of one web app shares: its root and sizes, ``WebState``, the moment a
page stands at, and the refusals a page raises (shown as error pages)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ledger import Ledger
from ledger.outage import Outage
from service.api.limits import AuthFailures
from service.api.problems import expensive_slot
from service.config import LedgerConfig
from service.web.integrity import VerifyCache
from service.web.sessions import Sessions

log = logging.getLogger("ledger.web")

ROOT = "/web"
PAGE_SIZE = 50
# Timeline entries on one part of a run's page: a run of a million heartbeats is read and
# rendered a part at a time, with a link to the next.
TIMELINE_PART = 500
DAYS_SHOWN = 14
COUNTS_TTL = timedelta(seconds=60)
STATIC = {"style.css": "text/css; charset=utf-8"}
NOTICES = {"failed": "The run was failed: its timeline shows the RunTimedOut you appended."}


@dataclass
class WebState:
    config: LedgerConfig
    ledger: Ledger
    sessions: Sessions
    verify: VerifyCache
    # The process's slots for requests that read the whole history (the API's, when mounted in
    # it): a page that replays or verifies takes one, or says "busy" when all are taken.
    expensive_slots: threading.BoundedSemaphore
    outage: Outage  # the API's, when mounted in it
    auth_failures: AuthFailures  # the API's, when mounted in it: one count of refused tokens
    counts: dict[str, tuple[datetime, dict[str, dict[str, int]]]] = field(default_factory=dict)

    @contextmanager
    def expensive(self, what: str, needed: bool = True) -> Iterator[None]:
        """A slot for a page whose read grows with history (Proof, Integrity, any page as of a
        past moment, a later part of a run's timeline, the day chart's count): a 429 page with
        Retry-After when all ``[api] max_expensive`` are taken, rather than a queue of full scans
        that would hold every worker thread."""
        if not needed:
            yield
            return
        with expensive_slot(self.expensive_slots, what, self.config.api.max_expensive, _busy_page):
            yield

    def close(self) -> None:
        self.verify.stop()


def _busy_page(detail: str, headers: dict[str, str]) -> LedgerErrorPage:
    return LedgerErrorPage(429, "Busy", detail, headers=headers)


class LoginRequired(Exception):
    pass


class Forbidden(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class Moment:
    """The as-of of a request: nothing (live), or the position the page is pinned to."""

    position: int | None = None
    as_of: datetime | None = None
    params: Mapping[str, str] = field(default_factory=dict)  # to carry along in links

    @property
    def live(self) -> bool:
        return self.position is None


class LedgerErrorPage(Exception):
    """A page's own refusal of its input (or of the moment: busy), shown as an error page."""

    def __init__(
        self, status: int, title: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
