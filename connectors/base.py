"""The ``Connector`` base class: write ``ingest``, get a fully recorded run."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from connectors.refusal import RunClosedError
from connectors.sdk import RunContext, RunLeftOpenError, RunOutcome, RunResult
from ledger import Ledger, StorageError


class Connector(ABC):
    """A source of records. Subclasses set ``name`` (and ``version``) and write ``ingest``.

    ``run`` wraps ``ingest`` in a :class:`RunContext`: RunStarted before it, RunFinished after
    it (``failed`` with the traceback if it raises, and the exception propagates).
    """

    name: str = "connector"  # ingestion_runs.connectorName; an instance may be given its own
    version: str = "1.0.0"

    def __init__(self, source_id: int, *, name: str | None = None) -> None:
        self.source_id = source_id
        if name is not None:
            self.name = name

    @abstractmethod
    def ingest(self, run: RunContext) -> None:
        """Fetch and store records, reporting ``run.progress(...)`` and ``run.error(...)``."""

    def context(
        self, ledger: Ledger, *, trigger: str = "manual", **context_options: Any
    ) -> RunContext:
        """A run context for this connector (its name, source and version)."""
        return RunContext(
            ledger,
            self.source_id,
            self.name,
            connector_version=self.version,
            trigger=trigger,
            **context_options,
        )

    def record(
        self, context: RunContext, on_started: Callable[[RunContext], None] | None = None
    ) -> tuple[RunResult, Exception | None]:
        """Start the run, ingest, finish. An exception fails the run and is returned with the
        result (the caller reports it); KeyboardInterrupt and SystemExit end the run
        ``failed`` ("interrupted") and propagate. ``on_started`` runs once the run is open;
        what it raises fails the run like ``ingest`` would."""
        context.start()
        failure: Exception | None = None
        try:
            if on_started is not None:
                on_started(context)
            self.ingest(context)
        except Exception as exc:
            failure = exc
        except BaseException as exc:
            context.finish(exc)
            raise
        try:
            return context.finish(failure), failure
        except RunClosedError as closed:  # met by finish itself: reported as ingest's would be
            assert context.result is not None
            return context.result, closed

    def run_once(
        self,
        ledger: Ledger,
        *,
        trigger: str = "manual",
        on_started: Callable[[RunContext], None] | None = None,
        **context_options: Any,
    ) -> RunOutcome:
        """Record one run and report how it ended, whatever ended it: what ``ingest`` raised,
        or a KeyboardInterrupt or SystemExit (the run is recorded ``failed``, "interrupted"),
        is returned with the result, not raised; the caller decides what follows.
        ``on_started`` as for :meth:`record` (``ledger run --max-run-time`` starts its
        watchdog there). A run whose end neither the ledger nor the spool could record raises
        :class:`RunLeftOpenError`, naming it."""
        context = self.context(ledger, trigger=trigger, **context_options)
        failure: BaseException | None
        try:
            try:
                result, failure = self.record(context, on_started)
            except (KeyboardInterrupt, SystemExit) as exc:
                if context.result is None:  # stopped before the run started: no run to report
                    raise
                if context.result.status is None:
                    # Stopped between start() and ingest (the signal came as the run opened),
                    # or while finish() recorded the run's end: close it now with what stopped
                    # it (an outcome finish() decided already stands), not later as
                    # "interpreter exit".
                    context.finish(exc)
                result, failure = context.result, exc
        except StorageError as exc:
            if context.result is None or context.result.status is not None:
                raise  # not started (RunNotStartedError), or ended: nothing is left open
            # Neither the ledger nor the spool could record the run's end: said with the run
            # it leaves open, which the exit hook tries once more and the sweeper times out.
            raise RunLeftOpenError(context.result.run_id, self.name, exc) from exc
        return RunOutcome(self.name, self.source_id, result, failure)

    def run(self, ledger: Ledger, *, trigger: str = "manual", **context_options: Any) -> RunResult:
        """Record one run; if ``ingest`` raised, the run is ``failed`` and the error re-raised."""
        result, failure = self.record(self.context(ledger, trigger=trigger, **context_options))
        if failure is not None:
            raise failure
        return result
