"""The README's TypeScript example is the one ``npm run typecheck`` compiles: the typecheck file
(clients/typescript/typecheck/readme-example.ts) ends with the README's block as printed, below
its marker. A hand-edited copy drifted: the README's form did not compile (TS2322, an
environment variable is ``string | undefined``) while the copy did."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests import support

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
CLIENT = REPO / "clients" / "typescript"
TYPECHECKED = CLIENT / "typecheck" / "readme-example.ts"
MARKER = '// ---- README.md, "From TypeScript", as printed ----\n'


def readme_block() -> str:
    """The first ```js block of the README's "From TypeScript" section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## From TypeScript\n") :]
    found = re.search(r"^```js\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert found is not None, "no ```js block in the README's From TypeScript section"
    return found.group(1)


def test_the_typecheck_file_ends_with_the_readme_block_as_printed() -> None:
    declarations, marker, example = TYPECHECKED.read_text(encoding="utf-8").partition(MARKER)
    assert marker, f"{TYPECHECKED.name} has no marker line {MARKER.strip()!r}"
    # Above the marker, only what the example leaves to the reader: no import, no code of its own.
    assert not re.search(r"^(import|const|await|export) ", declarations, re.MULTILINE)
    assert example == readme_block()


@pytest.mark.slow
def test_the_readme_block_compiles_strict() -> None:
    """``tsc --strict`` on the README's block (with the typecheck file's declarations), as the
    README says ``npm run typecheck`` does."""
    tsc = CLIENT / "node_modules" / ".bin" / "tsc"
    if shutil.which("node") is None or not tsc.exists():
        pytest.skip("`npm ci` in clients/typescript installs the TypeScript compiler")
    done = support.run_to_end([str(tsc), "-p", "tsconfig.json"], timeout=300, cwd=CLIENT)
    assert done.returncode == 0, f"tsc failed:\n{done.stdout}\n{done.stderr}"
