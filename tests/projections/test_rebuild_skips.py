"""A rebuild and an operator's skip at once: the bulk of a rebuild's replay runs without the
projection lock, so a skip can be recorded at a position the replay already applied to its
shadow tables. The swap must not put that table live against the skip."""

from __future__ import annotations

import pytest

from forensics.verify import verify_all
from ledger import Ledger, RunProgressed
from projections import Projector, rebuild
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
    with pytest.raises(SkipsChangedError, match=rf"position\(s\) {position}\b.*untouched"):
        rebuild(ledger)
    assert table_rows(ledger) == before  # the live tables untouched
    monkeypatch.undo()
    rebuild(ledger)  # run again, it honours the skip
    assert table_rows(ledger)[capped]["recordsFetched"] == 0
    assert table_rows(ledger) == replayed_rows(ledger)
    assert verify_all(ledger).problems == []
