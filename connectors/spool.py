"""The local durable spool (I9): events that could not reach the ledger wait here.

An SQLite file in a folder of the connector host (``--spool-dir``, ``$LEDGER_SPOOL_DIR``, else
``./.ledger-spool``). :meth:`Spool.put` commits (``synchronous=FULL``) before it returns, so an
acknowledged fact survives a crash of the connector. :meth:`Spool.flush` delivers the backlog in
the order it was spooled; delivery is idempotent by ``event_id`` (I3), so a flush interrupted
after the ledger committed, or two flushers at once, never duplicate anything. An event the
ledger refuses for good (a stream rule, an invalid event) is moved to a ``rejected`` table with
the reason, never dropped, and ``ledger spool status`` shows it. An event dated ahead of the
ledger's clock (its clock stepped back since) is not refused for good: it waits, with those
behind it, for a flush once the clock has caught up.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ledger import (
    AheadOfClockError,
    DiskError,
    EventModel,
    Ledger,
    LedgerError,
    RecordedEvent,
    StorageError,
    ValidationError,
    parse_event,
)
from ledger.clock import isoformat_utc, utcnow
from ledger.fork_gate import FORK_GATE
from ledger.mapper import canonical_json, event_to_wire
from ledger.private import create_private_file, make_private_folder
from ledger.text import clip, safe_repr, storable, visible
from ledger.urls import IMPOSSIBLE_PATH_ERRNOS

log = logging.getLogger(__name__)

SPOOL_DIR_ENV = "LEDGER_SPOOL_DIR"
DEFAULT_SPOOL_DIR = ".ledger-spool"
SPOOL_FILE = "spool.db"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS spooled (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    run_id INTEGER,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    spooled_at TEXT NOT NULL,
    run_started_id TEXT
);
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    run_id INTEGER,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    spooled_at TEXT NOT NULL,
    rejected_at TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""
# Added to ``spooled`` by this release (a spool file an earlier one made lacks it): the
# ``event_id`` of the RunStarted of the run the row was written for, NULL if unknown. Not added
# to ``rejected``, whose rows earlier releases insert positionally: a row set aside because its
# run is not the ledger's names both RunStarted ids in its reason.
_RUN_STARTED_COLUMN = "ALTER TABLE spooled ADD COLUMN run_started_id TEXT"


# A spooled row as flush reads it: seq, event_id, run_id, type, body, spooled_at,
# run_started_id.
SpooledRow = tuple[int, str, int | None, str, str, str, str | None]
Delivered = tuple[int, int, int]  # (delivered, already there, rejected)
# A row put into spooled: event_id, run_id, type, body, spooled_at, run_started_id.
SpoolRowIn = tuple[str, int | None, str, str, str, str | None]
# This ledger's RunStarted of each run id a flush looked up (None: no such run here; a
# LedgerError: why the ledger could not look it up).
RunStarts = dict[int, RecordedEvent | LedgerError | None]


@dataclass(frozen=True)
class SpoolStatus:
    path: str
    pending: int
    runs: list[int]
    oldest_spooled_at: str | None
    rejected: int
    # False where no spool file is (nothing was ever spooled there, or the folder is not the
    # one the connectors use): a typo in --spool-dir must not pass for an empty backlog.
    exists: bool = True


@dataclass(frozen=True)
class SpoolBacklog:
    """What ``ledger spool status`` shows: the status, and every event refused for good."""

    status: SpoolStatus
    rejected_events: list[dict[str, object]]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self.status), "rejected_events": self.rejected_events}


@dataclass(frozen=True)
class FlushResult:
    delivered: int  # newly appended to the ledger
    duplicates: int  # already there (an earlier flush whose reply was lost)
    rejected: int  # refused for good, kept in the rejected table
    remaining: int  # still spooled (the ledger became unreachable again)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SpoolError(StorageError):
    """The spool file itself cannot be used (unreadable, corrupted, locked, no space): not the
    ledger's fault, which may well be reachable."""


