"""Reading a config file: TOML problems with their line, paths relative to the file, every
validation problem named by its key; ``config check``'s missing inputs."""

from __future__ import annotations

import codecs
import difflib
import os
import re
import stat
import tomllib
import typing
from pathlib import Path
from typing import Any

import pydantic
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from connectors.spool import DEFAULT_SPOOL_DIR, SPOOL_DIR_ENV
from ledger.errors import ConfigurationError
from ledger.output_files import database_file_named
from ledger.text import clip, visible
from ledger.urls import DATABASE_URL_ENV, DEFAULT_DATABASE_URL
from service.config.model import LedgerConfig


def _location(loc: tuple[int | str, ...], data: dict[str, Any] | None = None) -> str:
    """``connectors[1].schedule.interval``; a key inside a connector also names the connector
    by what its table gives of its name and source (``connectors[1] ('api', source
    2).schedule.interval``): with many ``[[connectors]]`` tables an index alone made the
    reader count them (see :func:`_connector_label`)."""
    text = ""
    for number, part in enumerate(loc):
        # A key at most 100 characters, as an event's unknown field is shown.
        key = clip(str(part), 100, count_cut=True)
        text += f"[{part}]" if isinstance(part, int) else (f".{key}" if text else key)
        if number == 1 and loc[0] == "connectors" and len(loc) > 2 and data is not None:
            text += _connector_label(data, part, loc[2])
    return text or "(file)"


def _connector_label(data: dict[str, Any], index: int | str, key: int | str) -> str:
    """`` ('NAME', source N)`` for the connector table at ``index``: its name when it is text
    and its source when it is an integer, each left out when missing, of another type or the
    very key the problem is about; empty when neither is left."""
    connectors = data.get("connectors")
    if not isinstance(connectors, list) or not isinstance(index, int):
        return ""
    table = connectors[index] if 0 <= index < len(connectors) else None
    if not isinstance(table, dict):
        return ""
    parts = []
    name = table.get("name")
    if isinstance(name, str) and key != "name":
        parts.append(repr(clip(name, 100, count_cut=True)))
    source = table.get("source_id")
    if isinstance(source, int) and not isinstance(source, bool) and key != "source_id":
        parts.append(f"source {source}")
    return f" ({', '.join(parts)})" if parts else ""


_TOML_OPENERS = ("[", "{", '"', "'")
_TOML_SEARCH_BUDGET = 2_000_000  # characters re-parsed at most while looking for the opener


def _where(loc: tuple[int | str, ...], url_from_environment: bool, data: dict[str, Any]) -> str:
    """The key a problem is at (in ``data``, the file's tables); a URL from the environment is
    named as such, not as the file's ``database_url`` (which it replaced)."""
    if url_from_environment and loc[:1] == ("database_url",):
        return f"${DATABASE_URL_ENV} (in place of database_url)"
    return _location(loc, data)


def _too_many_digits(text: str) -> str:
    """Where the number tomllib could not read is: the first run of over 4,300 digits."""
    found = re.search(r"[0-9_]{4301,}", text)
    line = text[: found.start()].count("\n") + 1 if found else None
    return "a number of more than 4,300 digits" + (f" at line {line}" if line else "")


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


def _spool_beside(config: Path, data: dict[str, Any]) -> None:
    """``[spool] dir`` relative to the config file, like its other paths; and with neither it
    nor ``$LEDGER_SPOOL_DIR``, the default folder beside the config file, not in whatever
    folder serve (or ``status --config``) was started from: two starts from two folders
    would spool to two places, and a flush from one would not see the other's events. A value
    the validator refuses (not text) is left for it to name; a blank one means the default."""
    spool = data.setdefault("spool", {})
    if not isinstance(spool, dict):
        return
    folder = spool.get("dir")
    if isinstance(folder, str) and folder.strip() and "\0" not in folder:
        spool["dir"] = _beside(config, folder)
    elif (folder is None or folder == "") and not os.environ.get(SPOOL_DIR_ENV):
        spool["dir"] = _beside(config, DEFAULT_SPOOL_DIR)


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


def anchor_problem(config: LedgerConfig) -> str | None:
    """What serve's ``[anchor]`` job would fail on at every interval, or None: a folder that
    is not there or that this user may not write in, a file it may not write, a folder given
    as the file, the ledger's own SQLite file. ``config check`` and serve's start refuse it
    (``ledger anchor --output`` exits 2 for the same path); a folder that goes away later is
    logged at each interval."""
    if config.anchor is None:
        return None
    path = Path(config.anchor.path)
    folder = path.parent
    if path.is_dir():
        return f"anchor.path is a folder, not a file: {path}"
    database = database_file_named(path, config.database_url)
    if database is not None:  # each anchor appended into the SQLite file itself
        return f"anchor.path is the ledger's own database file: {database}"
    if not folder.is_dir():
        return f"anchor.path: no folder {folder} to write {path.name} in"
    stream = anchor_stream_problem(path)
    if stream is not None:
        return stream
    if path.exists():
        if not os.access(path, os.W_OK):
            return f"anchor.path: this user may not write {path}"
    elif not os.access(folder, os.W_OK | os.X_OK):
        return f"anchor.path: this user may not create {path.name} in {folder}"
    return None


