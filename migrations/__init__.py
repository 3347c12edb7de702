"""Alembic environment and versions: the only owner of run-ledger's schema."""

from pathlib import Path

SCRIPT_LOCATION = str(Path(__file__).resolve().parent)

__all__ = ["SCRIPT_LOCATION"]
