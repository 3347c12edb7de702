"""The ``ledger serve`` configuration: a TOML file validated with pydantic, errors naming the key.

database_url = "sqlite:///ledger.db"     # relative to this file; $LEDGER_DATABASE_URL overrides it

[thresholds]            # when an open run is stuck (defaults: stale_after 60m, no max)
stale_after = "60m"
max_runtime = "6h"

[sweeper]
interval = "15m"

[serve]
metrics_port = 9464
metrics_host = "127.0.0.1"   # 0.0.0.0 (or ::) lets Prometheus on another host scrape

[api]                   # optional: the HTTP API (off unless listen is given)
listen = "127.0.0.1:8080"
max_body_bytes = 10485760
[[api.tokens]]
name = "connectors"     # recorded as operator:NAME when it fails a run
scopes = ["append", "read"]   # append | read | operate
sha256 = "…64 hex digits…"  # or env = "LEDGER_API_TOKEN" (the variable holding the token)

[web]                   # optional: the web view, at /web/ on the API's listener
enabled = true
public_read = false     # true: pages readable without a login (an internal network only)
secret_env = "LEDGER_WEB_SECRET"  # signs session cookies; else a random key per process

[anchor]                # optional: the ledger head, appended to a file kept off the database
path = "anchors.txt"
interval = "1h"

[[connectors]]
name = "stations"       # ingestion_runs.connectorName
type = "csv"            # csv | http-json
source_id = 1
schedule = { interval = "15m" }          # or { cron = "*/5 * * * *" }
options = { path = "stations.csv", key = "id" }
thresholds = { stale_after = "30m" }
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import ipaddress
import os
import re
import tomllib
import typing
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from connectors.registry import CONNECTOR_TYPES, build_connector, unknown_options_message
from ledger.database import create_ledger_engine
from ledger.durations import parse_duration
from ledger.errors import ConfigurationError, LedgerError
from ledger.events import ConnectorName, SourceId
from ledger.store import Ledger
from ledger.stuck import (
    DEFAULT_STALE_AFTER,
    StuckRun,
    Thresholds,
    stuck_runs,
    stuck_runs_as_of,
)
from ledger.text import visible
from ledger.urls import DATABASE_URL_ENV, DEFAULT_DATABASE_URL


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


class ThresholdsConfig(Strict):
    stale_after: Duration = DEFAULT_STALE_AFTER
    max_runtime: Duration | None = None

    def to_thresholds(self) -> Thresholds:
        return Thresholds(self.stale_after, self.max_runtime)


class ConnectorThresholds(Strict):
    """A connector's own thresholds; a field left out keeps the global value."""

    stale_after: Duration | None = None
    max_runtime: Duration | None = None

    def over(self, defaults: ThresholdsConfig) -> Thresholds:
        return Thresholds(
            self.stale_after or defaults.stale_after, self.max_runtime or defaults.max_runtime
        )


class ScheduleConfig(Strict):
    interval: Duration | None = None
    cron: str | None = None
    # None: serve.run_at_start decides (which applies to interval schedules only).
    run_at_start: bool | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleConfig:
        if (self.interval is None) == (self.cron is None):
            raise ValueError("give exactly one of interval or cron")
        return self

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                CronTrigger.from_crontab(value, timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"not a 5-field crontab expression: {exc}") from exc
        return value


class ConnectorConfig(Strict):
    name: ConnectorName  # the ledger's rule for connector names, checked when the file is read
    type: Literal["csv", "http-json"]
    source_id: SourceId
    schedule: ScheduleConfig
    options: dict[str, Any] = Field(default_factory=dict)
    thresholds: ConnectorThresholds | None = None
    enabled: bool = True

    @field_validator("options")
    @classmethod
    def _known_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = info.data.get("type")  # absent when the type itself is invalid
        if kind in CONNECTOR_TYPES:
            unknown = unknown_options_message(CONNECTOR_TYPES[kind], value)
            if unknown:
                raise ValueError(unknown)
        return value

    @model_validator(mode="after")
    def _buildable(self) -> ConnectorConfig:
        """The connector is built here once, so an option its type refuses (a missing one, an
        http-json url that is not http(s)) fails ``config check`` and serve's start, not every
        scheduled run."""
        if not self.enabled:  # a placeholder may leave its options for later
            return self
        try:
            build_connector(self.type, self.source_id, self.name, self.options)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from exc
        return self


class SweeperConfig(Strict):
    interval: Duration = timedelta(minutes=15)


class ProjectorConfig(Strict):
    interval: Duration = timedelta(seconds=1)
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 1000


class SpoolConfig(Strict):
    dir: str | None = None
    flush_interval: Duration = timedelta(minutes=1)


_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def _listen_host(value: str) -> str:
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


