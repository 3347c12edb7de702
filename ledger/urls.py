"""Database URL handling: the default, and masking passwords before anything is printed."""

from __future__ import annotations

import errno
import os
import re
import shlex
import stat
from pathlib import Path
from urllib.parse import parse_qs, unquote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite:///ledger.db"
DATABASE_URL_ENV = "LEDGER_DATABASE_URL"
MAX_TCP_PORT = 65_535

# A query parameter, in a URL or in free text, whose name says its value is a credential: a name
# (letters, digits, "_", "-", ".", any case) ending in one of these words (api_key, x-api-key,
# X-Amz-Signature, X-Amz-Security-Token, client_secret, ssl_key_password, access-token, sig,
# oauth, PHPSESSID). Matched by ending, not by a list of whole names: an unknown name that
# merely ends like a secret (monkey=) is masked too, which hides a harmless value, never
# leaks one. Two exceptions keep what is not a secret readable: a bare "key" only in a query
# (after "?", "&" or ";"; "record key=station_7" in a message is a record's key), and a
# driver's TLS key *file* (ssl_key=/etc/k.pem, sslkey=...), a path.
_SENSITIVE_NAME_ENDINGS = (
    r"secret|token|password|passwd|passphrase|pwd|pass|sig|signature|credentials?"
    r"|auth|authorization|jwt|session|session_?id|sessid"
)
_SECRET_PARAMETER = re.compile(
    r"(?P<name>(?<![\w.\-])(?!ssl[_\-.]?key=)"
    rf"(?:[\w.\-]*(?:{_SENSITIVE_NAME_ENDINGS})|[\w.\-]+key)"
    # The value ends at "&", a space or a quote, and never with a punctuation mark: one is
    # the text's ("GET /x?token=abc: refused"), and masking a message that quotes a masked URL
    # again ate the ":" after "token=***".
    r"|(?<=[?&;])key)=[^&\s'\";]*[^&\s'\";:,.!?)\]}>]",
    re.IGNORECASE,
)
# The password part of any URL-like text, also inside driver error messages: everything between
# "user:" and the *last* "@" of the token, so a password with an unencoded "@" is masked whole.
# A scheme is short (mariadb+mariadbconnector is 24): unbounded, each letter of a long word
# began a scan to its end for "://", and masking 200,000 letters took a minute.
_PASSWORD_IN_TEXT = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]{0,63}://[^:/@\s]*:)\S*@")


def resolve_database_url(explicit: str | None = None) -> str:
    """``--db`` if given, else ``$LEDGER_DATABASE_URL``, else SQLite in the current folder."""
    return explicit or os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL


