"""Bearer tokens with scopes. A token is known only by its sha256 (from the config, or hashed
from the environment variable it names once, at start) and compared in constant time; it is
never logged or echoed: requests are logged by the token's name."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from ledger import ConfigurationError
from service.config import ApiConfig
from service.config.http import repeated_token_problem

BEARER = "bearer"
# Query parameters a client might put a token in: refused, since URLs end up in logs.
TOKEN_PARAMETERS = frozenset({"access_token", "token", "api_key", "apikey", "key", "auth"})


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: frozenset[str]
    connectors: frozenset[str] | None = None  # whose runs it may write for; None: any


@dataclass(frozen=True)
class _Known:
    digest: bytes
    caller: Caller


class Tokens:
    def __init__(self, config: ApiConfig) -> None:
        # Checked by the config's validation already; again here, as the environment is read
        # again: one token under two entries would be whichever matched last.
        problem = repeated_token_problem(config.tokens)
        if problem is not None:
            raise ConfigurationError(f"[api] tokens: {problem}")
        self._known = [
            _Known(
                bytes.fromhex(token.digest()),
                Caller(token.name, frozenset(token.scopes), token.allowed_connectors()),
            )
            for token in config.tokens
        ]

    def __len__(self) -> int:
        return len(self._known)

    def caller(self, token: str) -> Caller | None:
        """Who holds ``token``, or None. Every configured token is compared, in constant
        time, whichever matches."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found = None
        for known in self._known:  # at most one matches: the config refuses a repeated token
            if hmac.compare_digest(digest, known.digest):
                found = known.caller
        return found


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == BEARER and token else None


__all__ = ["TOKEN_PARAMETERS", "Caller", "Tokens", "bearer_token"]
