"""A spool flush SIGKILLed half-way (I3, I9): the process delivering a connector's backlog dies
after part of it is in the ledger but before the spool knew. The spool keeps every event it
had not committed as delivered (each page is one transaction: at most the page in flight is in
both), the next flush delivers the rest and finds that page already stored: each fact is in
the ledger exactly once, in spool order, and the chain verifies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from connectors import Spool
from forensics.verify import verify_all
from ledger import Ledger, RunProgressed
from tests.reliability.summary import Summary
from tests.reliability.support import REPO, kill_when

EVENTS = 2_000
BATCH = 5  # 400 appends: the kill lands well before the last
# The flusher: the spool's own flush, in small batches, as `ledger spool flush` runs it.
FLUSHER = """
import sys
from connectors import Spool
from ledger import Ledger
Spool(sys.argv[1]).flush(Ledger.from_url(sys.argv[2]), batch_size=int(sys.argv[3]))
"""


def test_a_flush_killed_half_way_delivers_each_event_once(
    ledger: Ledger, db_url: str, backend: str, tmp_path: Path, reliability: Summary
) -> None:
    spool = Spool(tmp_path / "spool")
    runs = [ledger.start_run(source, f"SOURCE_{source}") for source in (1, 2, 3)]
    events = [RunProgressed(run_id=runs[i % 3], records_fetched=1) for i in range(EVENTS)]
    spool.put(events)  # an outage's backlog
    start = ledger.head().last_position

    process = subprocess.Popen(
        [sys.executable, "-c", FLUSHER, str(spool.folder), db_url, str(BATCH)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_when(
        lambda: ledger.head().last_position >= start + 20 * BATCH,
        process,
        "the flush delivered a part of the backlog",
    )
    delivered_at_kill = ledger.head().last_position - start
    assert 0 < delivered_at_kill < EVENTS, "the kill did not land mid-flush"
    pending = spool.status().pending
    undelivered = EVENTS - delivered_at_kill
    # Each page's deletes commit with it: only the page in flight at the kill is in both.
    assert undelivered <= pending <= undelivered + BATCH

    result = spool.flush(ledger)

    assert (result.delivered, result.duplicates, result.rejected, result.remaining) == (
        undelivered,
        pending - undelivered,
        0,
        0,
    )
    stored = [e for e in ledger.read_all(after=start) if e.type == "RunProgressed"]
    assert [e.event_id for e in stored] == [str(e.event_id) for e in events]  # once, in order
    assert [e.position for e in stored] == list(range(start + 1, start + EVENTS + 1))
    assert sum(ledger.run(run_id).version for run_id in runs) == 3 + EVENTS  # type: ignore[union-attr]
    assert verify_all(ledger).ok
    reliability.record(
        "spool flush killed",
        backend,
        f"a spool flush of {EVENTS:,} events ({BATCH} an append) SIGKILLed after "
        f"{delivered_at_kill} were in the ledger, then flushed again",
        f"the spool still held {pending:,} (the pages it had committed as delivered gone); the "
        f"second flush delivered {undelivered:,} and found {pending - undelivered} stored: each "
        "event once, in spool order, gapless positions, verify passes",
    )
