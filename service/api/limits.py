"""Failed tokens, limited per client address: after ``[api] max_auth_failures`` refused tokens
(API requests and web logins together) within ``[api] auth_failure_window``, an address's
attempts are refused (429, Retry-After) *before* its token is checked, so a guesser learns
nothing until the oldest failure leaves the window. In-process: each process counts its own.

The address is the peer's; when the peer is one of ``[api] trusted_proxies``, the client's as
the proxies wrote it in ``X-Forwarded-For`` (the rightmost address that is not a trusted
proxy: a client can put anything before it, not after it).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from ledger.durations import format_duration
from ledger.text import visible
from service.config import LedgerConfig

log = logging.getLogger("ledger.api")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Addresses remembered at most: a guesser with many addresses cannot grow the table for ever
# (the oldest is forgotten first).
CAPACITY = 10_000


class AuthFailures:
    def __init__(
        self,
        most: int,
        window: float,
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.most = most  # 0: no limit
        self.window = window
        self.capacity = capacity
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._failures)

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try a token again, or None: it may now."""
        if self.most <= 0:
            return None
        now = self._clock()
        with self._lock:
            times = self._recent(address, now)
            if times is None or len(times) < self.most:
                return None
            return max(1, math.ceil(times[-self.most] + self.window - now))

    def failed(self, address: str) -> bool:
        """Count a refused token of ``address``; True when this one reached the limit."""
        if self.most <= 0:
            return False
        now = self._clock()
        with self._lock:
            times = self._recent(address, now)
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
    return AuthFailures(api.max_auth_failures, api.auth_failure_window.total_seconds())


def note_auth_failure(
    failures: AuthFailures, address: str, what: str, config: LedgerConfig
) -> None:
    """Count a refused token; one WARNING when it makes ``address`` wait (not one a request)."""
    if failures.failed(address):
        log.warning(
            "%d refused %s from %s within %s: its attempts get 429 until the oldest ages out "
            "([api] max_auth_failures, auth_failure_window)",
            failures.most,
            what,
            visible(address),
            format_duration(config.api.auth_failure_window),
        )


def trusted_networks(proxies: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def client_address(scope: MutableMapping[str, Any], trusted: tuple[Network, ...]) -> str:
    """The address a request's failures count against (see the module's docstring)."""
    client = scope.get("client")
    peer = str(client[0]) if client else "-"
    if not trusted or not _trusted(peer, trusted):
        return peer
    forwarded = [
        value.decode("latin-1")
        for name, value in scope.get("headers", [])
        if name == b"x-forwarded-for"
    ]
    hops = [hop.strip() for hop in ",".join(forwarded).split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop[:100]
    return peer


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in trusted)


__all__ = [
    "AuthFailures",
    "auth_failures_of",
    "client_address",
    "note_auth_failure",
    "trusted_networks",
]
