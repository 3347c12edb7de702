"""run-ledger's event store: event models, the append/read API, storage and the hash chain."""

from ledger.errors import (
    AccessDeniedError,
    ConcurrencyError,
    ConfigurationError,
    ConnectorNotAllowedError,
    ConstraintError,
    DatabaseNotFoundError,
    DatabaseUnreachableError,
    EventIdReusedError,
    InputProblem,
    LedgerError,
    SchemaError,
    StorageError,
    StoredEventError,
    StreamError,
    UnknownEventTypeError,
    UnknownRunError,
    UnusableUrlError,
    ValidationError,
)
from ledger.events import (
    EventModel,
    LedgerEvent,
    RunFinished,
    RunProgressed,
    RunStarted,
    RunTimedOut,
)
from ledger.mapper import canonical_json, parse_event, register_upcaster
from ledger.recorded import AppendResult, LedgerHead, RecordedEvent
from ledger.rules import RunState
from ledger.store import Ledger
from ledger.stuck import StuckRun, Thresholds, stuck_runs, stuck_runs_as_of
from ledger.sweeper import SweepResult, fail_run, sweep

__all__ = [
    "AccessDeniedError",
    "AppendResult",
    "ConcurrencyError",
    "ConfigurationError",
    "ConnectorNotAllowedError",
    "ConstraintError",
    "DatabaseNotFoundError",
    "DatabaseUnreachableError",
    "EventIdReusedError",
    "EventModel",
    "InputProblem",
    "Ledger",
    "LedgerError",
    "LedgerEvent",
    "LedgerHead",
    "RecordedEvent",
    "RunFinished",
    "RunProgressed",
    "RunStarted",
    "RunState",
    "RunTimedOut",
    "SchemaError",
    "StorageError",
    "StoredEventError",
    "StreamError",
    "StuckRun",
    "SweepResult",
    "Thresholds",
    "UnknownEventTypeError",
    "UnknownRunError",
    "UnusableUrlError",
    "ValidationError",
    "canonical_json",
    "fail_run",
    "parse_event",
    "register_upcaster",
    "stuck_runs",
    "stuck_runs_as_of",
    "sweep",
]
