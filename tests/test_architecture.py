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
import fnmatch
import re
import tomllib
from collections.abc import Callable, Iterator
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
    from service.cli import COMMANDS

    return frozenset(module for module, _ in COMMANDS.values())


def test_every_file_the_packages_read_is_packaged() -> None:
    """A wheel (``pip install .``, not ``-e``) holds every file of the packages' folders: the
    code, and each data file by a package-data pattern of the folder's own package (a template
    or a style sheet added without one would be missing only from installed copies)."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages, data = set(setuptools["packages"]), setuptools["package-data"]
    unpackaged = []
    for package in sorted(packages):
        folder = REPO / package.replace(".", "/")
        for path in sorted(folder.iterdir()):
            if path.is_dir():
                if path.name != "__pycache__" and f"{package}.{path.name}" not in packages:
                    unpackaged.append(f"{package}.{path.name} (a folder not in packages)")
            elif path.suffix not in (".py", ".pyc") and not any(
                fnmatch.fnmatch(path.name, pattern) for pattern in data.get(package, [])
            ):
                unpackaged.append(str(path.relative_to(REPO)))
    assert unpackaged == []


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


def test_the_ledger_knows_every_revision_of_its_migrations() -> None:
    """``ledger.schema.REVISIONS`` tells run-ledger's revisions in a shared ``alembic_version``
    from another application's: it lists every migration, oldest first."""
    from alembic.script import ScriptDirectory

    from ledger.schema import REVISIONS
    from migrations.runner import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    newest_first = [revision.revision for revision in script.walk_revisions()]
    assert tuple(reversed(newest_first)) == REVISIONS


# ---------------------------------------------------------------------- the layout's other rules
#
# Each rule reads every module's syntax tree for what it forbids, as (line, function, what);
# its exceptions are keyed by a module's path, or ``path::Function`` for one function, each
# with its reason, and an exception that no longer covers anything fails the test.

Finding = tuple[int, str, str]

# Where code may ask which database it runs on, besides the ``dialects.py`` of its package.
DIALECT_EXCEPTIONS = {
    "benchmarks/harness.py::_check_server": (
        "the harness's --db must name a MariaDB/MySQL server (its SQLite half always runs on a "
        "temporary file): another URL is refused before anything runs"
    ),
    "ledger/append_sql.py": (
        "the append's own SQL, built once per database and kept together so that the hot "
        "path's statements are read in one place (docs/ARCHITECTURE.md)"
    ),
    "ledger/database.py": (
        "the engine factory: each database's engine is built from its URL its own way "
        "(ledger/sqlite_engine.py, ledger/mysql_engine.py: driver, pragmas, timeouts), before "
        "there is a connection to ask"
    ),
    "ledger/schema.py": (
        "column types: SQLAlchemy asks each type for its form on the dialect at hand "
        "(TypeDecorator.load_dialect_impl)"
    ),
    "ledger/urls.py": "what a URL names, before any engine exists: the file a SQLite URL opens",
    "ledger/store.py::Ledger.is_sqlite": (
        "the Ledger's answer to the other packages' dialects modules, ledger.dialects.is_sqlite "
        "of its engine"
    ),
    "service/config/loading.py::_sqlite_beside": (
        "a path in the config file: a SQLite URL's relative file is read beside the config "
        "file, as every other path in it; no database is opened"
    ),
}
# SQL naming the ledger's tables outside ledger/.
SQL_EXCEPTIONS = {
    "benchmarks/raw.py::raw_scan": (
        "measures the raw scan of ledger_events below the Ledger API, the bound every replay "
        "is compared with"
    ),
}
# A counter named other than by the model.
COUNTER_EXCEPTIONS = {
    "service/api/shapes.py::IngestionRun": (
        "the API's documented legacy row, typed field by field for its clients; "
        "tests/service/test_api_reads.py holds it equal to the table's columns"
    ),
}


def library_files() -> list[Path]:
    """The non-test code the layout rules hold: every package and the benchmarks, without
    ``migrations/versions`` (each revision is history, frozen as it was written: it spells
    the schema for each database itself and creates the ledger's tables)."""
    versions = REPO / "migrations" / "versions"
    return [path for path in checked_files() if versions not in path.parents]


