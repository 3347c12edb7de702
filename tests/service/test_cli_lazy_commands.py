"""The ``ledger`` group imports a command's module when that command is named: the table of
commands (service.cli.COMMANDS) names every command the modules define, each under its own
name, and a process that runs one command imports no other command's module."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import click

from service.cli import COMMANDS, cli

COMMAND_MODULES = sorted({module for module, _ in COMMANDS.values()})


def test_the_table_names_every_command_its_modules_define_under_its_own_name() -> None:
    defined: set[tuple[str, str]] = set()
    for module in COMMAND_MODULES:
        names = vars(importlib.import_module(module))
        commands = {attribute: v for attribute, v in names.items() if isinstance(v, click.Command)}
        under_groups = {
            id(sub)
            for v in commands.values()
            if isinstance(v, click.Group)
            for sub in v.commands.values()
        }
        defined |= {(module, a) for a, v in commands.items() if id(v) not in under_groups}
    assert defined == set(COMMANDS.values())
    for name, (module, attribute) in COMMANDS.items():
        assert getattr(importlib.import_module(module), attribute).name == name


def test_every_command_resolves_and_help_lists_them_all() -> None:
    context = click.Context(cli)
    assert cli.list_commands(context) == sorted(COMMANDS)
    for name in COMMANDS:
        command = cli.get_command(context, name)
        assert command is not None
        assert command.name == name
        # The -v option is on each command, as on the group (added as each is imported).
        assert any("--verbose" in parameter.opts for parameter in command.params), name
    assert cli.get_command(context, "no-such-command") is None


def modules_after(*args: str) -> list[str]:
    """The command modules imported by a fresh process that runs ``ledger *args`` (in
    process, through click's runner, so that the process's modules can be listed)."""
    script = (
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from service.cli import COMMANDS, cli\n"
        f"result = CliRunner().invoke(cli, {list(args)!r})\n"
        "assert result.exit_code == 0, result.output\n"
        "modules = {module for module, _ in COMMANDS.values()}\n"
        "print(json.dumps(sorted(modules & set(sys.modules))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    return list(json.loads(done.stdout))


def test_a_command_imports_its_own_module_and_no_other_commands() -> None:
    assert modules_after("--version") == []
    assert modules_after("events", "--help") == ["service.cli.events"]
    assert modules_after("runs", "list", "--help") == ["service.cli.runs"]
    assert modules_after("run", "csv", "--help") == ["service.cli.connectors"]


def test_help_and_a_mistyped_name_look_at_every_command() -> None:
    assert modules_after("--help") == COMMAND_MODULES
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "runz"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "No such command 'runz'. (Did you mean one of: 'run', 'runs'?)" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "--source-id", "3", "run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--source-id goes after the command's name: python -m service.cli run csv" in (
        done.stderr
    )


def test_a_misplaced_options_hint_lists_the_commands_in_one_order_whatever_ran_before() -> None:
    # In one process (click's runner, a program that calls cli.main more than once), the
    # hint listed first the commands whose modules the earlier calls had imported.
    script = (
        "from click.testing import CliRunner\n"
        "from service.cli import cli\n"
        "runner = CliRunner()\n"
        "assert runner.invoke(cli, ['stuck', '--help']).exit_code == 0\n"
        "print(runner.invoke(cli, ['--limit', '5']).output)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert (
        "--limit goes after the command's name: cli events --limit …, cli runs list --limit …, "
        "cli stuck --limit …"
    ) in done.stdout, done.stdout
