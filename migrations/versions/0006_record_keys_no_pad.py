"""Connectors: source record keys compared exactly on MySQL/MariaDB (a NO PAD collation).

``utf8mb4_bin`` is a PAD SPACE collation: it compares "a" and "a " as one key, so a connector
that reported both had the second refused by the unique key (retried as a conflict, then
failed), where SQLite keeps two records. A NO PAD binary collation compares code points, as
SQLite compares bytes. Keys already stored cannot collide under it (the unique key kept them
distinct under the looser comparison), so the change cannot fail on existing rows.

Revision ID: 0006_record_keys_no_pad
Revises: 0005_rebuild_claims
Create Date: 2026-12-06
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from alembic import op

from ledger.dialects import is_sqlite
from migrations.dialects import PAD_SPACE_COLLATION, no_pad_collation

revision: str = "0006_record_keys_no_pad"
down_revision: str | None = "0005_rebuild_claims"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger(__name__)


def _modify_key(collation: str) -> None:
    # MODIFY states the whole column again; running it a second time (a migrate interrupted
    # before alembic_version moved) changes nothing.
    op.execute(
        "ALTER TABLE source_records MODIFY external_id VARCHAR(255) "
        f"CHARACTER SET utf8mb4 COLLATE {collation} NOT NULL"
    )


def upgrade() -> None:
    bind = op.get_bind()
    if is_sqlite(bind):
        return  # SQLite compares the bytes already
    chosen = no_pad_collation(bind)
    if chosen is None:
        # The server has no such collation (MySQL 5.7): the keys stay as they were (README,
        # "ledger migrate"); refusing would hold the whole upgrade for it.
        log.warning(
            "this server has no NO PAD utf8mb4 collation: source record keys that differ "
            "only by trailing spaces stay one key"
        )
        return
    _modify_key(chosen)


def downgrade() -> None:
    if is_sqlite(op.get_bind()):
        return
    # Fails with a duplicate key (1062) when keys that differ only by trailing spaces were
    # stored since: the older revision cannot hold both.
    _modify_key(PAD_SPACE_COLLATION)
