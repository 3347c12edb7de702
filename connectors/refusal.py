"""A run the ledger refuses for good while its connector still reports (``RunClosedError``).

The ledger refuses a run's events for good when another writer closed the run under its
connector (a RunFinished appended by ``ledger append`` or ``POST /v1/events``: nothing may
follow it, I5), or when it refuses an event for any other reason than its storage (a
``LedgerError`` that is not a ``StorageError``). Sending the same batch again can never
succeed: the SDK sets the refused events aside in the spool's ``rejected`` table (I9: nothing
the connector reported is lost) and tells the connector once, with this error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ledger import EventModel, Ledger, LedgerError, StreamError
from ledger.clock import isoformat_utc
from ledger.mapper import canonical_json, event_to_wire
from ledger.text import clip, storable, visible

log = logging.getLogger(__name__)

# The refusal of an event after the run's RunFinished (ledger.rules).
CLOSED_RULE = "nothing-after-RunFinished"
# How many of the run's events after the connector's own last one are read to find the
# RunFinished that closed it (it is the run's last event: others seldom write many before).
CLOSER_SEARCH_LIMIT = 1_000


class RunClosedError(LedgerError):
    """The ledger refuses this run's events for good (another writer closed the run, or it
    refuses an event for a reason other than its storage). Raised once to the connector, at
    its next report or by ``finish()``; ``set_aside`` of the refused events are in the spool's
    ``rejected`` table; those the spool could not keep are in ``events`` and the log."""

    def __init__(
        self,
        run_id: int,
        connector_name: str,
        why: str,
        *,
        closed_by: str | None,
        spool_path: str,
        set_aside: int = 0,
        events: Sequence[EventModel] = (),
    ) -> None:
        kept = (
            f"{set_aside} event(s) it refused are kept in {spool_path}, table rejected "
            "(`ledger spool status` lists them)"
        )
        if events:
            kept += f"; {len(events)} the spool could not keep are in the log"
        super().__init__(
            f"run {run_id} of {connector_name}: {why}; the ledger records nothing more of "
            f"this run; {kept}"
        )
        self.run_id = run_id
        self.connector_name = connector_name
        self.why = why
        self.closed_by = closed_by
        self.spool_path = spool_path
        self.set_aside = set_aside
        self.events = tuple(events)  # refused, and not in the spool either (it failed)

    def again(self, kept: int = 0, unkept: Sequence[EventModel] = ()) -> RunClosedError:
        """The same error as a new exception (raising one instance again and again would grow
        its traceback with every report), counting ``kept`` more events set aside in the
        spool and ``unkept`` ones it could not keep."""
        return RunClosedError(
            self.run_id,
            self.connector_name,
            self.why,
            closed_by=self.closed_by,
            spool_path=self.spool_path,
            set_aside=self.set_aside + kept,
            events=(*self.events, *unkept),
        )


def refusal_reason(
    ledger: Ledger, run_id: int, refusal: LedgerError, after: int
) -> tuple[str, str | None]:
    """Why the ledger refuses the run's events, as a person reads it, and who closed the run
    (the actor of its RunFinished) when that is the reason and the ledger says. ``after`` is
    the position of the connector's own last stored event: the RunFinished is after it."""
    if not (isinstance(refusal, StreamError) and refusal.rule == CLOSED_RULE):
        return f"the ledger refuses its events for good ({visible(str(refusal))})", None
    try:
        events = ledger.read_run(run_id, after=after, limit=CLOSER_SEARCH_LIMIT)
    except LedgerError as exc:  # the reason is known; only the name of the closer is missing
        log.warning("run %d: could not read who closed it: %s", run_id, visible(str(exc)))
        events = []
    closer = next((e for e in events if e.type == "RunFinished"), None)
    if closer is None:
        return "another writer closed it (a RunFinished) while the connector was running", None
    data = closer.payload_data
    said = data.get("error_message")
    actor = closer.actor or "an unnamed writer"
    return (
        f"{visible(actor)} closed it while the connector was running (RunFinished "
        f"{data.get('status')}, recorded {isoformat_utc(closer.recorded_at)}"
        + (f': "{clip(visible(str(said)), 200)}"' if said else "")
        + ")"
    ), closer.actor


def log_lost(run_id: int, events: Sequence[EventModel], exc: Exception) -> None:
    """The refused events, whole, in the log: the spool could not keep them (I9)."""
    log.error(
        "run %d: the spool could not keep %d refused event(s) (%s); here they are:",
        run_id,
        len(events),
        visible(str(exc)),
    )
    for event in events:
        try:
            # storable: a lone surrogate becomes its JSON escape, so the line is the same JSON
            # and any log handler can write it.
            text = storable(canonical_json(event_to_wire(event)))
        except (ValueError, TypeError, RecursionError):  # why the spool could not keep it
            text = storable(repr(event))
        log.error("refused event of run %d: %s", run_id, text)


__all__ = ["RunClosedError", "log_lost", "refusal_reason"]