class SpoolAccessError(SpoolError):
    """The spool folder or file is one this user may not open (the environment's failure,
    exit 3 in the CLI, like a SQLite ledger file it may not open)."""


class SpoolDiskError(SpoolError, DiskError):
    """The spool file's disk failed a write or a read: full, past a file-size limit or a
    quota, or failing (the environment's failure, exit 3 in the CLI, as for a SQLite ledger
    file's disk; it was exit 1, the code of a check that found a problem, and for `ledger
    spool status` of events waiting)."""


# SQLite's words for a file the process may not open or write (EACCES, EROFS).
_ACCESS_WORDS = ("unable to open database file", "readonly database")
# SQLite's words for a disk that failed a write (SQLITE_FULL: a full disk, a quota;
# SQLITE_IOERR: EFBIG past a file-size limit, EIO).
_DISK_WORDS = ("database or disk is full", "disk I/O error")


def _unusable(what: str, exc: OSError) -> LedgerError:
    """The error for a spool path the system refused: a name longer than the file system takes
    or links that loop is the caller's to fix (``--spool-dir``; exit 2, as for a SQLite ledger
    file at such a path), anything else this user's permissions or the machine's (exit 3)."""
    text = f"{what}: {exc.strerror or exc}"
    if exc.errno in IMPOSSIBLE_PATH_ERRNOS:
        return ValidationError(f"{text}: no file can be at this path: choose another spool folder")
    return SpoolAccessError(text)


def spool_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    return Path(explicit or os.environ.get(SPOOL_DIR_ENV) or DEFAULT_SPOOL_DIR)


