"""``ApiState``: what every endpoint of one app shares (the config, the ledgers, the tokens,
the spool, the slots for expensive requests and for writes, the outage log)."""

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
from starlette.concurrency import run_in_threadpool

from connectors import Spool
from ledger import Ledger
from ledger.outage import Outage
from service.api.auth import Tokens
from service.api.limits import AuthFailures
from service.api.problems import ApiProblem, database_busy_problem, expensive_slot
from service.config import LedgerConfig

log = logging.getLogger("service.api")

T = TypeVar("T")

# How long a passed schema check stands for the writes after it: one query per 5 s rather than
# one per write (0.5 ms on SQLite, 2 ms on MariaDB, measured) while a migration or an edit of
# alembic_version is still noticed within seconds.
SCHEMA_RECHECK_S = 5.0


def write_slots_for(ledger: Ledger) -> int:
    """How many writes (appends, runs failed by hand) run at once: a third of the ledger's pool
    (5 of SQLAlchemy's default 5 + 10). Writes take the head lock one at a time, so more in
    flight would only wait on it, each holding a worker thread and a connection; this way
    reads keep two thirds of the connections, and all but these of the worker threads, while
    a lock held elsewhere blocks every write."""
    limit = ledger.connection_limit
    return 5 if limit is None else max(1, limit // 3)


def require_current_schema(ledger: Ledger) -> None:
    """Before a write (an append, a run failed by hand): :class:`ledger.SchemaError`, answered
    503 ``schema-not-current``, unless the database is still at the schema revision this code
    knows. A database migrated by a newer release, or an edited ``alembic_version``, is not
    written by code that may no longer describe its tables (``/readyz`` says so as well)."""
    ledger.check_schema(max_age_s=SCHEMA_RECHECK_S)


async def in_write_slot(
    slots: anyio.CapacityLimiter, config: LedgerConfig, work: Callable[[], T]
) -> T:
    """``work()`` (an append, a run failed by hand, from the API or the web view's form) in a
    worker thread, holding one of ``slots``. A write that gets none within ``[api]
    database_timeout`` (the writes before it all waiting on a lock held elsewhere) is 503
    ``database-busy``: it waited on the event loop, holding no thread, and never waits
    longer."""
    try:
        # A free slot is taken at once; only a wait for one needs the deadline's cancel scope
        # (a third of the time this added to an append when always made).
        slots.acquire_nowait()
    except anyio.WouldBlock:
        await _wait_for_write_slot(slots, config)
    try:
        return await run_in_threadpool(work)
    finally:
        slots.release()


async def _wait_for_write_slot(slots: anyio.CapacityLimiter, config: LedgerConfig) -> None:
    try:
        with anyio.fail_after(config.api.database_timeout.total_seconds()):
            await slots.acquire()
    except TimeoutError:
        total = int(slots.total_tokens)
        log.warning(
            "busy: all %d write slots stayed taken for [api] database_timeout "
            "(the writes in them waiting on the database)",
            total,
        )
        raise database_busy_problem(
            f"the {total} writes this server runs at once were all waiting on the database"
        ) from None


@dataclass
class ApiState:
    config: LedgerConfig
    ledger: Ledger
    scrape_ledger: Ledger
    tokens: Tokens
    spool: Spool
    expensive_slots: threading.BoundedSemaphore
    auth_failures: AuthFailures
    write_slots: anyio.CapacityLimiter  # see write_slots_for
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

    async def write(self, work: Callable[[], T]) -> T:
        """``work()`` (an append, a run failed by hand) in a worker thread, holding one of the
        write slots (:func:`in_write_slot`)."""
        return await in_write_slot(self.write_slots, self.config, work)

    def close(self) -> None:
        self.ledger.close()
        self.scrape_ledger.close()


def _too_many_requests(detail: str, headers: dict[str, str]) -> ApiProblem:
    return ApiProblem(429, "too-many-requests", "Too many requests", detail, headers=headers)
