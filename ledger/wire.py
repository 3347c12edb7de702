"""JSON Lines, the wire form of events: what ``ledger append`` reads, and what
``ledger events --format jsonl`` writes (and can be appended again as it is).

Reading is all or nothing and names every bad line: a line that is not UTF-8, not JSON, not an
object or not a valid event is reported with its line number and field, in one
:class:`ValidationError`, before anything is appended, together with every line whose event is
valid but that the append's own checks of one event would refuse
(:func:`ledger.batch_checks.event_problems`: a payload over its limits, ``metadata.imported``
not a boolean): were they left to the append, they would be named only once every other line
was good. The checks :meth:`Ledger.append` makes
(one pass: the batch checks, then the stream rules under the head lock) come back with the
index of the event they concern, and :func:`append_lines` names the line it was read from.
"""

from __future__ import annotations

import codecs
import itertools
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import pydantic

from ledger import reads
from ledger.batch_checks import (
    batch_error,
    checks_before_lock,
    event_problems,
    validated_batch,
)
from ledger.clock import isoformat_utc
from ledger.errors import (
    ConcurrencyError,
    ConnectorNotAllowedError,
    InputProblem,
    LedgerError,
    StreamError,
    UnknownEventTypeError,
    ValidationError,
)
from ledger.events import EventModel, event_adapter
from ledger.mapper import event_to_wire, pydantic_problems
from ledger.recorded import AppendResult, RecordedEvent
from ledger.store import Ledger
from ledger.text import clip, visible

# Problems listed in one error: the first ones say what is wrong with the file.
MAX_LISTED_PROBLEMS = 50
_TOO_DEEP = InputProblem(None, "nested too deeply to be an event")


@dataclass(frozen=True)
class LineBatch:
    """Events read from JSON Lines, each with the 1-based number of the line it was on (or from
    a JSON array, each with its 1-based item number: ``unit`` "item")."""

    events: list[EventModel]
    line_numbers: list[int]
    unit: str = "line"

    def locate(self, problem: InputProblem) -> InputProblem:
        """``problem`` with the line of the event it concerns (as it is, for the batch)."""
        if problem.index is None:
            return problem
        return replace(problem, line=self.line_numbers[problem.index], unit=self.unit)

    def refused(self, error: LedgerError, index: int) -> ValidationError:
        """The error of an event the ledger refused (a stream rule, a reused event_id, the
        clock guard), naming its line, and for a stream rule the field naming its run."""
        line = self.line_numbers[index]
        field = None
        if isinstance(error, StreamError):
            field = "run_ref" if self.events[index].run_id is None else "run_id"
        message = f"{self.unit} {line}: {error}" + (f"; field: {field}" if field else "")
        problem = InputProblem(field, str(error), index, line, self.unit)
        return ValidationError(message, problems=[message], details=[problem])


_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_UTF16_FILE = (
    "the input is UTF-16 (it starts with a UTF-16 byte order mark); JSON Lines are UTF-8: "
    "convert it first (`iconv -f UTF-16 -t UTF-8`)"
)


def read_lines(source: Iterable[bytes]) -> LineBatch:
    """Parse and validate every line (blank lines are skipped; a BOM may open the first).

    Raises :class:`ValidationError` listing each bad line if any is invalid.
    """
    events: list[EventModel] = []
    line_numbers: list[int] = []
    problems: list[InputProblem] = []
    for number, raw in enumerate(source, start=1):
        if number == 1 and raw.startswith(_UTF16_BOMS):
            # Every line would be "not valid UTF-8" or "not valid JSON" (PowerShell's `>`
            # writes UTF-16): one problem, the file's, with the way to convert it.
            raise invalid_input([InputProblem(None, _UTF16_FILE, line=1)])
        event, found = _read_line(raw, first=number == 1)
        problems.extend(replace(problem, line=number) for problem in found)
        if event is not None:
            events.append(event)
            line_numbers.append(number)
    if problems:
        raise invalid_input(_with_event_problems(problems, events, line_numbers, "line"))
    return LineBatch(events, line_numbers)


