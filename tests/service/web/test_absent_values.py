"""The web view spells a missing value as every other output does, ``ledger.text.ABSENT``
(review34 made it the one spelling of the report, the CLI's tables, the rebuild's progress and
the web's times; review 35 found the templates still writing their own "—" in six places).
On SQLite and MariaDB."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ledger import text
from service.api import create_app
from tests.service.web.support import demo_with_open_run, web_config


def test_no_template_spells_a_missing_value_itself() -> None:
    for template in files("service.web").joinpath("templates").iterdir():
        assert text.ABSENT not in template.read_text(encoding="utf-8"), template.name


def test_a_missing_value_on_a_page_is_ledger_text_absent(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = demo_with_open_run(db_url, tmp_path / "spool")
    monkeypatch.setattr(text, "ABSENT", "(none)")
    monkeypatch.setattr("service.web.app.ABSENT", "(none)")  # as read when the app is made
    app = create_app(web_config(db_url, public_read=True))
    try:
        with TestClient(app) as client:
            runs = re.sub(r"\s+", " ", client.get("/web/runs").text)
            run = client.get(f"/web/runs/{ids['open']}").text
    finally:
        app.state.web.close()
        app.state.api.close()
    assert "<td>(none)</td>" in runs  # the open run's duration
    assert "<dd>(none)</dd>" in run  # its completedAt
    assert "—" not in runs + run
