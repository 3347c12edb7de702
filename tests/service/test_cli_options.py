"""The ``ledger`` command's options (issue 15, item 10): -v anywhere, a help text for every
option, defaults shown once, one rule for the actor of an operator's decision."""

from __future__ import annotations

import getpass
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import Ledger
from ledger.events import (
    UNNAMED_OPERATOR,
    operator_actor,
    operator_name_problem,
    operator_problem,
)
from ledger.urls import mask_url
from service.cli import cli
from service.cli.options import check_actor, operator_actor_of
from tests.projection_support import append_raw


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def every_command(
    command: click.Command, path: tuple[str, ...] = ("ledger",)
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, subcommand in command.commands.items():
            yield from every_command(subcommand, (*path, name))


def test_every_option_of_every_command_has_a_help_text() -> None:
    missing = [
        f"{' '.join(path)} {'/'.join(option.opts)}"
        for path, command in every_command(cli)
        for option in command.params
        if isinstance(option, click.Option) and not option.hidden and not option.help
    ]
    assert missing == []


def test_db_help_names_the_config_where_a_command_reads_one() -> None:
    """`status --config` and `api --config` take the config's database_url, but their --db help
    said "else $LEDGER_DATABASE_URL, else sqlite:///ledger.db", as if the config did not count."""
    with_config = [
        (path, command)
        for path, command in every_command(cli)
        if {"db_url", "config_path"} <= {param.name for param in command.params}
    ]
    assert {" ".join(path) for path, _ in with_config} == {
        "ledger status",
        "ledger api",
        "ledger stuck",
        "ledger report",
        "ledger sweep",
    }
    for path, command in with_config:
        db = next(param for param in command.params if param.name == "db_url")
        assert isinstance(db, click.Option)
        assert "--config file's database_url" in (db.help or ""), path


def test_status_with_a_config_reads_its_database(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text(f'database_url = "{db_url}"\n', encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        ["status", "--config", str(config), "--format", "json"],
        env={"LEDGER_DATABASE_URL": ""},
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["database"] == mask_url(db_url)


README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_names_every_option_and_no_option_a_command_lacks() -> None:
    """The CLI reference against the commands: every long option of every command is in the
    README (`--verbose` was not: only `-v`), and each README line that starts a `ledger`
    command line (a heading, a `$ ` transcript line, a synopsis) uses only that command's
    options."""
    readme = README.read_text(encoding="utf-8")
    undocumented = sorted(
        f"{' '.join(path)} {name}"
        for path, command in every_command(cli)
        for option in command.params
        if isinstance(option, click.Option)
        for name in option.opts
        if name.startswith("--") and name not in readme
    )
    assert undocumented == []
    commands = {" ".join(path[1:]): command for path, command in every_command(cli)}
    wrong = []
    for line in readme.splitlines():
        found = re.match(r"^(?:### `|\$ |)ledger ((?:[a-z-]+ ?)+)", line.strip())
        if found is None:
            continue
        words = found.group(1).split()
        name = next((" ".join(words[:n]) for n in (2, 1) if " ".join(words[:n]) in commands), None)
        command = commands.get(name or "")
        if command is None or isinstance(command, click.Group):
            continue
        known = {opt for param in command.params for opt in getattr(param, "opts", [])}
        wrong += [
            f"{name}: {option}"
            for option in re.findall(r"(?<![\w-])--?[a-z][a-z-]*", line)
            if option not in known
        ]
    assert wrong == []


def test_append_names_its_argument_as_the_readme_and_its_help_do() -> None:
    """Its usage line said `[SOURCE]`, where the README's heading and its own help text say
    FILE (or - for stdin)."""
    usage = run("append", "--help").stdout.splitlines()[0]
    assert usage.endswith(" append [OPTIONS] [FILE|-]"), usage  # click names the group "cli"
    assert "### `ledger append [FILE|-] [--db URL]`" in README.read_text(encoding="utf-8")
    missing = run("append", "no-such-file.jsonl")
    assert missing.exit_code == 2
    assert "Invalid value for '[FILE|-]': 'no-such-file.jsonl'" in missing.stderr


def test_events_names_its_run_option_as_the_readme_does() -> None:
    """``--run INTEGER`` in its help, where the README's heading says ``--run ID``."""
    assert "  --run ID " in run("events", "--help").stdout
    assert "### `ledger events [--run ID] " in README.read_text(encoding="utf-8")


def test_every_command_takes_verbose() -> None:
    lacking = [
        " ".join(path)
        for path, command in every_command(cli)
        if not any("-v" in param.opts for param in command.params)
    ]
    assert lacking == []


@pytest.mark.parametrize(
    ("where", "level"),
    [
        ((), logging.WARNING),
        (("-v", "verify"), logging.INFO),
        (("verify", "-v"), logging.INFO),
        (("-v", "verify", "-v"), logging.DEBUG),
        (("verify", "-vv"), logging.DEBUG),
    ],
    ids=["none", "before", "after", "both", "-vv after"],
)
def test_verbose_counts_before_and_after_the_command(
    where: tuple[str, ...], level: int, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging.getLogger(), "level", logging.WARNING)
    args = where if where else ("verify",)
    result = run(*args, "--db", db_url)
    assert result.exit_code == 0, result.output
    assert logging.getLogger().level == level


def test_verbose_shows_run_ledgers_lines_not_alembics(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``-v migrate`` said "Context impl SQLiteImpl." and "Will assume non-transactional DDL."
    three times each; alembic's lines are for -vv."""
    monkeypatch.setattr(logging.getLogger(), "level", logging.WARNING)
    assert run("-v", "migrate", "--db", db_url).exit_code == 0
    assert logging.getLogger("alembic").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("migrations").getEffectiveLevel() == logging.INFO
    assert run("-vv", "migrate", "--db", db_url).exit_code == 0
    assert logging.getLogger("alembic").getEffectiveLevel() == logging.DEBUG


def test_a_default_is_shown_once_in_help() -> None:
    shown = run("run", "csv", "--help").output
    # In words, not also as an absolute path into the installed package (cut mid-word).
    assert "by default the sample" in " ".join(shown.split())
    assert "records.csv" not in shown, shown


def test_the_actor_of_an_operator_decision_follows_one_rule() -> None:
    assert operator_actor("alice") == "operator:alice"
    assert operator_actor("operator:alice") == "operator:alice"
    assert operator_actor("sweeper") == "operator:sweeper"  # no operator poses as the sweeper
    assert operator_actor_of(None) == f"operator:{getpass.getuser()}"
    assert operator_actor_of("alice") == "operator:alice"


@settings(max_examples=400, deadline=None)
@given(
    name=st.one_of(
        st.text(max_size=12),
        st.sampled_from(["", " ", "operator:", "operator:  ", " bob", "operator: bob", "op\u202e"]),
        st.builds(lambda name: "operator:" + name, st.text(max_size=6)),
    )
)
def test_the_actor_option_is_the_librarys_rule_of_an_operators_name(name: str) -> None:
    """``--actor`` refuses what the library refuses to record as an operator (``fail_run``,
    a skip: ``operator_name_problem`` of the recorded actor), no more and no less, by the one
    rule (``operator_problem``); an act by no one in the CLI's words, the rest in the rule's.
    The CLI assembled the checks itself, and the library said "trailing whitespace" where the
    CLI said "names no one"."""
    try:
        check_actor(click.Context(cli), click.Option(["--actor"]), name)
    except click.BadParameter as exc:
        said: str | None = exc.message
    else:
        said = None
    library = operator_name_problem(operator_actor(name))
    assert (said is None) == (library is None), (name, said, library)
    found = operator_problem(name)
    if found is not None and found[0] == UNNAMED_OPERATOR[0]:
        assert said is not None
        assert "names no one" in said
        assert library is not None
        assert "no name after 'operator:'" in library


def test_runs_fail_and_project_record_the_same_actor(ledger: Ledger, db_url: str) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    failed = run(
        "runs", "fail", str(run_id), "--reason", "host gone", "--actor", "alice", "--db", db_url
    )
    assert failed.exit_code == 0, failed.output
    assert f"run {run_id} failed by operator:alice at position" in failed.stdout
    assert ledger.read_run(run_id)[-1].actor == "operator:alice"
    poison = append_raw(ledger, run_id, "RunPaused", "{}")  # from a newer writer
    skipped = run(
        "project",
        "--skip-position",
        str(poison),
        "--reason",
        "test",
        "--actor",
        "alice",
        "--db",
        db_url,
    )
    assert skipped.exit_code == 0, skipped.output
    assert "(by operator:alice)" in skipped.stdout