class AnchorConfig(Strict):
    """``[anchor]``: append the ledger head to ``path`` every ``interval`` (see ``ledger
    anchor``); the file is meant to be shipped off the database host."""

    path: Annotated[str, Field(min_length=1)]
    interval: Duration = timedelta(hours=1)

    @field_validator("path")
    @classmethod
    def _usable_path(cls, value: str) -> str:
        if "\0" in value:
            raise ValueError("a path cannot contain a NUL character")
        if not value.strip():
            raise ValueError("give a file path")
        return value


ApiScope = Literal["append", "read", "operate"]  # what a token may do: the one list
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) as a host to bind and a port; ValueError says
    what is wrong."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("write HOST:PORT, like 127.0.0.1:8080 (a port from 1 to 65535)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return _listen_host(host), int(port)


def _listen(value: str) -> str:
    split_listen(value)
    return value


def _secret_variable(name: str | None, example: str, what: str, shortest: int) -> str | None:
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


class ApiToken(Strict):
    """One bearer token: a name (logged and recorded instead of the token), its scopes, and
    the token itself only as its sha256 or as the name of the environment variable holding it."""

    name: ConnectorName
    scopes: Annotated[list[ApiScope], Field(min_length=1)]
    sha256: str | None = None
    env: str | None = None

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256_HEX.fullmatch(value.lower()):
            raise ValueError("the token's sha256 as 64 hexadecimal digits")
        return None if value is None else value.lower()

    @field_validator("env")
    @classmethod
    def _variable(cls, value: str | None) -> str | None:
        return _secret_variable(value, "LEDGER_API_TOKEN", "token", 16)

    @model_validator(mode="after")
    def _one_source(self) -> ApiToken:
        if (self.sha256 is None) == (self.env is None):
            raise ValueError("give exactly one of sha256 or env")
        return self

    def digest(self) -> str:
        """The sha256 of the token, hex (read from the environment for ``env``)."""
        if self.sha256 is not None:
            return self.sha256
        assert self.env is not None
        token = os.environ.get(self.env, "")
        return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ApiConfig(Strict):
    listen: Annotated[str, pydantic.AfterValidator(_listen)] | None = None
    max_body_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024 * 1024)] = DEFAULT_MAX_BODY_BYTES
    # Seconds ``ledger api`` (and serve's API) waits for requests in flight at SIGTERM.
    grace_period: Duration = timedelta(seconds=30)
    # A request body that stalls this long between two reads is answered 408 (slow clients).
    read_timeout: Duration = timedelta(seconds=30)
    # Events in one POST /v1/events: one transaction holds the head lock while it appends.
    max_events: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    # verify and as_of/at_position reads replay history: at most this many at once (429).
    max_expensive: Annotated[int, Field(ge=1, le=64)] = 2
    tokens: list[ApiToken] = Field(default_factory=list)

    @field_validator("tokens")
    @classmethod
    def _unique_names(cls, value: list[ApiToken]) -> list[ApiToken]:
        names = [token.name for token in value]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"token name {name!r} is used more than once")
        return value


class WebConfig(Strict):
    """``[web]``: the read-only web view, served with the API (``/web/``)."""

    enabled: bool = False
    # Pages readable without a login: for an internal network only (failing a run still needs
    # a login with an ``operate`` token).
    public_read: bool = False
    # How long a login lasts; the signed cookie carries its expiry.
    session_lifetime: Duration = timedelta(hours=8)
    # The environment variable holding the key that signs session cookies (32+ characters):
    # without it a random key is drawn at start, so a restart logs everyone out and several
    # processes behind one address do not share logins.
    secret_env: str | None = None
    # Cookies get Secure when the request came over https; true forces it (a TLS proxy in front).
    secure_cookies: bool = False
    # How often the web view verifies the ledger for its red banner ("0s": only when the
    # Integrity page is opened).
    verify_interval: DurationOrZero = timedelta(hours=1)

    @field_validator("secret_env")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return _secret_variable(value, "LEDGER_WEB_SECRET", "secret", 32)


class ServeConfig(Strict):
    grace_period: Duration = timedelta(seconds=30)
    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    # Loopback unless the operator opens it: the figures name connectors and sources.
    metrics_host: Annotated[str, pydantic.AfterValidator(_listen_host)] = "127.0.0.1"
    progress_interval: DurationOrZero = timedelta(seconds=5)
    heartbeat_interval: Duration = timedelta(seconds=60)
    # Interval connectors, the sweeper and the spool flush run once as serve starts, so a new
    # install shows a run at once instead of after the first interval (cron keeps its times).
    run_at_start: bool = True