class Spool:
    """One spool file. Safe to share between threads and processes (SQLite locking)."""

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        self.folder = spool_dir(folder)
        try:
            not_a_folder = self.folder.exists() and not self.folder.is_dir()
        except OSError as exc:  # a parent this user may not enter
            raise _unusable(f"spool folder {self.folder}", exc) from exc
        if not_a_folder:
            raise ValidationError(f"spool folder {self.folder} exists and is not a folder")
        self.path = self.folder / SPOOL_FILE
        self._ready = False

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r})"

    def _exists(self) -> bool:
        """Whether the spool file is there. A folder this user may not enter made
        ``Path.exists`` raise PermissionError: a traceback from every spool command, and
        ``ledger run`` or serve's jobs did not start a run against a reachable ledger."""
        try:
            return self.path.exists()
        except OSError as exc:
            raise _unusable(f"spool {self.path}", exc) from exc

    @contextmanager
    def _connect(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        try:
            with self._open(immediate) as conn:
                yield conn
        except OSError as exc:
            raise _unusable(f"spool {self.path}", exc) from exc
        except sqlite3.Error as exc:
            if any(w in str(exc) for w in _DISK_WORDS):
                raise SpoolDiskError(
                    f"spool {self.path}: {exc} (the disk holding it is full, or a file-size "
                    "limit or quota was reached, or it failed: free space and run it again)"
                ) from exc
            kind = SpoolAccessError if any(w in str(exc) for w in _ACCESS_WORDS) else SpoolError
            raise kind(f"spool {self.path}: {exc}") from exc

    @contextmanager
    def _open(self, immediate: bool) -> Iterator[sqlite3.Connection]:
        if self._ready and not self._exists():
            # Removed since this Spool made it (an operator tidying up, a cleaner of temporary
            # files): made again. ``ledger serve`` keeps one Spool for its lifetime, and every
            # later outage failed to spool ("unable to open database file", or "no such table"
            # once SQLite made an empty file), the runs' reports with it.
            self._ready = False
        if not self._ready:
            # The connectors' facts (error messages, details): 0700 and 0600 whatever the
            # umask (it was 0777 and 0644 under umask 0), for what the spool creates only.
            # SQLite gives the -wal and -shm files the database file's mode.
            make_private_folder(self.folder)
            create_private_file(self.path)
        # A fork waits for the whole of it, the close included (ledger.fork_gate): a write's
        # child could never write the spool, and so could the child of a fork during the close
        # of the process's last connection, which checkpoints the WAL into the file under an
        # exclusive lock (review 35: 3 tries in 6 of review 33's test, the child waited out
        # the busy timeout). A read's close checkpoints what the writes left, as a write's.
        entry = FORK_GATE.enter()
        try:
            with closing(sqlite3.connect(self.path, timeout=60, isolation_level=None)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                if not self._ready:
                    conn.executescript(_SCHEMA)
                    _add_run_started_column(conn)
                    self._ready = True
                conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        finally:
            FORK_GATE.leave(entry)

    def put(self, events: Sequence[EventModel], run_started_id: str | None = None) -> None:
        """Store events durably (committed and fsynced before returning). ``run_started_id``:
        the ``event_id`` of their run's RunStarted (the SDK's events are of one run), so that
        a flush delivers them into that run only, not into a run of another ledger that has
        the same id; None: delivered unchecked."""
        rows = self._spooled_rows(events, run_started_id)
        with self._connect(immediate=True) as conn:
            _insert_spooled(conn, rows)
        log.warning("spooled %d event(s) to %s", len(events), self.path)

    def set_aside(self, events: Sequence[EventModel], reason: str) -> int:
        """Keep events the ledger refuses for good in the ``rejected`` table, with the reason
        (a run closed under its connector: :class:`connectors.refusal.RunClosedError`).
        Returns how many are there now. Each goes through ``spooled`` first, so its ``seq``
        comes from the same AUTOINCREMENT and never collides with a row flush sets aside
        later; one already spooled is moved, one already rejected is kept as it was."""
        now = isoformat_utc(utcnow())
        ids = [(str(e.event_id),) for e in events]
        rows = self._spooled_rows(events)
        with self._connect(immediate=True) as conn:
            _insert_spooled(conn, rows)
            conn.executemany(
                "INSERT OR IGNORE INTO rejected SELECT seq, event_id, run_id, type, body, "
                "spooled_at, ?, ? FROM spooled WHERE event_id = ?",
                [(now, reason, event_id) for (event_id,) in ids],
            )
            conn.executemany("DELETE FROM spooled WHERE event_id = ?", ids)
            kept = sum(
                conn.execute("SELECT COUNT(*) FROM rejected WHERE event_id = ?", i).fetchone()[0]
                for i in ids
            )
        log.warning("set aside %d refused event(s) in %s", kept, self.path)
        return int(kept)

    def _spooled_rows(
        self, events: Sequence[EventModel], run_started_id: str | None = None
    ) -> list[SpoolRowIn]:
        """The events as rows of ``spooled``. An event that is not JSON, or whose text UTF-8
        cannot carry (a lone surrogate), is a :class:`SpoolError` like any spool failure:
        SQLite's driver raised UnicodeEncodeError, which escaped the SDK's handling of a spool
        that cannot keep refused events (it logs them) as a traceback, from ``finish()`` and
        from the exit hook, and the run stayed open."""
        now = isoformat_utc(utcnow())
        rows: list[SpoolRowIn] = []
        for event in events:
            try:
                body = canonical_json(event_to_wire(event))
                body.encode("utf-8")
            except (ValueError, TypeError, RecursionError) as exc:  # not JSON, or not UTF-8
                raise SpoolError(
                    f"spool {self.path}: event {event.event_id} ({event.type} of run "
                    f"{event.run_id}) cannot be kept: {visible(str(exc))}"
                ) from None
            rows.append((str(event.event_id), event.run_id, event.type, body, now, run_started_id))
        return rows

    def has_pending(self) -> bool:
        if not self._exists():
            return False
        with self._connect() as conn:
            return conn.execute("SELECT 1 FROM spooled LIMIT 1").fetchone() is not None

    def status(self) -> SpoolStatus:
        if not self._exists():  # nothing was ever spooled here: do not create the folder
            return SpoolStatus(str(self.path), 0, [], None, 0, exists=False)
        with self._connect() as conn:
            pending, oldest = conn.execute(
                "SELECT COUNT(*), MIN(spooled_at) FROM spooled"
            ).fetchone()
            runs = [
                r for (r,) in conn.execute("SELECT DISTINCT run_id FROM spooled ORDER BY run_id")
            ]
            rejected = conn.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]
        return SpoolStatus(str(self.path), pending, runs, oldest, rejected)

    def rejected(self) -> list[dict[str, object]]:
        if not self._exists():
            return []
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT seq, event_id, run_id, type, rejected_at, reason FROM rejected ORDER BY seq"
            )
            names = [d[0] for d in rows.description]
            return [dict(zip(names, row, strict=True)) for row in rows]

    def backlog(self) -> SpoolBacklog:
        return SpoolBacklog(self.status(), self.rejected())

    def flush(self, ledger: Ledger, batch_size: int = 500) -> FlushResult:
        """Deliver the backlog in spool order. Raises :class:`StorageError` only if the ledger
        is unreachable before anything could be delivered; otherwise reports what remains.

        Read a page of ``batch_size`` rows at a time, by ``seq`` (keyset): the whole backlog
        was read into memory first, and a spool filled by a long outage (millions of rows) is
        exactly the one that must be delivered. Each page is one transaction under the spool's
        write lock: one flusher delivers a page at a time, in order, and a connector putting
        events meanwhile waits for a page, not for the whole backlog (past SQLite's busy
        timeout it failed); a flush killed half-way keeps what it delivered deleted."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValidationError(f"batch_size={batch_size!r}: a whole number >= 1 is required")
        delivered = duplicates = rejected = 0
        if not self._exists():
            return FlushResult(0, 0, 0, 0)
        with self._connect() as conn:
            # The backlog as it is now: rows put while this flush runs wait for the next one,
            # so a flush ends however fast others put.
            last = conn.execute("SELECT MAX(seq) FROM spooled").fetchone()[0] or 0
        outage = False
        starts: RunStarts = {}  # this ledger's RunStarted of each run met, read once a flush
        while not outage:
            with self._connect(immediate=True) as conn:  # one page, one flusher; puts wait
                # From the first row left: another flusher may have delivered the page after
                # this one's last while this one waited for the lock.
                chunk: list[SpooledRow] = conn.execute(
                    "SELECT seq, event_id, run_id, type, body, spooled_at, run_started_id "
                    "FROM spooled WHERE seq <= ? ORDER BY seq LIMIT ?",
                    (last, batch_size),
                ).fetchall()
                if not chunk:
                    break
                try:
                    outcome = self._deliver(ledger, conn, chunk, starts)
                except _PageCutShort as cut:  # what it delivered is deleted at this COMMIT
                    outage = True
                    outcome = cut.done
                except StorageError:
                    if not (delivered or duplicates or rejected):
                        raise
                    outage = True  # what this page delivered one by one is deleted at COMMIT
                    outcome = (0, 0, 0)
                delivered += outcome[0]
                duplicates += outcome[1]
                rejected += outcome[2]
        with self._connect() as conn:
            remaining = conn.execute("SELECT COUNT(*) FROM spooled").fetchone()[0]
        if delivered or rejected:
            log.info(
                "spool %s: delivered %d, already delivered %d, rejected %d, remaining %d",
                self.path,
                delivered,
                duplicates,
                rejected,
                remaining,
            )
        return FlushResult(delivered, duplicates, rejected, remaining)

    def _deliver(
        self, ledger: Ledger, conn: sqlite3.Connection, rows: list[SpooledRow], starts: RunStarts
    ) -> Delivered:
        # This ledger's runs are looked up before anything is written: an outage meanwhile
        # leaves the page as it was.
        foreign = _foreign_rows(ledger, rows, starts)
        for row in rows:
            if row[0] in foreign:
                _reject(conn, row, foreign[row[0]])
        rows = [row for row in rows if row[0] not in foreign]
        set_aside = len(foreign)
        if not rows:
            return 0, 0, set_aside
        try:
            # Parsed inside the try: an event spooled by an earlier release that today's rules
            # refuse (a name, say) is set aside as rejected, not left blocking those behind it.
            events = [_parsed(row[4]) for row in rows]
            result = ledger.append(events)
        except StorageError as exc:
            if set_aside:  # kept with the page's COMMIT, and counted
                raise _PageCutShort((0, 0, set_aside)) from exc
            raise
        except LedgerError:
            try:
                delivered, duplicates, rejected = self._deliver_one_by_one(ledger, conn, rows)
            except _PageCutShort as cut:
                done = cut.done
                raise _PageCutShort((done[0], done[1], done[2] + set_aside)) from cut
            return delivered, duplicates, rejected + set_aside
        conn.executemany("DELETE FROM spooled WHERE seq = ?", [(row[0],) for row in rows])
        return result.appended, result.duplicates, set_aside

    def _deliver_one_by_one(
        self, ledger: Ledger, conn: sqlite3.Connection, rows: list[SpooledRow]
    ) -> Delivered:
        """A batch was refused: find the events the ledger refuses for good, keep the rest."""
        delivered = duplicates = rejected = 0
        for row in rows:
            seq, event_id, run_id, event_type, body = row[:5]
            try:
                result = ledger.append([_parsed(body)])
            except StorageError as exc:
                if delivered or duplicates or rejected:
                    raise _PageCutShort((delivered, duplicates, rejected)) from exc
                raise
            except AheadOfClockError as exc:
                # Not refused for good: the ledger's clock stepped back since the fact was
                # spooled (or this host's clock ran ahead), and the clock will reach it. It and
                # those behind it wait, in order, for a later flush.
                log.warning(
                    "spooled event %s (%s of run %s) kept in the spool for a later flush: %s",
                    event_id,
                    event_type,
                    run_id,
                    visible(str(exc)),
                )
                raise _PageCutShort((delivered, duplicates, rejected)) from exc
            except LedgerError as exc:
                log.error(
                    "spooled event %s (%s of run %s) refused by the ledger: %s",
                    event_id,
                    event_type,
                    run_id,
                    visible(str(exc)),
                )
                _reject(conn, row, str(exc))
                rejected += 1
            else:
                delivered += result.appended
                duplicates += result.duplicates
                conn.execute("DELETE FROM spooled WHERE seq = ?", (seq,))
        return delivered, duplicates, rejected


class _PageCutShort(Exception):
    """The ledger became unreachable part-way through a page sent one event at a time: the
    events before it are delivered or set aside (their rows deleted, committed with the page)
    and are counted in the flush's result, not reported as never sent."""

    def __init__(self, done: Delivered) -> None:
        super().__init__(f"delivered, already there, rejected: {done}")
        self.done = done


