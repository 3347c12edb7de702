"""Connector SDK and sample connectors (issue 4)."""

__all__: list[str] = []
