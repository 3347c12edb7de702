"""One appender process of the reliability load test (issue 8, item 1).

usage: load_worker.py URL WORKER SEED EVENTS SHARED_RUN_IDS

Appends until it has stored EVENTS new events, mixing what real writers do:
* progress on its own runs, one event per transaction (the connector path) or in batches;
* finishing a run and starting the next;
* retries: the last batch sent again as is (same event ids), as after a lost reply; the ledger
  must store nothing and return the positions stored the first time;
* optimistic writes to runs shared by every worker, with ``expected_version`` read just before:
  a ConcurrencyError is the expected answer when another worker wrote in between; the worker
  re-reads the version and sends the same event again until it is stored.

Prints one JSON report of what the ledger said it stored, so the test can account for every
event independently of the database.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from typing import Any

from ledger import (
    AppendResult,
    ConcurrencyError,
    EventModel,
    Ledger,
    RunFinished,
    RunProgressed,
    RunStarted,
    StorageError,
)

MAX_STORAGE_RETRIES = 20


class Worker:
    def __init__(self, url: str, worker: int, seed: str, target: int, shared: list[int]) -> None:
        self.ledger = Ledger.from_url(url)
        self.worker = worker
        self.rng = random.Random(f"{seed}-{worker}")
        self.target = target
        self.shared = shared
        self.stored: list[str] = []  # event ids the ledger said this worker stored
        self.fetched: Counter[int] = Counter()  # records_fetched stored, per run
        self.counts: Counter[str] = Counter()
        self.own_runs: list[int] = []
        self.last: tuple[list[EventModel], AppendResult] | None = None

    # ------------------------------------------------------------------ appending

    def send(self, events: list[EventModel], expected_version: int | None = None) -> AppendResult:
        """Append; a storage failure (lock wait, deadlock) is retried with the same events, which
        the ledger's idempotency makes safe."""
        for attempt in range(1, MAX_STORAGE_RETRIES + 1):
            try:
                result = self.ledger.append(events, expected_version=expected_version)
            except StorageError:
                self.counts["storage_retries"] += 1
                if attempt == MAX_STORAGE_RETRIES:
                    raise
                continue
            self.account(result)
            return result
        raise AssertionError("unreachable")

    def account(self, result: AppendResult) -> None:
        for event in result.new_events:
            self.stored.append(str(event.event_id))
            if event.type == "RunProgressed":
                self.fetched[event.run_id] += int(event.payload_data.get("records_fetched", 0))

    def progress(self, run_id: int) -> RunProgressed:
        return RunProgressed(
            run_id=run_id,
            records_fetched=self.rng.randint(0, 1000),
            records_created=self.rng.randint(0, 10),
            actor=f"load-worker-{self.worker}",
        )

    # ------------------------------------------------------------------ operations

    def start_run(self) -> None:
        started = RunStarted(source_id=self.worker, connector_name=f"LOAD_{self.worker}")
        result = self.send([started])
        self.own_runs.append(result.events[0].run_id)
        self.counts["runs_started"] += 1

    def single(self) -> None:
        events: list[EventModel] = [self.progress(self.rng.choice(self.own_runs))]
        self.last = (events, self.send(events))
        self.counts["single_appends"] += 1

    def batch(self) -> None:
        events: list[EventModel] = [
            self.progress(self.rng.choice(self.own_runs)) for _ in range(self.rng.randint(2, 6))
        ]
        self.last = (events, self.send(events))
        self.counts["batch_appends"] += 1

    def finish_and_restart(self) -> None:
        run_id = self.own_runs.pop(self.rng.randrange(len(self.own_runs)))
        events: list[EventModel] = [RunFinished(run_id=run_id, status="success")]
        self.last = (events, self.send(events))
        self.start_run()

    def retry_last(self) -> None:
        if self.last is None:
            return
        events, first = self.last
        again = self.send(events)
        if again.appended != 0 or [e.position for e in again.events] != [
            e.position for e in first.events
        ]:
            raise AssertionError(f"a retry stored something new: {again}")
        self.counts["retries"] += 1
        self.counts["retried_events"] += len(events)

    def contended(self) -> None:
        run_id = self.rng.choice(self.shared)
        event = self.progress(run_id)
        while True:
            state = self.ledger.run(run_id)
            assert state is not None
            try:
                self.send([event], expected_version=state.version)
            except ConcurrencyError:
                self.counts["conflicts"] += 1
                continue  # re-read and send the same event (same event_id) again
            self.counts["contended_appends"] += 1
            return

    def run(self) -> dict[str, Any]:
        for _ in range(3):
            self.start_run()
        operations = (
            (self.single, 40),
            (self.batch, 15),
            (self.finish_and_restart, 5),
            (self.retry_last, 15),
            (self.contended, 25),
        )
        choices, weights = zip(*operations, strict=True)
        while len(self.stored) < self.target:
            self.rng.choices(choices, weights)[0]()
        self.ledger.close()
        return {
            "worker": self.worker,
            "stored": self.stored,
            "fetched": {str(k): v for k, v in self.fetched.items()},
            "counts": dict(self.counts),
        }


def main() -> None:
    url, worker, seed, target = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    shared = [int(x) for x in sys.argv[5].split(",")]
    print(json.dumps(Worker(url, worker, seed, target, shared).run()))


if __name__ == "__main__":
    main()
