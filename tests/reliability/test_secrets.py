"""Secrets (issue 8, item 6): no database password appears in any output, log or report, and the
application role of the README can append and read but never rewrite events.

1. Every ``ledger`` command (found by walking the click tree: a new command fails
   ``test_every_command_has_a_case`` until it gets one) runs as a real subprocess with ``-vv``.
   Its password-bearing URL reaches it through ``--db`` (or the config file) and through
   ``$LEDGER_DATABASE_URL``, on the success path and on every error path: a wrong password, a
   closed port, an unmigrated database, a database that does not exist, the password in the
   query string, a role missing grants, an unparseable URL, an unencoded ``@`` in the password,
   an option the driver refuses, and bad input. stdout, stderr, every file the command wrote
   (reports, spool) and, for ``ledger serve``, its /metrics page are searched for the password
   raw, percent-encoded and plus-encoded, and for every 8-character piece of those forms.
2. The Python API on the same URLs: ``repr(Ledger)``, the whole text of every LedgerError raised
   (its traceback and chained causes included, as a logged exception shows them) and every log
   record emitted.
3. The application role with exactly the README's grants appends and reads; UPDATE, DELETE and
   TRUNCATE of ``ledger_events`` fail with "command denied" even after root dropped the
   immutability triggers: the privileges alone protect history.

SQLite URLs carry no password, so the matrix, the API and the role run on MariaDB (skipped on
SQLite with the reason); the paths that never reach a server run on every machine.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import click
import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

from connectors import SAMPLE_CSV, CsvConnector, Spool
from forensics.chain import verify_chain
from forensics.legacy_import import import_legacy
from forensics.report import build_report
from forensics.verify import verify_all
from ledger import (
    Ledger,
    LedgerError,
    RunFinished,
    RunProgressed,
    RunStarted,
    Thresholds,
    fail_run,
    stuck_runs,
    sweep,
)
from ledger.database import check_schema
from ledger.urls import DATABASE_URL_ENV, mask_secrets, mask_url
from migrations.runner import upgrade
from projections import Projector, ledger_status, rebuild
from service import LedgerService, load_config
from service.cli import cli
from service.metrics import collect_figures
from tests import support
from tests.net_support import JsonServer
from tests.reliability.summary import Summary
from tests.service.support import readme_grants
from tests.support import drop_triggers, free_port, stop_process

REPO = Path(__file__).resolve().parents[2]
LEDGER = (sys.executable, "-c", "from service.cli import main; main()")
SPOOL_ENV = "LEDGER_SPOOL_DIR"

# Shaped to hurt: characters that need encoding, an "@" and a ":" that make the raw URL parse
# into a host and a "port" made of the password's own text.
PASSWORD = "Zq7-p@ssHost:Secret%w/rd?#&+=x"
WRONG_PASSWORD = "Wr0ng-p@ssHost:Secret%w/rd?#&+=y"
PIECE = 8  # any run of this many characters of a password form counts as a leak

# The README's service role (what `ledger serve` and the read commands run as).
README_ROLE = "ledger_service"

# ---------------------------------------------------------------- what counts as a leak


def password_forms(secret: str) -> set[str]:
    rendered = URL.create("mysql", "u", secret, "h").render_as_string(hide_password=False)
    return {
        secret,
        quote(secret, safe=""),
        quote(secret, safe="@"),
        quote_plus(secret),
        rendered.split("u:", 1)[1].rsplit("@h", 1)[0],  # SQLAlchemy's own encoding
    }


def secret_pieces(*secrets: str) -> frozenset[str]:
    forms = {form for secret in secrets for form in password_forms(secret)}
    pieces = {form[i : i + PIECE] for form in forms for i in range(len(form) - PIECE + 1)}
    return frozenset(forms | pieces)


SECRET_PIECES = secret_pieces(PASSWORD, WRONG_PASSWORD)


def leaks_in(text: str) -> list[str]:
    return sorted(piece for piece in SECRET_PIECES if piece in text)


def test_the_leak_detector_sees_every_form_and_passes_a_masked_url() -> None:
    url = URL.create("mysql+pymysql", "app", PASSWORD, "db.example", 3306, "ledger")
    shown = url.render_as_string(hide_password=False)
    in_query = f"mysql+pymysql://app@db.example/ledger?password={quote(PASSWORD, safe='')}"
    for leaked in (shown, in_query, PASSWORD, quote_plus(WRONG_PASSWORD), "port 'Secret%w'"):
        assert leaks_in(f"Error: read failed on {leaked}: refused"), leaked
    assert leaks_in(mask_url(shown)) == []
    assert leaks_in(mask_secrets(f"read failed on {in_query}: refused")) == []


# ---------------------------------------------------------------- the commands

PATHS_WITHOUT_SERVER = (
    "closed port",
    "unparseable URL",
    "unencoded @ in password",
    "option the driver refuses",
)
PATHS_WITH_SERVER = (
    "ok",
    "wrong password",
    "unmigrated database",
    "missing database",
    "password in query string",
    "missing grant",
)
BAD_INPUT = "bad input"
# Paths on which a command that connects must fail (the others may partly succeed).
MUST_FAIL = {
    "closed port",
    "unparseable URL",
    "unencoded @ in password",
    "option the driver refuses",
    "wrong password",
    "unmigrated database",
    "missing database",
}


@dataclass(frozen=True)
class Inputs:
    """Files and peers the commands read, shared by every case."""

    folder: Path
    events: Path
    new_events: Path  # for the error paths: a run never stored, so the append must write
    bad_events: Path
    bad_csv: Path
    not_a_folder: Path
    http: str
    legacy_url: str | None = None  # --from-url of import-legacy (another password-bearing URL)
    legacy_url_wrong: str | None = None


@dataclass(frozen=True)
class Setting:
    """Where one case runs and how its URL reaches the command."""

    folder: Path
    path: str
    via: str  # --db | env | config
    url: str
    inputs: Inputs
    metrics_port: int = 0


Args = list[list[str]]  # variants of one command line; the first one serves the error paths


MIGRATE, APPEND, PROJECT, READS, WRITES, REBUILD, CONNECTORS = range(7)


@dataclass(frozen=True)
class Spec:
    ok: Callable[[Setting], Args]
    role: str = "app"  # who runs the success path: app (the README's service role) or owner
    database: str = "main"
    vias: tuple[str, ...] = ("--db", "env")
    ok_exits: frozenset[int] = frozenset({0})
    bad: Callable[[Setting], Args] | None = None
    connects: bool = True  # reaches the database at all
    spools: bool = False  # an unreachable ledger is not a failure: the events wait in the spool
    serve: bool = False
    api: bool = False  # serves HTTP until SIGTERM: run by run_api
    paths: tuple[str, ...] = (*PATHS_WITH_SERVER, *PATHS_WITHOUT_SERVER, BAD_INPUT)
    # Success paths run in stages (history first, then reads side by side, then writers); the
    # error paths change nothing and all run side by side.
    stage: int = READS


def config_file(setting: Setting, *, broken: bool = False, invalid: bool = False) -> str:
    """A ``ledger serve`` config; the URL is in it only when the case passes it that way."""
    lines = []
    if setting.via == "config":
        url = json.dumps(setting.url)
        lines.append(f"database_url = {url[:-1] if broken else url}")  # broken: unterminated
    spool = json.dumps(str(setting.folder / "spool"))
    lines += [
        '[projector]\ninterval = "1s"',
        '[sweeper]\ninterval = "2s"',
        f'[spool]\ndir = {spool}\nflush_interval = "2s"',
        '[serve]\ngrace_period = "5s"\nprogress_interval = "0s"',
        "[[connectors]]",
        'name = "serve-csv"',
        'type = "ftp"' if invalid else 'type = "csv"',
        "source_id = 21",
        'schedule = { interval = "1s" }',
        f"options = {{ path = {json.dumps(str(SAMPLE_CSV))} }}",
    ]
    if invalid:
        lines.insert(1, '[thresholds]\nstale_after = "forever"')
    name = "broken.toml" if broken else "invalid.toml" if invalid else "ledger.toml"
    path = setting.folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def legacy_args(url: str | None) -> list[str]:
    return ["--from-url", url] if url else []


SPECS: dict[str, Spec] = {
    "migrate": Spec(lambda s: [["migrate"]], role="owner", stage=MIGRATE),
    "append": Spec(
        lambda s: [["append", str(s.inputs.events if s.path == "ok" else s.inputs.new_events)]],
        bad=lambda s: [["append", str(s.inputs.bad_events)]],
        stage=APPEND,
    ),
    "events": Spec(
        lambda s: [["events"], ["events", "--format", "jsonl"]],
        bad=lambda s: [["events", "--run", "0"]],
    ),
    "verify": Spec(
        lambda s: [["verify"], ["verify", "--format", "json"], ["verify", "--chain-only"]],
        bad=lambda s: [["verify", "--format", "xml"]],
    ),
    "anchor": Spec(
        lambda s: [["anchor"], ["anchor", "--output", "anchors.txt"]],
        bad=lambda s: [["anchor", "--output", str(s.inputs.not_a_folder / "anchors.txt")]],
    ),
    "project": Spec(
        lambda s: [["project"]],
        bad=lambda s: [["project", "--skip-position", "999", "--reason", "poison"]],
        stage=PROJECT,
    ),
    "audit": Spec(
        lambda s: [["audit", "1"], ["audit", "1", "--format", "json"]],
        bad=lambda s: [["audit", "999"]],
    ),
    "runs list": Spec(
        lambda s: [["runs", "list"], ["runs", "list", "--format", "json"]],
        bad=lambda s: [["runs", "list", "--as-of", "yesterday"]],
    ),
    "runs show": Spec(
        lambda s: [["runs", "show", "1"], ["runs", "show", "1", "--format", "json"]],
        bad=lambda s: [["runs", "show", "999"]],
    ),
    "runs fail": Spec(
        lambda s: [
            ["runs", "fail", "2" if s.via == "--db" else "3", "--reason", "hung", "--actor", "t"]
        ],
        bad=lambda s: [["runs", "fail", "1", "--reason", "finished already"]],
        stage=WRITES,
    ),
    "sweep": Spec(
        lambda s: [["sweep", "--dry-run"], ["sweep", "--format", "json"]],
        bad=lambda s: [["sweep", "--older-than", "soon"]],
        stage=WRITES,
    ),
    "stuck": Spec(
        lambda s: [["stuck"], ["stuck", "--format", "json"]],
        ok_exits=frozenset({0, 1}),
        bad=lambda s: [["stuck", "--max-runtime", "-1h"]],
    ),
    "status": Spec(
        lambda s: [["status"], ["status", "--format", "json"]],
        bad=lambda s: [
            ["status", "--config", str(s.folder / "missing.toml")],
            ["status", "--config", config_file(s, invalid=True)],
        ],
    ),
    "report": Spec(
        lambda s: [
            ["report"],
            ["report", "--format", "markdown"],
            ["report", "--format", "json"],
            ["report", "--format", "markdown", "--output", "report.md"],
        ],
        ok_exits=frozenset({0, 1}),
        bad=lambda s: [["report", "--stuck-after", "never"]],
    ),
    "import-legacy": Spec(
        lambda s: [["import-legacy", *legacy_args(s.inputs.legacy_url)]],
        ok_exits=frozenset({0, 1}),
        bad=lambda s: [
            ["import-legacy", *legacy_args(s.inputs.legacy_url_wrong)],
            ["import-legacy", "--table", "no_such_table"],
        ],
        stage=WRITES,
    ),
    "rebuild": Spec(
        lambda s: [["rebuild"]],
        role="owner",
        bad=lambda s: [["rebuild", "--batch-size", "0"]],
        stage=REBUILD,
    ),
    "run csv": Spec(
        lambda s: [["run", "csv", "--path", str(SAMPLE_CSV), "--source-id", "11"]],
        spools=True,
        bad=lambda s: [["run", "csv", "--path", str(s.inputs.bad_csv), "--source-id", "12"]],
        stage=CONNECTORS,
    ),
    "run http-json": Spec(
        lambda s: [
            ["run", "http-json", "--url", f"{s.inputs.http}/records", "--source-id", "13"],
        ],
        spools=True,
        bad=lambda s: [
            ["run", "http-json", "--url", f"{s.inputs.http}/broken", "--retries", "0"],
        ],
        stage=CONNECTORS,
    ),
    "spool flush": Spec(
        lambda s: [["spool", "flush"]],
        connects=False,  # only when events wait in the spool (the connector cases spool some)
        bad=lambda s: [["spool", "flush", "--spool-dir", str(s.inputs.not_a_folder)]],
        stage=CONNECTORS,
    ),
    "spool status": Spec(  # reads no database: run with the URL in the environment only
        lambda s: [["spool", "status"]],
        vias=("env",),
        connects=False,
        ok_exits=frozenset({0, 1}),
        bad=lambda s: [["spool", "status", "--spool-dir", str(s.inputs.not_a_folder)]],
        paths=("ok", BAD_INPUT),
    ),
    "config check": Spec(
        lambda s: [["config", "check", config_file(s)]],
        vias=("config", "env"),
        connects=False,
        bad=lambda s: [
            ["config", "check", config_file(s, invalid=True)],
            ["config", "check", config_file(s, broken=True)],
        ],
    ),
    "demo": Spec(
        lambda s: [["demo"]],
        role="owner",
        database="demo",
        vias=("--db", "env"),  # like every command (else its own SQLite file)
        ok_exits=frozenset({0, 1}),
        paths=(*PATHS_WITH_SERVER, *PATHS_WITHOUT_SERVER),
    ),
    "api": Spec(
        lambda s: [["api", "--listen", f"127.0.0.1:{s.metrics_port}"]],
        api=True,
        connects=False,  # it answers 503 while the database is unreachable, and keeps serving
        bad=lambda s: [["api", "--listen", "127.0.0.1:notaport"]],
    ),
    "serve": Spec(
        lambda s: [
            ["serve", "--config", config_file(s), "--metrics-port", str(s.metrics_port)],
        ],
        vias=("config", "env"),
        serve=True,
        bad=lambda s: [
            ["serve", "--config", config_file(s, invalid=True)],
            ["serve", "--config", config_file(s, broken=True)],
        ],
        stage=CONNECTORS,
    ),
}


def leaf_commands(group: click.Group, prefix: str = "") -> Iterator[str]:
    context = click.Context(group)  # list_commands and get_command: cli imports on request
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        if isinstance(command, click.Group):
            yield from leaf_commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}"


def test_every_command_has_a_case() -> None:
    commands = set(leaf_commands(cli))
    assert commands - set(SPECS) == set(), "commands with no secrets case: add them to SPECS"
    assert set(SPECS) - commands == set(), "cases for commands that no longer exist"


# ---------------------------------------------------------------- running one case


@dataclass(frozen=True)
class Case:
    command: str
    path: str
    via: str
    argv: tuple[str, ...]
    setting: Setting
    accept: Callable[[int], bool]
    serve: bool = False
    api: bool = False

    @property
    def label(self) -> str:
        return f"ledger -vv {' '.join(self.argv)} [{self.path}, via {self.via}]"


@dataclass(frozen=True)
class Outcome:
    case: Case
    exit_code: int
    output: str  # stdout, stderr, files written, metrics page

    @property
    def leaks(self) -> list[str]:
        return leaks_in(self.output)


def child_env(setting: Setting) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (DATABASE_URL_ENV, SPOOL_ENV)}
    env.update(PYTHONPATH=str(REPO), **{SPOOL_ENV: str(setting.folder / "spool")})
    if setting.via == "env":
        env[DATABASE_URL_ENV] = setting.url
    return env


def files_written(folder: Path) -> str:
    """Everything the command left in its folder (reports, spool databases), as text; the
    config files the test wrote are not the command's output."""
    return "\n".join(
        path.read_bytes().decode("latin-1")
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix != ".toml"
    )


