"""The README's examples run as printed.

The convention: a code block is runnable when the line right before its opening fence is the
HTML comment ``<!-- runnable -->`` (invisible once the markdown is rendered). By fence:

* ```` ```bash ```` (or ``sh``): the block is one bash script (``-e -o pipefail``);
* ```` ```python ````: the block is one Python program;
* ```` ``` ```` (a transcript): each line starting with ``$ `` is a command, run by bash; the other
  lines are its printed output and are not compared (other commands' output changes; the exit
  code is what a reader relies on).

Each command (each bash or Python block) must exit 0, or what the marker documents:
``<!-- runnable exit=0,2 -->`` gives a transcript's exit codes in order, one per command.

The blocks run in README order in one temporary folder, as a reader at the root of a clone
would type them: ``examples/`` is copied there, ``ledger`` and ``python`` are this checkout's.
On SQLite they use the default database (``./ledger.db``); on MariaDB the test database is
``$LEDGER_DATABASE_URL`` and replaces the placeholder ``sqlite:///ledger.db`` in the blocks.
Blocks that cannot run here (``pip install``, a server that runs until stopped, an API at a
placeholder URL) stay unmarked; MIN_RUNNABLE_BLOCKS keeps markers from vanishing unnoticed.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import run_to_end

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PLACEHOLDER_URL = "sqlite:///ledger.db"
MIN_RUNNABLE_BLOCKS = 14
COMMAND_TIMEOUT = 180.0
MARKER = re.compile(r"^<!--\s*runnable(?:\s+exit=(?P<codes>\d+(?:,\d+)*))?\s*-->\s*$")
FENCE = re.compile(r"^```(?P<info>[\w-]*)\s*$")

# One process per command, on both databases.
pytestmark = [pytest.mark.slow, pytest.mark.processes]


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    kind: str  # "bash", "python" or "transcript"
    text: str
    exit_codes: tuple[int, ...] | None  # as marked; None: every command exits 0

    def commands(self) -> list[str]:
        if self.kind != "transcript":
            return [self.text]
        return [line[2:] for line in self.text.splitlines() if line.startswith("$ ")]


def runnable_blocks(markdown: str) -> list[Block]:
    lines = markdown.splitlines()
    blocks = []
    for index, line in enumerate(lines[:-1]):
        marker = MARKER.match(line)
        fence = FENCE.match(lines[index + 1])
        if marker is None:
            continue
        assert fence is not None, f"README.md:{index + 1}: a runnable marker not before a fence"
        end = next(i for i in range(index + 2, len(lines)) if lines[i].startswith("```"))
        info = fence["info"]
        kind = {"": "transcript", "console": "transcript", "sh": "bash"}.get(info, info)
        assert kind in ("bash", "python", "transcript"), f"README.md:{index + 2}: {info!r}"
        codes = marker["codes"]
        blocks.append(
            Block(
                index + 2,
                kind,
                "\n".join(lines[index + 2 : end]) + "\n",
                tuple(int(code) for code in codes.split(",")) if codes else None,
            )
        )
    return blocks


def test_the_readme_marks_its_runnable_blocks() -> None:
    blocks = runnable_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= MIN_RUNNABLE_BLOCKS, [block.line for block in blocks]
    for block in blocks:
        assert block.commands(), f"README.md:{block.line}: a runnable block with no command"
        if block.exit_codes is not None:
            assert len(block.exit_codes) == len(block.commands()), f"README.md:{block.line}"


def reader_env(database_url: str | None) -> dict[str, str]:
    """This checkout's ``ledger`` and ``python`` first on PATH; no stray ledger settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("LEDGER_") and key != "PYTHONPATH"
    }
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = str(REPO)
    if database_url is not None:
        env["LEDGER_DATABASE_URL"] = database_url
    return env


def test_every_runnable_block_runs_as_printed(backend: str, db_url: str, tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    assert shutil.which("ledger", path=str(bin_dir)), f"no ledger command in {bin_dir}"
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    # SQLite: the README's own default database, created by its first `ledger migrate`.
    database_url = db_url if backend == "mysql" else None
    env = reader_env(database_url)
    for block in runnable_blocks(README.read_text(encoding="utf-8")):
        text = block.text if database_url is None else block.text.replace(PLACEHOLDER_URL, db_url)
        commands = Block(block.line, block.kind, text, block.exit_codes).commands()
        expected = block.exit_codes or (0,) * len(commands)
        for command, code in zip(commands, expected, strict=True):
            if block.kind == "python":
                argv = [sys.executable, "-c", command]
            else:
                argv = ["bash", "-e", "-o", "pipefail", "-c", command]
            # What a command leaves running (a server started in the background) dies with it.
            done = run_to_end(argv, timeout=COMMAND_TIMEOUT, cwd=tmp_path, env=env)
            assert done.returncode == code, (
                f"README.md:{block.line}: exit {done.returncode}, documented {code}\n"
                f"{command}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            )