def _insert_spooled(conn: sqlite3.Connection, rows: Sequence[SpoolRowIn]) -> None:
    """Rows into ``spooled`` in their order (``seq``); one already there is left as it is."""
    conn.executemany(
        "INSERT OR IGNORE INTO spooled (event_id, run_id, type, body, spooled_at, "
        "run_started_id) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )


def _add_run_started_column(conn: sqlite3.Connection) -> None:
    """Give a spool file an earlier release made the ``run_started_id`` column (its rows get
    NULL: delivered unchecked, as that release would have). Two processes may both try: the
    second's "duplicate column name" says it is there."""
    try:
        conn.execute(_RUN_STARTED_COLUMN)
    except sqlite3.OperationalError as exc:
        if "duplicate column name" not in str(exc):
            raise


def _reject(conn: sqlite3.Connection, row: SpooledRow, reason: str) -> None:
    """Move a spooled row to ``rejected`` with the reason: kept, never delivered again."""
    seq, event_id, run_id, event_type, body, spooled_at = row[:6]
    conn.execute(
        "INSERT OR IGNORE INTO rejected (seq, event_id, run_id, type, body, spooled_at, "
        "rejected_at, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            seq,
            event_id,
            run_id,
            event_type,
            body,
            spooled_at,
            isoformat_utc(utcnow()),
            storable(reason),
        ),
    )
    conn.execute("DELETE FROM spooled WHERE seq = ?", (seq,))


