"""What the migration tests share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ledger import Ledger
from tests import support


@contextmanager
def empty_database(tmp_path: Path, backend: str) -> Iterator[str]:
    """The URL of an empty database, removed afterwards."""
    if backend == "sqlite":
        path = tmp_path / "fresh.db"
        Ledger.from_url(f"sqlite:///{path}", create=True).close()
        try:
            yield f"sqlite:///{path}"
        finally:
            for leftover in (path, *(Path(f"{path}{end}") for end in ("-wal", "-shm"))):
                leftover.unlink(missing_ok=True)
        return
    base = support.mysql_base_url()
    if base is None:
        pytest.skip(f"MariaDB half skipped: set {support.MYSQL_URL_ENV} to run it")
    url = support.create_mysql_database(base)
    try:
        yield url
    finally:
        support.drop_mysql_database(url)
