"""The engines' log lines keep the logger name they had before ``ledger/database.py`` was split
into ``sqlite_engine.py`` and ``mysql_engine.py``: operators filter and silence lines by logger
name (``logging.getLogger("ledger.database")``), and a move of code must not change it."""

from __future__ import annotations

from ledger import mysql_engine


def test_the_mysql_engine_logs_as_ledger_database() -> None:
    # Its one line: a server without an idle transaction timeout, bounded by wait_timeout.
    assert mysql_engine.log.name == "ledger.database"