def _foreign_rows(ledger: Ledger, rows: list[SpooledRow], starts: RunStarts) -> dict[int, str]:
    """The rows (by ``seq``) written for a run this ledger's run of that id is not, with why.

    Run ids are the ledger's own: after a database restore, on a new ledger, or with staging
    and production run from one folder (one ``./.ledger-spool``), run N of the ledger met is
    another connector's, and its events were delivered onto it: foreign counts, and a
    RunFinished of another connector closing it. A row that names the RunStarted of its run
    goes only into the run that RunStarted opened; one that names none (an earlier release's)
    is delivered unchecked."""
    foreign: dict[int, str] = {}
    for seq, event_id, run_id, event_type, _, _, written_for in rows:
        if written_for is None or run_id is None:
            continue
        if run_id not in starts:
            starts[run_id] = _run_start(ledger, run_id)
        here = starts[run_id]
        if isinstance(here, RecordedEvent) and str(here.event_id) == written_for:
            continue
        if isinstance(here, LedgerError):
            foreign[seq] = (
                f"the run these events were written for (run {clip(safe_repr(run_id), 80)}, "
                f"RunStarted {visible(str(written_for))}) cannot be looked up in this ledger: "
                f"{visible(str(here))}"
            )
        else:
            if here is None:
                whose = "no run of that id is in this ledger"
            else:
                payload = here.payload_data
                whose = (
                    f"run {run_id} here was started by RunStarted {here.event_id}, of "
                    f"{visible(str(payload.get('connector_name')))} (source "
                    f"{payload.get('source_id')})"
                )
            foreign[seq] = (
                f"run {run_id} of this ledger is not the run these events were written for "
                f"(RunStarted {written_for}; {whose}): spooled for another ledger, or one "
                "restored from a backup"
            )
        log.error(
            "spooled event %s (%s of run %s) set aside: %s",
            event_id,
            event_type,
            run_id,
            foreign[seq],
        )
    return foreign


