"""The dependency rule of docs/ARCHITECTURE.md, read from the source: every import statement of
every module (those inside functions included) points one way,

    service → connectors, forensics, projections → ledger

``ledger`` imports none of the others; ``projections`` only ``ledger``; ``forensics`` ``ledger``
and ``projections``; ``connectors`` only ``ledger``. Only the service (and the tests and
benchmarks) imports ``migrations``, and only the service and the tests import ``service``.
:data:`EXCEPTIONS` names the imports kept against the rule, each with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("ledger", "projections", "forensics", "connectors", "service", "migrations")
# What each part of the code may import of run-ledger's own packages (besides itself).
ALLOWED: dict[str, frozenset[str]] = {
    "ledger": frozenset(),
    "projections": frozenset({"ledger"}),
    "forensics": frozenset({"ledger", "projections"}),
    "connectors": frozenset({"ledger"}),
    "service": frozenset({"ledger", "projections", "forensics", "connectors", "migrations"}),
    "migrations": frozenset({"ledger"}),
    "benchmarks": frozenset({"ledger", "projections", "forensics", "connectors", "migrations"}),
}
FIRST_PARTY = frozenset(ALLOWED) | {"tests"}
_EVERY_TABLE = (
    "Alembic's environment registers every package's tables on the one MetaData it compares "
    "the database with; only Alembic loads it, no code imports it"
)
# (importing module, imported package): kept on purpose, each with the reason; the test fails
# once one is no longer there, so the list cannot outlive its reasons.
EXCEPTIONS = {
    ("migrations.env", "connectors"): _EVERY_TABLE,
    ("migrations.env", "projections"): _EVERY_TABLE,
    ("migrations.env", "service"): _EVERY_TABLE,
    ("benchmarks.harness", "service"): (
        "figure 7 renders the web view's runs page in process (FastAPI's TestClient), as a "
        "test would: what it measures is the service's page, over the library's query"
    ),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def first_party_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import of run-ledger's own code in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base]
        else:
            continue
        found.extend((node.lineno, name) for name in names if _top(name) in FIRST_PARTY)
    return found


def _top(name: str) -> str:
    return name.split(".")[0]


def checked_files() -> list[Path]:
    files = sorted((REPO / "benchmarks").rglob("*.py"))
    for package in PACKAGES:
        files.extend(sorted((REPO / package).rglob("*.py")))
    return [path for path in files if path.exists()]


def test_imports_point_one_way() -> None:
    broken = []
    used_exceptions = set()
    for path in checked_files():
        source = module_name(path)
        allowed = ALLOWED[_top(source)] | {_top(source)}
        for line, imported in first_party_imports(path):
            target = _top(imported)
            if target in allowed:
                continue
            if (source, target) in EXCEPTIONS:
                used_exceptions.add((source, target))
                continue
            where = path.relative_to(REPO)
            broken.append(f"{where}:{line}: {_top(source)} must not import {imported}")
    assert not broken, "the dependency rule is broken:\n  " + "\n  ".join(broken)
    stale = set(EXCEPTIONS) - used_exceptions
    assert not stale, f"exceptions no longer needed, remove them from EXCEPTIONS: {stale}"


def cli_command_modules() -> frozenset[str]:
    """The modules ``service/cli/__init__.py`` gathers the ``ledger`` commands from."""
    tree = ast.parse((REPO / "service" / "cli" / "__init__.py").read_text(encoding="utf-8"))
    return frozenset(
        f"service.cli.{alias.name}"
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module == "service.cli"
        for alias in node.names
    )


def test_no_cli_command_module_imports_another() -> None:
    """What two commands share (options, errors, rendering) lives in a shared module of
    ``service/cli``, never in one command's module that the other then imports."""
    commands = cli_command_modules()
    assert {"service.cli.verify", "service.cli.admin", "service.cli.runs"} <= commands
    broken = []
    for path in sorted((REPO / "service" / "cli").glob("*.py")):
        source = module_name(path)
        if source not in commands:
            continue
        for line, imported in first_party_imports(path):
            if any(imported == other or imported.startswith(other + ".") for other in commands):
                broken.append(f"{path.relative_to(REPO)}:{line}: imports {imported}")
    assert not broken, "a command module imports another:\n  " + "\n  ".join(broken)


@pytest.mark.parametrize(
    ("source", "statement", "broken"),
    [
        ("ledger/x.py", "import projections.fold", True),
        ("ledger/x.py", "def f():\n    from service import serve", True),
        ("projections/x.py", "from forensics import verify_all", True),
        ("projections/x.py", "from ledger.store import Ledger", False),
        ("forensics/x.py", "from projections.fold import fold", False),
        ("connectors/x.py", "from projections import Projector", True),
        ("forensics/x.py", "from migrations.runner import upgrade", True),
        ("benchmarks/x.py", "from service import LedgerService", True),
        ("projections/sub/x.py", "from ..fold import fold", False),
        ("projections/x.py", "from . import fold", False),
        ("service/x.py", "import tests.support", True),
    ],
)
def test_the_rule_sees_every_kind_of_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, statement: str, broken: bool
) -> None:
    """The check above would fail on a wrong import, wherever it stands."""
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    path = tmp_path / source
    path.parent.mkdir(parents=True)
    path.write_text(statement + "\n", encoding="utf-8")
    imports = first_party_imports(path)
    assert imports, "the import was not seen"
    package = _top(module_name(path))
    allowed = ALLOWED[package] | {package}
    assert any(_top(name) not in allowed for _, name in imports) == broken


def test_the_schema_revision_the_code_needs_is_the_newest_migration() -> None:
    """``Ledger.check_schema`` (which every package may run) requires the revision the code
    declares; a new migration must move it."""
    from ledger.schema import SCHEMA_REVISION
    from tests.support import head_revision

    assert head_revision() == SCHEMA_REVISION