def read_array(body: bytes, max_events: int | None = None) -> LineBatch:
    """Parse and validate a JSON array of events (what ``POST /v1/events`` takes), with the
    checks of :func:`read_lines`; each problem names its 1-based item. An array of more than
    ``max_events`` items is refused before any is validated.

    Raises :class:`ValidationError` listing each bad item if any is invalid.
    """
    data = read_json(body, items=True)
    if not isinstance(data, list):
        raise invalid_input(
            [InputProblem(None, f"expected a JSON array of events, got {_json_kind(data)}")]
        )
    if max_events is not None and len(data) > max_events:
        raise invalid_input(
            [InputProblem(None, f"{len(data):,} events in one array; the limit is {max_events:,}")]
        )
    events: list[EventModel] = []
    numbers: list[int] = []
    problems: list[InputProblem] = []
    for number, item in enumerate(data, start=1):
        event, item_problems = _validate(item)
        problems.extend(replace(p, line=number, unit="item") for p in item_problems)
        if event is not None:
            events.append(event)
            numbers.append(number)
    if problems:
        raise invalid_input(_with_event_problems(problems, events, numbers, "item"))
    return LineBatch(events, numbers, unit="item")


def read_json(body: bytes, items: bool = False) -> Any:
    """The JSON value of ``body`` read by the wire's rules: UTF-8 (a BOM may open it), no
    ``NaN``, no key given twice, not nested past what Python can parse. With ``items`` (an
    array of events), a key given twice names the item whose object gives it.

    Raises :class:`ValidationError` naming the problem.
    """
    text, found = _decode(body, first=True)
    data, problems = (None, found) if text is None else _parse_json(text, items)
    if problems:
        raise invalid_input(problems)
    return data


def append_lines(
    ledger: Ledger,
    batch: LineBatch,
    expected_version: int | None = None,
    connectors: frozenset[str] | None = None,
) -> AppendResult:
    """Append the events read by :func:`read_lines`, all or nothing (:meth:`Ledger.append`),
    at ``expected_version`` when given (a batch about one run, I4), only for runs of
    ``connectors`` when given.

    Every line ahead of the ledger's clock is named with the batch's other problems when the
    clock can be read first (when it cannot, the append says why, after the input's own
    problems). An empty batch appends nothing, once the ledger is known to be there. Raises
    :class:`ValidationError` naming the line of each event the ledger refused, raised from the
    ledger's own error; other errors propagate as they are.
    """
    if not batch.events:
        ledger.head()
        return AppendResult(events=[], new_events=[])
    try:
        # Without the clock read beforehand: reading it (and the head, for the time it never
        # goes behind) cost every append two more statements, on MariaDB two round trips, for
        # what only a refused batch needs. The append checks the guard under its lock.
        return ledger.append(batch.events, expected_version, connectors=connectors)
    except REFUSALS as error:
        # Any refusal, not only a ValidationError: the lock may meet an earlier line's stream
        # rule, version conflict or foreign run before a line ahead of the clock, which the
        # checks before the lock, given the clock, named first (400 / exit 2 naming each).
        _refused(batch, _naming_the_clock(ledger, batch, expected_version) or error)
    except LedgerError as error:
        _refused(batch, error)


# The append's refusals of the batch itself (not of the database: a StorageError is not
# retold as the batch's clock problems).
REFUSALS = (ValidationError, StreamError, ConcurrencyError, ConnectorNotAllowedError)


def _naming_the_clock(
    ledger: Ledger, batch: LineBatch, expected_version: int | None
) -> ValidationError | None:
    """The refusal of a refused batch that names, with its other problems, every line ahead
    of the ledger's clock (the append's lock names the first it meets), as
    :meth:`Ledger.append` makes it given ``clock_read``; None when the clock cannot be read or
    the checks before the lock find nothing (the refusal was the lock's own: a stream rule)."""
    events, found = validated_batch(batch.events)
    try:
        # The clock itself, as the lock's guard reads it: not the last recorded_at when that is
        # later (a clock stepped back), which named only the lines ahead of that, and it as
        # "the ledger clock", while the lock had refused an earlier line.
        clock_read = ledger.clock()
        with ledger.connect() as conn:
            stored = reads.stored_event_ids(conn, [str(event.event_id) for event in events])
    except LedgerError:
        return None
    problems = [
        problem
        for problem in checks_before_lock(events, found, expected_version, clock_read)[1]
        if not _stored_line_guarded(problem, events, stored)
    ]
    return batch_error(events, problems) if problems else None


