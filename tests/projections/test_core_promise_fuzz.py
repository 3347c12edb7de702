"""The ledger's core promise (issue 12, DESIGN.md) as one hostile state machine, on SQLite and
MariaDB.

Batches drawn over the edges of the accepted domain are appended, through ``Ledger.append`` or
as ``ledger append``'s JSON Lines, at the run's ``expected_version`` when about one run:
several runs and ``run_ref``s in one batch, an event repeated inside its batch, explicit run
ids up to 2^31-1, names of every plane at their length limit, counters at the INT bounds,
messages at the legacy TEXT edge and payloads at 1 MiB, ``error_details`` and ``metadata`` at
the nesting limit and under the keys the ledger reserves, ``occurred_at`` from
1970-01-01T00:00:01Z to the skew guard's last microsecond in ±14 h zones, 1 µs apart, out of
order. Interleaved: retries of whole accepted batches (the same event ids: nothing new),
refused batches (a good event before a bad one: nothing written), the clock moved by 1 µs to
hours and stepped back, the real sweeper with each connector's own thresholds,
an operator failing a run, projector batches of random sizes.

Checked as it goes: the live table equals the pure fold of the events ``append`` returned (in
memory, never read back) and a replay; after every sweep no run past its deadline is open.
At the end: a rebuild equals the live projection; as of each batch's position, and as of its
``recorded_at`` (and 1 µs before it), the replay equals the table the projector had then;
``verify`` passes; every run's audit, the report (live and as of a past position) and
``ledger runs show`` read every accepted event.

``LEDGER_FUZZ_EXAMPLES`` and ``LEDGER_FUZZ_STEPS`` raise the budget for a local hunt.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from hypothesis import HealthCheck, note, settings
from hypothesis import event as label
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from forensics import audit_run, build_report, verify_all
from ledger import (
    EventModel,
    Ledger,
    LedgerError,
    RecordedEvent,
    RunFinished,
    RunProgressed,
    RunStarted,
    RunTimedOut,
    fail_run,
    sweep,
)
from ledger.batch_checks import MAX_CLOCK_SKEW, MAX_PAYLOAD_BYTES
from ledger.events import (
    ACTOR_NAME_MAX,
    CONNECTOR_NAME_MAX,
    EARLIEST_TIME,
    MAX_RUN_ID,
    REASON_MAX,
    actor_problem,
    name_problem,
)
from ledger.limits import MAX_JSON_DEPTH
from ledger.mapper import event_to_wire, payload_json
from ledger.stuck import DEFAULT_STALE_AFTER, Thresholds, stuck_runs, stuck_runs_as_of
from ledger.wire import append_lines, read_lines
from projections import Projector, rebuild, resolve_position, runs_as_of
from projections.as_of import replay_as_of
from projections.fold import LEGACY_TEXT_BYTES, RESERVED_DETAIL_KEYS, Row, fold_events
from service.cli import cli
from tests import support
from tests.projection_support import table_rows, transition_rows

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("LEDGER_FUZZ_EXAMPLES", "6"))
STEPS = int(os.environ.get("LEDGER_FUZZ_STEPS", "25"))

_MICROSECOND = timedelta(microseconds=1)
ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12)), timezone(timedelta(0))]
)
# Where the clock starts: the first second the models take, today, and the year before the
# legacy TIMESTAMP ends.
STARTS = st.sampled_from(
    [
        EARLIEST_TIME + timedelta(minutes=1),
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2037, 1, 19, 3, 14, 7, tzinfo=UTC),
    ]
)
TICKS = st.sampled_from(
    [
        timedelta(microseconds=1),
        timedelta(seconds=1),
        timedelta(minutes=59, seconds=59, microseconds=999_999),
        DEFAULT_STALE_AFTER,
        DEFAULT_STALE_AFTER + timedelta(microseconds=1),
        timedelta(hours=3),
        # The clock stepped back: recorded_at must not follow it (as of T stays a prefix).
        -_MICROSECOND,
        -timedelta(hours=2),
    ]
)

# Every plane; a name: no control, format, separator, private-use or unassigned character,
# and what else the name rule refuses. Letters MariaDB's collations take as equal ("a", "A",
# "á", "ß", "ss") are drawn often, and an inner space.
any_char = st.characters(blacklist_categories=["Cs"])
name_char = st.characters(
    blacklist_categories=["Cs", "Cc", "Cf", "Zs", "Zl", "Zp", "Cn", "Co"]
) | st.sampled_from(["a", "A", "á", "Á", "ß", "s", "İ", "ı", "𝄞", "😀", " ", "\u017f"])


def names(max_size: int) -> st.SearchStrategy[str]:
    at_limit = st.builds(lambda c: c * max_size, st.sampled_from(["a", "é", "€", "𝄞", "Ω"]))
    drawn = st.text(name_char, min_size=1, max_size=max_size) | at_limit
    return drawn.filter(lambda name: name_problem(name) is None)


connector_names = names(CONNECTOR_NAME_MAX) | st.sampled_from(["csv", "CSV", "Csv", "çsv"])
actors = st.none() | names(ACTOR_NAME_MAX).filter(lambda name: actor_problem(name) is None)
any_text = st.text(any_char, max_size=20)
edge_texts = st.sampled_from(
    ["", "\x00", "\ufeff", "a ", " ", "\u200b", "\U0010ffff", "\ud7ff", "\ue000", "\\", '"']
)
scalars = (
    st.none()
    | st.booleans()
    | st.sampled_from([0, -1, 2**31 - 1, 2**31, -(2**63), 2**64, 10**300, 1.5e308, -0.0, 5e-324])
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
    | edge_texts
)
keys = st.sampled_from(sorted(RESERVED_DETAIL_KEYS)) | any_text | edge_texts
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=10,
)


def nested(levels: int, leaf: object) -> object:
    value = leaf
    for level in range(levels):
        value = [value] if level % 2 else {f"l{levels - level}": value}
    return value


# A JSON object nested exactly to the limit (the object itself is one level).
deep_values = st.builds(nested, st.integers(1, MAX_JSON_DEPTH - 1), scalars)
json_objects = st.dictionaries(keys, json_values | deep_values, max_size=4)
# Long text: at the legacy TEXT column's 65,535-byte edge for 1- to 4-byte characters, or
# near the 1 MiB payload limit once JSON escapes it.
long_texts = st.builds(
    lambda char, count: char * count,
    st.sampled_from(["a", "é", "€", "𝄞", '"', "\x01", "\\"]),
    st.sampled_from([16_383, 16_384, 21_845, 21_846, 32_767, 32_768, 65_535, 65_536, 70_000]),
)
messages = st.none() | any_text | edge_texts | long_texts
counters = st.sampled_from([0, 1, 2**31 - 1, 2**30]) | st.integers(0, 2**31 - 1)


@st.composite
def metadata(draw: st.DrawFn, imported: bool) -> dict[str, Any] | None:
    value: dict[str, Any] | None = draw(st.none() | json_objects)
    if imported or (value is not None and draw(st.booleans())):
        value = dict(value or {})
        value["imported"] = imported
        created = draw(
            st.sampled_from([datetime(1970, 1, 1, 0, 0, 1), datetime(2038, 1, 19, 3, 14, 7)])
            | st.datetimes(datetime(1970, 1, 1, 0, 0, 1), datetime(2038, 1, 19, 3, 14, 7))
        )
        value["legacy_created_at"] = created.replace(tzinfo=UTC).astimezone(draw(ZONES)).isoformat()
    return value


def fill_payload(event: EventModel) -> EventModel:
    """``event`` with its error_details grown to the 1 MiB payload limit exactly (multi-byte
    characters: their projected JSON is several times longer)."""
    room = MAX_PAYLOAD_BYTES - len(payload_json(event).encode("utf-8"))
    details = dict(event.error_details or {})  # type: ignore[attr-defined]
    details["fill"] = ""
    room -= len(payload_json(event.model_copy(update={"error_details": details})).encode()) - (
        MAX_PAYLOAD_BYTES - room
    )
    details["fill"] = "é" * (room // 2) + "a" * (room % 2)
    filled = event.model_copy(update={"error_details": details})
    assert len(payload_json(filled).encode("utf-8")) == MAX_PAYLOAD_BYTES
    return filled


class Run:
    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.state = "open"
        self.last_activity: datetime | None = None
        self.started: datetime | None = None
        self.name = ""
        self.source_id = 0


def _machine(store: Any, cli_url: Any) -> type[RuleBasedStateMachine]:
    class Promise(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.ledger: Ledger | None = None
            self.runs: dict[int, Run] = {}
            self.appended: list[RecordedEvent] = []  # as append returned them, in order
            self.accepted: list[list[EventModel]] = []  # batches, to be retried
            self.snapshots: dict[int, tuple[dict[int, Row], list[Any]]] = {}
            self.explicit = 0

        @initialize(start=STARTS)
        def open_ledger(self, start: datetime) -> None:
            note(f"clock starts at {start.isoformat()}")
            self.clock = freeze_time(start)
            self.start = start
            self.frozen = self.clock.start()
            self.ledger = store()

        def teardown(self) -> None:
            try:
                if self.ledger is not None and self.appended:
                    self._final_checks()
            finally:
                if self.ledger is not None:
                    self.ledger.close()
                    self.clock.stop()

        # ------------------------------------------------------------------ drawing events

        def now(self) -> datetime:
            assert self.ledger is not None
            return self.ledger.clock()

        def _when(self, data: st.DataObject, run: Run | None) -> datetime:
            now = self.now()
            latest = now + MAX_CLOCK_SKEW
            choices = [now, latest, now - _MICROSECOND, EARLIEST_TIME]
            if run is not None and run.last_activity is not None:
                last = run.last_activity
                choices += [last, last + _MICROSECOND, last - _MICROSECOND]
            # The guard's range (a last activity may lie beyond it once the clock stepped back).
            choices = [c for c in choices if EARLIEST_TIME <= c <= latest]
            moment = data.draw(
                st.sampled_from(choices)
                | st.integers(0, (now + MAX_CLOCK_SKEW - EARLIEST_TIME) // _MICROSECOND).map(
                    lambda us: EARLIEST_TIME + us * _MICROSECOND
                )
            )
            return moment.astimezone(data.draw(ZONES))

        def _start(
            self, data: st.DataObject, how: str, ref: str | None, taken: Any = ()
        ) -> RunStarted:
            imported = data.draw(st.booleans())
            run_id = None
            if how == "explicit":
                run_id = data.draw(
                    st.sampled_from([MAX_RUN_ID, MAX_RUN_ID - 1 - self.explicit])
                    | st.integers(10_000, MAX_RUN_ID)
                )
                self.explicit += 1
                if run_id in self.runs or run_id in taken:
                    run_id = None
            return RunStarted(
                run_id=run_id,
                run_ref=ref,
                source_id=data.draw(counters),
                connector_name=data.draw(connector_names),
                actor="import:legacy" if imported else data.draw(actors),
                occurred_at=self._when(data, None),
                metadata=data.draw(metadata(imported)),
            )

        def _progress(self, data: st.DataObject, target: dict[str, Any], run: Run | None) -> Any:
            return RunProgressed(
                **target,
                occurred_at=self._when(data, run),
                actor=data.draw(actors),
                records_fetched=data.draw(counters),
                records_created=data.draw(counters),
                records_skipped=data.draw(counters),
                claims_created=data.draw(counters),
                coverage_cells_updated=data.draw(counters),
            )

        def _finish(self, data: st.DataObject, target: dict[str, Any], run: Run | None) -> Any:
            finished = RunFinished(
                **target,
                occurred_at=self._when(data, run),
                actor=data.draw(actors),
                status=data.draw(st.sampled_from(["success", "partial", "failed"])),
                error_message=data.draw(messages),
                error_details=data.draw(st.none() | json_objects),
                records_fetched=data.draw(counters),
                records_updated=data.draw(counters),
            )
            if data.draw(st.integers(0, 9)) == 0:
                return fill_payload(finished)
            return finished

        def _timeout(self, data: st.DataObject, target: dict[str, Any], run: Run | None) -> Any:
            return RunTimedOut(
                **target,
                occurred_at=self._when(data, run),
                actor=data.draw(actors),
                reason=data.draw(
                    st.text(name_char, min_size=1, max_size=40)
                    | st.sampled_from(["x" * REASON_MAX, "𝄞" * REASON_MAX, "\x00"])
                ),
                threshold_seconds=data.draw(
                    st.none() | st.sampled_from([0, 1, 2**31, 2**63, 10**30])
                ),
                last_event_at=data.draw(
                    st.none()
                    | st.sampled_from(
                        [EARLIEST_TIME, datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)]
                    )
                ),
                detected_by=data.draw(
                    st.sampled_from(["operator:al", "sweeper", "operator:" + "𝄞" * 191])
                ),
            )

        # ------------------------------------------------------------------ rules

        @rule(data=st.data(), jsonl=st.booleans())
        def append_batch(self, data: st.DataObject, jsonl: bool) -> None:
            batch: list[EventModel] = []
            # What the batch does to each run, to update the model once it is accepted.
            batch_runs: dict[Any, Run] = self._keys()  # run id or ("ref", label) -> its model
            refs = 0
            for _ in range(data.draw(st.integers(1, 5))):
                live = {key: run for key, run in batch_runs.items() if run.state != "finished"}
                kind = data.draw(
                    st.sampled_from(["start", "progress", "finish", "timeout", "repeat"])
                    if live
                    else st.just("start")
                )
                if kind == "repeat" and batch:
                    batch.append(batch[data.draw(st.integers(0, len(batch) - 1))])  # stored once
                    continue
                if kind in ("start", "repeat"):
                    how = data.draw(st.sampled_from(["ref", "allocated", "explicit"]))
                    ref = None
                    if how == "ref":
                        ref = data.draw(names(ACTOR_NAME_MAX - 4)) + f"#{refs}"
                        refs += 1
                    event = self._start(data, how, ref, batch_runs)
                    run = Run(event.run_id or 0)
                    run.last_activity = event.occurred_at
                    key: Any = ("ref", ref) if ref else ("new", len(batch))
                    if event.run_id is not None:
                        key = event.run_id
                    batch_runs[key] = run
                    batch.append(event)
                    continue
                key = data.draw(st.sampled_from(sorted(live, key=repr)))
                run = live[key]
                if isinstance(key, tuple) and key[0] == "new":
                    continue  # a new run without a ref cannot be named in its own batch
                target = {"run_ref": key[1]} if isinstance(key, tuple) else {"run_id": key}
                if kind == "timeout" and run.state != "open":
                    kind = "progress"
                event = getattr(self, f"_{kind}")(data, target, run)
                batch.append(event)
                if kind == "finish":
                    run.state = "finished"
                elif kind == "timeout":
                    run.state = "timed_out"
                if key not in batch_runs:
                    batch_runs[key] = run
            note(f"append {len(batch)} events ({'jsonl' if jsonl else 'api'})")
            result = self._append(batch, jsonl, self._expected_version(batch, data))
            # The model learns the run ids the ledger gave.
            new_positions = {e.position for e in result.new_events}
            for fact, stored in zip(batch, result.events, strict=True):
                if stored.position not in new_positions:
                    continue  # a repeat of an event earlier in the batch: the same fact
                new_positions.discard(stored.position)
                if isinstance(fact, RunStarted) and stored.run_id not in self.runs:
                    self.runs[stored.run_id] = Run(stored.run_id)
                    self.runs[stored.run_id].started = fact.occurred_at
                    self.runs[stored.run_id].name = fact.connector_name
                    self.runs[stored.run_id].source_id = fact.source_id
                    event_note = "explicit" if fact.run_id else "ref" if fact.run_ref else "new"
                    label(f"run {event_note}")
                label(type(fact).__name__)
                run = self.runs[stored.run_id]
                if run.last_activity is None or fact.occurred_at > run.last_activity:
                    run.last_activity = fact.occurred_at
                if isinstance(fact, RunFinished):
                    run.state = "finished"
                elif isinstance(fact, RunTimedOut):
                    run.state = "timed_out"
            self.accepted.append(batch)
            self.appended += result.new_events
            self._snapshot()

        def _keys(self) -> dict[Any, Run]:
            """The runs as the batch being drawn may change them (copies: a batch that
            fails leaves the model as it was)."""
            copies = {}
            for run_id, run in self.runs.items():
                copy = copies[run_id] = Run(run_id)
                copy.state, copy.last_activity = run.state, run.last_activity
                copy.started, copy.name, copy.source_id = run.started, run.name, run.source_id
            return copies

        def _expected_version(self, batch: list[EventModel], data: st.DataObject) -> int | None:
            """The run's version when the batch is about one run (I4), half the time."""
            runs = {
                e.run_id if e.run_id is not None else ("ref", e.run_ref or e.event_id)
                for e in batch
            }
            if len(runs) != 1 or not data.draw(st.booleans()):
                return None
            (run,) = runs
            return sum(1 for e in self.appended if e.run_id == run)  # a new run: 0

        def _append(
            self, batch: list[EventModel], jsonl: bool, expected_version: int | None = None
        ) -> Any:
            assert self.ledger is not None
            if not jsonl:
                return self.ledger.append(batch, expected_version)
            lines = [json.dumps(event_to_wire(event)).encode() + b"\n" for event in batch]
            read = read_lines(lines)
            assert [event_to_wire(e) for e in read.events] == [event_to_wire(e) for e in batch]
            return append_lines(self.ledger, read, expected_version)

        @precondition(lambda self: bool(self.accepted))
        @rule(data=st.data(), jsonl=st.booleans())
        def retry(self, data: st.DataObject, jsonl: bool) -> None:
            assert self.ledger is not None
            batch = data.draw(st.sampled_from(self.accepted))
            head = self.ledger.head()
            result = self._append(batch, jsonl)
            assert result.new_events == []
            assert self.ledger.head() == head

        @precondition(lambda self: any(run.state == "finished" for run in self.runs.values()))
        @rule(data=st.data())
        def refused(self, data: st.DataObject) -> None:
            """A good event, then one the stream rules refuse: nothing of it is written."""
            assert self.ledger is not None
            finished = sorted(r for r, run in self.runs.items() if run.state == "finished")
            run_id = data.draw(st.sampled_from(finished))
            good = self._start(data, "allocated", None)
            bad = RunProgressed(run_id=run_id, records_fetched=1)
            head = self.ledger.head()
            with pytest.raises(LedgerError):
                self.ledger.append([good, bad])
            assert self.ledger.head() == head

        @rule(tick=TICKS)
        def wait(self, tick: timedelta) -> None:
            if self.now() + tick >= self.start:  # stepped back, never before where it began
                self.frozen.tick(tick)

        @rule(
            data=st.data(),
            stale=st.sampled_from([_MICROSECOND, timedelta(seconds=1), DEFAULT_STALE_AFTER]),
            max_runtime=st.sampled_from([None, _MICROSECOND, timedelta(hours=2)]),
        )
        def sweep_runs(
            self, data: st.DataObject, stale: timedelta, max_runtime: timedelta | None
        ) -> None:
            assert self.ledger is not None
            now = self.now()
            # Each connector's own thresholds: by a run's name, by its (name, source) pair,
            # and by a name that a case- or accent-insensitive collation takes for it.
            overrides: dict[Any, Thresholds] = {}
            chosen: list[int] = []
            if self.runs:
                chosen = data.draw(st.lists(st.sampled_from(sorted(self.runs)), max_size=3))
            for run_id in chosen:
                run = self.runs[run_id]
                key = data.draw(
                    st.sampled_from(
                        [run.name, (run.name, run.source_id), run.name.upper(), run.name + "é"]
                    )
                )
                overrides[key] = Thresholds(
                    data.draw(st.sampled_from([_MICROSECOND, timedelta(days=3650)])),
                    data.draw(st.sampled_from([None, _MICROSECOND, timedelta(days=3650)])),
                )
            head = self.ledger.head().last_position
            stuck = stuck_runs(self.ledger, stale, max_runtime, now, overrides)
            assert stuck == stuck_runs_as_of(self.ledger, head, now, stale, max_runtime, overrides)
            swept = sweep(self.ledger, None, False, stale, max_runtime, overrides)
            label(f"swept {min(len(swept.timed_out), 3)}")
            assert [s.run_id for s in swept.timed_out] == [s.run_id for s in stuck]
            for found in swept.timed_out:
                run = self.runs[found.run_id]
                assert run.state == "open", (found, run.state)
                run.state = "timed_out"
            assert not swept.failed, swept.failed
            # None left open past its deadline.
            default = Thresholds(stale, max_runtime)
            for run in self.runs.values():
                if run.state == "open":
                    limits = overrides.get((run.name, run.source_id)) or overrides.get(
                        run.name, default
                    )
                    assert run.last_activity is not None
                    assert run.started is not None
                    assert run.last_activity >= now - limits.stale_after, run.run_id
                    if limits.max_runtime is not None:
                        assert run.started >= now - limits.max_runtime, run.run_id
            if swept.timed_out:
                self._refresh_activity()
                self._snapshot()

        @precondition(lambda self: any(run.state == "open" for run in self.runs.values()))
        @rule(data=st.data(), operator=st.sampled_from(["al", "operator:é", "𝄞" * 150]))
        def operator_fails(self, data: st.DataObject, operator: str) -> None:
            assert self.ledger is not None
            run_id = data.draw(
                st.sampled_from(sorted(r for r, run in self.runs.items() if run.state == "open"))
            )
            reason = data.draw(st.sampled_from(["hung", "é" * REASON_MAX]))
            fail_run(self.ledger, run_id, reason, operator)
            self.runs[run_id].state = "timed_out"
            self._refresh_activity()
            self._snapshot()

        @rule(batch_size=st.integers(1, 9))
        def project(self, batch_size: int) -> None:
            assert self.ledger is not None
            Projector(self.ledger, batch_size=batch_size).apply_batch()
            checkpoint = Projector(self.ledger).checkpoint()
            assert checkpoint.error_position is None, checkpoint
            rows, transitions = replay_as_of(self.ledger, checkpoint.position, batch_size=4)
            assert table_rows(self.ledger) == rows
            assert transition_rows(self.ledger) == [t.as_row() for t in transitions]

        @invariant()
        def pure_fold_is_the_replay(self) -> None:
            if self.ledger is None or not self.appended:
                return
            assert self._pure_fold() == runs_as_of(self.ledger, self.appended[-1].position)

        # ------------------------------------------------------------------ helpers

        def _refresh_activity(self) -> None:
            """The events appended outside ``append_batch`` (the sweeper's, an operator's),
            into the list the pure fold reads."""
            assert self.ledger is not None
            known = self.appended[-1].position if self.appended else 0
            self.appended += list(self.ledger.read_all(after=known))

        def _pure_fold(self, up_to: int | None = None) -> dict[int, Row]:
            rows: dict[int, Row] = {}
            events = [e for e in self.appended if up_to is None or e.position <= up_to]
            outcome = fold_events(rows, events, set())
            assert outcome.poison is None, outcome.poison
            return rows

        def _snapshot(self) -> None:
            assert self.ledger is not None
            position = self.ledger.head().last_position
            rows, transitions = replay_as_of(self.ledger, position)
            self.snapshots[position] = (rows, [t.as_row() for t in transitions])

        def _final_checks(self) -> None:
            ledger = self.ledger
            assert ledger is not None
            self._refresh_activity()
            while Projector(ledger, batch_size=7).apply_batch()[0]:
                pass
            checkpoint = Projector(ledger).checkpoint()
            assert checkpoint.error_position is None, checkpoint
            assert checkpoint.position == ledger.head().last_position
            live, transitions = table_rows(ledger), transition_rows(ledger)
            assert live == self._pure_fold()
            for row in live.values():  # what MariaDB's TEXT holds, on SQLite too
                assert len((row["errorMessage"] or "").encode("utf-8")) <= LEGACY_TEXT_BYTES
            assert live == runs_as_of(ledger, checkpoint.position)
            for run_id, run in self.runs.items():
                assert (live[run_id]["status"] == "running") == (run.state == "open"), run_id
            rebuild(ledger, batch_size=3)
            assert table_rows(ledger) == live
            assert transition_rows(ledger) == transitions
            positions = sorted(self.snapshots)
            for index, position in enumerate(positions):
                rows, steps = self.snapshots[position]
                assert rows == self._pure_fold(position)
                replayed, replayed_steps = replay_as_of(ledger, position, batch_size=2)
                assert (replayed, [t.as_row() for t in replayed_steps]) == (rows, steps)
                when = ledger.recorded_at(position)
                assert when is not None
                if ledger.position_at(when) == position:
                    assert runs_as_of(ledger, resolve_position(ledger, when, None)) == rows
                before = ledger.position_at(when - timedelta(microseconds=1))
                assert before < position
                earlier = [p for p in positions[:index] if p <= before]
                if earlier and ledger.position_at(ledger.recorded_at(earlier[-1])) == before:  # type: ignore[arg-type]
                    assert runs_as_of(ledger, before) == self.snapshots[earlier[-1]][0]
            report = verify_all(ledger)
            assert report.ok, report.problems
            for run_id in self.runs:
                timeline = audit_run(ledger, run_id)
                assert len(timeline) == len([e for e in self.appended if e.run_id == run_id])
                assert not any("cannot read" in entry.summary for entry in timeline)
            build_report(ledger)
            build_report(ledger, at_position=positions[0])
            build_report(ledger, at=ledger.recorded_at(positions[len(positions) // 2]))
            url = cli_url()
            first = str(positions[0])
            commands: list[list[str]] = [
                ["report"],
                ["report", "--format", "json", "--at-position", first],
            ]
            # As text once (a long row is seconds of rendering), as JSON for the others.
            for index, run_id in enumerate(sorted(self.runs)[:3]):
                shown = [] if index == 0 else ["--format", "json"]
                commands += [["runs", "show", str(run_id), *shown], ["audit", str(run_id)]]
            for command in commands:
                result = CliRunner().invoke(cli, [*command, "--db", url])
                # The report exits 1 when a condition fails (a run stuck now): never an error.
                allowed = (0, 1) if command[0] == "report" else (0,)
                assert result.exit_code in allowed, (command, result.output)
                assert not isinstance(result.exception, Exception) or isinstance(
                    result.exception, SystemExit
                ), (command, result.exception)

    return Promise


def test_every_accepted_batch_projects_replays_verifies_and_reads(
    backend: str, sqlite_template: Path, tmp_path: Path, db_url: str
) -> None:
    urls: list[str] = []

    def store() -> Ledger:
        ledger = support.fresh_store(
            backend, sqlite_template, tmp_path, db_url if backend == "mysql" else None
        )
        urls.append(ledger.engine.url.render_as_string(hide_password=False))
        return ledger

    run_state_machine_as_test(
        _machine(store, lambda: urls[-1]),
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
