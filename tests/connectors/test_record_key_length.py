"""A record key longer than ``source_records.external_id`` holds, on SQLite and on MariaDB.

SQLite kept a 300-character key; MariaDB failed the whole run with "(1406, Data too long for
column 'external_id' at row 3)", nothing counted, the row the INSERT's and not the file's. Now
such a record is an error of its own line or record on both databases (the run ends
``partial`` with the others stored), naming the key's length and the column's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from connectors import RecordStore
from connectors.records import MAX_KEY_CHARS
from connectors.schema import source_records
from ledger import Ledger, ValidationError
from service.cli import cli
from tests.connectors.support import finished, write
from tests.net_support import JsonServer


def stored_keys(ledger: Ledger, source_id: int) -> list[str]:
    with ledger.engine.connect() as conn:
        query = select(source_records.c.external_id).where(source_records.c.source_id == source_id)
        return sorted(conn.execute(query).scalars())


def test_the_limit_is_the_columns() -> None:
    assert MAX_KEY_CHARS == source_records.c.external_id.type.length == 255  # type: ignore[attr-defined]


def test_a_csv_key_over_the_column_is_an_error_of_its_line_on_every_database(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    longest = "é" * 254 + "😀"  # 255 characters: kept, whatever their bytes
    data = write(
        tmp_path / "keys.csv", f"id,name\nk0,a\n{'K' * 256},b\n{longest},c\nk3,d\n{'x' * 300},e\n"
    )
    result = CliRunner().invoke(
        cli,
        [
            *("run", "csv", "--source-id", "4", "--path", str(data)),
            *("--spool-dir", str(tmp_path / "spool"), "--db", db_url),
        ],
    )
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["records_fetched"], summary["records_created"]) == (
        "partial",
        5,
        3,
    )
    messages = [
        e["message"] for e in finished(ledger, summary["run_id"])["error_details"]["errors"]
    ]
    assert messages == [
        f"line 3: not storable: its key is 256 characters long ({'K' * 39}…); the longest a "
        "key can be is 255",
        f"line 6: not storable: its key is 300 characters long ({'x' * 39}…); the longest a "
        "key can be is 255",
    ]
    assert stored_keys(ledger, 4) == sorted(["k0", "k3", longest])


def test_an_http_json_key_over_the_column_is_an_error_of_its_record(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    def page(_query: dict[str, str], _call: int) -> tuple[int, Any]:
        return 200, {"items": [{"id": "a"}, {"id": "z" * 256}, {"id": "b"}]}

    with JsonServer({"/items": page}) as api:
        result = CliRunner().invoke(
            cli,
            [
                *("run", "http-json", "--source-id", "5", "--url", f"{api.base}/items"),
                *("--records-path", "items", "--single-page"),
                *("--spool-dir", str(tmp_path / "spool"), "--db", db_url),
            ],
        )
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["records_created"], summary["error_count"]) == (
        "partial",
        2,
        1,
    )
    assert "page 1 record 1: not storable: its key is 256 characters long" in summary["error"]
    assert stored_keys(ledger, 5) == ["a", "b"]


def test_the_record_store_refuses_a_key_over_the_column_on_every_database(
    ledger: Ledger,
) -> None:
    store = RecordStore(ledger)
    with pytest.raises(ValidationError, match="is 256 characters long; the longest a key can"):
        store.upsert(6, [("ok", {"v": 1}), ("k" * 256, {"v": 2})])
    with ledger.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(source_records)).scalar() == 0
