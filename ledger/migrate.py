"""Moved (issue 13): the upgrade helpers are :mod:`migrations.runner`, the schema check is
:meth:`ledger.Ledger.check_schema` (:func:`ledger.database.check_schema`).

Temporary: ``ledger_cli.py`` imports ``upgrade`` from here until the CLI is ported to
:mod:`migrations.runner`; delete this module then (``tests/test_architecture.py`` lists it as
the one exception to "nothing below the service imports migrations").
"""

from ledger.database import check_schema, current_revision
from migrations.runner import MigrationResult, alembic_config, head_revision, upgrade

__all__ = [
    "MigrationResult",
    "alembic_config",
    "check_schema",
    "current_revision",
    "head_revision",
    "upgrade",
]
