"""The shipped connector types, by the name a config file uses."""

from __future__ import annotations

import inspect
from typing import Any

from connectors.base import Connector
from connectors.csv_connector import CsvConnector
from connectors.http_json import HttpJsonConnector
from ledger.errors import ConfigurationError

CONNECTOR_TYPES: dict[str, type[Connector]] = {
    "csv": CsvConnector,
    "http-json": HttpJsonConnector,
}


def build_connector(kind: str, source_id: int, name: str, options: dict[str, Any]) -> Connector:
    """A connector of type ``kind``; unknown or missing options are a configuration error."""
    cls = CONNECTOR_TYPES.get(kind)
    if cls is None:
        raise ConfigurationError(
            f"unknown connector type {kind!r} (known: {', '.join(CONNECTOR_TYPES)})"
        )
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "source_id", "name"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigurationError(
            f"connector {name!r} ({kind}): unknown option(s) "
            f"{', '.join(unknown)}; known: {', '.join(sorted(accepted))}"
        )
    try:
        return cls(source_id, name=name, **options)
    except TypeError as exc:
        raise ConfigurationError(f"connector {name!r} ({kind}): {exc}") from exc
