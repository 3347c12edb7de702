"""One rebuild at a time per projection, across every node of the database.

A rebuild's local lock (a named lock on MySQL, a file lock beside a SQLite file) holds on one
server only: on a Galera cluster a rebuild started through another node takes that node's lock
and would drop this one's shadow tables under it. A row in ``rebuild_claims`` is what the whole
cluster agrees on: two nodes inserting, or taking over, the same row at once do not both commit
(the second loses the certification, 1213, runs again and finds the winner's row).

The holder renews ``heartbeat_at`` from a thread while it works and deletes the row when it
ends. A row left by a process that died is taken over:

* once its heartbeat is older than :data:`LOCAL_TTL` when it was claimed through the node
  whose local lock this process now holds: no lock session of the holder is left there, but
  that session may have been cut (a proxy's idle timeout, a DBA's KILL) under a rebuild that
  goes on, and a live holder renews every :data:`HEARTBEAT_EVERY`;
* otherwise once its heartbeat is older than :data:`CLAIM_TTL`.

Every time here is the ledger's clock (:meth:`ledger.Ledger.clock`, the database server's), as
the sweeper's: the claimant's and the reader's hosts may disagree by minutes. A rebuild that could
not renew its claim for :data:`CLAIM_TTL` by that clock (its last heartbeat against the clock's
now, so a machine suspended meanwhile counts), or found it taken over, stops before its swap
(:meth:`RebuildClaim.check`): the live tables are untouched.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, delete, insert, select, update

from ledger import ConstraintError, Ledger, LedgerError
from ledger.clock import labelled_utc
from ledger.conflicts import retrying_conflicts
from projections.errors import ProjectionBusyError
from projections.schema import rebuild_claims

log = logging.getLogger(__name__)

CLAIM_TTL = timedelta(seconds=60)
HEARTBEAT_EVERY = timedelta(seconds=10)
LOCAL_TTL = 2 * HEARTBEAT_EVERY  # through the node whose lock this process holds


class _ClaimMoved(Exception):
    """The row changed between this transaction's read and its write: read it again."""


