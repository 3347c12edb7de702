"""The embedded ``ledger serve`` process: config, scheduler, claims and metrics.

Its names are imported on first use (PEP 562): ``import service`` is cheap, so the ``ledger``
console script (:mod:`service.launch`) starts its Ctrl-C handling before the 1-2 s of imports
the command needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.config import LedgerConfig, load_config
    from service.serve import LedgerService

__all__ = ["LedgerConfig", "LedgerService", "load_config"]


def __getattr__(name: str) -> Any:
    if name in ("LedgerConfig", "load_config"):
        from service import config

        return getattr(config, name)
    if name == "LedgerService":
        from service.serve import LedgerService

        return LedgerService
    raise AttributeError(f"module 'service' has no attribute {name!r}")
