"""Database URL handling: the default, and masking passwords before anything is printed."""

from __future__ import annotations

import os
import re
import shlex

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite:///ledger.db"
DATABASE_URL_ENV = "LEDGER_DATABASE_URL"

# The password part of any URL-like text, also inside driver error messages: everything between
# "user:" and the *last* "@" of the token, so a password with an unencoded "@" is masked whole.
_SECRET_PARAMETER = re.compile(
    # Any parameter whose name ends in one of these (ssl_key_password, client_secret, ...)
    r"(?P<name>\b\w*(?:password|passwd|pwd|secret|token|api_key|apikey)"
    r"|(?<=[?&])key)=[^&\s'\";]+",
    re.IGNORECASE,
)
_PASSWORD_IN_TEXT = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)\S*@")


def resolve_database_url(explicit: str | None = None) -> str:
    """``--db`` if given, else ``$LEDGER_DATABASE_URL``, else SQLite in the current folder."""
    return explicit or os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL


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
