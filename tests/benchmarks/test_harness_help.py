"""``python -m benchmarks --help`` speaks to a user of the harness: what it measures and how,
not the project's issue tracker."""

from __future__ import annotations

import re

import pytest

from benchmarks.harness import main


def test_the_help_does_not_mention_issue_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert "usage: python -m benchmarks" in shown
    assert re.search(r"\bissues?\s*#?\d|#\d", shown, re.IGNORECASE) is None, shown
