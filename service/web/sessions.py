"""Logins of the web view: a signed, expiring session cookie and CSRF tokens.

A login exchanges an API token (from ``[api] tokens``) for a cookie that names the token, a
fingerprint of it (so a token replaced in the config ends its sessions), an expiry and a random
nonce, signed with HMAC-SHA256. The token itself is never stored in the cookie. Scopes are read
from the config at every request, never from the cookie. Each form carries a CSRF token derived
from the session's nonce (the login form: from a short-lived nonce cookie), compared in
constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote

from service.config import LedgerConfig

SESSION_COOKIE = "ledger_web_session"
LOGIN_COOKIE = "ledger_web_login"
LOGIN_NONCE_SECONDS = 30 * 60
# The longest page address a login goes on to (its ``next``).
NEXT_MAX = 2000
# A form's CSRF token that is not its session's (missing, forged, or a page of a session
# logged out or replaced since).
CSRF_REFUSED = "the form's CSRF token is missing or wrong: reload the page"
# Logouts kept per token (each until its session would have expired). One more ends every
# session of the token instead (see Sessions.revoke): one logout per request grew the
# process's memory, and each logout's scan of them, without bound for a whole lifetime.
REVOKED_PER_TOKEN = 1000

log = logging.getLogger("ledger.web")
# The scopes the web view serves: a token with neither (``append`` alone) cannot log in.
WEB_SCOPES = frozenset({"read", "operate"})


@dataclass(frozen=True)
class Viewer:
    """Who is logged in: the token's name (recorded as ``operator:NAME``) and its scopes."""

    name: str
    scopes: frozenset[str]
    nonce: str  # the session's, which its CSRF token is derived from
    expires: int = 0  # when its cookie stops being accepted (Unix seconds)
    connectors: frozenset[str] | None = None  # whose runs it may fail; None: any


