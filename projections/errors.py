"""Errors of the projections, in the one tree rooted at :class:`ledger.LedgerError`."""

from __future__ import annotations

from ledger.errors import LedgerError
from ledger.text import visible


class ProjectionError(LedgerError):
    """A projection could not do its work."""


class PoisonEventError(ProjectionError):
    """An event the projector cannot apply; nothing after it is applied until it is resolved."""

    def __init__(self, position: int, event_type: str, reason: str) -> None:
        # The reason may quote the database's refusal or an upcaster's error, which quote data
        # (a trigger's message, a duplicate key): its line breaks and ESC sequences are shown as
        # escapes, so the message stays the one line the CLI prints after "Error:". ``reason``
        # keeps it exact (the checkpoint, ``status --format json``).
        super().__init__(
            f"cannot project position {position} ({event_type}): {visible(reason)}; add an "
            "upcaster, or "
            f"skip it with `ledger project --skip-position {position} --reason TEXT`"
        )
        self.position = position
        self.event_type = event_type
        self.reason = reason


class ProjectionTimeoutError(ProjectionError):
    """``wait_for`` gave up before the projection reached the position."""


class ProjectionBusyError(ProjectionError):
    """Another process held the projection lock for longer than the timeout (a rebuild?)."""


class SwapBlockedError(ProjectionBusyError):
    """A rebuild's swap (MySQL/MariaDB ``RENAME TABLE``) kept waiting for the live tables'
    metadata locks, held by another session's open transaction; nothing was swapped."""


class SkipsChangedError(ProjectionBusyError):
    """An operator recorded a skip at a position a rebuild had already replayed into its shadow
    tables (the bulk of a replay runs without the projection lock): the rebuild stops before
    its swap and is run again."""


class ReadModelExtrasError(ProjectionError):
    """The live read-model tables have what a rebuild cannot carry over to the tables it swaps
    in (an operator's trigger, CHECK constraint, foreign key, or an index on a column the schema
    lacks): the rebuild refuses before it starts, unless told to drop them. The caller's to
    decide (the CLI's exit 2)."""


class CheckpointMovedError(ProjectionError):
    """The checkpoint was not where this transaction read it when it came to advance it: another
    projector (on another node of a Galera cluster, where the named lock does not reach) got
    there first. The transaction is rolled back and the batch read again."""