class LedgerConfig(Strict):
    database_url: str = DEFAULT_DATABASE_URL
    thresholds: ThresholdsConfig = ThresholdsConfig()
    sweeper: SweeperConfig = SweeperConfig()
    projector: ProjectorConfig = ProjectorConfig()
    spool: SpoolConfig = SpoolConfig()
    serve: ServeConfig = ServeConfig()
    anchor: AnchorConfig | None = None  # no [anchor] section: no anchor is written
    api: ApiConfig = ApiConfig()  # no [api] listen: serve runs no API
    web: WebConfig = WebConfig()  # mounted at /web/ of the API when enabled
    connectors: list[ConnectorConfig] = Field(default_factory=list)

    @field_validator("database_url")
    @classmethod
    def _usable_url(cls, value: str) -> str:
        try:  # an engine connects lazily: this checks the URL, not the server
            create_ledger_engine(value).dispose()
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("connectors")
    @classmethod
    def _unique_jobs(cls, value: list[ConnectorConfig]) -> list[ConnectorConfig]:
        seen: set[tuple[str, int]] = set()
        for connector in value:
            key = (connector.name, connector.source_id)
            if key in seen:
                raise ValueError(
                    f"connector {connector.name!r} with source_id "
                    f"{connector.source_id} is configured twice"
                )
            seen.add(key)
        return value

    def runs_at_start(self, connector: ConnectorConfig) -> bool:
        """Whether ``connector`` runs once as serve starts, besides its schedule."""
        if connector.schedule.run_at_start is not None:
            return connector.schedule.run_at_start
        return self.serve.run_at_start and connector.schedule.interval is not None

    def stuck_runs(
        self,
        ledger: Ledger,
        position: int | None = None,
        at: datetime | None = None,
        *,
        stale_after: timedelta | None = None,
        max_runtime: timedelta | None = None,
    ) -> list[StuckRun]:
        """The runs stuck by this config's thresholds (a connector's own over the globals):
        now, or as the ledger stood at ``position`` (judged at ``at``, by default when that
        position was recorded). A ``stale_after`` or ``max_runtime`` given replaces that
        threshold for every run, each connector's own included; the other stays as
        configured."""
        given: dict[str, timedelta] = {}
        if stale_after is not None:
            given["stale_after"] = stale_after
        if max_runtime is not None:
            given["max_runtime"] = max_runtime
        thresholds = replace(self.thresholds.to_thresholds(), **given)
        overrides = {key: replace(value, **given) for key, value in self.overrides().items()}
        if position is not None:
            return stuck_runs_as_of(
                ledger,
                position,
                at,
                older_than=thresholds.stale_after,
                max_runtime=thresholds.max_runtime,
                overrides=overrides,
            )
        return stuck_runs(
            ledger,
            older_than=thresholds.stale_after,
            max_runtime=thresholds.max_runtime,
            overrides=overrides,
        )

    def overrides(self) -> dict[str | tuple[str, int], Thresholds]:
        """Per-connector thresholds by (connector name, source id), merged over the globals."""
        return {
            (c.name, c.source_id): c.thresholds.over(self.thresholds)
            for c in self.connectors
            if c.thresholds
        }


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(file)"


_TOML_OPENERS = ("[", "{", '"', "'")
_TOML_SEARCH_BUDGET = 2_000_000  # characters re-parsed at most while looking for the opener


def _where(loc: tuple[int | str, ...], url_from_environment: bool) -> str:
    """The key a problem is at; a URL from the environment is named as such, not as the
    file's ``database_url`` (which it replaced)."""
    if url_from_environment and loc[:1] == ("database_url",):
        return f"${DATABASE_URL_ENV} (in place of database_url)"
    return _location(loc)


def _toml_problem(text: str, error: tomllib.TOMLDecodeError) -> str:
    """tomllib's message, naming the line where it only says "at end of document" (a string,
    array or table opened and never closed): the line after the longest prefix that parses.

    Only lines that can open such a thing are tried, from the end, within a budget of parsed
    text, so a huge file costs a bounded time rather than a parse per line."""
    message = str(error)
    if "at end of document" not in message:
        return message
    lines = text.splitlines(keepends=True)
    budget = _TOML_SEARCH_BUDGET
    for opener in range(len(lines) - 1, -1, -1):
        if not any(mark in lines[opener] for mark in _TOML_OPENERS):
            continue
        prefix = "".join(lines[:opener])
        budget -= len(prefix)
        if budget < 0:
            break
        try:
            tomllib.loads(prefix)
        except tomllib.TOMLDecodeError:
            continue
        return f"{message}; opened at line {opener + 1} and never closed"
    return message


def _beside(config: Path, path: str) -> str:
    """A relative path in the config means relative to the config file."""
    return path if Path(path).is_absolute() else str((config.resolve().parent / path).resolve())


