"""The immutability triggers of ``ledger_events`` (I1), and the check that they are still there.

A DBA who drops or redefines a trigger can then edit history; the hash chain catches the edit,
but the trigger's absence is worth naming on its own, before anything is edited. The check reads
the catalogue (``sqlite_master`` on SQLite, ``information_schema.TRIGGERS`` on MariaDB/MySQL)
and compares every trigger on ``ledger_events`` with the definition below, token by token:
whitespace and the case of keywords and identifiers do not matter, string literals must match
exactly, and anything else (a ``WHEN 0``, an ``UPDATE OF`` one column, a comment, another body)
is a different trigger.

Migration ``0001_event_store`` creates these triggers with its own frozen copy of the same
statements (a migration is history and never imports code that may change); a freshly migrated
database of each dialect passing this check is what keeps the two equal, and a later change of
the triggers comes with a new migration and a change here.

On MariaDB, ``information_schema.TRIGGERS`` shows a trigger's definition only to a user with the
TRIGGER privilege on its table, which the README's roles do not have (it would let them drop
the triggers); a user with another write privilege on the table (the roles' INSERT) sees the
triggers' names and events but not their bodies, and a user with SELECT alone sees none
(MySQL 8 shows nothing without TRIGGER). So:

* definitions visible: everything is compared;
* names visible, bodies hidden: a missing, renamed or added trigger, or another event or timing,
  is still a problem; the bodies are "not checked", with the reason;
* nothing visible: "missing" if the user holds the TRIGGER privilege (then it would see them),
  else "not checked", with the reason, never "missing" and never a silent pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy import Connection, text

from ledger.database import is_sqlite, translate_errors
from ledger.store import Ledger

TABLE = "ledger_events"
IMMUTABLE_MESSAGE = "ledger_events is append-only: {verb} is not allowed (run-ledger I1)"


@dataclass(frozen=True)
class TriggerDefinition:
    name: str
    timing: str  # BEFORE
    event: str  # UPDATE, DELETE, INSERT
    # What the catalogue holds: on SQLite the whole CREATE TRIGGER statement, on MariaDB/MySQL
    # the body (ACTION_STATEMENT).
    definition: str


def expected_triggers(dialect: str) -> tuple[TriggerDefinition, ...]:
    """The triggers ``ledger migrate`` creates on ``ledger_events`` for ``dialect``."""
    triggers = []
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            name = f"ledger_events_no_{verb.lower()}"
            statement = (
                f"CREATE TRIGGER {name} BEFORE {verb} ON ledger_events "
                f"BEGIN SELECT RAISE(ABORT, '{IMMUTABLE_MESSAGE.format(verb=verb)}'); END"
            )
            triggers.append(TriggerDefinition(name, "BEFORE", verb, statement))
        # INSERT OR REPLACE deletes the conflicting row without firing DELETE triggers.
        replace = (
            "CREATE TRIGGER ledger_events_no_replace BEFORE INSERT ON ledger_events "
            "WHEN EXISTS (SELECT 1 FROM ledger_events WHERE position = NEW.position) "
            "OR EXISTS (SELECT 1 FROM ledger_events WHERE event_id = NEW.event_id) "
            "OR EXISTS (SELECT 1 FROM ledger_events "
            "WHERE run_id = NEW.run_id AND version = NEW.version) "
            f"BEGIN SELECT RAISE(ABORT, '{IMMUTABLE_MESSAGE.format(verb='REPLACE')}'); END"
        )
        triggers.append(TriggerDefinition("ledger_events_no_replace", "BEFORE", "INSERT", replace))
    elif dialect in ("mysql", "mariadb"):
        for verb in ("UPDATE", "DELETE"):
            message = IMMUTABLE_MESSAGE.format(verb=verb)
            body = f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{message}'"
            triggers.append(
                TriggerDefinition(f"ledger_events_no_{verb.lower()}", "BEFORE", verb, body)
            )
    return tuple(triggers)


@dataclass(frozen=True)
class FoundTrigger:
    name: str
    table: str
    timing: str
    event: str
    definition: str | None  # None: this user may not read it
    row_level: bool = True


@dataclass
class TriggerCheck:
    """Outcome of :func:`check_triggers`. ``checked`` is False when the definitions could not
    be compared (``unchecked_reason`` says why); ``problems`` then holds what could be seen
    all the same (a missing or unexpected trigger when the names are visible)."""

    expected: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)  # names on ledger_events, as stored
    problems: list[tuple[str, str]] = field(default_factory=list)  # (trigger name, message)
    checked: bool = True
    unchecked_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.checked and not self.problems


# A string literal (kept exactly), a quoted identifier (unquoted, case folded), a word (case
# folded), or one other character; whitespace separates tokens and is dropped.
_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`(?:[^`]|``)*`|\[[^\]]*\]|\w+|\S")


def sql_tokens(sql: str) -> list[str]:
    """``sql`` as tokens compared for equality: whitespace and the case of keywords and
    identifiers do not matter; the text of string literals does."""
    tokens = []
    for token in _TOKEN.findall(sql):
        if token.startswith("'"):
            tokens.append(token)
        elif token[0] in '"`[':
            tokens.append(token[1:-1].casefold())
        else:
            tokens.append(token.casefold())
    return tokens


def check_triggers(ledger: Ledger) -> TriggerCheck:
    """Compare the triggers on ``ledger_events`` with :func:`expected_triggers`."""
    with translate_errors(ledger.url, "verify"), ledger.engine.connect() as conn:
        dialect = conn.dialect.name
        expected = expected_triggers(dialect)
        if not expected:
            return TriggerCheck(
                checked=False, unchecked_reason=f"no trigger definitions for {dialect}"
            )
        found = _sqlite_triggers(conn) if is_sqlite(conn) else _mysql_triggers(conn)
        result = TriggerCheck(
            expected=[t.name for t in expected], found=sorted(t.name for t in found)
        )
        hidden = any(t.definition is None for t in found)
        if hidden or (not found and not is_sqlite(conn) and not _may_see_triggers(conn)):
            user = conn.execute(text("SELECT CURRENT_USER()")).scalar_one()
            result.checked = False
            seen = (
                f"can see the names of the triggers of {TABLE} but not their definitions"
                if hidden
                else f"cannot see the triggers of {TABLE}"
            )
            result.unchecked_reason = (
                f"the database user {user} {seen} (MariaDB and MySQL show them only to a user "
                "with the TRIGGER privilege on the table): run `ledger verify` as the schema "
                "owner to check them"
            )
            if not found:
                return result  # dropped, or invisible: not known which
    unmatched = list(found)
    for want in expected:
        have = _take(unmatched, want.name)
        if have is None:
            result.problems.append(
                (want.name, f"trigger {want.name} on {TABLE} is missing (dropped?)")
            )
            continue
        differences = _differences(want, have, dialect)
        if differences:
            result.problems.append(
                (
                    want.name,
                    f"trigger {want.name} on {TABLE} is not run-ledger's definition: "
                    + "; ".join(differences),
                )
            )
    for extra in sorted(unmatched, key=lambda t: t.name):
        result.problems.append(
            (
                extra.name,
                f"unexpected trigger {extra.name} ({extra.timing} {extra.event}) on {TABLE}",
            )
        )
    return result


def _take(found: list[FoundTrigger], name: str) -> FoundTrigger | None:
    """Remove and return the trigger called ``name`` (exactly, else in another letter case:
    MariaDB names are case-sensitive, so both may exist, and the second one is an extra)."""
    for exact in (True, False):
        for index, trigger in enumerate(found):
            same = trigger.name == name if exact else trigger.name.casefold() == name.casefold()
            if same:
                return found.pop(index)
    return None


def _differences(want: TriggerDefinition, have: FoundTrigger, dialect: str) -> list[str]:
    differences = []
    if have.timing.upper() != want.timing or have.event.upper() != want.event:
        differences.append(f"fires {have.timing} {have.event}, expected {want.timing} {want.event}")
    if not have.row_level:
        differences.append("not FOR EACH ROW")
    if have.definition is not None and sql_tokens(have.definition) != sql_tokens(want.definition):
        what = "statement" if dialect == "sqlite" else "body"
        differences.append(f"its {what} is {_short(have.definition)}")
    return differences


def _short(sql: str, limit: int = 160) -> str:
    flat = " ".join(sql.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")


_SQLITE_HEAD = re.compile(
    r"^\s*CREATE\s+(?:TEMP\w*\s+)?TRIGGER\s+(?:IF\s+NOT\s+EXISTS\s+)?\S+\s+"
    r"(BEFORE|AFTER|INSTEAD\s+OF)?\s*(DELETE|INSERT|UPDATE)\b",
    re.IGNORECASE,
)


def _sqlite_triggers(conn: Connection) -> list[FoundTrigger]:
    rows = conn.execute(
        text(
            "SELECT name, tbl_name, sql FROM sqlite_master "
            "WHERE type = 'trigger' AND lower(tbl_name) = :table"
        ),
        {"table": TABLE},
    ).all()
    found = []
    for name, table, sql in rows:
        match = _SQLITE_HEAD.match(sql or "")
        timing = " ".join((match.group(1) or "BEFORE").split()).upper() if match else "?"
        event = match.group(2).upper() if match else "?"
        found.append(FoundTrigger(str(name), str(table), timing, event, str(sql or "")))
    return found


def _mysql_triggers(conn: Connection) -> list[FoundTrigger]:
    rows = conn.execute(
        text(
            "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, "
            "ACTION_STATEMENT, ACTION_ORIENTATION FROM information_schema.TRIGGERS "
            "WHERE TRIGGER_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE = :table"
        ),
        {"table": TABLE},
    ).all()
    return [
        FoundTrigger(
            str(name),
            str(table),
            str(timing),
            str(event),
            None if body is None else str(body),
            str(orientation) == "ROW",
        )
        for name, table, timing, event, body, orientation in rows
    ]


def _may_see_triggers(conn: Connection) -> bool:
    """Whether the current user holds the TRIGGER privilege on ``ledger_events`` (globally, on
    the database or on the table). A privilege held through a role is not listed to the user,
    so this errs towards "cannot see": the check then says "not checked", never "missing"."""
    user = str(conn.execute(text("SELECT CURRENT_USER()")).scalar_one())
    name, _, host = user.rpartition("@")
    grantee = f"'{name}'@'{host}'"
    query = text(
        "SELECT 1 FROM information_schema.USER_PRIVILEGES "
        "WHERE GRANTEE = :grantee AND PRIVILEGE_TYPE = 'TRIGGER' "
        "UNION ALL SELECT 1 FROM information_schema.SCHEMA_PRIVILEGES "
        "WHERE GRANTEE = :grantee AND PRIVILEGE_TYPE = 'TRIGGER' "
        "AND TABLE_SCHEMA = DATABASE() "
        "UNION ALL SELECT 1 FROM information_schema.TABLE_PRIVILEGES "
        "WHERE GRANTEE = :grantee AND PRIVILEGE_TYPE = 'TRIGGER' "
        "AND TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :table"
    )
    return conn.execute(query, {"grantee": grantee, "table": TABLE}).first() is not None