def tcp_port_problem(port: int) -> str | None:
    """Why ``port`` is not a TCP port, or None. The one rule of a database URL's port, an
    http-json URL's and ``--listen``'s: port 0 is "any free port" to the system, never an
    address to connect to, and a port past 65535 is wrapped modulo 65536 by some clients."""
    if 1 <= port <= MAX_TCP_PORT:
        return None
    return f"port {port} is not a TCP port (1 to {MAX_TCP_PORT})"


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, safe to print or log.

    A URL that does not parse is never echoed (where its password is cannot be known): only
    its scheme is shown.
    """
    try:
        return mask_secrets(make_url(url).render_as_string(hide_password=True))
    except (ArgumentError, ValueError):
        scheme = url.split("://", 1)[0] if "://" in url else ""
        safe = scheme if re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.\-]*", scheme) else "?"
        return f"<unparseable {safe} URL>"


def mask_secrets(text: str) -> str:
    """Mask every ``scheme://user:password@`` password, and every ``password=…``-style query
    parameter, found inside free text."""
    text = _PASSWORD_IN_TEXT.sub(r"\g<head>***@", text)
    return _SECRET_PARAMETER.sub(r"\g<name>=***", text)


def migrate_hint(url: str) -> str:
    """What to run to migrate the database at ``url``, as a message ends: "run `ledger
    migrate`", naming the database when it is not the default, so that pasting the command
    migrates this database and not ./ledger.db. A URL with a password is not printed: the
    command is to be given the same --db or $LEDGER_DATABASE_URL."""
    if url == DEFAULT_DATABASE_URL:
        return "run `ledger migrate`"
    if mask_url(url) != url:
        return f"run `ledger migrate` with the same --db or ${DATABASE_URL_ENV}"
    return f"run `ledger migrate` on it (`ledger migrate --db {shlex.quote(url)}`)"


EXPECTED_URL_SHAPES = (
    "sqlite:///path/to/ledger.db or mysql+pymysql://user:password@host:3306/database"
)


# A database scheme followed by ":" but not "//" (``sqlite:/x.db``, ``sqlite:x.db``,
# ``mysql+pymysql:/u:p@h/db``): the parser finds no URL in it at all.
_SCHEME_WITHOUT_SLASHES = re.compile(
    r"(?P<scheme>(?P<backend>sqlite|mysql|mariadb)(?:\+[a-z0-9_]+)?):(?!//)(?P<rest>.*)",
    re.IGNORECASE | re.DOTALL,
)
# Text that reads as a file's path (``ledger.db``, ``./data/ledger.db``, ``/srv/ledger.db``).
_SQLITE_FILE_NAME = re.compile(r"\S*/\S*|\S*\.(?:db|sqlite3?)", re.IGNORECASE)


def unparseable_url_message(url: str) -> str:
    """Why ``url`` is refused, with what a database URL looks like.

    Text with no ``:`` and no ``@`` (``notaurl``, ``ledger.db``) cannot hold a password, so it
    is quoted to show the typo; anything else shows only its scheme (:func:`mask_url`). A
    file's path, or a scheme missing its ``//``, is told the URL it was meant to be.
    """
    missing_slashes = _SCHEME_WITHOUT_SLASHES.fullmatch(url)
    if missing_slashes is not None:
        return _scheme_without_slashes_message(missing_slashes)
    if any(mark in url for mark in ":@"):
        return f"not a database URL: {mask_url(url)} (expected {EXPECTED_URL_SHAPES})"
    message = f"not a database URL: {url!r} (expected {EXPECTED_URL_SHAPES})"
    if _SQLITE_FILE_NAME.fullmatch(url):
        message += f"; for the SQLite file {url}, write sqlite:///{url}"
    return message


_SQLITE_URL_RULE = (
    "a SQLite URL starts with sqlite:/// (three slashes before a relative path, four before an "
    "absolute one)"
)


def _scheme_without_slashes_message(found: re.Match[str]) -> str:
    scheme, rest = found["scheme"], found["rest"]
    if found["backend"].lower() != "sqlite" or "@" in rest:
        # The rest may be USER:PASSWORD@...: only the scheme is shown.
        meant = (
            _SQLITE_URL_RULE
            if found["backend"].lower() == "sqlite"
            else "write mysql+pymysql://USER:PASSWORD@HOST:PORT/DATABASE"
        )
        return (
            f"not a database URL: {scheme}: is not followed by // ({meant}; the rest is not "
            "shown: it may hold a password)"
        )
    if not rest.strip("/"):
        meant = "sqlite:///path/to/ledger.db"
    elif rest.startswith("/"):
        relative = rest.lstrip("/")
        meant = (
            f"sqlite:///{relative} for {relative} in the current folder, or sqlite:///{rest} "
            f"for {rest}"
        )
    else:
        meant = f"sqlite:///{rest}"
    return f"not a database URL: {scheme + ':' + rest!r}: {_SQLITE_URL_RULE}: write {meant}"


def is_in_memory_sqlite(url: str) -> bool:
    """Whether ``url`` is an in-memory SQLite database (``sqlite://``, ``sqlite:///``,
    ``:memory:``, a ``mode=memory`` URI): a new, empty one in every process that opens it."""
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite" or parsed.get_driver_name() != "pysqlite":
            return False
        return sqlite_file_of(parsed) is None
    except (ArgumentError, ValueError):
        return False


IN_MEMORY_HINT = (
    "an in-memory SQLite database is new and empty in every process that opens it: give a "
    "file, e.g. sqlite:///ledger.db"
)


def sqlite_file_of(parsed: URL) -> Path | None:
    """The absolute path of the file a SQLite URL opens, as the driver will be given it; None
    for an in-memory database (``sqlite://``, ``:memory:``, ``file::memory:`` or
    ``mode=memory`` URIs). A relative path is relative to the current folder."""
    # The dialect turns the URL into the driver's arguments (an absolute path, or with
    # ``uri=true`` a ``file:`` URI with the URL's other query parameters): read what it gives.
    [target], options = parsed.get_dialect()().create_connect_args(parsed)
    if target == ":memory:":
        return None
    if not options.get("uri"):
        return Path(os.path.abspath(target))
    location, _, query = str(target).partition("?")
    if parse_qs(query).get("mode") == ["memory"]:
        return None
    path = location.removeprefix("file:")
    if path.startswith("//"):  # file://HOST/path: SQLite takes only an empty host or localhost
        path = "/" + path[2:].partition("/")[2]
    path = unquote(path)
    return None if path in ("", ":memory:") else Path(os.path.abspath(path))


def sqlite_file_or_none(url: str) -> Path | None:
    """The file of a SQLite URL (None: another database, in memory, or not a URL)."""
    try:
        parsed = make_url(url)
        return sqlite_file_of(parsed) if parsed.get_backend_name() == "sqlite" else None
    except (ArgumentError, ValueError):
        return None


# The errors of a path no file can ever be at: a name longer than the file system takes, or
# symbolic links that loop. The caller's to fix, as a missing folder is; they were left to a
# traceback.
IMPOSSIBLE_PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ELOOP})


def path_state(path: Path) -> str:
    """``file``, ``folder``, ``missing``, ``denied`` (a folder on the way may not be
    searched: pathlib's ``exists()`` says False, which is not a wrong path) or ``impossible``
    (:func:`impossible_path`)."""
    try:
        mode = path.stat().st_mode
    except PermissionError:
        return "denied"
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except OSError as exc:
        if exc.errno in IMPOSSIBLE_PATH_ERRNOS:
            return "impossible"
        raise
    return "folder" if stat.S_ISDIR(mode) else "file"


def impossible_path(path: Path) -> str | None:
    """Why no file can be at ``path`` (``File name too long``, ``Too many levels of symbolic
    links``), or None when one can."""
    try:
        path.stat()
    except OSError as exc:
        if exc.errno in IMPOSSIBLE_PATH_ERRNOS:
            return exc.strerror or str(exc)
    return None