def anchor_stream_problem(path: Path) -> str | None:
    """Why serve's anchor job cannot use ``path``, when it names something other than a
    regular file or a folder (a FIFO, a device, a socket): serve reads a file's last anchor
    back to refuse a rolled-back history, which a stream cannot give, and a FIFO nobody reads
    held the job in its ``open`` for ever (each later interval skipped: "maximum running
    instances"). None for a regular file, a folder (what the write says) or nothing there yet.
    ``ledger anchor --output`` takes a stream: that is a one-off the caller watches."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # nothing there (yet), or what the write will say
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):  # a folder: what the write says
        return None
    return (
        f"anchor.path is not a regular file (a FIFO, a device or a socket): {path}; serve's "
        "anchor job reads the file's last anchor back, and waits on a FIFO nobody reads: "
        "give the path of a file"
    )


def checked_config(path: str | os.PathLike[str]) -> LedgerConfig:
    """:func:`load_config`, every scheduled connector's input file there and the anchor
    file's folder writable (what ``ledger config check`` proves): a
    :class:`ConfigurationError` names each problem."""
    config = load_config(path)
    missing = missing_inputs(config)
    if missing:
        problems = "\n  ".join(visible(problem) for problem in missing)
        raise ConfigurationError(
            f"{visible(str(path))}: a scheduled connector would fail\n  {problems}"
        )
    refuse_unwritable_anchor(path, config)
    return config


def refuse_unwritable_anchor(path: str | os.PathLike[str], config: LedgerConfig) -> None:
    """A :class:`ConfigurationError` naming :func:`anchor_problem`, if there is one."""
    problem = anchor_problem(config)
    if problem is not None:
        raise ConfigurationError(
            f"{visible(str(path))}: the anchor job would fail\n  {visible(problem)}"
        )


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    """A key no section takes: "unknown key", the key meant when one is close (a typo), and
    the keys that section takes (pydantic said "Extra inputs are not permitted")."""
    section = _section_at(loc[:-1])
    known = list(section.model_fields) if section is not None else []
    close = difflib.get_close_matches(str(loc[-1])[:200], known, n=1, cutoff=0.75)
    meant = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown key{meant}" + (f"; known: {', '.join(known)}" if known else "")


def _section_at(loc: tuple[int | str, ...]) -> type[pydantic.BaseModel] | None:
    """The config model of the section at ``loc`` (list indexes skipped), or None."""
    model: type[pydantic.BaseModel] = LedgerConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        found = _model_in(field.annotation) if field is not None else None
        if found is None:
            return None
        model = found
    return model


def _model_in(annotation: Any) -> type[pydantic.BaseModel] | None:
    """The config model inside an annotation (``X | None``, ``list[X]``, ``Annotated[X, …]``)."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
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
    # Every error below quotes the path on its first line: a newline in it would start a line
    # of its own (as if the tool said it), so it is shown as its escape, like other files'.
    shown = visible(str(source))
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{shown}: cannot read the config file ({exc.strerror})") from exc
    body = raw.removeprefix(codecs.BOM_UTF8)  # as some editors write: harmless
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = len(raw) - len(body) + exc.start
        line = raw[:offset].count(b"\n") + 1
        raise ConfigurationError(
            f"{shown}: not valid UTF-8 (at line {line}, byte {offset})"
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{shown}: not valid TOML ({_toml_problem(text, exc)})") from exc
    except ValueError as exc:  # tomllib's int() of a number over 4,300 digits, no position
        raise ConfigurationError(f"{shown}: not valid TOML ({_too_many_digits(text)})") from exc
    from_environment = bool(os.environ.get(DATABASE_URL_ENV))
    if from_environment:  # a URL from the environment is relative to the current folder
        data["database_url"] = os.environ[DATABASE_URL_ENV]
    elif isinstance(data.get("database_url"), str):
        data["database_url"] = _sqlite_beside(source, data["database_url"])
    elif "database_url" not in data:
        # Left out, it is its default beside the file, as the spool's default is: it was
        # ledger.db in whatever folder serve (or `status --config`) was started from, so a
        # config that spelt the default out and one that left it out named two ledgers.
        data["database_url"] = _sqlite_beside(source, DEFAULT_DATABASE_URL)
    # A relative csv path means relative to the config file, wherever serve is started from.
    connectors = data.get("connectors")
    for index, connector in enumerate(connectors if isinstance(connectors, list) else []):
        options = connector.get("options") if isinstance(connector, dict) else None
        if isinstance(options, dict) and isinstance(options.get("path"), str):
            if "\0" in options["path"]:
                where = _location(("connectors", index, "options", "path"), data)
                raise ConfigurationError(
                    f"{shown}: invalid config\n  {where}: a path cannot contain a NUL character"
                )
            path = Path(options["path"])
            if not path.is_absolute():
                options["path"] = str((source.resolve().parent / path).resolve())
    # The anchor file too; a path the validator refuses is left for it to name.
    anchor = data.get("anchor")
    anchor_path = anchor.get("path") if isinstance(anchor, dict) else None
    if isinstance(anchor, dict) and isinstance(anchor_path, str) and anchor_path.strip():
        anchor["path"] = anchor_path if "\0" in anchor_path else _beside(source, anchor_path)
    _spool_beside(source, data)
    try:
        return LedgerConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = [
            f"{_where(error['loc'], from_environment, data)}: "
            + (
                _unknown_key(error["loc"])
                if error["type"] == "extra_forbidden"
                else error["msg"].removeprefix("Value error, ")
            )
            for error in exc.errors(include_url=False)
        ]
        raise ConfigurationError(f"{shown}: invalid config\n  " + "\n  ".join(problems)) from exc
