"""Connector SDK (run context, heartbeats, spool) and the connectors shipped with run-ledger."""

from connectors.base import Connector
from connectors.csv_connector import SAMPLE_CSV, SAMPLE_JSONL, CsvConnector
from connectors.http_fetch import FetchError
from connectors.http_json import HttpJsonConnector
from connectors.records import RecordStore, UpsertCounts
from connectors.refusal import RunClosedError
from connectors.sdk import (
    RunContext,
    RunLeftOpenError,
    RunNotStartedError,
    RunOutcome,
    RunResult,
)
from connectors.spool import (
    FlushResult,
    Spool,
    SpoolAccessError,
    SpoolBacklog,
    SpoolDiskError,
    SpoolError,
    SpoolStatus,
)

__all__ = [
    "SAMPLE_CSV",
    "SAMPLE_JSONL",
    "Connector",
    "CsvConnector",
    "FetchError",
    "FlushResult",
    "HttpJsonConnector",
    "RecordStore",
    "RunClosedError",
    "RunContext",
    "RunLeftOpenError",
    "RunNotStartedError",
    "RunOutcome",
    "RunResult",
    "Spool",
    "SpoolAccessError",
    "SpoolBacklog",
    "SpoolDiskError",
    "SpoolError",
    "SpoolStatus",
    "UpsertCounts",
]
