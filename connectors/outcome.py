"""What a connector run's end says: the RunFinished it gets (its recorded errors kept within the
ledger's per-event payload limit; an exception's message and traceback; the signal that stopped
it, named) and the connector's text made storable on the way (a surrogate escaped, secrets
masked, details bounded). Pure functions: :class:`connectors.sdk.RunContext` keeps a run's
state and asks these for the events and the words.
"""

from __future__ import annotations

import signal
import sys
import traceback
from dataclasses import dataclass
from typing import Any

from ledger import EventModel, RunFinished
from ledger.batch_checks import MAX_PAYLOAD_BYTES
from ledger.limits import MAX_JSON_DEPTH, json_depth
from ledger.mapper import canonical_json, payload_json
from ledger.text import clip, safe_repr, safe_str, storable
from ledger.urls import mask_secrets

# What one recorded error keeps of its message and details, in characters.
MAX_MESSAGE_CHARS = 2_000
MAX_DETAILS_CHARS = 4_000
# An error's details sit three levels down in RunFinished.error_details (the object, its
# "errors" list, the entry): deeper ones are kept as clipped JSON text, or the ledger would
# refuse the whole RunFinished (ledger.limits.MAX_JSON_DEPTH).
MAX_DETAILS_DEPTH = MAX_JSON_DEPTH - 3
MAX_TRACEBACK_CHARS = 64_000


@dataclass(frozen=True)
class RunRecord:
    """What a run's outcome is made of: the errors kept (each error's bytes in RunFinished
    beside it, its comma included), how many were reported, and how many may be kept."""

    run_id: int
    actor: str
    errors: list[dict[str, Any]]
    error_bytes: list[int]
    error_count: int
    max_error_details: int


