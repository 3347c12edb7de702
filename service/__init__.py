"""The embedded ``ledger serve`` process: config, scheduler, claims and metrics."""

from service.config import LedgerConfig, load_config
from service.serve import LedgerService

__all__ = ["LedgerConfig", "LedgerService", "load_config"]
