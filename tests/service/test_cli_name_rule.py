"""The name rule at the ``ledger`` command: an actor given with ``--actor`` or taken from the
user name, a connector name in an appended file or in a config, that could pass for another
is refused naming the character, echoing no control character, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger import Ledger
from tests.service.support import (
    LOOK_ALIKE_ACTORS,
    OTHER_SCRIPT_ACTORS,
    lines,
    run,
    shows_no_raw_control,
)


@pytest.mark.parametrize("name", ["op\u202e", "op ", "\u00a0op", "o\x1bp"])
def test_an_actor_on_the_command_line_follows_the_name_rule(
    ledger: Ledger, db_url: str, name: str
) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    for args in (
        ["runs", "fail", str(run_id), "--reason", "dead", "--actor", name],
        ["project", "--skip-position", "1", "--reason", "bad", "--actor", name],
    ):
        result = run(*args, "--db", db_url)
        assert result.exit_code == 2, result.output
        assert "--actor" in result.stderr
        assert "is not allowed" in result.stderr
        assert shows_no_raw_control(result.stderr)
    assert ledger.head().last_position == 1
    assert "skipped" not in run("status", "--db", db_url).stdout


def test_a_user_name_that_breaks_the_rule_is_not_taken_as_the_actor(
    ledger: Ledger, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    for variable in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(variable, "mallory\u202e")
    result = run("runs", "fail", str(run_id), "--reason", "dead", "--db", db_url)
    assert result.exit_code == 2, result.output
    assert "U+202E RIGHT-TO-LEFT OVERRIDE" in result.stderr
    assert "--actor" in result.stderr
    assert shows_no_raw_control(result.stderr)
    assert ledger.head().last_position == 1


def test_append_names_a_bad_name_and_echoes_no_control_character(
    ledger: Ledger, db_url: str
) -> None:
    text = lines(
        {"type": "RunStarted", "source_id": 1, "connector_name": "SOURCE\u202e_1"},
        {"type": "RunProgressed", "run_id": 1, "\x1b[2J\x1b]8;;http://evil\x1b\\": 1},
        {"type": "RunProgressed", "run_id": 1, "x\nline 9: all good": 1},
    )
    result = run("append", "-", "--db", db_url, input=text)
    assert result.exit_code == 2
    assert (
        "line 1: connector_name: U+202E RIGHT-TO-LEFT OVERRIDE at index 6 is not allowed"
        in result.stderr
    )
    assert "line 2: \\x1b[2J\\x1b]8;;http://evil\\x1b\\: not a field of" in result.stderr
    assert "line 3: x\\nline 9: all good: not a field of" in result.stderr
    assert not any(line.startswith("line 9") for line in result.stderr.splitlines())
    assert shows_no_raw_control(result.stderr)
    assert ledger.head().last_position == 0


def test_append_refuses_an_actor_that_reads_as_a_reserved_one(ledger: Ledger, db_url: str) -> None:
    """``ledger append`` holds the database's credentials: it may record the sweeper or an
    operator (a copy of a ledger carries them). A look-alike spelling (other case, full-width
    colon) is refused, as over HTTP: the ledger never writes it, and the report would not count
    it as the actor the timeline shows."""
    text = lines(
        {"type": "RunStarted", "run_ref": "r", "source_id": 1, "connector_name": "c"},
        {
            "type": "RunFinished",
            "run_ref": "r",
            "status": "failed",
            "actor": "operator\uff1aoncall",
        },
        {"type": "RunStarted", "run_ref": "s", "source_id": 1, "connector_name": "c"},
        {"type": "RunFinished", "run_ref": "s", "status": "failed", "actor": "Sweeper"},
    )
    result = run("append", "-", "--db", db_url, input=text)
    assert result.exit_code == 2, result.output
    assert "line 2: actor: 'operator\uff1aoncall' reads as the reserved actor" in result.stderr
    assert "line 4: actor: 'Sweeper' reads as the reserved actor 'sweeper'" in result.stderr
    assert ledger.head().last_position == 0
    real = lines(
        {"type": "RunStarted", "run_ref": "r", "source_id": 1, "connector_name": "c"},
        {"type": "RunFinished", "run_ref": "r", "status": "failed", "actor": "operator:oncall"},
    )
    assert run("append", "-", "--db", db_url, input=real).exit_code == 0


def runs_finished_by(actors: list[str]) -> str:
    """JSON Lines of a run started and finished (failed) by each of ``actors``, in turn."""
    events: list[dict[str, object]] = []
    for index, actor in enumerate(actors):
        started = {"type": "RunStarted", "run_ref": f"r{index}", "source_id": 1}
        finished = {"type": "RunFinished", "run_ref": f"r{index}", "status": "failed"}
        events += [{**started, "connector_name": "c"}, {**finished, "actor": actor}]
    return lines(*events)


def test_append_refuses_every_look_alike_of_a_reserved_actor(ledger: Ledger, db_url: str) -> None:
    """Look-alikes outside NFKC (a Cyrillic ``\u0455`` for ``s``, U+A789 for ``:``, U+2010 for
    ``-``) passed the NFKC and case check: the timeline showed ``sweeper`` where the report
    counted none. Each line is refused naming the character, and nothing is written."""
    result = run("append", "-", "--db", db_url, input=runs_finished_by(LOOK_ALIKE_ACTORS))
    assert result.exit_code == 2, result.output
    for index, actor in enumerate(LOOK_ALIKE_ACTORS):
        assert f"line {2 * index + 2}: actor: {actor!r} reads as the reserved actor" in (
            result.stderr
        )
    assert "(U+0455 CYRILLIC SMALL LETTER DZE at index 0)" in result.stderr
    assert ledger.head().last_position == 0


def test_append_records_an_actor_in_another_script(ledger: Ledger, db_url: str) -> None:
    """Only look-alikes of ASCII are folded: a Cyrillic or Greek actor reads as no reserved
    one and is appended as it is."""
    result = run("append", "-", "--db", db_url, input=runs_finished_by(OTHER_SCRIPT_ACTORS))
    assert result.exit_code == 0, result.output
    actors = [event.actor for event in ledger.read_all() if event.type == "RunFinished"]
    assert actors == OTHER_SCRIPT_ACTORS


def test_a_config_connector_name_follows_the_name_rule(tmp_path: Path) -> None:
    path = tmp_path / "ledger.toml"
    path.write_text(
        '[[connectors]]\nname = "stations "\ntype = "csv"\nsource_id = 1\n'
        'schedule = { interval = "15m" }\n'
        '[[connectors]]\nname = "sta\\u200btions"\ntype = "csv"\nsource_id = 2\n'
        'schedule = { interval = "15m" }\n',
        encoding="utf-8",
    )
    result = run("config", "check", str(path))
    assert result.exit_code == 2
    # The connector named by its source: its name is what is wrong.
    assert (
        "connectors[0] (source 1).name: trailing whitespace (U+0020 SPACE at index 8)"
    ) in result.stderr
    assert "connectors[1] (source 2).name: U+200B ZERO WIDTH SPACE at index 3" in result.stderr


@pytest.mark.parametrize(
    ("name", "composed"),
    [("SOURCE_e\u0301", "SOURCE_\u00e9"), ("\u212bngstr\u00f6m", "\u00c5ngstr\u00f6m")],
)
def test_a_name_that_reads_as_another_composed_one_is_refused(
    ledger: Ledger, db_url: str, name: str, composed: str
) -> None:
    """A decomposed "é" (e + U+0301) or U+212B ANGSTROM SIGN prints as the composed name and
    is the same text to Unicode, yet it was stored as a second connector name beside it."""
    ledger.start_run(1, composed)
    head = ledger.head()
    text = lines({"type": "RunStarted", "source_id": 1, "connector_name": name})
    result = run("append", "-", "--db", db_url, input=text)
    assert result.exit_code == 2, result.output
    assert "line 1: connector_name: not in Unicode normal form NFC" in result.stderr
    assert shows_no_raw_control(result.stderr)
    run_id = ledger.start_run(1, composed)
    fail = run("runs", "fail", str(run_id), "--reason", "dead", "--actor", name, "--db", db_url)
    assert fail.exit_code == 2, fail.output
    assert "not in Unicode normal form NFC" in fail.stderr
    assert ledger.head().last_position == head.last_position + 1
    assert {state.connector_name for state in ledger.runs()} == {composed}