def run_case(case: Case) -> Outcome:
    if case.serve:
        return run_serve(case)
    if case.api:
        return run_api(case)
    done = subprocess.run(
        [*LEDGER, "-vv", *case.argv],
        cwd=case.setting.folder,
        env=child_env(case.setting),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = "\n".join((done.stdout, done.stderr, files_written(case.setting.folder)))
    return Outcome(case, done.returncode, output)


def scrape_metrics(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return str(reply.read().decode("utf-8"))
    except (urllib.error.URLError, ConnectionError):
        return None


def run_serve(case: Case) -> Outcome:
    """``ledger serve``: once it has done something worth reading (a connector run on the
    success path, a logged error on the others), scrape /metrics and stop it with SIGTERM."""

    def read_when_ready(log: str) -> str | None:
        worth_reading = (
            ": run " in log
            if case.path == "ok"
            else "ERROR " in log or "database unreachable at start" in log
        )
        return scrape_metrics(case.setting.metrics_port) if worth_reading else None

    outcome = run_until_read(case, read_when_ready)
    if case.path == "ok":
        assert "ledger_" in outcome.output, f"{case.label}: no metrics scraped"
    return outcome


def run_api(case: Case) -> Outcome:
    """``ledger api`` (its port is the setting's ``metrics_port``): once /healthz answers, ask
    for a run without a token and for status with a wrong one (the answers are read for secrets
    too), then stop it with SIGTERM."""
    base = f"http://127.0.0.1:{case.setting.metrics_port}"

    def read_when_ready(_log: str) -> str | None:
        if http_answer(f"{base}/healthz") is None:
            return None
        no_token = http_answer(f"{base}/v1/runs/1") or ""
        return no_token + "\n" + (http_answer(f"{base}/v1/status", "Bearer wrong") or "")

    outcome = run_until_read(case, read_when_ready)
    if case.path == "ok":
        assert "problem" in outcome.output or "detail" in outcome.output, case.label
    return outcome


def run_until_read(
    case: Case, read_when_ready: Callable[[str], str | None], timeout: float = 90.0
) -> Outcome:
    """Start a long-running command; poll ``read_when_ready`` with its log so far until it
    returns what to read (then SIGTERM, and wait for a clean stop) or the command exits by
    itself (one that cannot start); kill it whatever happens. The outcome's output is its
    stdout, its log, what was read and the files it wrote."""
    folder = case.setting.folder
    out_path, err_path = folder.parent / f"{folder.name}.out", folder.parent / f"{folder.name}.err"
    read = ""
    with out_path.open("w") as out, err_path.open("w") as err:
        process = subprocess.Popen(
            [*LEDGER, "-vv", *case.argv],
            cwd=folder,
            env=child_env(case.setting),
            stdout=out,
            stderr=err,
            text=True,
        )
        try:
            deadline = time.monotonic() + timeout
            while process.poll() is None:
                log = err_path.read_text()
                answer = read_when_ready(log)
                if answer is not None:
                    read = answer
                    break
                assert time.monotonic() < deadline, f"{case.label}: not ready: {log[-2000:]}"
                threading.Event().wait(0.05)
        finally:
            stop_process(process)  # SIGTERM, a clean stop; killed (exit -9) past its deadline
    output = "\n".join((out_path.read_text(), err_path.read_text(), read, files_written(folder)))
    return Outcome(case, process.returncode, output)


def http_answer(url: str, authorization: str | None = None) -> str | None:
    """The body of any answer (an error status included); None when nothing answers."""
    headers = {"Authorization": authorization} if authorization else {}
    try:
        return httpx.get(url, headers=headers, timeout=5).text
    except httpx.TransportError:
        return None


# ---------------------------------------------------------------- building the cases

UrlFor = Callable[[str, Spec], str]  # (path, spec) -> the URL that path gives the command
_folders = itertools.count()


def server_less_url(path: str, closed_port: int) -> str:
    """A password-bearing URL that never reaches a server."""
    encoded = quote(PASSWORD, safe="")
    host = f"127.0.0.1:{closed_port}/ledger"
    return {
        "closed port": f"mysql+pymysql://ledger_app:{encoded}@{host}",
        "unparseable URL": f"mysql+pymysql://ledger_app:{PASSWORD}@{host}",
        "unencoded @ in password": (
            f"mysql+pymysql://ledger_app:{quote(PASSWORD, safe='@')}@{host}"
        ),
        "option the driver refuses": f"mysql+pymysql://ledger_app:{encoded}@{host}?bogus=1",
    }[path]


ALL_PATHS = (*PATHS_WITH_SERVER, *PATHS_WITHOUT_SERVER, BAD_INPUT)


def vias_for(command: str, spec: Spec, path: str) -> tuple[str, ...]:
    """Both ways on the success path; on an error path one way, taken in turn, so that every
    command and every path meets both (checked by ``assert_both_ways``)."""
    if path == "ok":
        return spec.vias
    if path == BAD_INPUT:
        return spec.vias[:1]
    turn = list(SPECS).index(command) + ALL_PATHS.index(path)
    return (spec.vias[turn % len(spec.vias)],)


def cases_for(
    command: str, spec: Spec, path: str, url_for: UrlFor, inputs: Inputs, root: Path
) -> list[Case]:
    if path not in spec.paths or (path == BAD_INPUT and spec.bad is None):
        return []
    cases = []
    vias = vias_for(command, spec, path)
    for via in vias:
        folder = root / f"case-{next(_folders)}"
        (folder / "spool").mkdir(parents=True)
        url = url_for("ok" if path == BAD_INPUT else path, spec)
        setting = Setting(folder, path, via, url, inputs)
        if spec.serve or spec.api:
            setting = replace(setting, metrics_port=free_port())
        if path == BAD_INPUT:
            assert spec.bad is not None
            variants = spec.bad(setting)
        else:
            variants = spec.ok(setting) if path == "ok" else spec.ok(setting)[:1]
        for number, args in enumerate(variants):
            if path == "ok" and number > 0 and via != vias[0]:
                continue  # other output formats: the URL reaches them the same way
            argv = (*args, "--db", setting.url) if via == "--db" else tuple(args)
            cases.append(
                Case(
                    command,
                    path,
                    via,
                    argv,
                    setting,
                    acceptance(spec, path),
                    spec.serve,
                    spec.api,
                )
            )
    return cases


def acceptance(spec: Spec, path: str) -> Callable[[int], bool]:
    if spec.serve and path == "closed port":
        # serve waits for a database it cannot reach (issue 12) and stops cleanly on SIGTERM
        return lambda code: code == 0
    if path == "ok":
        return lambda code: code in spec.ok_exits
    if path == BAD_INPUT:
        return lambda code: code != 0
    if path in MUST_FAIL and spec.connects and not spec.spools:
        return lambda code: code != 0
    return lambda code: True


def workers() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=(os.cpu_count() or 2) + 1)


def run_all(cases: list[Case]) -> list[Outcome]:
    with workers() as pool:
        return list(pool.map(run_case, cases))


def run_in_stages(cases: list[Case]) -> list[Outcome]:
    """Stage by stage; within a stage the commands side by side, each command's own cases
    one after the other (two ``rebuild``s at once would refuse each other)."""
    outcomes: list[Outcome] = []
    for stage in sorted({SPECS[case.command].stage for case in cases}):
        by_command: dict[str, list[Case]] = {}
        for case in cases:
            if SPECS[case.command].stage == stage:
                by_command.setdefault(case.command, []).append(case)
        with workers() as pool:
            for done in pool.map(lambda mine: [run_case(c) for c in mine], by_command.values()):
                outcomes += done
    return outcomes


def problems_of(outcomes: list[Outcome]) -> list[str]:
    problems = []
    for outcome in outcomes:
        if outcome.leaks:
            problems.append(f"PASSWORD LEAKED by {outcome.case.label}: {outcome.leaks[:3]}")
        failed_on_ok_path = outcome.case.path == "ok" and "\nError: " in f"\n{outcome.output}"
        if failed_on_ok_path or not outcome.case.accept(outcome.exit_code):
            tail = outcome.output.strip()[-600:]
            problems.append(f"exit {outcome.exit_code} from {outcome.case.label}:\n{tail}")
    return problems


def assert_both_ways(outcomes: list[Outcome]) -> None:
    """Every command that takes a URL two ways, and every error path, met both ways."""
    by_command: dict[str, set[str]] = {}
    by_path: dict[str, set[str]] = {}
    for outcome in outcomes:
        by_command.setdefault(outcome.case.command, set()).add(outcome.case.via)
        if outcome.case.path != BAD_INPUT and len(SPECS[outcome.case.command].vias) == 2:
            by_path.setdefault(outcome.case.path, set()).add(outcome.case.via)
    for command, vias in by_command.items():
        assert vias == set(SPECS[command].vias), (command, vias)
    for path, vias in by_path.items():
        assert len(vias) >= 2, (path, vias)


def matrix_figure(outcomes: list[Outcome]) -> str:
    commands = {o.case.command for o in outcomes}
    paths = {o.case.path for o in outcomes}
    pairs = {(o.case.command, o.case.path) for o in outcomes}
    return (
        f"{len(commands)} commands x {len(paths)} paths = {len(pairs)} applicable pairs, "
        f"{len(outcomes)} subprocess runs"
    )


def make_inputs(folder: Path, http: str, **legacy: str) -> Inputs:
    events = folder / "events.jsonl"
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"secrets-{n}")) for n in range(6)]
    lines = [
        {"type": "RunStarted", "event_id": ids[n], "run_ref": ref, "source_id": n + 1}
        | {"connector_name": f"source-{ref}"}
        for n, ref in enumerate("abcd")
    ]
    lines += [
        {"type": "RunProgressed", "event_id": ids[4], "run_ref": "a", "records_fetched": 3},
        {"type": "RunFinished", "event_id": ids[5], "run_ref": "a", "status": "success"},
    ]
    events.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    new_events = folder / "new.jsonl"
    new_events.write_text(
        json.dumps({**lines[0], "event_id": str(uuid.uuid4()), "run_ref": "new"}) + "\n",
        encoding="utf-8",
    )
    bad_events = folder / "bad.jsonl"
    bad_events.write_text(
        '{"type": "RunProgressed", "run_id": 1, "records_fetched": -3}\nnot json\n'
        '{"type": "RunProgressed", "run_id": 999, "records_fetched": 1}\n',
        encoding="utf-8",
    )
    bad_csv = folder / "bad.csv"
    bad_csv.write_text("name,value\nno key column,1\n", encoding="utf-8")
    not_a_folder = folder / "not-a-folder"
    not_a_folder.write_text("a file where a folder should be\n", encoding="utf-8")
    return Inputs(folder, events, new_events, bad_events, bad_csv, not_a_folder, http, **legacy)


