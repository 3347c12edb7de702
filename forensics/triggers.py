"""The immutability triggers of ``ledger_events`` (I1), and the check that they are still there.

A DBA who drops or redefines a trigger can then edit history; the hash chain catches the edit,
but the trigger's absence is worth naming on its own, before anything is edited. The check reads
the catalogue (``sqlite_master`` on SQLite, ``information_schema.TRIGGERS`` on MariaDB/MySQL)
and compares every trigger on ``ledger_events`` with the definition below, token by token:
whitespace and the case of keywords and identifiers do not matter, string literals must match
exactly, and anything else (a ``WHEN 0``, an ``UPDATE OF`` one column, a comment, another body)
is a different trigger.

The definitions, and how each database's catalogue shows them, are in
:mod:`forensics.dialects`.

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

from forensics.dialects import (
    TABLE,
    FoundTrigger,
    database_user,
    definition_kind,
    found_triggers,
    may_see_triggers,
)
from ledger.dialects import TriggerDefinition, database_kind, expected_triggers
from ledger.store import Ledger
from ledger.text import clip


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


# The case the databases ignore in keywords and identifiers: ASCII letters only. Unicode case
# folding made "poſition" (a long s) the column position, while SQLite reads an unknown
# double-quoted name as the text 'poſition': a WHEN clause that never holds passed as ours.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def sql_tokens(sql: str) -> list[str]:
    """``sql`` as tokens compared for equality: whitespace and the case of ASCII letters in
    keywords and identifiers do not matter; the text of string literals does, and so does any
    other character."""
    tokens = []
    for token in _TOKEN.findall(sql):
        if token.startswith("'"):
            tokens.append(token)
        elif token[0] in '"`[':
            tokens.append(_ascii_lower(token[1:-1]))
        else:
            tokens.append(_ascii_lower(token))
    return tokens


def check_triggers(ledger: Ledger) -> TriggerCheck:
    """Compare the triggers on ``ledger_events`` with :func:`expected_triggers`."""
    with ledger.connect("verify") as conn:
        dialect = database_kind(conn)  # sqlite, mysql or mariadb
        expected = expected_triggers(dialect)
        if not expected:
            return TriggerCheck(
                checked=False, unchecked_reason=f"no trigger definitions for {dialect}"
            )
        found = found_triggers(conn)
        result = TriggerCheck(
            expected=[t.name for t in expected], found=sorted(t.name for t in found)
        )
        hidden = any(t.definition is None for t in found)
        if hidden or (not found and not may_see_triggers(conn)):
            user = database_user(conn)
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
            same = (
                trigger.name == name if exact else _ascii_lower(trigger.name) == _ascii_lower(name)
            )
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
        differences.append(f"its {definition_kind(dialect)} is {_short(have.definition)}")
    return differences


def _short(sql: str, limit: int = 160) -> str:
    return repr(clip(" ".join(sql.split()), limit))