def _stored_line_guarded(problem: InputProblem, events: list[EventModel], stored: set[str]) -> bool:
    """Whether ``problem`` is the clock guard's on an event already stored: the append takes
    that one back as the stored fact (I3) without measuring its time, which a clock stepped
    back since may now find ahead; it was never why the batch was refused."""
    return (
        problem.field == "occurred_at"
        and problem.index is not None
        and str(events[problem.index].event_id) in stored
    )


def _refused(batch: LineBatch, error: LedgerError) -> NoReturn:
    """Raise ``error`` of the append of ``batch`` naming the line of each event it refused."""
    if isinstance(error, ValidationError) and any(
        problem.index is not None for problem in error.details
    ):
        raise invalid_input([batch.locate(problem) for problem in error.details]) from error
    if error.index is not None:
        raise batch.refused(error, error.index) from error
    if isinstance(error, ValidationError) and error.details:
        # About the whole batch (expected_version over several runs): refused input too.
        raise invalid_input(list(error.details)) from error
    raise error


def _with_event_problems(
    problems: list[InputProblem], events: list[EventModel], numbers: list[int], unit: str
) -> list[InputProblem]:
    """``problems`` of the input's bad lines and those the append's checks of one event find
    in its valid ones, in line order: input that is refused is refused once, naming every
    bad line. (The checks that depend on the other lines, run_refs and expected_version, and
    the ledger's clock, wait for a batch whose every line is valid.) Only on the way to
    refusing the input: a good file is checked once, by the append."""
    found = [
        replace(problem, line=number, unit=unit)
        for event, number in zip(events, numbers, strict=True)
        for problem in event_problems(event, None)[1]
    ]
    if not found:
        return problems
    return sorted([*problems, *found], key=lambda problem: problem.line or 0)


def invalid_input(problems: list[InputProblem]) -> ValidationError:
    """The error for input that cannot be appended: one line per problem (each made
    :func:`ledger.text.visible`, whatever a key or value holds), the first
    :data:`MAX_LISTED_PROBLEMS` of them."""
    listed = [visible(str(problem)) for problem in problems[:MAX_LISTED_PROBLEMS]]
    message = "invalid input, nothing was appended:\n  " + "\n  ".join(listed)
    if len(problems) > len(listed):
        message += f"\n  … and {len(problems) - len(listed)} more problem(s)"
    return ValidationError(message, details=problems)


def wire_form(event: RecordedEvent) -> dict[str, Any]:
    """The appendable JSON of a stored event (raw, if its type is unknown to this version)."""
    try:
        return event_to_wire(event.event)
    except UnknownEventTypeError:
        return {
            **event.payload_data,
            "type": event.type,
            "event_id": event.event_id,
            "run_id": event.run_id,
            "occurred_at": isoformat_utc(event.occurred_at),
            "actor": event.actor,
            "schema_version": event.schema_version,
        }


def wire_line(event: RecordedEvent) -> str:
    """One line of JSON Lines for a stored event (without the newline), ASCII like every JSON
    the CLI prints: a C1 control or a bidi override in a value is ``\\u009b`` or ``\\u202e``,
    which a terminal shows rather than obeys, and which reads back as the same value."""
    return json.dumps(wire_form(event), sort_keys=True)


def _read_line(raw: bytes, first: bool) -> tuple[EventModel | None, list[InputProblem]]:
    """The event on one line (None for a blank line), or what is wrong with the line."""
    text, found = _decode(raw, first)
    if text is None:
        return None, found
    if not text.strip():
        return None, []
    data, found = _parse_json(text)
    if found:
        return None, found
    if isinstance(data, list):
        # A file of events as one JSON array (what POST /v1/events takes) said only "got
        # list": the format it is not, and how to turn it into the one it is.
        return None, [
            InputProblem(
                None,
                "expected a JSON object, got an array: JSON Lines holds one event object per "
                "line (`jq -c '.[]' FILE` turns an array of events into them)",
            )
        ]
    return _validate(data)