def json_routes() -> dict[str, Any]:
    return {
        "/records": lambda _query, _call: (200, [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]),
        "/broken": lambda _query, _call: (500, {"error": "upstream down"}),
    }


# ---------------------------------------------------------------- the CLI matrix


def test_no_password_in_any_output_when_no_server_is_reached(
    tmp_path: Path, reliability: Summary
) -> None:
    """Closed port, unparseable URL, unencoded @, refused option: every command, both ways of
    passing the URL. Needs no database server."""
    closed = free_port()
    with JsonServer(json_routes()) as http:
        inputs = make_inputs(tmp_path, http.base)
        cases = [
            case
            for command, spec in SPECS.items()
            for path in PATHS_WITHOUT_SERVER
            for case in cases_for(
                command, spec, path, lambda p, _s: server_less_url(p, closed), inputs, tmp_path
            )
        ]
        outcomes = run_all(cases)
    assert problems_of(outcomes) == []
    assert_both_ways(outcomes)
    reliability.record(
        "secrets: CLI output",
        "any",
        f"{matrix_figure(outcomes)}: URLs that reach no server, via --db/config and "
        f"${DATABASE_URL_ENV}, -vv",
        "0 password forms or 8-char pieces in stdout, stderr or files written",
    )


@dataclass
class World:
    """Databases and roles on MariaDB, all with the same distinctive password."""

    server: URL
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def database(self, name: str) -> str:
        return f"ledger_secrets_{self.tag}_{name}"

    def user(self, role: str) -> str:
        return f"lsec_{self.tag}_{role}"

    def url(
        self,
        role: str,
        database: str = "main",
        password: str = PASSWORD,
        password_in_query: bool = False,
    ) -> str:
        url = URL.create(
            self.server.drivername,
            self.user(role),
            None if password_in_query else password,
            self.server.host,
            self.server.port,
            self.database(database),
        ).render_as_string(hide_password=False)
        if password_in_query:  # percent-encoded by hand: the query string is not a URL's userinfo
            return f"{url}?password={quote(password, safe='')}"
        return url

    def path_url(self, path: str, spec: Spec) -> str:
        return {
            "ok": lambda: self.url(spec.role, spec.database),
            "wrong password": lambda: self.url(spec.role, spec.database, WRONG_PASSWORD),
            "unmigrated database": lambda: self.url("owner", "unmigrated"),
            "missing database": lambda: self.url("owner", "missing"),
            "password in query string": lambda: self.url("reader", password_in_query=True),
            "missing grant": lambda: self.url("reader"),
        }[path]()


