"""The ``Connector`` base class: write ``ingest``, get a fully recorded run."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from connectors.sdk import RunContext, RunResult
from ledger import Ledger


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

    def run(self, ledger: Ledger, *, trigger: str = "manual", **context_options: Any) -> RunResult:
        context = RunContext(
            ledger,
            self.source_id,
            self.name,
            connector_version=self.version,
            trigger=trigger,
            **context_options,
        )
        with context:
            self.ingest(context)
        assert context.result is not None
        return context.result
