"""A rebuild and an operator's skip at once: the bulk of a rebuild's replay runs without the
projection lock, so a skip can be recorded at a position the replay already applied to its
shadow tables. The swap must not put that table live against the skip."""

from __future__ import annotations

import pytest

from forensics.verify import verify_all
from ledger import Ledger, RunProgressed, ValidationError
from projections import Projector, ledger_status, rebuild
from projections import rebuilder as rebuilder_module
from projections.errors import PoisonEventError, SkipsChangedError
from tests.projection_support import records_fetched_capped, replayed_rows, table_rows


def test_a_skip_recorded_while_a_rebuild_replayed_past_it_stops_the_swap(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    capped, other = ledger.start_run(1, "capped"), ledger.start_run(1, "other")
    projector = Projector(ledger)
    with records_fetched_capped(ledger):  # the live table refuses the row; a rebuild's shadow not
        refused = ledger.append([RunProgressed(run_id=capped, records_fetched=1000)])
        position = refused.events[0].position
        ledger.append([RunProgressed(run_id=other, records_fetched=1) for _ in range(5)])
        with pytest.raises(PoisonEventError):
            projector.run_once()
    before = table_rows(ledger)
    swap_in = rebuilder_module.swap_in

    def skip_then_swap(*args: object) -> int:
        # The operator's skip lands after the replay applied the position, before the swap.
        projector.skip(position, "refused by our constraint", "operator:ops")
        return swap_in(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(rebuilder_module, "swap_in", skip_then_swap)
    # On SQLite the cap is an operator's trigger on the live table, which the rebuild drops.
    with pytest.raises(SkipsChangedError, match=rf"position\(s\) {position}\b.*untouched"):
        rebuild(ledger, drop_extras=True)
    assert table_rows(ledger) == before  # the live tables untouched
    monkeypatch.undo()
    rebuild(ledger, drop_extras=True)  # run again, it honours the skip
    assert table_rows(ledger)[capped]["recordsFetched"] == 0
    assert table_rows(ledger) == replayed_rows(ledger)
    assert verify_all(ledger).problems == []


def test_a_swap_interrupted_after_rename_clears_the_error_its_tables_resolved(
    ledger: Ledger, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live table refused a row (the projection stopped there); a rebuild, whose tables
    hold it, is killed between its RENAME and the checkpoint's move. The error is not left
    standing past the position, and the applied event can no longer be skipped."""
    if backend != "mysql":
        pytest.skip("SQLite swaps in one transaction; only MySQL's RENAME commits on its own")
    import projections.dialects as swap_module

    run_id = ledger.start_run(1, "capped")
    projector = Projector(ledger)
    with records_fetched_capped(ledger):
        refused = ledger.append([RunProgressed(run_id=run_id, records_fetched=1000)])
        position = refused.events[0].position
        with pytest.raises(PoisonEventError):
            projector.run_once()

    def die(*_args: object) -> None:
        raise KeyboardInterrupt("killed between RENAME and the checkpoint update")

    monkeypatch.setattr(swap_module, "finish_swap", die)
    with pytest.raises(KeyboardInterrupt):
        rebuild(ledger)
    monkeypatch.undo()
    status = ledger_status(ledger).projections[0]  # a reader, before any projector settles it
    assert (status.checkpoint.position, status.checkpoint.error_position) == (position, None)
    with pytest.raises(ValidationError, match=rf"position {position} is already applied"):
        projector.skip(position, "refused by our constraint", "operator:ops")
    assert projector.run_once() == 0
    checkpoint = projector.checkpoint()
    assert (checkpoint.position, checkpoint.error_position) == (position, None)
    assert table_rows(ledger)[run_id]["recordsFetched"] == 1000
    assert verify_all(ledger).problems == []
