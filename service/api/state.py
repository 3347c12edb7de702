"""``ApiState``: what every endpoint of one app shares (the config, the ledgers, the tokens,
the spool, the slots for expensive requests, the outage log)."""

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from connectors import Spool
from ledger import Ledger
from ledger.outage import Outage
from service.api.auth import Tokens
from service.api.limits import AuthFailures
from service.api.problems import ApiProblem, expensive_slot
from service.config import LedgerConfig


@dataclass
class ApiState:
    config: LedgerConfig
    ledger: Ledger
    scrape_ledger: Ledger
    tokens: Tokens
    spool: Spool
    expensive_slots: threading.BoundedSemaphore
    auth_failures: AuthFailures
    # The database unreachable: one WARNING as it starts, one INFO as a request gets through
    # again, not a line per request answered 503 (the web view's pages share it).
    outage: Outage = field(
        default_factory=lambda: Outage("API requests", logging.getLogger("service.api"))
    )

    @contextmanager
    def expensive(self, what: str, needed: bool = True) -> Iterator[None]:
        """A slot for a request that replays history (verify, as_of, a timeline page after a
        cursor): 429 when all ``[api] max_expensive`` are taken, rather than a queue of full
        scans. ``needed`` False: the request reads a bounded page, and takes none."""
        if not needed:
            yield
            return
        with expensive_slot(
            self.expensive_slots, what, self.config.api.max_expensive, _too_many_requests
        ):
            yield

    def close(self) -> None:
        self.ledger.close()
        self.scrape_ledger.close()


def _too_many_requests(detail: str, headers: dict[str, str]) -> ApiProblem:
    return ApiProblem(429, "too-many-requests", "Too many requests", detail, headers=headers)