LEGACY_ROWS = (
    "INSERT INTO ingestion_runs (id, sourceId, connectorName, startedAt, completedAt, duration, "
    "status, recordsFetched, errorMessage, createdAt) VALUES "
    "(1001, 7, 'legacy_a', '2026-01-10 10:00:00', '2026-01-10 10:05:00', 300, 'success', 5, "
    "NULL, '2026-01-10 10:00:00'), "
    "(1002, 8, 'legacy_b', '2026-01-11 10:00:00', '2026-01-11 10:01:00', 60, 'failed', 0, "
    "'boom', '2026-01-11 10:00:00')"
)


def build_world(admin: Engine, world: World) -> None:
    names = {name: world.database(name) for name in ("main", "unmigrated", "legacy", "demo")}
    with admin.begin() as conn:
        for name in names.values():
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    support.migrate(world.server.set(database=names["main"]).render_as_string(False))
    ddl = (REPO / "projections" / "ingestion_runs.mysql.sql").read_text()
    with admin.begin() as conn:
        conn.execute(text(f"USE `{names['legacy']}`"))
        conn.exec_driver_sql("\n".join(line.split("--")[0] for line in ddl.splitlines()))
        conn.execute(text(LEGACY_ROWS))
    owner_grants = [f"GRANT ALL ON `{names[n]}`.* TO {{user}}" for n in ("main", "legacy", "demo")]
    owner_grants.append(f"GRANT SELECT ON `{names['unmigrated']}`.* TO {{user}}")
    app_grants = [
        grant.replace("ledger.", f"`{names['main']}`.").replace(f"'{README_ROLE}'@'%'", "{user}")
        for grant in readme_grants(README_ROLE)
    ]
    grants = {
        "owner": owner_grants,
        "app": app_grants,
        "reader": [f"GRANT SELECT ON `{names['main']}`.* TO {{user}}"],
    }
    with admin.begin() as conn:
        for role, statements in grants.items():
            for host in ("%", "localhost"):
                user = f"'{world.user(role)}'@'{host}'"
                conn.execute(text(f"CREATE USER {user} IDENTIFIED BY :pw"), {"pw": PASSWORD})
                for statement in statements:
                    conn.execute(text(statement.format(user=user)))


