"""The HTTP API (issue 16): :func:`create_app` builds it, :mod:`service.api.server` runs it."""

from service.api.app import create_app

__all__ = ["create_app"]
