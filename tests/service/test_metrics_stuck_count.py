"""The stuck-run count of ``ledger status``, ``/v1/status`` and the ``ledger_stuck_runs`` gauge
(``service.metrics.collect_figures``), counted in the database with each connector's own
thresholds: the same number as the runs ``stuck_runs`` lists, on SQLite and on MariaDB."""

from __future__ import annotations

from freezegun import freeze_time

from ledger import Ledger, Thresholds, stuck_runs
from service.metrics import collect_figures
from tests.ledger.test_stuck_pages import NOW, OVERRIDES, interleaved_runs


def test_the_stuck_count_is_the_number_of_stuck_runs_by_each_connectors_thresholds(
    ledger: Ledger,
) -> None:
    interleaved_runs(ledger)
    defaults = Thresholds()
    with freeze_time(NOW):
        listed = stuck_runs(ledger, defaults.stale_after, overrides=OVERRIDES)
        figures = collect_figures(ledger, defaults, OVERRIDES, None)
        without_overrides = collect_figures(ledger, defaults, None, None)
    # The defaults' connector's ten, the pair's past its own 2h, none of "patient" (5h).
    names = {run.connector_name for run in listed}
    assert names == {"SOURCE_1", "quick"}
    assert 10 < len(listed) < 20
    assert figures.stuck_runs == len(listed)
    assert without_overrides.stuck_runs == 30  # every run is silent past the default 60m