def error_entry(message: str, details: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
    """A non-fatal error as RunFinished keeps it, and its bytes there (its canonical JSON, what
    the ledger measures, and the comma after it)."""
    # Masked like an exception's text: a connector's message is often one.
    entry: dict[str, Any] = {
        "message": clip(
            # safe_str: error(10**5000) raised ValueError out of error(), uncounted as an error.
            storable(mask_secrets(safe_str(message))),
            MAX_MESSAGE_CHARS,
            count_cut=True,
        )
    }
    if details:
        entry["details"] = bounded_details(details)
    return entry, json_bytes(entry) + 1


def terminal_event(run: RunRecord, exc: BaseException | None) -> RunFinished:
    """``run``'s outcome, ``exc`` what ended it (None: its body returned), within the
    ledger's per-event payload limit: measured as the ledger measures it; over it, the
    fewest errors whose bytes cover the excess are dropped from the end (the first ones are
    kept) and it is measured again. Without its errors it always fits: a failed run's
    message, exception name and message, and traceback are at most 2,000 + 2,000 + 2,000 +
    64,000 characters, 6 bytes each at worst (a control character escaped), about 420 KB."""
    kept = len(run.errors)
    while True:
        event = _outcome(run, exc, kept)
        excess = payload_bytes(event) - MAX_PAYLOAD_BYTES
        if excess <= 0 or not kept:
            return event
        while kept and excess > 0:
            kept -= 1
            excess -= run.error_bytes[kept]


def _outcome(run: RunRecord, exc: BaseException | None, kept: int) -> RunFinished:
    """The terminal event with the first ``kept`` recorded errors."""
    count = run.error_count
    errors = run.errors[:kept]
    # Errors max_error_details would have kept, not kept to fit the ledger's limit.
    dropped = min(count, run.max_error_details) - kept
    error_details = (
        {
            "error_count": count,
            "errors": errors,
            "errors_truncated": count > kept,
            **({"errors_dropped_for_size": dropped} if dropped else {}),
        }
        if count
        else {}
    )
    if exc is None:
        if not count:
            return RunFinished(run_id=run.run_id, status="success", actor=run.actor)
        summary = f"{count} error(s)"
        if dropped:
            summary += (
                f" (the details of {dropped} dropped: over the ledger's "
                f"{MAX_PAYLOAD_BYTES:,}-byte event limit)"
            )
        return RunFinished(
            run_id=run.run_id,
            status="partial",
            actor=run.actor,
            error_message=f"{summary}; first: {errors[0]['message']}" if errors else summary,
            error_details=error_details,
        )
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return _interrupted(run, exc, error_details)
    details = {
        # A class's name is any text (type("x" * 10**6, ...)): cut like a message.
        "exception": clip(storable(type(exc).__name__), MAX_MESSAGE_CHARS, count_cut=True),
        "message": clip(storable(exception_text(exc)), MAX_MESSAGE_CHARS, count_cut=True),
        # The end of a traceback is where it failed: keep that part if it must be cut.
        "traceback": clip(
            storable(mask_secrets("".join(traceback.format_exception(exc)))),
            MAX_TRACEBACK_CHARS,
            count_cut=True,
            keep_end=True,
        ),
        **error_details,
    }
    message = storable(describe_failure(exc))
    return RunFinished(
        run_id=run.run_id,
        status="failed",
        actor=run.actor,
        error_message=clip(message, MAX_MESSAGE_CHARS, count_cut=True),
        error_details=details,
    )


def _interrupted(
    run: RunRecord, exc: KeyboardInterrupt | SystemExit, error_details: dict[str, Any]
) -> RunFinished:
    """The outcome of a run a signal (or an exit) stopped, its details saying what its
    message says: a SIGTERM's were ``"exception": "SystemExit", "message": "143"`` and a
    traceback ending ``SystemExit: 143`` under the message "stopped by SIGTERM". The
    signal is named as the TypeScript client names it (``exception`` and ``signal``), the
    exit status kept, and the stack says where the run was, without the exception line."""
    message = clip(storable(describe_failure(exc)), MAX_MESSAGE_CHARS, count_cut=True)
    name = signal_name(exc)
    details: dict[str, Any] = {
        "exception": name or clip(storable(type(exc).__name__), MAX_MESSAGE_CHARS),
        "message": message,
        "reason": "interrupted",
    }
    if name is not None:
        details["signal"] = name
    if isinstance(exc, SystemExit) and _is_int(exc.code):
        details["exit_status"] = exc.code
    frames = traceback.format_tb(exc.__traceback__)
    if frames:
        details["traceback"] = clip(
            storable(mask_secrets("Traceback (most recent call last):\n" + "".join(frames))),
            MAX_TRACEBACK_CHARS,
            count_cut=True,
            keep_end=True,
        )
    return RunFinished(
        run_id=run.run_id,
        status="failed",
        actor=run.actor,
        error_message=message,
        error_details={**details, **error_details},
    )


def json_bytes(value: Any) -> int:
    """``value``'s size as the ledger measures a payload: bytes of its canonical JSON."""
    return len(canonical_json(value).encode("utf-8"))


def payload_bytes(event: EventModel) -> int:
    """The event's payload size as the ledger measures it (0 if it cannot be serialised:
    the ledger then names why)."""
    try:
        return len(payload_json(event).encode("utf-8"))
    except (ValueError, TypeError, RecursionError):
        return 0


def exception_text(exc: BaseException) -> str:
    """What ``exc`` says, secrets masked: the one way a connector's exception becomes text for
    the ledger (RunFinished's ``error_message`` and ``error_details``), a log or the output. A
    library's message can quote a URL with its token (urllib's InvalidURL quotes the request
    line's path), and the ledger is immutable: a secret stored there could never be removed.

    An exception whose ``__str__`` raises (or returns no text) says so, as Python's traceback
    does: its error escaped ``finish()``, in place of the connector's own, before the outcome
    was appended, and the run was left open (recorded "interpreter exit" at best)."""
    try:
        text = str(exc)
    except Exception as failure:
        return f"<exception str() failed: {type(failure).__name__}>"
    return mask_secrets(text)


def describe_failure(exc: BaseException) -> str:
    """What ended a run, as a person reads it: ``stopped by SIGTERM`` and ``interrupted by
    Ctrl-C`` rather than ``SystemExit: 143`` and ``KeyboardInterrupt: ``; secrets masked
    (:func:`exception_text`)."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by Ctrl-C (SIGINT)"
    if isinstance(exc, SystemExit):
        return mask_secrets(_describe_exit(exc.code))
    return f"{type(exc).__name__}: {exception_text(exc)}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def signal_name(exc: BaseException) -> str | None:
    """The signal that stopped a run: SIGINT for Ctrl-C, the one a SystemExit's 128 + N says
    (a signal handler exits so, the shell's convention: `ledger run` does for SIGTERM)."""
    if isinstance(exc, KeyboardInterrupt):
        return "SIGINT"
    code = exc.code if isinstance(exc, SystemExit) else None
    if isinstance(code, int) and _is_int(code) and code > 128:
        try:
            return signal.Signals(code - 128).name
        except ValueError:
            return None
    return None


def _describe_exit(code: object) -> str:
    name = signal_name(SystemExit(code))
    if name is not None:
        return f"stopped by {name}"
    if isinstance(code, str) and code:
        return f"stopped: {code}"
    return f"stopped (exit status {code})"


def storable_value(value: Any, masked: bool = False) -> Any:
    """``value`` with every text in it, keys included, made :func:`~ledger.text.storable`
    (and, ``masked``, its secrets masked); what is not a dict, list, tuple or text is left for
    the JSON encoder to judge."""
    if isinstance(value, str):
        return storable(mask_secrets(value) if masked else value)
    if isinstance(value, dict):
        return {
            storable_value(key, masked) if isinstance(key, str) else key: storable_value(
                item, masked
            )
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [storable_value(item, masked) for item in value]
    return value


def storable_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The run's metadata made storable: a ``--trigger`` is text from the command line, where a
    byte that is not UTF-8 arrives as a surrogate, and the ledger refused such a RunStarted."""
    try:
        return dict(storable_value(metadata))
    except RecursionError:  # nested too deep for JSON: RunStarted's own check names it
        return metadata


def bounded_details(details: dict[str, Any]) -> dict[str, Any]:
    """An error's details (made storable), or a clipped preview if they are too large to keep
    in the ledger."""
    try:
        details = storable_value(details, masked=True)  # an exception's text, often
        text = canonical_json(details)
    except RecursionError:  # nested beyond what JSON (or repr) can walk
        return {"unserialisable": f"details nested over {sys.getrecursionlimit()} levels deep"}
    except (TypeError, ValueError):
        return {
            "unserialisable": clip(storable(safe_repr(details)), MAX_DETAILS_CHARS, count_cut=True)
        }
    if len(text) > MAX_DETAILS_CHARS or json_depth(details) > MAX_DETAILS_DEPTH:
        return {"clipped": clip(text, MAX_DETAILS_CHARS, count_cut=True)}
    return details