def _run_start(ledger: Ledger, run_id: int) -> RecordedEvent | LedgerError | None:
    """This ledger's RunStarted of run ``run_id``, None if it has no such run, or the refusal
    of the look-up: a run id that is not a whole number (a row edited by hand), the run's
    first stored event unreadable. That refusal raised out of every flush (`ledger spool
    flush` exit 2 for ever, nothing behind the row delivered) and out of every RunContext on
    the host, which flushes before it appends: no run started, and the SDK took it for the
    ledger refusing a live run's own events, closed that run and set its facts aside. Now the
    row is set aside with the reason, as a row whose body is damaged is. An outage
    (:class:`StorageError`) is raised: the page waits for a later flush."""
    try:
        first = ledger.read_run(run_id, limit=1)
    except StorageError:
        raise
    except LedgerError as exc:
        return exc
    return first[0] if first and first[0].type == "RunStarted" else None


def _parsed(body: str) -> EventModel:
    """A spooled row's event. A body that is not JSON (a row damaged on disk, edited by hand)
    raised JSONDecodeError out of every flush, so nothing behind it was ever delivered, and out
    of every RunContext on the host, which flushes before it appends: now it is refused like
    an event the ledger refuses, and set aside in ``rejected`` with the reason."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ValidationError(f"the spooled body is not JSON ({clip(str(exc), 200)})") from None
    return parse_event(document)
