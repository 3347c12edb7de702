"""Fixtures of the connector tests: a spool in the test's own folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors import Spool


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")
