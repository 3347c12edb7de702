"""README.md names what the commands take, beyond the CLI reference's options (which
``tests/service/test_cli_options.py`` checks): every option ``python -m benchmarks --help``
shows is in the performance section, and the configuration table's database row names every
command that reads ``database_url`` from ``--config FILE``. A new option of the harness, or a
command given ``--config``, fails here until the README says so."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from benchmarks.harness import main as benchmarks_main
from service.cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"
LONG_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


def section(heading: str) -> str:
    """The README's text from ``heading`` (a ``## `` line) to the next ``## `` heading."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    context = click.Context(group)  # list_commands and get_command: cli imports on request
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


def long_options(command: click.Command) -> set[str]:
    return {
        option
        for parameter in command.params
        if isinstance(parameter, click.Option) and not parameter.hidden
        for option in parameter.opts
        if option.startswith("--") and option not in ("--help", "--verbose")
    }


def test_every_benchmark_option_is_in_the_performance_section(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--api`` and ``--api-profile`` were in ``--help`` and benchmarks/RESULTS.md, not in
    the README's usage line."""
    with pytest.raises(SystemExit):
        benchmarks_main(["--help"])
    shown = set(LONG_OPTION.findall(capsys.readouterr().out)) - {"--help"}
    assert {"--db", "--api", "--api-profile"} <= shown  # the help is read as it is printed
    missing = sorted(shown - set(LONG_OPTION.findall(section("## Performance"))))
    assert missing == [], f"options of python -m benchmarks the README never names: {missing}"


def test_the_configuration_table_names_every_command_taking_the_database_from_a_config() -> None:
    """``stuck``, ``sweep`` and ``report`` take the ``--config`` file's ``database_url``
    (their help says so), and the table named only ``status`` and ``api``."""
    row = next(
        line for line in section("## Configuration").splitlines() if line.startswith("| database |")
    )
    listed = re.search(r"else \(([^)]*) with `--config FILE`\) the config's `database_url`", row)
    assert listed is not None, row
    named = set(re.findall(r"`([a-z -]+)`", listed.group(1)))
    taking = {
        name
        for name, command in commands(cli)
        if "--config" in long_options(command) and name != "serve"  # serve: its own row
    }
    assert taking >= {"status", "stuck", "sweep", "report", "api"}
    assert sorted(taking - named) == []