def library_modules() -> list[Path]:
    """:func:`library_files` without the benchmarks (their data names counters as a connector
    would)."""
    return [path for path in library_files() if _top(module_name(path)) != "benchmarks"]


def scoped_nodes(path: Path) -> Iterator[tuple[ast.AST, str]]:
    """Every node of ``path``'s syntax tree with the qualified name of the function or class
    it stands in ("" at module level)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    pending: list[tuple[ast.AST, str]] = [(tree, "")]
    while pending:
        node, scope = pending.pop()
        inner = scope
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            inner = f"{scope}.{node.name}" if scope else node.name
        pending.extend((child, inner) for child in ast.iter_child_nodes(node))
        yield node, scope


def against_the_rule(
    rule: Callable[[Path], list[Finding]], files: list[Path], exceptions: dict[str, str]
) -> list[str]:
    """What ``rule`` finds in ``files`` that no exception covers, as ``path:line (function):
    what``; fails if an exception covers nothing."""
    broken = []
    used = set()
    for path in files:
        where = path.relative_to(REPO).as_posix()
        for line, scope, what in rule(path):
            key = next((k for k in (where, f"{where}::{scope}") if k in exceptions), None)
            if key is None:
                broken.append(f"{where}:{line} ({scope or 'module'}): {what}")
            else:
                used.add(key)
    stale = set(exceptions) - used
    assert not stale, f"exceptions no longer needed, remove them: {sorted(stale)}"
    return broken


# ---------------------------------------------------------------------- where dialects differ

_DIALECT_NAMES = frozenset({"sqlite", "mysql", "mariadb"})
_DIALECT_PREDICATES = frozenset({"is_sqlite", "is_mysql_backend"})


def dialect_questions(path: Path) -> list[Finding]:
    """Each place in ``path`` that asks which database it runs on: it reads ``dialect.name``,
    calls or reads ``is_sqlite`` or ``is_mysql_backend`` (a Ledger's property too), or
    compares with ``"sqlite"``, ``"mysql"`` or ``"mariadb"``."""
    return [
        (getattr(node, "lineno", 0), scope, what)
        for node, scope in scoped_nodes(path)
        if (what := _dialect_question(node)) is not None
    ]


def _dialect_question(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute):
        if node.attr == "name" and _ends_with(node.value, "dialect"):
            return "reads dialect.name"
        if node.attr in _DIALECT_PREDICATES:  # a Ledger's property, a module's function
            return f"reads .{node.attr}"
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _DIALECT_PREDICATES
    ):
        return f"calls {node.func.id}()"
    if isinstance(node, ast.Compare):
        for operand in (node.left, *node.comparators):
            items = operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) else []
            for item in (operand, *items):
                if isinstance(item, ast.Constant) and item.value in _DIALECT_NAMES:
                    return f"compares with {item.value!r}"
    return None


def _ends_with(node: ast.AST, name: str) -> bool:
    return (isinstance(node, ast.Name) and node.id == name) or (
        isinstance(node, ast.Attribute) and node.attr == name
    )


def test_dialect_differences_live_in_the_dialects_modules() -> None:
    """docs/ARCHITECTURE.md: where SQLite and MySQL/MariaDB differ at run time, the difference
    lives in the ``dialects.py`` of each package; :data:`DIALECT_EXCEPTIONS` names the few
    other places, each with its reason."""
    files = [path for path in library_files() if path.name != "dialects.py"]
    broken = against_the_rule(dialect_questions, files, DIALECT_EXCEPTIONS)
    assert not broken, "a dialect difference outside dialects.py:\n  " + "\n  ".join(broken)


# ---------------------------------------------------------------------- the ledger's tables

LEDGER_TABLES = ("ledger_events", "ledger_runs", "ledger_head")
_TABLE_WORD = re.compile(r"\b(?:" + "|".join(LEDGER_TABLES) + r")\b")
_SQL_WORD = re.compile(
    r"\b(?:SELECT|INSERT|UPDATE|DELETE|REPLACE|FROM|JOIN|INTO|TABLE|TRIGGER|TRUNCATE|LOCK)\b",
    re.IGNORECASE,
)


def ledger_table_sql(path: Path) -> list[Finding]:
    """Each string in ``path`` that is SQL naming one of the ledger's tables (a table's name
    with an SQL keyword; an f-string as a whole), docstrings left out; and each import of one
    of those ``Table`` objects."""
    nodes = list(scoped_nodes(path))
    # Not code: docstrings, and the parts of an f-string (seen as the whole string).
    skipped = {
        id(node.body[0].value)
        for node, _ in nodes
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    } | {id(part) for node, _ in nodes if isinstance(node, ast.JoinedStr) for part in node.values}
    found: list[Finding] = []
    for node, scope in nodes:
        if isinstance(node, ast.ImportFrom) and node.module == "ledger.schema":
            found.extend(
                (node.lineno, scope, f"imports {alias.name}")
                for alias in node.names
                if alias.name in LEDGER_TABLES
            )
        if isinstance(node, ast.JoinedStr):
            value = "".join(
                part.value if isinstance(part, ast.Constant) else "{}" for part in node.values
            )
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            value = node.value
        else:
            continue
        if id(node) not in skipped and _TABLE_WORD.search(value) and _SQL_WORD.search(value):
            found.append((node.lineno, scope, repr(value[:100])))
    return found


def test_no_sql_on_the_ledgers_tables_outside_the_ledger() -> None:
    """docs/ARCHITECTURE.md: outside ``ledger/``, nothing reads ``ledger_events``,
    ``ledger_runs`` or ``ledger_head`` except through the ledger's API: no SQL names them and
    no code imports their ``Table``. ``migrations/versions`` creates them and is left out
    (:func:`library_files`); :data:`SQL_EXCEPTIONS` names the rest, each with its reason."""
    files = [path for path in library_files() if _top(module_name(path)) != "ledger"]
    broken = against_the_rule(ledger_table_sql, files, SQL_EXCEPTIONS)
    assert not broken, "SQL on the ledger's tables outside ledger/:\n  " + "\n  ".join(broken)


# ---------------------------------------------------------------------- one vocabulary


def counter_names(path: Path) -> list[Finding]:
    """Each place ``path`` writes a counter's name: a string, a field or a keyword argument
    that is one of ``COUNTER_FIELDS`` or of their legacy columns (``COUNTER_COLUMNS``)."""
    from ledger.events import COUNTER_FIELDS
    from projections.schema import COUNTER_COLUMNS

    names = {*COUNTER_FIELDS, *COUNTER_COLUMNS.values()}
    found: list[Finding] = []
    for node, scope in scoped_nodes(path):
        if isinstance(node, ast.Constant):
            name = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name = node.target.id
        elif isinstance(node, ast.keyword):
            name = node.arg
        else:
            continue
        if name in names:
            found.append((getattr(node, "lineno", 0), scope, str(name)))
    return found


def test_the_counters_are_named_once() -> None:
    """The six counters are the fields of ``ledger.events._Counters`` (``COUNTER_FIELDS``);
    their legacy columns (``COUNTER_COLUMNS``), the read model's table and the API's documented
    row are derived from them, not listed again."""
    model = REPO / "ledger" / "events.py"
    assert len(counter_names(model)) == 6, "the model declares each counter once"
    files = [path for path in library_modules() if path != model]
    broken = against_the_rule(counter_names, files, COUNTER_EXCEPTIONS)
    assert not broken, "a counter named again:\n  " + "\n  ".join(broken)


def event_row_unpackings(path: Path) -> list[Finding]:
    """Each place ``path`` unpacks a ``ledger_events`` row (into names that include
    ``position``, ``event_id`` and ``payload``) as it is, or a slice of it, rather than the
    values a reader of ``ledger.hashing`` (``row_reader``, ``rows_reader``) takes from it by
    name."""
    found: list[Finding] = []
    for node, scope in scoped_nodes(path):
        if isinstance(node, ast.Assign):
            pairs = [(target, node.value) for target in node.targets]
        elif isinstance(node, ast.For | ast.comprehension):
            pairs = [(node.target, node.iter)]
        else:
            continue
        for target, value in pairs:
            names = {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
            if _ends_with(getattr(value, "func", value), "enumerate"):  # (index, row) pairs
                value = value.args[0] if isinstance(value, ast.Call) and value.args else value
            raw = isinstance(value, ast.Name | ast.Attribute | ast.Subscript)
            if {"position", "event_id", "payload"} <= names and raw:
                found.append((target.lineno, scope, "unpacks a row by position"))
    return found


def test_event_rows_are_read_by_column_name() -> None:
    """A ``ledger_events`` row travels as a plain tuple in ``ledger.hashing.EVENT_COLUMNS``
    order, the one statement of that order: code takes its columns by name, through a
    reader there (``hashed_values``, ``ledger.reads.as_event_fields``) or its column indexes,
    never by unpacking it in an order of its own."""
    broken = against_the_rule(event_row_unpackings, library_modules(), {})
    assert not broken, "a ledger_events row unpacked by position:\n  " + "\n  ".join(broken)


# ---------------------------------------------------------------------- the rules' own checks

_RULES: dict[str, Callable[[Path], list[Finding]]] = {
    "dialect": dialect_questions,
    "sql": ledger_table_sql,
    "counter": counter_names,
    "row": event_row_unpackings,
}


@pytest.mark.parametrize(
    ("rule", "source", "seen"),
    [
        ("dialect", "if conn.dialect.name == 'sqlite': pass", True),
        ("dialect", "key = engine.dialect.name", True),
        ("dialect", "if is_sqlite(conn): pass", True),
        ("dialect", "if ledger.is_sqlite: pass", True),
        ("dialect", "if dialects.is_mysql_backend(backend): pass", True),
        ("dialect", "if backend in ('mysql', 'mariadb'): pass", True),
        ("dialect", "def f(kind):\n    return 'body' if kind != 'sqlite' else 'statement'", True),
        ("dialect", "BigInteger().with_variant(Integer(), 'sqlite')", False),
        ("dialect", "mark = '?' if bind.dialect.paramstyle == 'qmark' else '%s'", False),
        ("dialect", "quote = conn.dialect.identifier_preparer.quote", False),
        ("sql", "q = 'SELECT position FROM ledger_events'", True),
        ("sql", "q = f'SELECT {columns} FROM ledger_runs WHERE run_id = {mark}'", True),
        ("sql", "q = ('UPDATE ledger_head '\n     'SET last_hash = :h')", True),
        ("sql", "from ledger.schema import ledger_runs", True),
        ("sql", "tables = {'ledger_events', 'ledger_runs'}", False),
        ("sql", "message = 'ledger_head says position 7'", False),
        ("sql", "def f():\n    '''Reads SELECT … FROM ledger_events through the API.'''", False),
        ("counter", "_counter('recordsFetched')", True),
        ("counter", "class Row(BaseModel):\n    claimsCreated: int", True),
        ("counter", "RunProgressed(run_id=1, records_fetched=3)", True),
        ("counter", "columns = tuple(COUNTER_COLUMNS.values())", False),
        ("row", "position, event_id, run_id, payload = row", True),
        ("row", "for position, event_id, payload, *_ in rows: pass", True),
        ("row", "position, event_id, run_id, payload = row[:4]", True),
        ("row", "position, event_id, run_id, payload = hashed_values(row)", False),
        ("row", "for position, event_id, payload in map(hashed_values, rows): pass", False),
        ("row", "for position, event_id, payload in self.rows: pass", True),
        ("row", "for i, (position, event_id, payload) in enumerate(page): pass", True),
        ("row", "for i, (position, event_id, payload) in enumerate(by_name(page)): pass", False),
        ("row", "position, run_id = row", False),
    ],
)
def test_each_rule_sees_what_it_forbids(tmp_path: Path, rule: str, source: str, seen: bool) -> None:
    """The checks above would fail on what they forbid, and leave other uses of the names."""
    path = tmp_path / "x.py"
    path.write_text(source + "\n", encoding="utf-8")
    assert bool(_RULES[rule](path)) == seen
