"""A fork waits for the SQLite write transactions in flight in its process.

SQLite keeps a file's POSIX locks per process, in memory shared by all its connections. A
process forked (``os.fork``, ``multiprocessing``'s fork) while another thread of the parent was
inside a write transaction inherited the record of the write lock, but not the lock itself,
and no thread of its own would ever release it: every write of the child failed ``database is
locked`` after the busy timeout, even once the parent had committed (review 30). So each SQLite
write transaction (:func:`ledger.dialects.write_transaction`, the append's
:func:`ledger.dialects.append_transaction`, the SDK spool's connections in
:mod:`connectors.spool`, each from its open to its close: closing a WAL file's last
connection checkpoints it under an exclusive lock) is entered here, and
``os.register_at_fork``'s ``before`` waits until none is in flight and lets none begin until
the fork has returned, in the parent and in the child. A transaction begun DEFERRED that
writes (a rebuild's shadow tables, a migration) is not entered: the processes that run those
do not fork.

Two waits could be forever, and are not: a fork from a thread that is itself inside a write
transaction does not wait for that one (it never ends while its thread forks), and the wait
for the others is bounded (:data:`FORK_WAIT_S`, the SQLite busy timeout a child's write would
have waited anyway): a transaction that waits for the forking thread cannot deadlock the fork.
Either way the fork goes on as it did before this gate, with a warning: the child may not be
able to write that file.

Cost on the append's hot path: a few dict operations, no lock (see :meth:`ForkGate.enter`):
0.4 µs a transaction (benchmarks/RESULTS.md). MySQL/MariaDB transactions are not entered: a
server's locks belong to its sessions, and a child opens its own (:mod:`ledger.database`).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from threading import get_ident

log = logging.getLogger(__name__)

# How long a fork waits for the write transactions of other threads (SQLite's busy timeout,
# :data:`ledger.sqlite_engine.SQLITE_BUSY_TIMEOUT_MS`, the longest a child's write would wait).
FORK_WAIT_S = 30.0


class ForkGate:
    """The write transactions in flight in this process, which a fork waits for."""

    def __init__(self) -> None:
        # Each transaction's entry is a number of its own (``next`` of a count is atomic under
        # the GIL), so that entering and leaving are each one dict operation of that entry,
        # whichever thread ends it: a count per thread was a read and a write another thread
        # ending a transaction of the same thread could interleave with.
        self._numbers = itertools.count(1)
        self._reset({})

    def _reset(self, entries: dict[int, int]) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # Entry -> the thread that entered it (a thread nesting transactions has several).
        self._entries = entries
        self._forking = False

    # enter and leave, on every SQLite write transaction, take no lock: each is one dict
    # operation of its own entry, and the fork's ``before`` sets ``_forking`` before it reads
    # the entries, as ``enter`` writes its entry before it reads ``_forking``: either the fork
    # sees the entry and waits for it, or the thread sees the fork and backs out until it is
    # done (:meth:`_wait_for_fork`).

    def enter(self) -> int:
        """A write transaction begins (before its BEGIN): waits while a fork is under way,
        unless this thread is inside one already (the fork would wait for it). Returns the
        entry to give :meth:`leave`."""
        ident = get_ident()
        entry = next(self._numbers)
        self._entries[entry] = ident
        if self._forking:
            self._wait_for_fork(entry, ident)
        return entry

    def leave(self, entry: int) -> None:
        """The write transaction :meth:`enter` returned ``entry`` for ended (committed, rolled
        back, or its connection closed): a fork waiting for it may go on. Named by the entry,
        not by the thread that ends it: a transaction inside a generator may end in another
        thread (the generator closed or collected there, a streaming response's next item
        read by another worker)."""
        self._entries.pop(entry, None)
        if self._forking:
            with self._lock:
                self._changed.notify_all()

    def _wait_for_fork(self, entry: int, ident: int) -> None:
        with self._lock:
            if self._owned_by(ident) > 1:
                return  # inside a transaction already: the fork waits for that one
            del self._entries[entry]  # not begun: the fork need not wait for it
            self._changed.notify_all()
            while self._forking:
                self._changed.wait()
            self._entries[entry] = ident

    def before_fork(self) -> None:
        """Wait for the other threads' write transactions to end, and hold the gate shut
        (its lock kept) until :meth:`after_fork_in_parent` or :meth:`after_fork_in_child`."""
        ident = get_ident()
        self._lock.acquire()
        self._forking = True
        others = self._others(ident)
        if others:
            log.debug("fork waits for %d SQLite write transaction(s) in flight", others)
            deadline = time.monotonic() + FORK_WAIT_S
            while others:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning(
                        "fork waited %g s for %d SQLite write transaction(s) of other "
                        "threads and goes on: the child may find the database locked",
                        FORK_WAIT_S,
                        others,
                    )
                    break
                self._changed.wait(left)
                others = self._others(ident)
        if self._owned_by(ident):
            log.warning(
                "fork from a thread inside a SQLite write transaction: the child may find the "
                "database locked (fork before or after the transaction)"
            )

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._changed.notify_all()
        self._lock.release()

    def after_fork_in_child(self) -> None:
        # The child's only thread is the one that forked: the other threads' entries, their
        # waits and the lock they shared stayed behind. Its own transaction, if it forked
        # inside one, still ends in the child and leaves the gate then.
        ident = get_ident()
        self._reset({e: owner for e, owner in self._snapshot() if owner == ident})

    def _snapshot(self) -> list[tuple[int, int]]:
        # Copied in one C call, which other threads' enter and leave cannot interleave with.
        return list(self._entries.items())

    def _owned_by(self, ident: int) -> int:
        return sum(1 for _, owner in self._snapshot() if owner == ident)

    def _others(self, ident: int) -> int:
        return sum(1 for _, owner in self._snapshot() if owner != ident)


FORK_GATE = ForkGate()

os.register_at_fork(
    before=FORK_GATE.before_fork,
    after_in_parent=FORK_GATE.after_fork_in_parent,
    after_in_child=FORK_GATE.after_fork_in_child,
)
