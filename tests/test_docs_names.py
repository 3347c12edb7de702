"""docs/ARCHITECTURE.md names real code: every backticked path (``ledger/store.py``,
``service/web/``, ``views.py``) exists, every test it cites as proof
(``tests/ledger/test_store_contract.py::test_i1_…``) is defined in that file, every backticked
dotted name of code
(``ledger.reads``, ``database.with_timeouts``, ``Projector.run_once``, and one followed by
its arguments, ``Ledger.from_url(url, clock=…)``) resolves to a module,
function, class, attribute or field, and its module table names every module of the packages.

A dotted name counts as code when its first part is a package, a module's own name (``store``
for ``ledger/store.py``) or a class of the packages; the rest (a table's column such as
``ledger_runs.version``, a JSON key, ``os._exit``) is not code and is not checked.
"""

from __future__ import annotations

import ast
import importlib
import re
from functools import cache
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "ARCHITECTURE.md"
PACKAGES = ("ledger", "projections", "forensics", "connectors", "service", "migrations")
# A name the module table need not list: a package's own file, or what is not code it runs.
UNLISTED = ("__init__.py", "__main__.py")

BACKTICKED = re.compile(r"`([^`\n]+)`")
# A dotted name, bare or called: ``Projector.run_once()``, ``Ledger.from_url(..., clock=…)``
# (a name followed by its arguments is checked by the name).
DOTTED = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?:\(.*\))?")
PATH = re.compile(r"[\w.-]+(?:/[\w.-]+)*/?")
# A test cited by its file and name, as pytest names it: ``tests/x/test_y.py::test_z``.
TEST_REFERENCE = re.compile(r"(tests/[\w/]+\.py)::(\w+)")


def code_files() -> list[Path]:
    """Every module of the packages, the migrations' versions aside (Alembic's, by revision)."""
    files = []
    for package in PACKAGES:
        files.extend(sorted((REPO / package).rglob("*.py")))
    return [path for path in files if "versions" not in path.relative_to(REPO).parts]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules_by_stem() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in code_files():
        if path.name not in UNLISTED:
            found.setdefault(path.stem, []).append(module_name(path))
    return found


@cache
def modules_by_class() -> dict[str, list[str]]:
    """The modules that define each class name (read from the source, not imported)."""
    found: dict[str, list[str]] = {}
    for path in code_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                found.setdefault(node.name, []).append(module_name(path))
    return found


def has_attribute(owner: object, name: str) -> bool:
    """An attribute, or a field a dataclass or a pydantic model declares without a default."""
    if hasattr(owner, name):
        return True
    fields = getattr(owner, "__dataclass_fields__", None) or getattr(owner, "model_fields", {})
    return name in fields or name in getattr(owner, "__annotations__", {})


def resolves(start: object, parts: list[str]) -> bool:
    owner = start
    for part in parts:
        if isinstance(owner, ModuleType) and not hasattr(owner, part):
            try:  # a submodule not imported yet
                owner = importlib.import_module(f"{owner.__name__}.{part}")
                continue
            except ModuleNotFoundError:
                return False
        if not has_attribute(owner, part):
            return False
        owner = getattr(owner, part, None)
    return True


def code_name_problem(name: str) -> str | None:
    """Why a backticked dotted name of code does not resolve; None when it does, or when it
    is not a name of code."""
    first, *rest = name.removesuffix("()").split(".")
    if first in PACKAGES:
        return None if resolves(importlib.import_module(first), rest) else "no such name"
    if first in modules_by_stem():
        modules = modules_by_stem()[first]
        if any(resolves(importlib.import_module(module), rest) for module in modules):
            return None
        return f"not in {' or '.join(modules)}"
    if first in modules_by_class():
        modules = modules_by_class()[first]
        if any(resolves(importlib.import_module(module), [first, *rest]) for module in modules):
            return None
        return f"not an attribute of {first} ({' or '.join(modules)})"
    return None


def path_problem(path: str) -> str | None:
    """Why a backticked path names nothing: from the repository's root, or (``templates/``,
    ``views.py``) inside one of the packages."""
    if path.startswith("/") or "//" in path:
        return None  # a URL's path (``/v1/runs``) or a URL (``sqlite://``)
    if (REPO / path).exists():
        return None
    if path.split("/")[0] in PACKAGES or (REPO / path.split("/")[0]).exists():
        return "no such file"
    inside = [found for package in PACKAGES for found in (REPO / package).rglob(path.rstrip("/"))]
    return None if inside else "in none of the packages"


