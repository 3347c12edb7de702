"""Schema evolution end to end, on SQLite and on MariaDB: a new schema_version of an event type
ships with its upcaster while the ledger holds events of the old one. Every reader of history
(projector, rebuild, as-of, verify, audit, ``ledger events --format jsonl`` and the re-append
of its output) reads the old events through the upcaster; the hash chain stays over the stored
bytes. An upcaster that raises or returns what is not a JSON object makes its events poison
events (the projector stops there, verify names them), never a crash of the reader."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from forensics import verify_all
from forensics.audit import audit_run
from forensics.chain import verify_chain
from ledger import Ledger, RunFinished, RunProgressed, mapper
from projections import PoisonEventError, Projector, rebuild, runs_as_of
from service.cli import cli
from tests.projection_support import append_raw, table_rows, transition_rows


@pytest.fixture
def run_progressed_at_v2(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """RunProgressed is at schema_version 2 from now on; schema 1 may spell the fetched
    counter ``fetched`` (an older writer's spelling)."""
    monkeypatch.setattr(mapper, "_UPCASTERS", {})

    def ship() -> None:
        monkeypatch.setitem(mapper.CURRENT_SCHEMA_VERSIONS, "RunProgressed", 2)

        @mapper.register_upcaster("RunProgressed", 1)
        def rename_fetched(payload: dict[str, Any]) -> dict[str, Any]:
            if "fetched" in payload:
                payload["records_fetched"] = payload.pop("fetched")
            return payload

    return ship


def _history_at_v1(ledger: Ledger) -> tuple[int, int]:
    """A run with a RunProgressed written by this ledger at schema 1 and one written by an
    older writer (``fetched``); returns (run id, position of the older writer's event)."""
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id, records_fetched=3)])
    older = append_raw(ledger, run_id, "RunProgressed", '{"fetched":9}', schema_version=1)
    return run_id, older


def _cli(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), input=stdin)


def test_stored_v1_events_read_everywhere_once_their_upcaster_ships(
    ledger: Ledger, db_url: str, run_progressed_at_v2: Callable[[], None]
) -> None:
    run_id, older = _history_at_v1(ledger)
    # Projected up to the older writer's event while schema 1 is current (nothing knows its
    # "fetched" before the upcaster ships).
    assert Projector(ledger, batch_size=older - 1).apply_batch()[0] == older - 1
    run_progressed_at_v2()
    ledger.append([RunProgressed(run_id=run_id, records_fetched=5, schema_version=2)])
    ledger.append([RunFinished(run_id=run_id, status="success")])
    head = ledger.head()
    stored = [(e.schema_version, e.payload, e.hash) for e in ledger.read_all()]

    # The projector, a rebuild and an as-of replay all read schema 1 through the upcaster.
    Projector(ledger).run_once()
    live, transitions = table_rows(ledger), transition_rows(ledger)
    assert live[run_id]["recordsFetched"] == 3 + 9 + 5
    assert live[run_id]["status"] == "success"
    rebuild(ledger, batch_size=2)
    assert table_rows(ledger) == live
    assert transition_rows(ledger) == transitions
    assert runs_as_of(ledger, older)[run_id]["recordsFetched"] == 3 + 9
    assert runs_as_of(ledger, head.last_position, batch_size=1) == live

    # Verify and audit: the chain is over the stored bytes, which nothing rewrote.
    report = verify_all(ledger)
    assert report.ok, report.problems
    assert verify_chain(ledger).ok
    assert [e.summary for e in audit_run(ledger, run_id)][1:4] == [
        "fetched +3",
        "fetched +9",
        "fetched +5",
    ]

    # The jsonl export shows the events as the current model, and appends again as nothing new.
    exported = _cli("events", "--format", "jsonl", "--db", db_url)
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in exported.output.splitlines()]
    progressed = [line for line in lines if line["type"] == "RunProgressed"]
    assert [(line["schema_version"], line["records_fetched"]) for line in progressed] == [
        (2, 3),
        (2, 9),
        (2, 5),
    ]
    again = _cli("append", "--db", db_url, stdin=exported.output)
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["appended"] == 0
    assert ledger.head() == head
    assert [(e.schema_version, e.payload, e.hash) for e in ledger.read_all()] == stored


def _raises(payload: dict[str, Any]) -> dict[str, Any]:
    return {"records_fetched": payload["no such field"]}


def _returns_none(payload: dict[str, Any]) -> Any:
    payload["records_fetched"] = payload.pop("fetched")  # forgets to return it


def _returns_a_list(payload: dict[str, Any]) -> Any:
    return list(payload.items())


@pytest.mark.parametrize(
    ("upcaster", "said"),
    [
        (_raises, "_raises of RunProgressed schema_version 1 failed: KeyError"),
        (_returns_none, "_returns_none of RunProgressed schema_version 1 returned NoneType"),
        (_returns_a_list, "_returns_a_list of RunProgressed schema_version 1 returned list"),
    ],
)
def test_an_upcaster_that_raises_or_returns_garbage_makes_a_poison_event_not_a_crash(
    ledger: Ledger,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    upcaster: Callable[[dict[str, Any]], Any],
    said: str,
) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    older = append_raw(ledger, run_id, "RunProgressed", '{"fetched":9}', schema_version=1)
    monkeypatch.setattr(mapper, "_UPCASTERS", {})
    monkeypatch.setitem(mapper.CURRENT_SCHEMA_VERSIONS, "RunProgressed", 2)
    mapper.register_upcaster("RunProgressed", 1)(upcaster)
    ledger.append([RunProgressed(run_id=run_id, records_fetched=5, schema_version=2)])

    projector = Projector(ledger)
    with pytest.raises(PoisonEventError, match=said) as caught:
        projector.run_once()
    assert caught.value.position == older
    assert projector.checkpoint().position == older - 1
    with pytest.raises(PoisonEventError, match=said):
        rebuild(ledger)
    with pytest.raises(PoisonEventError, match=said):
        runs_as_of(ledger, older)
    report = verify_all(ledger)
    assert not report.ok
    assert any(said in problem.message for problem in report.problems)
    assert len(audit_run(ledger, run_id)) == 3
    exported = _cli("events", "--format", "jsonl", "--db", db_url)
    assert exported.exception is None or isinstance(exported.exception, SystemExit)
    assert said in exported.output

    projector.skip(older, reason="written by a broken older writer", actor="operator:al")
    assert projector.run_once() == 2
    assert table_rows(ledger)[run_id]["recordsFetched"] == 5
