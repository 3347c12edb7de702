"""The one error tree of run-ledger.

Every error the library raises on purpose derives from :class:`LedgerError`, so callers (and the
CLI) can catch one type. Driver errors never escape raw: :mod:`ledger.driver_errors` wraps them in
:class:`StorageError`, raised ``from`` the driver error, with any URL password masked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger.text import clip, safe_str


class LedgerError(Exception):
    """Root of every error run-ledger raises.

    ``index`` (0-based, given when the error is made) names the event of an appended batch the
    error concerns, so a caller that read the batch from a file can name the line
    (:func:`ledger.wire.append_lines` does); None when it concerns no single event.
    """

    def __init__(self, *args: object, index: int | None = None) -> None:
        super().__init__(*args)
        self._index = index

    @property
    def index(self) -> int | None:
        return self._index


class ConfigurationError(LedgerError):
    """A setting (database URL, option, config file) is missing or invalid."""


@dataclass(frozen=True)
class InputProblem:
    """One thing wrong with an input: the field to blame (None when it is the whole event or
    line) and why, and where it is: ``index``, the event's 0-based place in an appended batch,
    and ``line``, the 1-based line of the JSON Lines input it was read from
    (:mod:`ledger.wire` sets it), or the 1-based item of a JSON array (``unit`` "item")."""

    field: str | None
    message: str
    index: int | None = None
    line: int | None = None
    unit: str = "line"

    def __str__(self) -> str:
        text = self.message if self.field is None else f"{self.field}: {self.message}"
        return text if self.line is None else f"{self.unit} {self.line}: {text}"


class ValidationError(LedgerError):
    """An event or an input line is invalid; nothing was written.

    ``problems`` holds one human-readable line per problem (field and reason); ``details`` the
    same problems structured (:class:`InputProblem`), for a caller that locates them (the
    input line of each, in :mod:`ledger.wire`).
    """

    def __init__(
        self,
        message: str,
        *,
        problems: list[str] | None = None,
        details: Sequence[InputProblem] = (),
        index: int | None = None,
    ) -> None:
        super().__init__(message, index=index)
        self.problems = problems or [str(p) for p in details] or [message]
        self.details = tuple(details) or tuple(InputProblem(None, p) for p in self.problems)


class StoredEventError(ValidationError):
    """An event stored in the ledger cannot be read as an event of this code: its row or
    payload is not as any append writes it, it no longer validates, or its upcaster failed.
    Not the caller's mistake (a reader can do nothing about it): a poison event for the
    projector, a problem for verify, a server error for the API."""


class StoredRowError(StoredEventError):
    """A row of ``ledger_runs``, ``ledger_head`` or ``ingestion_runs`` holds a value no write of
    this ledger stores (a time edited by hand to 'yesterday', a MySQL zero date): ``table`` and
    ``key`` (the run id; 1 for the head) name it. The ledger's, not the caller's, as for an
    event: exit 1, the API's 500, the web's error page."""

    def __init__(self, message: str, table: str, key: object) -> None:
        super().__init__(message)
        self.table = table
        self.key = key


class UnknownEventTypeError(StoredEventError):
    """A stored or submitted event has a type this version of run-ledger does not know."""


class EventIdReusedError(ValidationError):
    """An event_id already names another fact (stored, or earlier in the batch): a retry may
    resend a fact, but an event_id cannot be reused for a different one (I3)."""


class AheadOfClockError(ValidationError):
    """An ``occurred_at`` further ahead of the ledger's clock than the skew guard allows (I10).
    Unlike other refusals it lapses as the clock catches up: a spool keeps such an event to
    deliver later (facts spooled before the clock stepped back) instead of setting it aside."""


class UnknownRunError(ValidationError):
    """A run id names no run in the ledger: the caller's mistake, like any bad input."""

    def __init__(self, run_id: int) -> None:
        # safe_str: a caller's run id of more than 4,300 digits (no such run) is not text to
        # Python, and a ValueError escaped fail_run() in place of this error.
        super().__init__(f"run {clip(safe_str(run_id), 80)} does not exist")
        self.run_id = run_id


class ConcurrencyError(LedgerError):
    """An append carried an ``expected_version`` that differs from the run's version (I4)."""

    def __init__(
        self, run_id: int, expected_version: int, actual_version: int, index: int | None = None
    ) -> None:
        super().__init__(
            f"run {run_id}: expected version {expected_version}, "
            f"but the run is at version {actual_version}; nothing was appended",
            index=index,
        )
        self.run_id = run_id
        self.expected_version = expected_version
        self.actual_version = actual_version


