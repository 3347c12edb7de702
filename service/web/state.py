"""What every page of one web app shares: its root and sizes, ``WebState``, the moment a
page stands at, and the refusals a page raises (shown as error pages)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

import anyio

from ledger import Ledger
from ledger.outage import Outage
from service.api.limits import AuthFailures
from service.api.problems import RETRY_AFTER_BUSY, expensive_slot
from service.api.state import in_write_slot
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


T = TypeVar("T")


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
    # The part of those slots that visitors reading without a login (public_read) may hold
    # together (:func:`public_share`): a few anonymous tabs kept every slot busy, and the
    # API's verify and as-of reads, and logged-in readers, got 429 for as long as they stayed.
    public_slots: threading.BoundedSemaphore
    # The process's write slots (the API's, when mounted in it): the fail form's append takes
    # one, as the API's appends and fails do, or waits for one holding no worker thread.
    write_slots: anyio.CapacityLimiter
    counts: dict[str, tuple[datetime, dict[str, dict[str, int]]]] = field(default_factory=dict)

    async def write(self, work: Callable[[], T]) -> T:
        """``work()`` in a worker thread, holding one of the write slots: a 503 page when none
        came within ``[api] database_timeout`` (:func:`service.api.state.in_write_slot`)."""
        return await in_write_slot(self.write_slots, self.config, work)

    @contextmanager
    def expensive(self, what: str, needed: bool = True, public: bool = False) -> Iterator[None]:
        """A slot for a page whose read grows with history (Proof, Integrity, any page as of a
        past moment, a later part of a run's timeline, the day chart's count): a 429 page with
        Retry-After when all ``[api] max_expensive`` are taken, rather than a queue of full scans
        that would hold every worker thread. ``public``: the visitor reads without a login, and
        takes one of the public share first (a 429 page when the share is taken)."""
        if not needed:
            yield
            return
        if not public:
            with expensive_slot(
                self.expensive_slots, what, self.config.api.max_expensive, _busy_page
            ):
                yield
            return
        if not self.public_slots.acquire(blocking=False):
            raise LedgerErrorPage(
                429,
                "Busy",
                public_busy_detail(what, public_share(self.config.api.max_expensive)),
                headers={"Retry-After": str(RETRY_AFTER_BUSY)},
            )
        try:
            with expensive_slot(
                self.expensive_slots, what, self.config.api.max_expensive, _busy_page
            ):
                yield
        finally:
            self.public_slots.release()

    def close(self) -> None:
        self.verify.stop()


def public_share(max_expensive: int) -> int:
    """How many of the ``[api] max_expensive`` slots visitors without a login may hold at once:
    half, rounded down, so that the API's clients and logged-in readers always keep the rest
    (with one slot in all, a visitor must log in for such a page)."""
    return max_expensive // 2


def _busy_page(detail: str, headers: dict[str, str]) -> LedgerErrorPage:
    return LedgerErrorPage(429, "Busy", detail, headers=headers)


def public_busy_detail(what: str, share: int) -> str:
    """What a visitor without a login is told when the public share is taken."""
    return (
        f"{what} reads the whole history; visitors without a login may run {share} such "
        "request(s) at once (half of [api] max_expensive) and are running them: retry later, "
        "or log in"
    )


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
    # When it is judged (judged_moment: the time, or when the position's event was recorded;
    # never after now). None when live.
    judged: datetime | None = None

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
