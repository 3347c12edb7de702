"""The value types every section shares: durations, listen addresses, secrets named by an
environment variable, and ``Strict``, the base of every section's model."""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import timedelta
from typing import Annotated

import pydantic
from pydantic import BaseModel, ConfigDict

from ledger.durations import parse_duration
from ledger.errors import LedgerError
from ledger.urls import MAX_TCP_PORT, tcp_port_problem


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError('write a duration as text, like "90s", "15m", "6h" or "2d"')
    try:
        return parse_duration(value, "value")
    except LedgerError as exc:
        raise ValueError(str(exc).removeprefix("value: ")) from exc


def _duration_or_zero(value: object) -> timedelta:
    if isinstance(value, str) and value.strip().rstrip("smhdw") == "0":
        return timedelta(0)
    return _duration(value)


Duration = Annotated[timedelta, pydantic.BeforeValidator(_duration)]
# For settings where zero means "no delay" (progress_interval 0: every progress call appends).
DurationOrZero = Annotated[timedelta, pydantic.BeforeValidator(_duration_or_zero)]


class Strict(BaseModel):
    # strict: TOML has types, so "5" or true is not a number and 1 is not a boolean.
    # hide_input_in_errors: a rejected value may be a URL with a password or an API key, and
    # pydantic's error text would otherwise carry it into any logged traceback.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, hide_input_in_errors=True)


_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def listen_host(value: str) -> str:
    """An address to bind: an IP literal (IPv6 without brackets) or a host name."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not (len(value) <= 253 and _HOST_NAME.fullmatch(value)):
            raise ValueError(
                "an IP address to listen on (127.0.0.1, 0.0.0.0 for every interface, :: or "
                "::1 without brackets) or a host name"
            ) from None
    return value


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) as a host to bind and a port; ValueError says
    what is wrong."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or tcp_port_problem(int(port)):
        raise ValueError(f"write HOST:PORT, like 127.0.0.1:8080 (a port from 1 to {MAX_TCP_PORT})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return listen_host(host), int(port)


def _bound_where(host: str) -> str:
    """``host`` as :func:`same_port` compares it: ``*`` for a wildcard address, an IP address
    in its one form, a host name in lower case."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.lower().rstrip(".")
    return "*" if address.is_unspecified else str(address)


def same_port(first: tuple[str, int], second: tuple[str, int]) -> bool:
    """Whether two listeners (host, port) of one process would both bind one port: the same
    port on the same host, or on a wildcard address (0.0.0.0, ::), which takes it on every
    interface; ``localhost`` is any loopback address."""
    if first[1] != second[1]:
        return False
    hosts = {_bound_where(first[0]), _bound_where(second[0])}
    if len(hosts) == 1 or "*" in hosts:
        return True
    if "localhost" in hosts:
        (other,) = hosts - {"localhost"}
        try:
            return ipaddress.ip_address(other).is_loopback
        except ValueError:
            return False
    return False


def listen_address(value: str) -> str:
    split_listen(value)
    return value


def secret_variable(name: str | None, example: str, what: str, shortest: int) -> str | None:
    """``name`` when it names a set environment variable holding a ``what`` of at least
    ``shortest`` characters (the value itself is read when used, never kept in the config)."""
    if name is None:
        return None
    if not _ENV_NAME.fullmatch(name):
        raise ValueError(f"the name of an environment variable, like {example}")
    value = os.environ.get(name)
    if not value:
        raise ValueError(f"the environment variable ${name} is not set or empty")
    if len(value) < shortest:
        raise ValueError(f"the {what} in ${name} is shorter than {shortest} characters")
    return name