def tear_down_world(admin: Engine, world: World) -> None:
    with admin.begin() as conn:
        for role in ("owner", "app", "reader"):
            for host in ("%", "localhost"):
                conn.execute(text(f"DROP USER IF EXISTS '{world.user(role)}'@'{host}'"))
        for name in ("main", "unmigrated", "legacy", "demo"):
            conn.execute(text(f"DROP DATABASE IF EXISTS `{world.database(name)}`"))


@pytest.fixture
def world() -> Iterator[World]:
    base = support.mysql_base_url()
    if base is None:
        pytest.skip(f"MariaDB half skipped: set {support.MYSQL_URL_ENV} to run it")
    server = make_url(base).set(database=None)
    admin = create_engine(server)
    created = World(server)
    try:
        build_world(admin, created)
        yield created
    finally:
        tear_down_world(admin, created)
        admin.dispose()


def only_on_mariadb(backend: str) -> None:
    if backend != "mysql":
        pytest.skip("SQLite URLs carry no password and SQLite has no roles: a MariaDB matter")


def test_no_password_in_any_output_of_any_command(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, reliability: Summary
) -> None:
    only_on_mariadb(backend)
    world: World = request.getfixturevalue("world")
    with JsonServer(json_routes()) as http:
        inputs = make_inputs(
            tmp_path,
            http.base,
            legacy_url=world.url("owner", "legacy"),
            legacy_url_wrong=world.url("owner", "legacy", WRONG_PASSWORD),
        )

        def build(paths: tuple[str, ...]) -> list[Case]:
            return [
                case
                for command, spec in SPECS.items()
                for path in paths
                for case in cases_for(command, spec, path, world.path_url, inputs, tmp_path)
            ]

        successes = run_in_stages(build(("ok",)))
        failures = run_all(build((*PATHS_WITH_SERVER[1:], BAD_INPUT)))
    outcomes = successes + failures
    assert problems_of(outcomes) == []
    assert_both_ways(failures)
    refused = [o for o in failures if o.case.path == "missing grant" and o.case.command == "append"]
    assert refused
    assert all("INSERT command denied" in o.output for o in refused), "the role had the grant"
    reliability.record(
        "secrets: CLI output",
        backend,
        f"{matrix_figure(outcomes)}: success and error paths (wrong password, unmigrated, "
        f"missing database, password in query, missing grant, bad input), via --db/config and "
        f"${DATABASE_URL_ENV}, -vv; serve's /metrics; report as text/markdown/json/file",
        "0 password forms or 8-char pieces in stdout, stderr, files written or metrics",
    )