class StreamError(LedgerError):
    """An append would break a stream rule of DESIGN.md I5; nothing was written."""

    def __init__(
        self, run_id: int | None, rule: str, message: str, index: int | None = None
    ) -> None:
        where = f"run {run_id}" if run_id is not None else "new run"
        super().__init__(f"{where}: {message} (rule: {rule}); nothing was appended", index=index)
        self.run_id = run_id
        self.rule = rule
        self.reason = message

    def at(self, index: int) -> StreamError:
        """The same refusal, naming the ``index`` of the batch's event it concerns."""
        return StreamError(self.run_id, self.rule, self.reason, index)


class ConnectorNotAllowedError(LedgerError):
    """An append wrote for a run of a connector its caller may not write for (an API token
    bound to its connectors, ``[[api.tokens]] connectors``); nothing was written. The message
    does not name the run's connector: a caller bound elsewhere learns no more than that."""

    def __init__(
        self, run_id: int | None, allowed: frozenset[str], index: int | None = None
    ) -> None:
        where = f"run {run_id} is not a run" if run_id is not None else "the new run is not one"
        names = ", ".join(repr(name) for name in sorted(allowed))
        super().__init__(
            f"{where} of a connector this caller may write for ({names}); nothing was appended",
            index=index,
        )
        self.run_id = run_id
        self.allowed = allowed


class OutputFileError(LedgerError):
    """A file the caller named for output (``report --output``, an anchor file) could not be
    written for the environment's reason: permission refused, a full disk, a read-only file
    system, an I/O error (CLI exit 3, as standard output that cannot be written is). A path
    that cannot be a file (its folder missing, a folder) is a :class:`ValidationError`: the
    caller's mistake (:func:`ledger.output_files.output_file_error` tells them apart)."""


class StorageError(LedgerError):
    """The database failed or could not be reached. The driver error is the ``__cause__``."""


class ConstraintError(StorageError):
    """The database refused a write for a constraint (most often a unique key that another
    writer took first): a caller that expects the race catches this one."""


class SchemaError(StorageError):
    """The database schema is missing or not at the revision this code expects."""


class DatabaseNotFoundError(StorageError):
    """The URL names a database that is not there: a SQLite file that does not exist (when the
    caller may not create one), an unknown MySQL database, one this user may not see, or no
    database at all. The caller's mistake: nothing was created."""


class UnusableUrlError(StorageError):
    """The database URL asks for what the driver or the server cannot do: an option of its
    query the driver refuses, a TLS file it cannot read, a setting the server refuses. The
    caller's mistake; a storage error still, so that the SDK spools what a run reports when a
    file the URL names vanishes under it."""


class DatabaseFileChangedError(StorageError):
    """The SQLite file at the ledger's path is no longer the file this process opened: moved,
    deleted or replaced under it. Its connections still write the old file (an unlinked one
    is gone when the process ends), so nothing is written until the process is restarted."""


class DatabaseUnreachableError(StorageError):
    """The database server could not be reached or talked to (refused, unknown host, lost
    connection, too busy): the environment's failure, which may pass by itself."""


class ServerSettingError(StorageError):
    """The MySQL/MariaDB server is configured in a way the ledger cannot write under (its
    ``binlog_format``, its ``max_allowed_packet``): the environment's failure, which no retry
    and no change of input can pass; the message names the setting and what the ledger needs."""


class ClockAheadError(StorageError):
    """This writer's clock is ahead of the ledger's clock (the database server's) by more than
    the skew guard, so the events it dates itself are refused until the clocks agree: the
    environment's failure (this host's time), which no change of input can pass. Raised where
    the writer dated the events (a connector's run); a time the caller gave is
    :class:`AheadOfClockError`, the caller's."""


class AccessDeniedError(StorageError):
    """The database refused the credentials, or the permission to open or write it (a grant
    missing, a SQLite file or folder this user may not use): the environment's failure."""


class DiskError(StorageError):
    """The SQLite file's disk failed a write or a read: full, over a file-size limit or a
    quota ("database or disk is full"), or an I/O error: the environment's failure, as a full
    disk under an output file is. The transaction it failed was rolled back."""