def _sqlite_beside(config: Path, url: str) -> str:
    """A SQLite URL's relative file means relative to the config file, like every other path
    in it; an absolute file, an in-memory database, a ``file:`` URI and other databases are
    left as they are (a URL the validator refuses too: it names the problem)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return url
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return url
    if database.startswith("file:") or "\0" in database or Path(database).is_absolute():
        return url
    return parsed.set(database=_beside(config, database)).render_as_string(hide_password=False)


def missing_inputs(config: LedgerConfig) -> list[str]:
    """What a scheduled connector would fail on at every run: a csv file that is not there.
    (``serve`` does not refuse to start for it: the file may appear later.)"""
    problems = []
    for index, connector in enumerate(config.connectors):
        if not connector.enabled or connector.type != "csv":
            continue
        where = f"connectors[{index}] ({connector.name!r}, source {connector.source_id})"
        path = connector.options.get("path")
        if not isinstance(path, str):
            continue  # the connector's own check named it when the file was read
        if Path(path).is_dir():
            problems.append(f"{where}: options.path is a folder, not a file: {path}")
        elif not Path(path).is_file():
            problems.append(f"{where}: no file at options.path: {path}")
    return problems


def checked_config(path: str | os.PathLike[str]) -> LedgerConfig:
    """:func:`load_config`, and every scheduled connector's input file there (what
    ``ledger config check`` proves): a :class:`ConfigurationError` names each one missing."""
    config = load_config(path)
    missing = missing_inputs(config)
    if missing:
        problems = "\n  ".join(visible(problem) for problem in missing)
        raise ConfigurationError(
            f"{visible(str(path))}: a scheduled connector would fail\n  {problems}"
        )
    return config


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    """A key no section takes: "unknown key", the key meant when one is close (a typo), and
    the keys that section takes (pydantic said "Extra inputs are not permitted")."""
    section = _section_at(loc[:-1])
    known = list(section.model_fields) if section is not None else []
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.75)
    meant = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown key{meant}" + (f"; known: {', '.join(known)}" if known else "")


def _section_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The config model of the section at ``loc`` (list indexes skipped), or None."""
    model: type[BaseModel] = LedgerConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        found = _model_in(field.annotation) if field is not None else None
        if found is None:
            return None
        model = found
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The config model inside an annotation (``X | None``, ``list[X]``, ``Annotated[X, …]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def load_config(path: str | os.PathLike[str]) -> LedgerConfig:
    """Read and validate a config file; every problem names its key. ``$LEDGER_DATABASE_URL``
    overrides ``database_url``."""
    source = Path(path)
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{source}: cannot read the config file ({exc.strerror})") from exc
    body = raw.removeprefix(codecs.BOM_UTF8)  # as some editors write: harmless
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = len(raw) - len(body) + exc.start
        line = raw[:offset].count(b"\n") + 1
        raise ConfigurationError(
            f"{source}: not valid UTF-8 (at line {line}, byte {offset})"
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{source}: not valid TOML ({_toml_problem(text, exc)})") from exc
    from_environment = bool(os.environ.get(DATABASE_URL_ENV))
    if from_environment:  # a URL from the environment is relative to the current folder
        data["database_url"] = os.environ[DATABASE_URL_ENV]
    elif isinstance(data.get("database_url"), str):
        data["database_url"] = _sqlite_beside(source, data["database_url"])
    # A relative csv path means relative to the config file, wherever serve is started from.
    connectors = data.get("connectors")
    for index, connector in enumerate(connectors if isinstance(connectors, list) else []):
        options = connector.get("options") if isinstance(connector, dict) else None
        if isinstance(options, dict) and isinstance(options.get("path"), str):
            if "\0" in options["path"]:
                raise ConfigurationError(
                    f"{source}: invalid config\n  connectors[{index}].options.path: "
                    "a path cannot contain a NUL character"
                )
            path = Path(options["path"])
            if not path.is_absolute():
                options["path"] = str((source.resolve().parent / path).resolve())
    # The anchor file too; a path the validator refuses is left for it to name.
    anchor = data.get("anchor")
    anchor_path = anchor.get("path") if isinstance(anchor, dict) else None
    if isinstance(anchor, dict) and isinstance(anchor_path, str) and anchor_path.strip():
        anchor["path"] = anchor_path if "\0" in anchor_path else _beside(source, anchor_path)
    try:
        return LedgerConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = [
            f"{_where(error['loc'], from_environment)}: "
            + (
                _unknown_key(error["loc"])
                if error["type"] == "extra_forbidden"
                else error["msg"].removeprefix("Value error, ")
            )
            for error in exc.errors(include_url=False)
        ]
        raise ConfigurationError(f"{source}: invalid config\n  " + "\n  ".join(problems)) from exc