# ---------------------------------------------------------------- the Python API


def api_calls(spool_folder: Path, legacy_url_wrong: str) -> dict[str, Callable[[Ledger], Any]]:
    return {
        "head": lambda ledger: ledger.head(),
        "append": lambda ledger: ledger.append([RunStarted(source_id=1, connector_name="api")]),
        "read_all": lambda ledger: list(ledger.read_all()),
        "read_run": lambda ledger: ledger.read_run(1),
        "verify_chain": verify_chain,
        "verify_all": verify_all,
        "project": lambda ledger: Projector(ledger).run_once(),
        "rebuild": rebuild,
        "status": ledger_status,
        "report": build_report,
        "stuck": stuck_runs,
        "sweep": lambda ledger: sweep(ledger, dry_run=True),
        "fail_run": lambda ledger: fail_run(ledger, 4_000_000, "gone", "operator:test"),
        "migrate": lambda ledger: upgrade(ledger.engine, ledger.url),
        "check_schema": lambda ledger: check_schema(ledger.engine, ledger.url),
        "import_legacy": lambda ledger: import_legacy(ledger, source_url=legacy_url_wrong),
        "connector": lambda ledger: CsvConnector(31, SAMPLE_CSV).record(
            CsvConnector(31, SAMPLE_CSV).context(ledger, spool=Spool(spool_folder))
        ),
        "spool flush": lambda ledger: Spool(spool_folder).flush(ledger),
        "metrics": lambda ledger: collect_figures(ledger, Thresholds(), None, Spool(spool_folder)),
    }


