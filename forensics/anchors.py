"""Anchors: the ledger head written down outside the database, and checked against it later.

The hash chain proves that no stored event was altered, but not that none was removed from the
end: a DBA who deletes the last events and sets ``ledger_head`` back to the row before them
leaves a shorter chain that verifies. An anchor is one line, ``position hash recorded_at``, of a
head the operator kept somewhere the DBA cannot rewrite (a ticket, a log shipper, a signed or
append-only store). ``ledger verify --anchor FILE`` then requires, for every line, that the
ledger still holds an event at that position with that exact hash: the hash covers the whole
history up to it, so a cut tail, or any rewrite of the chain up to that position, fails there.

Anchor files are text: one anchor per line; blank lines and lines starting with ``#`` are
ignored; CRLF line ends and a UTF-8 byte order mark are accepted. Position 0 (the empty
ledger) is written ``0 <64 zeros> -``.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from forensics.chain import events_at
from ledger.clock import isoformat_utc, parse_utc
from ledger.descriptors import own_descriptor, write_all
from ledger.errors import LedgerError, ValidationError
from ledger.output_files import output_file_error, write_to_descriptor
from ledger.private import create_private_file
from ledger.reads import read_head, stored_refs
from ledger.recorded import StoredRef
from ledger.schema import GENESIS_HASH, MAX_POSITION
from ledger.store import Ledger
from ledger.text import clip, visible

_POSITION = re.compile(r"[0-9]+")
_HASH = re.compile(r"[0-9a-fA-F]{64}")
_RECORDED_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")
_MALFORMED_SHOWN = 1  # the first malformed line is in the message; all are in ``problems``


class AnchorInputError(ValidationError):
    """An anchor file that cannot be read, or a malformed anchor (the caller's mistake)."""


class HeadMismatchError(LedgerError):
    """``ledger_head`` does not match the event at its position: nothing worth anchoring."""


class AnchorNotHeldError(LedgerError):
    """The ledger no longer holds the last anchor of the file it would append to: its history
    was rolled back (an older backup restored) or rewritten since. Nothing is appended."""


@dataclass(frozen=True)
class Anchor:
    position: int
    hash: str
    recorded_at: datetime | None  # None only for position 0
    source: str = ""  # where it came from: "FILE:LINE" or "--expect-head"

    def line(self) -> str:
        """The anchor as one line of an anchor file."""
        when = "-" if self.recorded_at is None else isoformat_utc(self.recorded_at)
        return f"{self.position} {self.hash} {when}"


@dataclass(frozen=True)
class AnchorCheck:
    anchor: Anchor
    head_position: int
    found_hash: str | None  # the hash stored at the anchored position, None if no event
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


# ---------------------------------------------------------------- writing


def anchor_at(ledger: Ledger, position: int) -> Anchor:
    """The anchor of the head as it stood at ``position`` (at most the head): the event
    stored there, as ``ledger anchor`` would have written it then."""
    position = max(0, min(position, ledger.head().last_position))
    if position == 0:
        return Anchor(0, GENESIS_HASH, None)
    with ledger.connect("anchor") as conn:
        event = stored_refs(conn, [position]).get(position)
    if event is None:
        raise HeadMismatchError(f"no event is stored at position {position}: run `ledger verify`")
    return Anchor(position, _stored_hash(position, str(event.hash)), event.recorded_at)


def current_anchor(ledger: Ledger) -> Anchor:
    """The current head as an anchor, after checking that ``ledger_head`` matches the event at
    its position (a head that does not is refused: run ``ledger verify``)."""
    with ledger.connect("anchor") as conn:
        head = read_head(conn)
        if head is None:
            raise HeadMismatchError("the ledger has no head row: run `ledger migrate`")
        position, head_hash = int(head.last_position), str(head.last_hash)
        if position == 0:
            if head_hash != GENESIS_HASH:
                raise HeadMismatchError(
                    f"ledger_head is at position 0 with hash {head_hash}, not the genesis "
                    "hash: run `ledger verify`"
                )
            return Anchor(0, GENESIS_HASH, None)
        event = stored_refs(conn, [position]).get(position)
    if event is None or str(event.hash) != head_hash:
        found = "no event" if event is None else f"an event with hash {event.hash}"
        raise HeadMismatchError(
            f"ledger_head says position {position} has hash {head_hash}, but the ledger holds "
            f"{found} there: run `ledger verify`"
        )
    return Anchor(position, _stored_hash(position, head_hash), event.recorded_at)


def _stored_hash(position: int, digest: str) -> str:
    """A stored hash as an anchor may hold it: 64 lowercase hexadecimal digits, as every append
    writes. Anything else was written around the append path; anchoring it would print the
    DBA's text to the operator's terminal (control characters included) and write a line
    ``verify --anchor`` refuses as malformed."""
    if _HASH.fullmatch(digest) and digest == digest.lower():
        return digest
    raise HeadMismatchError(
        f"the event at position {position} holds {_show(digest)} as its hash, not 64 "
        "hexadecimal digits as every append writes: run `ledger verify`"
    )


def append_anchor(ledger: Ledger, path: str | os.PathLike[str]) -> Anchor:
    """Append the current head to ``path`` (created if missing, 0600 whatever the umask: it is
    evidence; a file already there keeps its mode) and fsync it. Refused, the file left as it
    is, when the ledger no longer holds the file's last anchor (:class:`AnchorNotHeldError`).

    A path that is not a regular file is a stream the line is written to as it is: this
    process's own descriptor (``/dev/stdout``, a ``3>`` redirection) through that descriptor,
    at the offset the shell left, as ``report --output`` writes it; a FIFO or a device
    opened by name. None can be read back for its last anchor, or fsynced."""
    anchor = current_anchor(ledger)
    target = Path(path)
    _refuse_a_rolled_back_history(ledger, target)
    line = anchor.line().encode("ascii") + b"\n"
    try:
        descriptor = own_descriptor(target)
        if descriptor is not None:
            write_to_descriptor(descriptor, line)
            if stat.S_ISREG(os.fstat(descriptor).st_mode):  # `3>>anchors.txt`: kept, as a file
                os.fsync(descriptor)
        else:
            _append_line(target, line)
    except OSError as exc:  # a missing folder is the caller's (2), a full disk not (3)
        raise output_file_error(
            target,
            exc,
            f"{visible(str(target))}: cannot append to the anchor file ({exc.strerror or exc})",
            AnchorInputError,
        ) from exc
    return anchor


def _append_line(target: Path, line: bytes) -> None:
    """Append ``line`` to the file at ``target``, fsynced when it is a regular file (a pipe
    had "Illegal seek" where the file's last byte was looked at, exit 3). A write that fails
    part-way (a full disk) leaves the file as it was: a line cut short read as a malformed
    anchor, and a file this call created is removed (it was left empty, "no anchor line")."""
    created = create_private_file(target)
    try:
        with open(target, "ab", buffering=0) as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                write_all(file.fileno(), line)
                return
            size = file.tell()
            # A file whose last line lost its newline (edited by hand) must not glue the new
            # line to it.
            separator = b""
            if size > 0:
                with open(target, "rb") as existing:
                    existing.seek(-1, os.SEEK_END)
                    separator = b"" if existing.read(1) == b"\n" else b"\n"
            try:
                write_all(file.fileno(), separator + line)
                os.fsync(file.fileno())
            except OSError:
                with suppress(OSError):
                    os.ftruncate(file.fileno(), size)
                raise
    except OSError:
        with suppress(OSError):
            if created and target.stat().st_size == 0:
                target.unlink()
        raise
    if created:
        _fsync_directory(target.resolve().parent)


# How much of the end of an anchor file is read for its last line (a line is about 100 bytes).
_TAIL_BYTES = 4096


def _refuse_a_rolled_back_history(ledger: Ledger, target: Path) -> None:
    """An older backup restored behind the file's last anchor (or a history rewritten since)
    would otherwise be anchored in its turn, every interval, without a word: the file then
    holds both histories, and only a later ``verify --anchor`` tells. Checked against the
    file's last anchor only; ``verify --anchor`` checks them all."""
    last = _last_anchor(target)
    if last is None:
        return
    [check] = check_anchors(ledger, [last])
    if check.problem is None:
        return
    shown = visible(str(target))  # a newline in the file's name would start a line of its own
    raise AnchorNotHeldError(
        f"{check.problem}. The ledger's history was rolled back (an older backup restored?) "
        f"or rewritten since that anchor: nothing was appended to {shown}. Run `ledger "
        f"verify --anchor {shown}` to see every anchor lost; to anchor this ledger from now "
        "on, keep this file as evidence and anchor into a new one"
    )


def _last_anchor(target: Path) -> Anchor | None:
    """The last anchor line of ``target``, None when there is none to compare with (no file,
    no anchor in its last lines, a line that does not parse: ``verify --anchor`` names it)."""
    try:
        if not target.is_file():  # not a regular file (/dev/full reads zeros without end)
            return None
        with open(target, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - _TAIL_BYTES))
            tail = file.read(_TAIL_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None  # the append that follows says why the file cannot be used
    for text in reversed(tail.split("\n")[1:] if size > _TAIL_BYTES else tail.split("\n")):
        stripped = text.strip().removeprefix("\ufeff")
        if not stripped or stripped.startswith("#"):
            continue
        try:
            return parse_anchor(stripped, f"{visible(str(target))} (its last anchor)")
        except ValueError:
            return None
    return None


def _fsync_directory(folder: Path) -> None:
    """Make a new file's directory entry durable too (POSIX; a no-op where unsupported)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


# ---------------------------------------------------------------- reading


def parse_anchor(text: str, source: str) -> Anchor:
    """One anchor line: ``position hash recorded_at``. Raises ``ValueError`` saying what is
    wrong (the caller adds where)."""
    fields = text.split()
    if len(fields) != 3:
        raise ValueError(
            f"expected 3 fields (position hash recorded_at), found {len(fields)}: {_show(text)}"
        )
    position_text, hash_text, when_text = fields
    position = _parse_position(position_text)
    digest = _parse_hash(hash_text)
    if position == 0:
        if digest != GENESIS_HASH:
            raise ValueError(f"position 0 is the empty ledger: its hash is {GENESIS_HASH}")
        if when_text != "-":
            raise ValueError("position 0 has no recorded_at: write '-'")
        return Anchor(0, digest, None, source)
    if not _RECORDED_AT.fullmatch(when_text):
        raise ValueError(
            f"recorded_at {_show(when_text)} is not an ISO-8601 UTC time like "
            "2026-01-28T03:00:07.000000Z"
        )
    try:
        recorded_at = parse_utc(when_text, naive="refuse")  # the pattern asks for its Z
    except ValueError as exc:
        raise ValueError(f"recorded_at {_show(when_text)} {exc}") from exc
    return Anchor(position, digest, recorded_at, source)


def parse_expect_head(text: str) -> Anchor:
    """``POS:HASH`` as given to ``--expect-head``."""
    source = "--expect-head"
    position_text, colon, hash_text = text.strip().partition(":")
    try:
        if not colon:
            raise ValueError(f"{_show(text)} is not POSITION:HASH")
        position = _parse_position(position_text)
        digest = _parse_hash(hash_text)
        if position == 0 and digest != GENESIS_HASH:
            raise ValueError(f"position 0 is the empty ledger: its hash is {GENESIS_HASH}")
    except ValueError as exc:
        raise AnchorInputError(f"{source} {_show(text)}: {exc}") from None
    return Anchor(position, digest, None, source)


def read_anchor_file(path: str | os.PathLike[str]) -> list[Anchor]:
    """Every anchor of a file; raises :class:`AnchorInputError` naming the file (and line) when
    it cannot be read, holds a malformed line, or holds no anchor at all."""
    source = Path(path)
    shown = visible(str(source))  # a newline in the file's name would start a line of its own
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise AnchorInputError(
            f"{shown}: cannot read the anchor file ({exc.strerror or exc})"
        ) from exc
    body = raw.removeprefix(codecs.BOM_UTF8)
    try:
        content = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = body[: exc.start].count(b"\n") + 1
        raise AnchorInputError(f"{shown}:{at}: not valid UTF-8") from None
    anchors: list[Anchor] = []
    malformed: list[str] = []
    # "\n" only: a line number must be the one an editor shows (str.splitlines also splits on
    # form feeds and Unicode separators).
    for number, text in enumerate(content.split("\n"), start=1):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{shown}:{number}"
        try:
            anchors.append(parse_anchor(stripped, where))
        except ValueError as exc:
            malformed.append(f"{where}: {exc}")
    if malformed:
        more = len(malformed) - _MALFORMED_SHOWN
        message = malformed[0] + (f" (and {more} more malformed line(s))" if more > 0 else "")
        raise AnchorInputError(message, problems=malformed)
    if not anchors:
        raise AnchorInputError(f"{shown}: no anchor line in the file (only blanks or comments)")
    return anchors


def _parse_position(text: str) -> int:
    # The length first: int() refuses more than 4,300 digits with its own ValueError.
    too_long = len(text.lstrip("0")) > len(str(MAX_POSITION))
    if not _POSITION.fullmatch(text) or too_long or int(text) > MAX_POSITION:
        raise ValueError(f"position {_show(text)} is not a whole number from 0 to {MAX_POSITION}")
    return int(text)


def _parse_hash(text: str) -> str:
    if not _HASH.fullmatch(text):
        raise ValueError(
            f"hash {_show(text)} is not 64 hexadecimal characters (it has {len(text)})"
        )
    return text.lower()


def _show(text: str, limit: int = 80) -> str:
    # repr: control characters in a bad line are shown, not sent to the terminal.
    return repr(clip(text, limit))


# ---------------------------------------------------------------- checking


def check_anchors(ledger: Ledger, anchors: Sequence[Anchor]) -> list[AnchorCheck]:
    """For each anchor: does the ledger still hold an event at its position with its hash?"""
    head_position = ledger.head().last_position
    stored = events_at(ledger, (a.position for a in anchors))
    checks = []
    for anchor in anchors:
        checks.append(_check_one(anchor, head_position, stored))
    return checks


def _check_one(anchor: Anchor, head_position: int, stored: dict[int, StoredRef]) -> AnchorCheck:
    what = f"anchor {anchor.source}: position {anchor.position} hash {anchor.hash}"
    if anchor.position == 0:
        return AnchorCheck(anchor, head_position, GENESIS_HASH)
    ref = stored.get(anchor.position)
    if anchor.position > head_position:
        gone = (
            f"the ledger head is at position {head_position}, below the anchored position: "
            "events anchored before were removed (the tail was cut?), or the anchor is "
            "from another ledger"
        )
        return AnchorCheck(anchor, head_position, ref.hash if ref else None, f"{what}: {gone}")
    if ref is None:
        return AnchorCheck(
            anchor, head_position, None, f"{what}: no event is stored at that position"
        )
    if ref.hash != anchor.hash:
        return AnchorCheck(
            anchor,
            head_position,
            ref.hash,
            f"{what}: the event stored there has hash {ref.hash}: the history up to that "
            "position is not the one anchored",
        )
    if anchor.recorded_at is not None and ref.recorded_at != anchor.recorded_at:
        return AnchorCheck(
            anchor,
            head_position,
            ref.hash,
            f"{what}: the hash matches but the event was recorded at "
            f"{isoformat_utc(ref.recorded_at)}, the anchor says "
            f"{isoformat_utc(anchor.recorded_at)}",
        )
    return AnchorCheck(anchor, head_position, ref.hash)


def anchors_from(
    files: Iterable[str | os.PathLike[str]], expected_heads: Iterable[str]
) -> list[Anchor]:
    """Every anchor of ``--anchor FILE`` and ``--expect-head POS:HASH`` options, in order."""
    anchors: list[Anchor] = []
    for path in files:
        anchors.extend(read_anchor_file(path))
    for text in expected_heads:
        anchors.append(parse_expect_head(text))
    return anchors