def cited_test_problem(path: str, name: str) -> str | None:
    """Why ``path::name`` names no test: the file is missing, or defines no such function."""
    source = REPO / path
    if not source.is_file():
        return "no such file"
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    defined = {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    return None if name in defined else f"no test {name} in {path}"


def references(text: str) -> list[tuple[int, str]]:
    return [
        (number, span)
        for number, line in enumerate(text.splitlines(), start=1)
        for span in BACKTICKED.findall(line)
    ]


def broken_references(text: str) -> list[str]:
    broken = []
    for number, span in references(text):
        # A path, or a module's file name; another file name (``DESIGN.md``) is not code.
        if cited := TEST_REFERENCE.fullmatch(span):
            problem = cited_test_problem(cited.group(1), cited.group(2))
        elif PATH.fullmatch(span) and ("/" in span or span.endswith(".py")):
            problem = path_problem(span)
        elif dotted := DOTTED.fullmatch(span):
            problem = code_name_problem(dotted.group(1))
        else:
            continue
        if problem is not None:
            broken.append(f"docs/ARCHITECTURE.md:{number}: `{span}`: {problem}")
    return broken


def table_modules(text: str) -> set[str]:
    """The modules the module table names: by path, or (in a folder's row, such as
    ``service/cli/``) by their own name, with or without ``.py``; a path in a row's
    description counts too (``migrations/resumable.py``)."""
    named = set()
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        first, _, rest = line[1:].partition("|")
        named.update(
            path for path in BACKTICKED.findall(rest) if re.fullmatch(r"\w+/[\w/]+\.py", path)
        )
        for path in BACKTICKED.findall(first):
            if path.endswith(".py"):
                named.add(path)
            elif path.endswith("/"):
                named.update(
                    f"{path}{name.removesuffix('.py')}.py"
                    for name in BACKTICKED.findall(rest)
                    if re.fullmatch(r"\w+(\.py)?", name)
                )
    return named


def test_every_code_name_in_the_architecture_page_exists() -> None:
    broken = broken_references(DOC.read_text(encoding="utf-8"))
    assert not broken, "names of code that do not exist:\n  " + "\n  ".join(broken)


def test_the_module_table_lists_every_module() -> None:
    listed = table_modules(DOC.read_text(encoding="utf-8"))
    modules = {str(path.relative_to(REPO)) for path in code_files() if path.name not in UNLISTED}
    omitted = sorted(modules - listed)
    assert not omitted, f"modules the table of docs/ARCHITECTURE.md omits: {omitted}"


def test_the_check_sees_a_name_that_does_not_exist() -> None:
    """The checks above can fail: each kind of reference, made up, is reported."""
    made_up = (
        "`store.ledger_clock` `ledger.reads.no_such_read` `Projector.no_such_method` "
        "`ledger/no_such.py` `no_such_view.py` `service/web/no_such/`\n"
        "`ledger_runs.version` `os._exit` `DESIGN.md` `/v1/runs` `store.Ledger` `Ledger.append`\n"
        "`Ledger.no_such_open(..., clock=…)` `Ledger.from_url(url, clock=…)`\n"
        "`tests/ledger/test_store_contract.py::test_i1_no_such_proof` "
        "`tests/ledger/test_no_such_file.py::test_i1_replace_cannot_overwrite_an_event` "
        "`tests/ledger/test_store_contract.py::test_i1_replace_cannot_overwrite_an_event`"
    )
    assert [line.split(": ")[1] for line in broken_references(made_up)] == [
        "`store.ledger_clock`",
        "`ledger.reads.no_such_read`",
        "`Projector.no_such_method`",
        "`ledger/no_such.py`",
        "`no_such_view.py`",
        "`service/web/no_such/`",
        "`Ledger.no_such_open(..., clock=…)`",
        "`tests/ledger/test_store_contract.py::test_i1_no_such_proof`",
        "`tests/ledger/test_no_such_file.py::test_i1_replace_cannot_overwrite_an_event`",
    ]
    assert table_modules("| `service/cli/` | `errors.py` (exit codes), `runs` |") == {
        "service/cli/errors.py",
        "service/cli/runs.py",
    }