def error_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


def test_python_api_and_logs_never_show_the_password(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    reliability: Summary,
) -> None:
    only_on_mariadb(backend)
    world: World = request.getfixturevalue("world")
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")  # the SQL, as -vvv logs it
    closed = free_port()
    urls = {path: world.path_url(path, SPECS["append"]) for path in PATHS_WITH_SERVER}
    urls |= {path: server_less_url(path, closed) for path in PATHS_WITHOUT_SERVER}
    calls = api_calls(tmp_path / "spool", world.url("owner", "legacy", WRONG_PASSWORD))
    texts: list[str] = []
    errors = escaped = 0
    for path, url in urls.items():
        try:
            ledger = Ledger.from_url(url)
        except LedgerError as error:
            texts.append(error_text(error))
            errors += 1
            continue
        texts.append(repr(ledger))
        for name, call in calls.items():
            try:
                call(ledger)
            except LedgerError as error:
                texts.append(error_text(error))
                errors += 1
            except Exception as error:  # driver errors must never escape raw
                texts.append(f"{path}/{name} raised {error_text(error)}")
                escaped += 1
        ledger.close()
    service = LedgerService(load_config(config_of(tmp_path, world.url("owner"))))
    texts.append(repr(service.figures()))
    service.ledger.close()
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    logged = [formatter.format(record) for record in caplog.records]
    leaks = [(text[:300], leaks_in(text)) for text in texts + logged if leaks_in(text)]
    assert leaks == []
    assert escaped == 0, [t for t in texts if " raised " in t]
    reliability.record(
        "secrets: Python API",
        backend,
        f"{len(urls)} URLs x {len(calls)} library calls: repr(Ledger), {errors} LedgerErrors "
        f"(whole traceback with causes), {len(logged)} log records at DEBUG with SQL",
        "0 password forms or pieces; no driver error escaped unwrapped",
    )


