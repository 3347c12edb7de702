"""``[api]`` (with its ``[[api.tokens]]``) and ``[web]``: the HTTP API and the web view."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from datetime import timedelta
from typing import Annotated, Literal

import pydantic
from pydantic import Field, field_validator, model_validator

from ledger.events import ConnectorName
from ledger.text import visible
from service.config.fields import Duration, DurationOrZero, Strict, listen_address, secret_variable

ApiScope = Literal["append", "read", "operate"]  # what a token may do: the one list
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_HEADER_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space


class ApiToken(Strict):
    """One bearer token: a name (logged and recorded instead of the token), its scopes, and
    the token itself only as its sha256 or as the name of the environment variable holding it."""

    name: ConnectorName
    scopes: Annotated[list[ApiScope], Field(min_length=1)]
    sha256: str | None = None
    env: str | None = None
    # The only connectors whose runs the token may write for (append, fail a run), by exact
    # name; absent: every connector. Reads are not filtered.
    connectors: Annotated[list[ConnectorName], Field(min_length=1, max_length=1000)] | None = None

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256_HEX.fullmatch(value.lower()):
            raise ValueError("the token's sha256 as 64 hexadecimal digits")
        return None if value is None else value.lower()

    @field_validator("env")
    @classmethod
    def _variable(cls, value: str | None) -> str | None:
        name = secret_variable(value, "LEDGER_API_TOKEN", "token", 16)
        if name is not None and not _HEADER_TOKEN.fullmatch(os.environ[name]):
            # A client sends the token in a header (ASCII); a token with another character
            # could never be sent as it is hashed here, so no request would ever match it.
            raise ValueError(
                f"the token in ${name} holds a character a client cannot send in an "
                "Authorization header: use printable ASCII without spaces "
                "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return name

    @model_validator(mode="after")
    def _one_source(self) -> ApiToken:
        if (self.sha256 is None) == (self.env is None):
            raise ValueError("give exactly one of sha256 or env")
        return self

    @model_validator(mode="after")
    def _connectors_bind_writes(self) -> ApiToken:
        if self.connectors is not None and not {"append", "operate"} & set(self.scopes):
            raise ValueError(
                "connectors binds what a token writes (append, operate) and reads are not "
                "filtered: give it to a token with one of those scopes, or leave it out"
            )
        return self

    def allowed_connectors(self) -> frozenset[str] | None:
        """The connectors the token may write for, or None for any."""
        return None if self.connectors is None else frozenset(self.connectors)

    def digest(self) -> str:
        """The sha256 of the token, hex (read from the environment for ``env``)."""
        if self.sha256 is not None:
            return self.sha256
        assert self.env is not None
        token = os.environ.get(self.env, "")
        return hashlib.sha256(token.encode("utf-8")).hexdigest()


MAX_DATABASE_TIMEOUT = timedelta(minutes=10)


class ApiConfig(Strict):
    listen: Annotated[str, pydantic.AfterValidator(listen_address)] | None = None
    max_body_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024 * 1024)] = DEFAULT_MAX_BODY_BYTES
    # Seconds ``ledger api`` (and serve's API) waits for requests in flight at SIGTERM.
    grace_period: Duration = timedelta(seconds=30)
    # A request body that stalls this long between two reads is answered 408 (slow clients).
    read_timeout: Duration = timedelta(seconds=30)
    # Events in one POST /v1/events: one transaction holds the head lock while it appends.
    max_events: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    # verify and as_of/at_position reads replay history: at most this many at once (429).
    max_expensive: Annotated[int, Field(ge=1, le=64)] = 2
    # How long a request waits on the database (MySQL: connect, each read and write of the
    # socket, a pooled connection; SQLite: another writer's lock) before it is answered 503:
    # a frozen server would otherwise hold a worker thread for the driver's 75 s.
    database_timeout: Duration = timedelta(seconds=5)
    # Refused tokens (API requests and web logins) from one client address within the window
    # before its attempts get 429, whatever the token, until the window lets one more in (0:
    # no limit). An address counts without its port, an IPv6 one as its /64.
    max_auth_failures: Annotated[int, Field(ge=0, le=10_000)] = 10
    auth_failure_window: Duration = timedelta(minutes=1)
    # Reverse proxies (addresses or networks) whose X-Forwarded-For names the client: without
    # them every client of a proxy shares its address, and so its failures' limit.
    trusted_proxies: list[str] = Field(default_factory=list)
    tokens: list[ApiToken] = Field(default_factory=list)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for proxy in value:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"{visible(proxy)!r} is not an IP address or network") from None
        return value

    @field_validator("auth_failure_window")
    @classmethod
    def _window(cls, value: timedelta) -> timedelta:
        if value > timedelta(days=1):
            raise ValueError("at most 1d")
        return value

    @field_validator("database_timeout")
    @classmethod
    def _database_timeout(cls, value: timedelta) -> timedelta:
        if value > MAX_DATABASE_TIMEOUT:
            raise ValueError(f"at most {MAX_DATABASE_TIMEOUT.seconds // 60}m")
        return value

    @field_validator("tokens")
    @classmethod
    def _unique_names(cls, value: list[ApiToken]) -> list[ApiToken]:
        names = [token.name for token in value]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"token name {name!r} is used more than once")
        problem = repeated_token_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


def repeated_token_problem(tokens: list[ApiToken]) -> str | None:
    """What is wrong when one token is configured under two entries (two ``sha256`` alike, two
    ``env`` variables holding one value, or one of each), or None: a request with it would be
    whichever entry matched last, its name and scopes decided by the order of the file. Names
    both entries, never the token nor its hash."""
    seen: dict[str, tuple[int, ApiToken]] = {}
    for index, token in enumerate(tokens):
        digest = token.digest()
        if digest in seen:
            first_index, first = seen[digest]
            return (
                f"tokens[{first_index}] {first.name!r} ({_source(first)}) and tokens[{index}] "
                f"{token.name!r} ({_source(token)}) are the same token: a request with it "
                "could be only one of them; give each entry a token of its own"
            )
        seen[digest] = (index, token)
    return None


def _source(token: ApiToken) -> str:
    return "its sha256" if token.env is None else f"${token.env}"


# A DNS name as a browser sends it in ``Host`` (the port apart), a trailing dot allowed; an
# underscore too, which hostnames may not hold but internal DNS names often do (and browsers
# send them as they are).
_HOST_NAME = re.compile(
    r"(?=.{1,254}\Z)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
    r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?"
)


class WebConfig(Strict):
    """``[web]``: the read-only web view, served with the API (``/web/``)."""

    enabled: bool = False
    # Pages readable without a login: for an internal network only (failing a run still needs
    # a login with an ``operate`` token).
    public_read: bool = False
    # The host names under which visitors read without a login (public_read), besides IP
    # addresses and ``localhost``: a page of any site whose name the attacker points at this
    # server (DNS rebinding) would otherwise read the runs through a visitor's browser.
    allowed_hosts: list[str] = []
    # How long a login lasts; the signed cookie carries its expiry.
    session_lifetime: Duration = timedelta(hours=8)
    # The environment variable holding the key that signs session cookies (32+ characters):
    # without it a random key is drawn at start, so a restart logs everyone out and several
    # processes behind one address do not share logins.
    secret_env: str | None = None
    # Cookies get Secure when the request came over https, which the server itself never sees
    # (TLS ends at a proxy in front): behind one, this must be true.
    secure_cookies: bool = False
    # How often the web view verifies the ledger for its red banner ("0s": only when the
    # Integrity page is opened).
    verify_interval: DurationOrZero = timedelta(hours=1)

    @field_validator("secret_env")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return secret_variable(value, "LEDGER_WEB_SECRET", "secret", 32)

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _HOST_NAME.fullmatch(name):
                raise ValueError(
                    f"{visible(name)!r} is not a host name (letters, digits, '-', '_' and '.', "
                    "without a port or a scheme: ledger.internal)"
                )
        return [name.lower().rstrip(".") for name in names]
