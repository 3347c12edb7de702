"""``Spool.flush`` pages the backlog by ``seq``, on SQLite and on MariaDB: a backlog over many
pages is delivered in spool order, exactly once, with a refused row set aside mid-way; an
outage between two pages keeps the rest for the next flush; and a backlog far larger than a
page is delivered in the memory of a page, not of the whole backlog."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from connectors import Spool
from ledger import DatabaseUnreachableError, Ledger, RunFinished, RunProgressed, ValidationError


def fetched_in_ledger_order(ledger: Ledger) -> list[int]:
    return [
        e.payload_data["records_fetched"] for e in ledger.read_all() if e.type == "RunProgressed"
    ]


def test_a_backlog_of_many_pages_is_delivered_in_order_once(ledger: Ledger, spool: Spool) -> None:
    runs = [ledger.start_run(source, "SOURCE") for source in (1, 2, 3)]
    for start in range(0, 23, 4):  # spooled by several puts, the runs interleaved
        spool.put(
            [
                RunProgressed(run_id=runs[n % 3], records_fetched=n + 1)
                for n in range(start, min(start + 4, 23))
            ]
        )
    spool.put([RunProgressed(run_id=9999, records_fetched=100)])  # never started: refused
    spool.put([RunProgressed(run_id=runs[0], records_fetched=24)])
    result = spool.flush(ledger, batch_size=5)  # 25 rows: 5 pages, the 5th with the refusal
    assert (result.delivered, result.duplicates, result.rejected, result.remaining) == (
        24,
        0,
        1,
        0,
    )
    assert fetched_in_ledger_order(ledger) == list(range(1, 25))
    assert [r["run_id"] for r in spool.rejected()] == [9999]
    again = spool.flush(ledger, batch_size=5)
    assert (again.delivered, again.remaining) == (0, 0)
    assert fetched_in_ledger_order(ledger) == list(range(1, 25))


def test_an_outage_between_two_pages_keeps_the_rest(
    ledger: Ledger, spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = ledger.start_run(1, "SOURCE")
    spool.put([RunProgressed(run_id=run_id, records_fetched=n) for n in range(1, 13)])
    real_append = Ledger.append
    calls: list[int] = []

    def unreachable_at_the_second_page(self: Ledger, events: Any, **kwargs: Any) -> Any:
        calls.append(len(events))
        if len(calls) == 2:
            raise DatabaseUnreachableError("connection refused (the database went away)")
        return real_append(self, events, **kwargs)

    monkeypatch.setattr(Ledger, "append", unreachable_at_the_second_page)
    cut = spool.flush(ledger, batch_size=5)
    assert (cut.delivered, cut.remaining) == (5, 7)
    assert calls == [5, 5]  # no page read after the outage was sent
    monkeypatch.undo()
    spool.put([RunProgressed(run_id=run_id, records_fetched=13)])  # spooled meanwhile: last
    assert spool.status().pending == 8
    rest = spool.flush(ledger, batch_size=5)
    assert (rest.delivered, rest.duplicates, rest.remaining) == (8, 0, 0)
    assert fetched_in_ledger_order(ledger) == list(range(1, 14))
    assert [e.version for e in ledger.read_run(run_id)] == list(range(1, 15))


def test_a_backlog_larger_than_a_page_is_delivered_in_the_memory_of_a_page(
    ledger: Ledger, spool: Spool
) -> None:
    # 100 RunFinished of 100 KB each, 10 MB spooled: the flush read all of it into memory
    # (fetchall) before sending the first page; 11 MB at its peak, 1.8 MB paged by 5.
    runs = [ledger.start_run(1, "SOURCE") for _ in range(100)]
    spool.put([RunFinished(run_id=r, status="failed", error_message="x" * 100_000) for r in runs])
    tracemalloc.start()
    try:
        result = spool.flush(ledger, batch_size=5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (result.delivered, result.remaining) == (100, 0)
    assert peak < 5_000_000, f"peak {peak:,} bytes for a 10 MB backlog paged by 5"
    assert all(ledger.run(r).state == "finished" for r in runs)  # type: ignore[union-attr]


@pytest.mark.parametrize("size", [0, -1, 2.5, True, "5"])
def test_a_batch_size_that_is_not_a_whole_number_above_zero_is_refused(
    ledger: Ledger, spool: Spool, size: Any
) -> None:
    spool.put([RunProgressed(run_id=1, records_fetched=1)])
    with pytest.raises(ValidationError, match="batch_size"):
        spool.flush(ledger, batch_size=size)
    assert spool.status().pending == 1


def test_an_outage_in_a_page_sent_one_by_one_counts_what_it_delivered(
    ledger: Ledger, spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page the ledger refused is sent one event at a time; an outage half-way through it
    kept what it had delivered and set aside deleted from the spool (the page's COMMIT), but
    the flush reported none of it (the first page: raised as if nothing was delivered)."""
    run_id = ledger.start_run(1, "SOURCE")
    spool.put([RunProgressed(run_id=run_id, records_fetched=1)])
    spool.put([RunProgressed(run_id=9999, records_fetched=100)])  # never started: refused
    spool.put([RunProgressed(run_id=run_id, records_fetched=n) for n in range(2, 5)])
    real_append = Ledger.append
    calls: list[int] = []

    def unreachable_at_the_fourth_append(self: Ledger, events: Any, **kwargs: Any) -> Any:
        calls.append(len(events))
        if len(calls) == 4:  # the page, then 1 and 9999 one by one: 2 cannot be sent
            raise DatabaseUnreachableError("connection refused (the database went away)")
        return real_append(self, events, **kwargs)

    monkeypatch.setattr(Ledger, "append", unreachable_at_the_fourth_append)
    cut = spool.flush(ledger, batch_size=5)
    assert calls == [5, 1, 1, 1]
    assert (cut.delivered, cut.duplicates, cut.rejected, cut.remaining) == (1, 0, 1, 3)
    monkeypatch.undo()
    rest = spool.flush(ledger, batch_size=5)
    assert (rest.delivered, rest.duplicates, rest.rejected, rest.remaining) == (3, 0, 0, 0)
    assert fetched_in_ledger_order(ledger) == [1, 2, 3, 4]
    assert [r["run_id"] for r in spool.rejected()] == [9999]