@dataclass(frozen=True)
class _Token:
    """A configured token as the login knows it: its sha256, scopes and connectors."""

    digest: bytes
    scopes: frozenset[str]
    connectors: frozenset[str] | None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    def __init__(self, config: LedgerConfig) -> None:
        web = config.web
        if web.secret_env is not None:
            self._key = os.environ[web.secret_env].encode("utf-8")
        else:
            self._key = secrets.token_bytes(32)
        self.lifetime = int(web.session_lifetime.total_seconds())
        # Sessions logged out before their expiry, per token name: nonce -> expiry. A cookie
        # is signed, so a copy of it would outlive the logout without this (for this process's
        # sessions). At most REVOKED_PER_TOKEN a token (see revoke).
        self._revoked: dict[str, dict[str, int]] = {}
        # Per token name: how many times its sessions were all ended (in its fingerprint).
        self._generation: dict[str, int] = {}
        self._revoked_lock = threading.Lock()  # pages are answered in a thread pool
        self._tokens = {
            token.name: _Token(
                bytes.fromhex(token.digest()), frozenset(token.scopes), token.allowed_connectors()
            )
            for token in config.api.tokens
        }

    # ------------------------------------------------------------------ signing

    def _mac(self, purpose: str, data: bytes) -> bytes:
        return hmac.new(self._key, purpose.encode() + b"\0" + data, hashlib.sha256).digest()

    def _fingerprint(self, name: str, digest: bytes) -> str:
        """The token's fingerprint in its sessions: a token replaced in the config, or whose
        sessions were all ended (its generation moved on), no longer matches it."""
        generation = self._generation.get(name, 0)
        data = digest if generation == 0 else digest + b"\0" + str(generation).encode()
        return _b64(self._mac("token", data)[:16])

    # ------------------------------------------------------------------ login

    def login(self, token: str) -> tuple[Viewer, str] | None:
        """The viewer ``token`` logs in and the cookie value, or None for an unknown token.
        Every configured token is compared, in constant time."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: tuple[str, _Token] | None = None
        for name, configured in self._tokens.items():
            if hmac.compare_digest(digest, configured.digest):
                found = (name, configured)
        if found is None:
            return None
        name, known = found
        nonce = secrets.token_urlsafe(16)
        body = json.dumps(
            {
                "n": name,
                "k": self._fingerprint(name, known.digest),
                "e": int(time.time()) + self.lifetime,
                "c": nonce,
            },
            separators=(",", ":"),
        ).encode()
        value = _b64(body) + "." + _b64(self._mac("session", body))
        viewer = Viewer(
            name, known.scopes, nonce, int(time.time()) + self.lifetime, known.connectors
        )
        return viewer, value

    def viewer(self, cookie: str | None) -> Viewer | None:
        """The viewer of a session cookie, or None when it is missing, forged, expired or names
        a token that is no longer configured as it was."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 4096:
            return None
        body_text, mac_text = cookie.split(".")
        try:
            body = _unb64(body_text)
            mac = _unb64(mac_text)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac("session", body)):
            return None
        try:
            data = json.loads(body)
            name, fingerprint, expires, nonce = data["n"], data["k"], data["e"], data["c"]
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(expires, int) or expires < time.time():
            return None
        known = self._tokens.get(name) if isinstance(name, str) else None
        if known is None or str(nonce) in self._revoked.get(name, {}):
            return None
        if not hmac.compare_digest(str(fingerprint), self._fingerprint(name, known.digest)):
            return None
        return Viewer(name, known.scopes, str(nonce), expires, known.connectors)

    def revoke(self, viewer: Viewer) -> None:
        """Log ``viewer``'s session out: its cookie is refused from now on, even a copy. A
        token that already has REVOKED_PER_TOKEN logouts kept has every session ended instead
        (its holders log in again): the memory kept stays bounded and no copy reads again."""
        now = time.time()
        with self._revoked_lock:
            kept = self._revoked.setdefault(viewer.name, {})
            for nonce in [n for n, until in kept.items() if until < now]:
                del kept[nonce]  # expired anyway: no need to remember them
            if len(kept) < REVOKED_PER_TOKEN:
                kept[viewer.nonce] = viewer.expires
                return
            self._generation[viewer.name] = self._generation.get(viewer.name, 0) + 1
            kept.clear()  # each of them is refused by its fingerprint now
        log.warning(
            "token %r logged out more than %d sessions within a session's lifetime: every "
            "session of it is ended (its holders log in again)",
            viewer.name,
            REVOKED_PER_TOKEN,
        )

    def remembered(self) -> int:
        """How many logouts this process keeps (at most REVOKED_PER_TOKEN a token)."""
        with self._revoked_lock:
            return sum(len(kept) for kept in self._revoked.values())

    # ------------------------------------------------------------------ CSRF

    def csrf_token(self, nonce: str) -> str:
        return _b64(self._mac("csrf", nonce.encode()))

    def csrf_ok(self, nonce: str | None, given: str | None) -> bool:
        if not nonce or not given:
            return False
        return hmac.compare_digest(given.encode(), self.csrf_token(nonce).encode())

    def login_nonce(self) -> str:
        """A fresh nonce for the login form's cookie: its expiry is signed into it."""
        expires = str(int(time.time()) + LOGIN_NONCE_SECONDS)
        return f"{secrets.token_urlsafe(16)}~{expires}"

    def login_nonce_ok(self, nonce: str | None) -> bool:
        if not nonce or "~" not in nonce:
            return False
        expires = nonce.rpartition("~")[2]
        return expires.isascii() and expires.isdigit() and int(expires) >= time.time()


def safe_next(target: str | None, root: str) -> str:
    """Where to go after the login: a path inside the web view only (no other host, no
    ``//evil``, no ``/\\evil``, no scheme, no ``..``), else the runs page."""
    default = f"{root}/runs"
    if not target or len(target) > NEXT_MAX:
        return default
    if not target.startswith(root + "/") or target.startswith("//"):
        return default
    if any(c in target for c in "\\\r\n\t") or any(ord(c) < 32 for c in target):
        return default
    path = unquote(target.split("?", 1)[0].split("#", 1)[0])
    if any(segment in (".", "..") for segment in path.split("/")):
        return default  # a browser resolves the dots (%2e too): /web/../docs is /docs
    return target


__all__ = [
    "CSRF_REFUSED",
    "LOGIN_COOKIE",
    "LOGIN_NONCE_SECONDS",
    "NEXT_MAX",
    "SESSION_COOKIE",
    "WEB_SCOPES",
    "Sessions",
    "Viewer",
    "safe_next",
]
