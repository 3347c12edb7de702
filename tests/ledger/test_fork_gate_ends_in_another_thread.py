"""A write transaction that ends in another thread than the one that began it leaves the fork
gate as its own thread's entry, not the ending thread's.

Review 35: a transaction held inside a generator ends wherever the generator is closed or
collected (another thread's ``close()``, the garbage collector running in any thread, a
streaming response whose items are read by different workers). ``FORK_GATE.leave()`` took
the ending thread's entry: the beginning thread's entry stayed for ever, so every later fork
waited the whole :data:`ledger.fork_gate.FORK_WAIT_S` (30 s) for a transaction long gone and
warned that the child may find the database locked; and had the ending thread a transaction
of its own, that one was dropped from the gate, and a fork no longer waited for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from sqlalchemy import Connection

from ledger import Ledger, fork_gate
from ledger.fork_gate import FORK_GATE, ForkGate

T = TypeVar("T")


def _in_thread(work: Callable[[], T]) -> T:
    """``work()`` in a thread of its own, which then ends."""
    done: list[T] = []
    worker = threading.Thread(target=lambda: done.append(work()))
    worker.start()
    worker.join(10)
    assert done, "the worker did not finish"
    return done[0]


def test_a_transaction_closed_in_another_thread_leaves_no_fork_waiting(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def holding() -> Iterator[Connection]:
        with ledger.transaction("hold") as conn:
            yield conn

    transaction = holding()
    _in_thread(lambda: next(transaction))  # begun in a worker that then ends
    transaction.close()  # ended here, as a collector or another worker would end it
    ledger.start_run(1, "after")  # the ledger writes on

    # A fork now waits for nothing: it would have waited FORK_WAIT_S for the worker's entry.
    monkeypatch.setattr(fork_gate, "FORK_WAIT_S", 0.2)
    with caplog.at_level(logging.DEBUG, logger="ledger.fork_gate"):
        FORK_GATE.before_fork()
        FORK_GATE.after_fork_in_parent()
    assert [r.getMessage() for r in caplog.records] == []


def test_the_ending_thread_keeps_its_own_transaction_in_the_gate() -> None:
    gate = ForkGate()
    worker_entry = _in_thread(gate.enter)
    own = gate.enter()  # this thread's own transaction, in flight
    gate.leave(worker_entry)
    # A fork from another thread still waits for this one, and only for it.
    assert gate._others(threading.get_ident() + 1) == 1
    gate.leave(own)
    assert gate._others(threading.get_ident() + 1) == 0


def test_a_thread_inside_a_transaction_nests_another_while_a_fork_waits_for_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The nested transaction must begin at once (the fork waits for the outer one, which
    # cannot end before it): had it waited for the fork, both would wait until the bound.
    monkeypatch.setattr(fork_gate, "FORK_WAIT_S", 10.0)
    gate = ForkGate()
    outer = gate.enter()
    forking = threading.Thread(target=lambda: (gate.before_fork(), gate.after_fork_in_parent()))
    with caplog.at_level(logging.DEBUG, logger="ledger.fork_gate"):
        forking.start()
        deadline = time.monotonic() + 10
        while not gate._forking:
            assert time.monotonic() < deadline, "the fork did not begin"
            time.sleep(0.001)
        started = time.monotonic()
        nested = gate.enter()
        assert time.monotonic() - started < 5, "the nested transaction waited for the fork"
        gate.leave(nested)
        gate.leave(outer)
        forking.join(10)
    assert not forking.is_alive()
    assert [r.levelname for r in caplog.records] == ["DEBUG"]  # it waited, and did not give up
    assert gate._others(threading.get_ident() + 1) == 0