def config_of(folder: Path, url: str) -> Path:
    path = folder / "api.toml"
    path.write_text(f"database_url = {json.dumps(url)}\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- the application role


def test_the_application_role_cannot_rewrite_events_even_without_the_triggers(
    backend: str, request: pytest.FixtureRequest, reliability: Summary
) -> None:
    only_on_mariadb(backend)
    world: World = request.getfixturevalue("world")
    app = Ledger.from_url(world.url("app"))
    root_url = world.server.set(database=world.database("main"))
    root = Ledger.from_url(root_url.render_as_string(hide_password=False))
    try:
        run_id = app.start_run(1, "SOURCE_1")
        app.append(
            [
                RunProgressed(run_id=run_id, records_fetched=3),
                RunFinished(run_id=run_id, status="success"),
            ]
        )
        before = list(app.read_all())
        assert [e.type for e in before] == ["RunStarted", "RunProgressed", "RunFinished"]
        drop_triggers(root.engine)
        with root.engine.begin() as conn:  # the triggers are gone: root's UPDATE now runs
            conn.execute(text("UPDATE ledger_events SET actor = actor WHERE position = 1"))
        refused = {}
        for statement in (
            "UPDATE ledger_events SET actor = 'mallory'",
            "DELETE FROM ledger_events WHERE position = 2",
            "TRUNCATE TABLE ledger_events",
        ):
            with pytest.raises(DBAPIError) as caught, app.engine.begin() as conn:
                conn.execute(text(statement))
            refused[statement] = caught.value.orig.args[0]  # type: ignore[union-attr]
        assert set(refused.values()) == {1142}, refused  # ER_TABLEACCESS_DENIED_ERROR
        assert list(app.read_all()) == before
        assert verify_chain(app).ok
    finally:
        app.close()
        root.close()
    reliability.record(
        "secrets: application role",
        backend,
        "README grants only; root dropped the immutability triggers; the role ran UPDATE, "
        "DELETE and TRUNCATE on ledger_events",
        "appends and reads work; 3/3 refused by privileges (error 1142), history unchanged",
    )


def test_masking_a_long_word_takes_linear_time() -> None:
    """Each letter of a long word began a scan to its end for a URL's "://": 200,000 letters
    (a config key, a driver's message) took about a minute to mask; now milliseconds."""
    begun = time.perf_counter()
    assert mask_secrets("k" * 200_000) == "k" * 200_000
    assert time.perf_counter() - begun < 5
    long_scheme = "k" * 5_000 + "mysql+pymysql://u:hunter2@host/db"
    assert "hunter2" not in mask_secrets(long_scheme)
