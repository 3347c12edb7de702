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


def option_names(cls: type[Connector]) -> set[str]:
    """The options a config file may give a connector type: its constructor's parameters."""
    return set(inspect.signature(cls.__init__).parameters) - {"self", "source_id", "name"}


def unknown_options_message(cls: type[Connector], options: dict[str, Any]) -> str | None:
    """``unknown option(s) …; known: …``, or None when every option is one ``cls`` takes."""
    accepted = option_names(cls)
    unknown = sorted(set(options) - accepted)
    if not unknown:
        return None
    return f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(accepted))}"


def build_connector(kind: str, source_id: int, name: str, options: dict[str, Any]) -> Connector:
    """A connector of type ``kind``; unknown or missing options are a configuration error."""
    cls = CONNECTOR_TYPES.get(kind)
    if cls is None:
        raise ConfigurationError(
            f"unknown connector type {kind!r} (known: {', '.join(CONNECTOR_TYPES)})"
        )
    unknown = unknown_options_message(cls, options)
    if unknown:
        raise ConfigurationError(f"connector {name!r} ({kind}): {unknown}")
    required = inspect.signature(cls.__init__).parameters
    missing = [
        option
        for option in sorted(option_names(cls) - set(options))
        if required[option].default is inspect.Parameter.empty
    ]
    if missing:
        raise ConfigurationError(
            f"connector {name!r} ({kind}): options.{', options.'.join(missing)} is required"
        )
    try:
        return cls(source_id, name=name, **options)
    except (TypeError, ValueError, AttributeError, ConfigurationError) as exc:
        # A value of the wrong type (url = 123) fails inside the constructor: the config's
        # mistake, named, never a traceback.
        raise ConfigurationError(f"connector {name!r} ({kind}): {exc}") from exc