class RebuildClaim:
    """This process's claim on rebuilding ``projection``, taken through database ``node``."""

    def __init__(self, ledger: Ledger, projection: str, node: str) -> None:
        self.ledger = ledger
        self.projection = projection
        self.node = node[:200]
        self.claimed_by = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[-200:]
        self._stop = threading.Event()
        self._lost: str | None = None
        self._heard_at: datetime | None = None  # the heartbeat_at it last wrote
        self._heartbeat: threading.Thread | None = None

    def take(self) -> None:
        """Claim the rebuild, or raise :class:`ProjectionBusyError` naming who holds it."""
        retrying_conflicts(
            self._take_once, f"rebuild claim of {self.projection}", (ConstraintError, _ClaimMoved)
        )
        self._heartbeat = threading.Thread(
            target=self._renew_until_stopped, name=f"rebuild-claim-{self.projection}", daemon=True
        )
        self._heartbeat.start()

    def check(self, conn: Connection | None = None) -> None:
        """Raise :class:`ProjectionBusyError` if the claim may no longer be this process's; with
        ``conn``, renew the claim row in its transaction rather than trust the last renewal: a
        write, which a Galera cluster certifies (a read on this node may trail a takeover that
        another node committed; this transaction then loses the certification, 1213)."""
        assert self._heard_at is not None, "check() before take()"
        now = self.ledger.clock()
        silent = now - self._heard_at
        if self._lost is None and silent >= CLAIM_TTL:
            self._lost = f"not renewed for {int(silent.total_seconds())} s"
        if conn is not None and self._lost is None:
            renewed = conn.execute(
                update(rebuild_claims).where(*self._own_row()).values(heartbeat_at=now)
            )
            if renewed.rowcount == 1:
                self._heard_at = now
            else:
                holder = conn.execute(
                    select(rebuild_claims.c.claimed_by).where(
                        rebuild_claims.c.projection == self.projection
                    )
                ).scalar()
                self._lost = f"{holder or 'nobody'} holds it now"
        if self._lost is not None:
            raise ProjectionBusyError(
                f"the rebuild of {self.projection} lost its claim ({self._lost}); "
                "it stopped before swapping its tables in: run it again"
            )

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()

        def delete_own() -> None:
            with self.ledger.transaction("rebuild") as conn:
                conn.execute(delete(rebuild_claims).where(*self._own_row()))

        try:
            retrying_conflicts(delete_own, f"release of the rebuild claim of {self.projection}")
        except LedgerError as exc:  # the next rebuild through this node takes the row over
            log.warning("could not release the rebuild claim of %s: %s", self.projection, exc)

    def _take_once(self) -> None:
        with self.ledger.transaction("rebuild") as conn:
            row = (
                conn.execute(
                    select(rebuild_claims).where(rebuild_claims.c.projection == self.projection)
                )
                .mappings()
                .first()
            )
            now = self.ledger.clock()
            if row is None:
                conn.execute(
                    insert(rebuild_claims).values(
                        projection=self.projection,
                        claimed_by=self.claimed_by,
                        node=self.node,
                        claimed_at=now,
                        heartbeat_at=now,
                    )
                )
                self._heard_at = now
                return
            age = now - row["heartbeat_at"]
            ttl = LOCAL_TTL if row["node"] == self.node else CLAIM_TTL
            if age < ttl:
                raise ProjectionBusyError(
                    f"another rebuild of {self.projection} is running ({row['claimed_by']}, "
                    f"through database node {row['node']}, since "
                    f"{labelled_utc(row['claimed_at'])}; last heard of "
                    f"{int(age.total_seconds())} s ago): if it is gone, its claim lapses "
                    f"{int(ttl.total_seconds())} s after that"
                )
            log.warning(
                "taking over the lapsed rebuild claim of %s from %s (node %s, last heard of %s)",
                self.projection,
                row["claimed_by"],
                row["node"],
                labelled_utc(row["heartbeat_at"]),
            )
            taken = conn.execute(
                update(rebuild_claims)
                .where(
                    rebuild_claims.c.projection == self.projection,
                    rebuild_claims.c.claimed_by == row["claimed_by"],
                    # As read: a renewal committed since (MySQL's read took no lock) is a
                    # live holder, not a lapsed one.
                    rebuild_claims.c.heartbeat_at == row["heartbeat_at"],
                )
                .values(
                    claimed_by=self.claimed_by, node=self.node, claimed_at=now, heartbeat_at=now
                )
            )
            if taken.rowcount != 1:
                raise _ClaimMoved
            self._heard_at = now

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY.total_seconds()):
            try:
                renewed = retrying_conflicts(
                    self._renew_once, f"rebuild claim of {self.projection}", stop=self._stop
                )
            except LedgerError as exc:  # check() stops the rebuild once the TTL has passed
                log.warning("could not renew the rebuild claim of %s: %s", self.projection, exc)
                continue
            if not renewed:
                self._lost = "another rebuild took it over"
                return

    def _renew_once(self) -> bool:
        now = self.ledger.clock()
        if self._heard_at is not None and now - self._heard_at < HEARTBEAT_EVERY / 2:
            # A replay transaction renewed it moments ago (and holds its row until it
            # commits): this renewal would only wait behind it.
            return True
        with self.ledger.transaction("rebuild") as conn:
            result = conn.execute(
                update(rebuild_claims).where(*self._own_row()).values(heartbeat_at=now)
            )
        if result.rowcount == 1:
            self._heard_at = now
        return result.rowcount == 1

    def _own_row(self) -> tuple[ColumnElement[bool], ...]:
        return (
            rebuild_claims.c.projection == self.projection,
            rebuild_claims.c.claimed_by == self.claimed_by,
        )
