"""run-ledger installed from its wheel (``pip install .``, as production installs it, not the
editable install of the tests) has every module and data file it reads: the wheel lacked the
``service.config`` package, and so every ``ledger`` command of such an install failed to
import, while every test, run from the source tree, passed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Every module of the wheel imported (but those that run as they are imported), each from the
# wheel's copy (not the source tree), then the data files the code reads beside its modules.
SMOKE = """
import importlib, pkgutil, sys
from importlib.resources import files
from pathlib import Path
root = Path(sys.argv[1])
for top in ("ledger", "projections", "forensics", "connectors", "service", "migrations"):
    package = importlib.import_module(top)
    assert Path(package.__file__).is_relative_to(root), package.__file__
    for module in pkgutil.walk_packages(package.__path__, top + "."):
        if module.name.endswith(".__main__") or module.name == "migrations.env":
            continue  # runs its command, or Alembic's environment, as it is imported
        imported = importlib.import_module(module.name)
        assert Path(imported.__file__).is_relative_to(root), imported.__file__
for package, name in [
    ("service.web", "static/style.css"),
    ("service.web", "templates/base.html"),
    ("service.web", "templates/days.svg"),
    ("service.api", "static/init.js"),
    ("projections", "ingestion_runs.mysql.sql"),
    ("connectors.samples", "records.csv"),
    ("connectors.samples", "records.jsonl"),
    ("migrations", "script.py.mako"),
    ("ledger", "py.typed"),
]:
    assert files(package).joinpath(name).is_file(), (package, name)
from click.testing import CliRunner
from service.cli import cli
demo = CliRunner().invoke(cli, ["demo", "--db", f"sqlite:///{root.parent / 'demo.db'}"])
assert demo.exit_code == 0, demo.output
# Nothing of run-ledger's came from elsewhere (the editable install's source tree, which the
# venv's finder offers for a module the wheel lacks).
tops = ("ledger", "projections", "forensics", "connectors", "service", "migrations")
elsewhere = sorted(
    name
    for name, module in list(sys.modules.items())
    if name.split(".")[0] in tops
    and getattr(module, "__file__", None)
    and not Path(module.__file__).is_relative_to(root)
)
assert not elsewhere, elsewhere
print("ok")
"""


def source_copy(target: Path) -> Path:
    """The project's files (tracked, or new and not ignored) copied to ``target``: setuptools
    builds in the source folder, and a ``build/`` left there by an earlier build would put its
    files into this wheel, whatever pyproject.toml now lists."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a file deleted but not yet committed is listed too
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_data_file(tmp_path: Path) -> None:
    source = source_copy(tmp_path / "source")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", tmp_path, source],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("run_ledger-*.whl")
    installed = tmp_path / "installed"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(installed)
    # The wheel's copy first on the path, the venv's dependencies after it; run from a folder
    # that is not the source tree, so that nothing is imported from there.
    env = {**os.environ, "PYTHONPATH": str(installed), "PYTHONDONTWRITEBYTECODE": "1"}
    smoke = subprocess.run(
        [sys.executable, "-c", SMOKE, str(installed)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert smoke.stdout == "ok\n", smoke.stderr
