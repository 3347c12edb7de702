"""Failed tokens, limited per client address: after ``[api] max_auth_failures`` refused tokens
(API requests and web logins together) within ``[api] auth_failure_window``, an address's
attempts are refused (429, Retry-After) whatever the token (the right one too), so a guesser
learns nothing until the oldest failure leaves the window. The limit is checked and a failure
counted in one step, so that concurrent guesses cannot all pass the check before any counts.
In-process: each process counts its own.

The address is the peer's; when the peer is one of ``[api] trusted_proxies``, the client's as
the proxies wrote it in ``X-Forwarded-For`` (the rightmost address that is not a trusted
proxy: a client can put anything before it, not after it). An address counts without its port
(a proxy that writes ``203.0.113.7:51234`` would otherwise make each connection a new
address), an IPv4-mapped IPv6 address as its IPv4 one, and an IPv6 address as its /64 (one
subscriber's network: a guesser holding a /64 would otherwise have 2**64 addresses).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from ledger.durations import format_duration
from ledger.text import visible
from service.config import LedgerConfig

log = logging.getLogger("ledger.api")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Addresses remembered at most: a guesser with many addresses cannot grow the table for ever
# (the oldest is forgotten first).
CAPACITY = 10_000
# An IPv6 client counts as its /64, the network one subscriber is given.
IPV6_PREFIX = 64


@dataclass(frozen=True)
class Attempt:
    """The limit's answer to one token from ``address``: ``wait`` seconds when the address is
    limited (whatever the token was); ``reaches_limit`` when this refused token made it so."""

    address: str
    wait: int | None = None
    reaches_limit: bool = False


class AuthFailures:
    def __init__(
        self,
        most: int,
        window: float,
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.monotonic,
        trusted_proxies: tuple[Network, ...] = (),
    ) -> None:
        self.most = most  # 0: no limit
        self.window = window
        self.trusted_proxies = trusted_proxies
        self.capacity = capacity
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._failures)

    def attempt_of(self, scope: MutableMapping[str, Any], right: bool) -> Attempt:
        """:meth:`attempt` from the address of the request of ``scope`` (:func:`client_address`
        behind this limit's trusted proxies)."""
        return self.attempt(client_address(scope, self.trusted_proxies), right)

    def attempt(self, address: str, right: bool) -> Attempt:
        """Judge a token already compared (``right``) in one step under the lock: while
        ``address`` is limited, ``wait`` whatever the token (the right one too, so a guess
        tells nothing); else a wrong token is counted. Checking the limit and counting apart
        let requests checked at the same time all slip under the limit."""
        if self.most <= 0:
            return Attempt(address)
        now = self._clock()
        with self._lock:
            times = self._recent(address, now)
            if times is not None and len(times) >= self.most:
                wait = max(1, math.ceil(times[-self.most] + self.window - now))
                return Attempt(address, wait=wait)
            if right:
                return Attempt(address)
            return Attempt(address, reaches_limit=self._count(address, times, now))

    def _count(self, address: str, times: deque[float] | None, now: float) -> bool:
        """Add a failure at ``now`` (the lock held); True when it reached the limit."""
        if times is None:
            if len(self._failures) >= self.capacity:
                self._forget_expired(now)
            while len(self._failures) >= self.capacity:
                self._failures.popitem(last=False)
            times = self._failures[address] = deque(maxlen=self.most)
        times.append(now)
        self._failures.move_to_end(address)
        return len(times) == self.most

    def _recent(self, address: str, now: float) -> deque[float] | None:
        times = self._failures.get(address)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times

    def _forget_expired(self, now: float) -> None:
        for address in list(self._failures):
            self._recent(address, now)


def auth_failures_of(config: LedgerConfig) -> AuthFailures:
    api = config.api
    return AuthFailures(
        api.max_auth_failures,
        api.auth_failure_window.total_seconds(),
        trusted_proxies=trusted_networks(api.trusted_proxies),
    )


def note_auth_failure(
    failures: AuthFailures, attempt: Attempt, what: str, config: LedgerConfig
) -> None:
    """A refused token (counted by :meth:`AuthFailures.attempt`); one WARNING when it made
    its address wait (not one a request)."""
    if attempt.reaches_limit:
        log.warning(
            "%d refused %s from %s within %s: its attempts get 429 until the oldest ages out "
            "([api] max_auth_failures, auth_failure_window)",
            failures.most,
            what,
            visible(attempt.address),
            format_duration(config.api.auth_failure_window),
        )


def trusted_networks(proxies: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def client_address(scope: MutableMapping[str, Any], trusted: tuple[Network, ...]) -> str:
    """The address a request's failures count against (see the module's docstring)."""
    client = scope.get("client")
    peer = str(client[0]) if client else "-"
    if not trusted or not _trusted(peer, trusted):
        return _counted(peer)
    forwarded = [
        value.decode("latin-1")
        for name, value in scope.get("headers", [])
        if name == b"x-forwarded-for"
    ]
    hops = [hop.strip() for hop in ",".join(forwarded).split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return _counted(hop)
    return _counted(peer)


def _parsed(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``address`` as an IP address, without a port (``1.2.3.4:80``, ``[::1]:80``)."""
    text = address.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address):
        return parsed.ipv4_mapped or parsed
    return parsed


def _counted(address: str) -> str:
    """The key ``address`` counts under: an IPv4 address, an IPv6 /64, or (not an address
    at all, as a proxy may write ``unknown``) its first 100 characters."""
    parsed = _parsed(address)
    if parsed is None:
        return address[:100]
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(parsed) >> IPV6_PREFIX << IPV6_PREFIX, IPV6_PREFIX)))
    return str(parsed)


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    parsed = _parsed(address)
    if parsed is None:
        return False
    return any(parsed in network for network in trusted)


__all__ = [
    "Attempt",
    "AuthFailures",
    "auth_failures_of",
    "client_address",
    "note_auth_failure",
    "trusted_networks",
]