def _decode(raw: bytes, first: bool) -> tuple[str | None, list[InputProblem]]:
    try:
        return raw.decode("utf-8-sig" if first else "utf-8"), []  # a BOM may open a file
    except UnicodeDecodeError as exc:
        return None, [InputProblem(None, f"not valid UTF-8 (byte {exc.start})")]


def _parse_json(text: str, items: bool = False) -> tuple[Any, list[InputProblem]]:
    """The JSON value in ``text`` (numbers and keys held to the wire's rules), or what is
    wrong with it; with ``items``, a key given twice in an array's object names its item."""
    try:
        data = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_int=_read_int,
            object_pairs_hook=_object_without_repeated_keys,
        )
    except json.JSONDecodeError as exc:
        return None, [InputProblem(None, f"not valid JSON ({exc.msg} at {_place(exc)})")]
    except RepeatedKeyError as exc:
        problem = InputProblem(exc.key, "given more than once in one object")
        item = _item_with_repeated_key(text) if items else None
        return None, [problem if item is None else replace(problem, line=item, unit="item")]
    except ValueError as exc:
        return None, [InputProblem(None, f"not valid JSON ({exc})")]
    except RecursionError:
        return None, [_TOO_DEEP]
    return data, []


def _place(exc: json.JSONDecodeError) -> str:
    """Where a JSON text stops being JSON: its column, and its line in a text of several (a
    request's array of events written one per line): a column alone named no place there."""
    if exc.doc.count("\n", 0, exc.pos) == 0:
        return f"column {exc.colno}"
    return f"line {exc.lineno}, column {exc.colno}"


_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's own: always matches, maybe nothing


def _after_whitespace(text: str, index: int) -> int:
    found = _WHITESPACE.match(text, index)
    return index if found is None else found.end()


def _item_with_repeated_key(text: str) -> int | None:
    """The 1-based item of a JSON array (``text``) whose object names a key twice, read one
    item at a time by the wire's rules; None when ``text`` is not such an array (one event's
    line, a fail body)."""
    decoder = json.JSONDecoder(
        parse_constant=_refuse_constant,
        parse_int=_read_int,
        object_pairs_hook=_object_without_repeated_keys,
    )
    index = _after_whitespace(text, 0)
    if text[index : index + 1] != "[":
        return None
    index += 1
    for item in itertools.count(1):
        index = _after_whitespace(text, index)
        try:
            _, index = decoder.raw_decode(text, index)
        except RepeatedKeyError:
            return item
        except (ValueError, RecursionError):
            return None
        index = _after_whitespace(text, index)
        if text[index : index + 1] != ",":
            return None
        index += 1
    return None  # unreachable: the loop returns


def _json_kind(data: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(data), "number")


def _validate(data: Any) -> tuple[EventModel | None, list[InputProblem]]:
    """The event a parsed JSON value holds, or what is wrong with it."""
    if not isinstance(data, dict):
        return None, [InputProblem(None, f"expected a JSON object, got {_json_kind(data)}")]
    try:
        return event_adapter.validate_python(data), []
    except pydantic.ValidationError as exc:
        return None, pydantic_problems(exc)
    except RecursionError:
        return None, [_TOO_DEEP]


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _read_int(text: str) -> int | float:
    """An integer beyond Python's conversion limit (4,300 digits) is read as ±infinity, as JSON
    reads 1e400: the field it is in then refuses it by name, instead of the whole line failing
    as "not valid JSON"."""
    try:
        return int(text)
    except ValueError:
        return -math.inf if text.startswith("-") else math.inf


class RepeatedKeyError(ValueError):
    """A JSON object names one key twice: which value was meant cannot be known."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key}: given more than once in one object")
        self.key = key


def _object_without_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) == len(pairs):
        return data
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise RepeatedKeyError(clip(key))
        seen.add(key)
    raise AssertionError("unreachable: a shorter dict means a repeated key")


__all__ = [
    "MAX_LISTED_PROBLEMS",
    "LineBatch",
    "RepeatedKeyError",
    "append_lines",
    "invalid_input",
    "read_array",
    "read_json",
    "read_lines",
    "wire_form",
    "wire_line",
]
