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

# How long a passed schema check stands for the writes after it: one query per 5 s rather than
# one per write (0.5 ms on SQLite, 2 ms on MariaDB, measured) while a migration or an edit of
# alembic_version is still noticed within seconds.
SCHEMA_RECHECK_S = 5.0


def require_current_schema(ledger: Ledger) -> None:
    """Before a write (an append, a run failed by hand): :class:`ledger.SchemaError`, answered
    503 ``schema-not-current``, unless the database is still at the schema revision this code
    knows. A database migrated by a newer release, or an edited ``alembic_version``, is not
    written by code that may no longer describe its tables (``/readyz`` says so as well)."""
    ledger.check_schema(max_age_s=SCHEMA_RECHECK_S)


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
