"""Errors as ``application/problem+json`` (RFC 9457): each library error becomes a status, a
type and the CLI's own message, with the field, line, run id or rule the error carries.

Messages go through the CLI's filters (:func:`ledger.text.visible_lines`, passwords masked), so
a problem detail cannot carry a control character or a password from the data it quotes.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ledger import (
    ConcurrencyError,
    ConfigurationError,
    ConnectorNotAllowedError,
    ConstraintError,
    DatabaseFileChangedError,
    EventIdReusedError,
    LedgerError,
    SchemaError,
    StorageError,
    StoredEventError,
    StoredRowError,
    StreamError,
    UnknownRunError,
    ValidationError,
)
from ledger.driver_errors import database_busy, database_unreachable, pool_exhausted
from ledger.outage import Outage
from ledger.text import visible, visible_lines
from ledger.urls import mask_secrets

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:run-ledger:problem:"
# Seconds a client waits before retrying while the database is unreachable.
RETRY_AFTER_UNREACHABLE = 5
RETRY_AFTER_SCHEMA = 30
RETRY_AFTER_BUSY = 5  # seconds a client waits when the expensive requests are all taken


# What a 503 tells an API client about resending (the web view's pages, whose visitors send no
# body of events, leave it out: :func:`service.web.errors.for_a_page`).
RESENT_APPEND = "an append retried with the same body is not appended twice"


@contextmanager
def expensive_slot(
    slots: threading.BoundedSemaphore,
    what: str,
    limit: int,
    refusal: Callable[[str, dict[str, str]], Exception],
) -> Iterator[None]:
    """One of the process's ``[api] max_expensive`` (``limit``) slots for the block (a request
    that reads the whole history), or ``refusal(detail, headers)`` raised at once when all are
    taken, saying what (:func:`busy_detail`) and when to retry: a busy answer rather than a
    queue of full scans holding every worker thread."""
    if not slots.acquire(blocking=False):
        raise refusal(busy_detail(what, limit), {"Retry-After": str(RETRY_AFTER_BUSY)})
    try:
        yield
    finally:
        slots.release()


def busy_detail(what: str, limit: int) -> str:
    """What a request refused by :func:`expensive_slot` is told."""
    return (
        f"{what} reads the whole history; {limit} such request(s) are running already "
        "([api] max_expensive): retry later"
    )


log = logging.getLogger("ledger.api")


class ApiProblem(Exception):
    """A response the API chose to give: status, type slug, title, detail and extra members."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {
            "type": TYPE_PREFIX + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }

    def render(self) -> bytes:
        return json.dumps(self.body(), ensure_ascii=True, allow_nan=False).encode("ascii")


def encoded_body_problem(content_encoding: str) -> ApiProblem | None:
    """415 for a body sent compressed (``Content-Encoding: gzip``), or None: bodies are read as
    they come, and a gzip one was refused as "not valid UTF-8 (byte 1)", naming neither the
    cause nor the fix."""
    codings = {coding.strip().lower() for coding in content_encoding.split(",")}
    if codings <= {"", "identity"}:  # a list of codings (RFC 9110 8.4): each must be none
        return None
    return ApiProblem(
        415,
        "unsupported-media-type",
        "Unsupported media type",
        f"Content-Encoding '{visible(content_encoding)}' is not supported: send the body "
        "uncompressed (without Content-Encoding)",
    )


# The charsets a JSON or JSON Lines body may be declared in: JSON is UTF-8 (RFC 8259 8.1), and
# ASCII is UTF-8 too.
UTF8_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


def media_type(content_type: str) -> str:
    """The media type of a ``Content-Type`` header, lower case, without its parameters."""
    return content_type.split(";")[0].strip().lower()


