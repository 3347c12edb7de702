"""An append bound to connectors (``Ledger.append(..., connectors=…)``, what an API token with
``connectors`` gets): it writes only for runs of those connectors, checked under the head lock
before any other rule, so a refused batch appends nothing and learns nothing of another
connector's run. On SQLite and MariaDB."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from freezegun import freeze_time

from ledger import (
    ConnectorNotAllowedError,
    Ledger,
    RunFinished,
    RunProgressed,
    RunStarted,
    StreamError,
    fail_run,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
OWN = frozenset({"stripe"})


def start(ledger: Ledger, connector: str) -> int:
    stored = ledger.append(
        [RunStarted(source_id=1, connector_name=connector, occurred_at=T0, actor="connector:x")]
    )
    return stored.events[0].run_id


@freeze_time(T0)
def test_a_bound_append_writes_for_its_own_connectors_only(ledger: Ledger) -> None:
    own = start(ledger, "stripe")
    other = start(ledger, "hubspot")
    head = ledger.head().last_position

    progress = RunProgressed(run_id=own, occurred_at=T0, records_fetched=5)
    assert len(ledger.append([progress], connectors=OWN).new_events) == 1

    # Another connector's run, even in a batch that also holds a good event: nothing appended,
    # and the refusal names the event, not the other run's connector.
    finish_other = RunFinished(run_id=other, occurred_at=T0, status="failed")
    good = RunProgressed(run_id=own, occurred_at=T0, records_fetched=1)
    with pytest.raises(ConnectorNotAllowedError) as refused:
        ledger.append([good, finish_other], connectors=OWN)
    assert refused.value.index == 1
    assert refused.value.run_id == other
    assert "hubspot" not in str(refused.value)
    assert str(refused.value) == (
        f"run {other} is not a run of a connector this caller may write for ('stripe'); "
        "nothing was appended"
    )
    assert ledger.head().last_position == head + 1

    # A new run of another connector, and names compared exactly.
    for name in ("hubspot", "Stripe", "stripe2"):
        with pytest.raises(ConnectorNotAllowedError, match="the new run is not one"):
            ledger.append(
                [RunStarted(source_id=1, connector_name=name, occurred_at=T0)], connectors=OWN
            )
    # A run started in the batch and addressed by run_ref is the batch's own.
    started = RunStarted(source_id=2, connector_name="stripe", occurred_at=T0, run_ref="r")
    done = RunFinished(run_ref="r", occurred_at=T0, status="success")
    assert len(ledger.append([started, done], connectors=OWN).new_events) == 2
    # No binding: any connector, as before.
    assert len(ledger.append([finish_other]).new_events) == 1
    assert ledger.head().last_position == head + 4


@freeze_time(T0)
def test_the_binding_comes_before_the_stream_rules_and_the_dedupe(ledger: Ledger) -> None:
    """A closed run of another connector is refused for its connector, not for being closed,
    and a resent event of another connector's run is refused, not returned as stored."""
    other = start(ledger, "hubspot")
    finished = RunFinished(run_id=other, occurred_at=T0, status="success")
    ledger.append([finished])
    again = RunFinished(run_id=other, occurred_at=T0, status="failed", event_id=uuid.uuid4())
    with pytest.raises(StreamError):
        ledger.append([again])
    with pytest.raises(ConnectorNotAllowedError):
        ledger.append([again], connectors=OWN)
    with pytest.raises(ConnectorNotAllowedError):
        ledger.append([finished], connectors=OWN)
    # An event about no run at all is the stream rules' to refuse, bound or not.
    with pytest.raises(StreamError, match="has no RunStarted"):
        ledger.append([RunProgressed(run_id=999, occurred_at=T0)], connectors=OWN)


@freeze_time(T0)
def test_an_operator_bound_to_connectors_fails_only_their_runs(ledger: Ledger) -> None:
    own = start(ledger, "stripe")
    other = start(ledger, "hubspot")
    with pytest.raises(ConnectorNotAllowedError):
        fail_run(ledger, other, "host lost", "operator:oncall", connectors=OWN)
    assert ledger.run(other).state == "open"  # type: ignore[union-attr]
    fail_run(ledger, own, "host lost", "operator:oncall", connectors=OWN)
    assert ledger.run(own).state != "open"  # type: ignore[union-attr]


def test_connectors_is_a_collection_of_names(ledger: Ledger) -> None:
    with pytest.raises(TypeError, match="not one name"):
        ledger.append(
            [RunStarted(source_id=1, connector_name="stripe", occurred_at=T0)],
            connectors="stripe",
        )