def declared_charset_problem(content_type: str) -> ApiProblem | None:
    """415 for a JSON body declared in a charset other than UTF-8, or None. The body is read as
    UTF-8 whatever it declares: a Latin-1 one was refused as "not valid UTF-8 (byte N)", and
    one whose bytes happened to be valid UTF-8 (``charset=iso-8859-1`` on ``caf\xc3\xa9``, or a
    UTF-16 declaration on ASCII bytes) was stored as another text than the client meant."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() != "charset":
            continue
        charset = value.strip().strip('"').strip().lower()
        if charset not in UTF8_CHARSETS:
            return ApiProblem(
                415,
                "unsupported-media-type",
                "Unsupported media type",
                f"charset '{visible(charset)}' is not supported: JSON is UTF-8 (RFC 8259); "
                "send the body as UTF-8 (charset=utf-8, or no charset), nothing was appended",
            )
    return None


def message(error: BaseException) -> str:
    """The one-line message the CLI prints for ``error``."""
    return visible_lines(mask_secrets(str(error)))


def problem_for(error: LedgerError, outage: Outage | None = None) -> ApiProblem:
    """The problem a library error is for the client: the CLI's message, the status its class
    means (the caller's mistake 4xx, the database's 503). An unreachable database is logged
    through ``outage`` (once as it starts, not once per request) when one is given."""
    cause = error.__cause__
    text = message(error)
    if isinstance(error, StorageError):
        return _storage_problem(error, text, outage)
    conflict = cause if isinstance(cause, ConcurrencyError | StreamError) else error
    if isinstance(conflict, ConcurrencyError):
        return ApiProblem(
            409,
            "version-conflict",
            "Version conflict",
            text,
            run_id=conflict.run_id,
            expected_version=conflict.expected_version,
            actual_version=conflict.actual_version,
            **_located(error),
        )
    if isinstance(conflict, StreamError):
        return ApiProblem(
            409,
            "stream-rule",
            "Stream rule violated",
            text,
            run_id=conflict.run_id,
            rule=conflict.rule,
            **_located(error),
        )
    bound = cause if isinstance(cause, ConnectorNotAllowedError) else error
    if isinstance(bound, ConnectorNotAllowedError):  # a token bound to other connectors
        run: dict[str, Any] = {} if bound.run_id is None else {"run_id": bound.run_id}
        return ApiProblem(403, "forbidden", "Forbidden", text, **run, **_located(error))
    stored = cause if isinstance(cause, StoredEventError) else error
    if isinstance(stored, StoredRowError):  # a table's row, not an event: verify is no help
        log.error("a stored row cannot be read: %s", text)
        return ApiProblem(
            500, "stored-row-unreadable", "Stored row unreadable", text, table=stored.table
        )
    if isinstance(stored, StoredEventError):  # the ledger's history, not the request
        log.error("a stored event cannot be read: %s", text)
        return ApiProblem(
            500,
            "stored-event-unreadable",
            "Stored event unreadable",
            f"{text}; `ledger verify` lists every such event",
        )
    if isinstance(error, EventIdReusedError) or isinstance(cause, EventIdReusedError):
        return ApiProblem(409, "event-id-reused", "event_id reused", text, **_located(error))
    if isinstance(error, UnknownRunError):
        return ApiProblem(404, "unknown-run", "Unknown run", text, run_id=error.run_id)
    if isinstance(error, ValidationError | ConfigurationError):
        return ApiProblem(400, "invalid-input", "Invalid input", text, **_located(error))
    log.error("refused: %s", text)
    return ApiProblem(500, "ledger-error", "Ledger error", text)


def _storage_problem(error: StorageError, text: str, outage: Outage | None) -> ApiProblem:
    """The database's failure as the client sees it: what happened and when to retry, never
    the database's URL, user, host, file or the driver's words (any append token, or anyone
    when the web view is public, would read them); the server's log has the whole message."""
    if isinstance(error, ConstraintError):  # another writer won a race: retrying is safe
        log.warning("write conflict: %s", text)
        return ApiProblem(
            409,
            "write-conflict",
            "Write conflict",
            "another writer's append conflicted with this one; nothing of it was appended: "
            "retry the same body",
        )
    if isinstance(error, DatabaseFileChangedError):  # not ready: /readyz says so
        _note(outage, text)
        return ApiProblem(
            503,
            "database-file-changed",
            "Database file changed",
            "the SQLite database file this server opened is no longer the file at its "
            "configured path (moved, deleted or replaced; the server's log says which): "
            "nothing was written; restart the server to open the file now at that path: "
            f"retry in {RETRY_AFTER_SCHEMA} s",
            headers={"Retry-After": str(RETRY_AFTER_SCHEMA)},
        )
    if isinstance(error, SchemaError):
        _note(outage, text)
        return ApiProblem(
            503,
            "schema-not-current",
            "Schema not current",
            "the database's schema is not the revision this run-ledger knows: run `ledger "
            "migrate`, or deploy the run-ledger version that matches it (the server's log says "
            f"which revision); nothing was written: retry in {RETRY_AFTER_SCHEMA} s",
            headers={"Retry-After": str(RETRY_AFTER_SCHEMA)},
        )
    if database_busy(error):  # up and busy: not an outage
        log.warning("busy: %s", text)
        return database_busy_problem(
            "every database connection of this server stayed in use"
            if pool_exhausted(error)
            else "another writer held the ledger's lock"
        )
    if database_unreachable(error):
        _note(outage, text)
        return ApiProblem(
            503,
            "database-unreachable",
            "Database unreachable",
            "the database cannot be reached or stopped answering (the server's log says "
            f"why): retry in {RETRY_AFTER_UNREACHABLE} s; {RESENT_APPEND}",
            headers={"Retry-After": str(RETRY_AFTER_UNREACHABLE)},
        )
    # Another failure of the database (its database dropped, a disk full, a SQLite lock held
    # past the busy timeout): still the environment's, worth a retry later like any 503.
    log.error("database error: %s", text)
    return ApiProblem(
        503,
        "database-error",
        "Database error",
        "the database failed to answer this request (the server's log says why): retry in "
        f"{RETRY_AFTER_UNREACHABLE} s",
        headers={"Retry-After": str(RETRY_AFTER_UNREACHABLE)},
    )


def database_busy_problem(what: str) -> ApiProblem:
    """503 ``database-busy``: ``what`` lasted longer than this request may wait (``[api]
    database_timeout``); nothing of it was written."""
    return ApiProblem(
        503,
        "database-busy",
        "Database busy",
        f"{what} longer than this request may wait ([api] database_timeout); nothing of it "
        f"was written: retry in {RETRY_AFTER_UNREACHABLE} s ({RESENT_APPEND})",
        headers={"Retry-After": str(RETRY_AFTER_UNREACHABLE)},
    )


def _note(outage: Outage | None, text: str) -> None:
    """Log an outage once as it starts (through ``outage``), or this once without one."""
    if outage is None:
        log.warning("database unavailable: %s", text)
    else:
        outage.failed(text)


def _located(error: LedgerError) -> dict[str, Any]:
    """``errors``: each problem of a validation error with its field, line (or item) and
    index, when the error has them."""
    if not isinstance(error, ValidationError):
        return {}
    located = []
    for problem in error.details:
        entry: dict[str, Any] = {"message": visible(problem.message)}
        if problem.field is not None:
            entry["field"] = visible(problem.field)
        if problem.line is not None:
            entry[problem.unit] = problem.line
        if problem.index is not None:
            entry["index"] = problem.index
        located.append(entry)
    return {"errors": located}


__all__ = [
    "PROBLEM_JSON",
    "ApiProblem",
    "database_busy_problem",
    "declared_charset_problem",
    "encoded_body_problem",
    "media_type",
    "message",
    "problem_for",
]
