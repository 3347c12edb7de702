"""Only the commands that make a ledger create a SQLite file (issue 15, item 2): every other one
refuses a file that does not exist, exit 2, naming its absolute path, and leaves nothing behind
(a typo in ``--db`` used to create an empty file and advise migrating it)."""

from __future__ import annotations

import codecs
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from connectors import SAMPLE_CSV
from ledger import DatabaseNotFoundError, Ledger
from service.cli import cli
from tests.support import as_another_user, sqlite_file, sqlite_without_schema, stop_process

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_events.jsonl"

# Every command that reads a database it did not create, with what it needs to get that far.
READERS = [
    ("events",),
    ("events", "--run", "1"),
    ("verify",),
    ("anchor",),
    ("audit", "1"),
    ("report",),
    ("project",),
    ("rebuild",),
    ("runs", "list"),
    ("runs", "show", "1"),
    ("runs", "fail", "1", "--reason", "gone"),
    ("status",),
    ("api", "--listen", "127.0.0.1:1"),
    ("stuck",),
    ("sweep",),
    ("import-legacy",),
    ("spool", "flush"),
    ("migrate", "--check"),
]
# The commands that may create a ledger: they set one up, or write the first events to it.
CREATORS = {("migrate",), ("demo",), ("append",), ("run", "csv"), ("run", "http-json"), ("serve",)}


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def files_in(folder: Path) -> list[str]:
    """The files in ``folder``, but an open SQLite database's WAL companions (the commands run
    in this process, which keeps their connections open)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(("-wal", "-shm")))


@pytest.fixture
def empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    return folder


@pytest.mark.parametrize("command", READERS, ids=" ".join)
@pytest.mark.parametrize("how", ["default", "--db typo", "environment"])
def test_a_read_refuses_a_missing_file_and_creates_nothing(
    empty_folder: Path, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...], how: str
) -> None:
    expected = empty_folder / ("typo.db" if how != "default" else "ledger.db")
    args = list(command)
    if how == "--db typo":
        args += ["--db", "sqlite:///typo.db"]
    elif how == "environment":
        monkeypatch.setenv("LEDGER_DATABASE_URL", "sqlite:///typo.db")
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert f"no SQLite database at {expected} " in result.stderr
    assert "Traceback" not in result.output
    assert files_in(empty_folder) == []


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_a_read_refuses_an_empty_file_and_leaves_it_empty(
    empty_folder: Path, command: tuple[str, ...]
) -> None:
    """``touch z.db; ledger verify --db sqlite:///z.db`` made z.db a 4096-byte WAL database,
    then said its schema was missing (issue 15): an empty file is refused as a missing one."""
    empty = empty_folder / "z.db"
    empty.touch()
    result = run(*command, "--db", "sqlite:///z.db")
    assert result.exit_code == 2, result.output
    assert f"no SQLite database at {empty} (sqlite:///z.db): the file is empty" in result.stderr
    assert "`ledger migrate --db sqlite:///z.db`" in result.stderr
    assert empty.stat().st_size == 0
    assert files_in(empty_folder) == ["z.db"]


@pytest.mark.parametrize("command", [("runs", "list"), ("verify",), ("migrate", "--check")])
@pytest.mark.parametrize("folder", ["missing", "a file"])
def test_a_read_in_a_folder_that_is_not_there_names_it_and_advises_no_migrate(
    empty_folder: Path, command: tuple[str, ...], folder: str
) -> None:
    """``ledger runs list --db sqlite:////nonexist/dir/x.db`` advised ``ledger migrate --db``
    the same URL "to create a new ledger", which then refused: migrate creates the file, not
    its folder. The folder is named instead, and no migrate is advised."""
    if folder == "a file":
        (empty_folder / "dir").write_text("not a folder\n")
        why = f"{empty_folder / 'dir'} is a file, not a folder. Check the path"
    else:
        why = f"the folder {empty_folder / 'dir'} does not exist. Check the path"
    url = f"sqlite:///{empty_folder}/dir/x.db"
    result = run(*command, "--db", url)
    assert result.exit_code == 2, result.output
    assert f"no SQLite database at {empty_folder / 'dir' / 'x.db'} ({url}): {why}" in (
        result.stderr
    )
    assert "migrate" not in result.stderr.replace("migrate --check", "")
    assert files_in(empty_folder) == ([] if folder == "missing" else ["dir"])


def test_migrate_makes_an_empty_file_a_ledger(empty_folder: Path) -> None:
    """The advice for an empty file works: migrate, as before, makes it a ledger; append, which
    makes a ledger only where no file is, refuses it as the readers do."""
    (empty_folder / "z.db").touch()
    appended = run("append", str(SAMPLE), "--db", "sqlite:///z.db")
    assert appended.exit_code == 2, appended.output
    assert "the file is empty (0 bytes)" in appended.stderr
    assert (empty_folder / "z.db").stat().st_size == 0
    assert run("migrate", "--db", "sqlite:///z.db").exit_code == 0
    assert run("verify", "--db", "sqlite:///z.db").exit_code == 0


@pytest.mark.parametrize("how", ["default", "--db typo", "environment", "--config"])
def test_the_advice_for_a_missing_file_creates_the_ledger_looked_for(
    empty_folder: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # The advice was a bare `ledger migrate`: pasted, it made ./ledger.db, and the command
    # given --db, or a config's database_url (`ledger api --config`), was refused again.
    args = ["status"]
    if how == "--db typo":
        args += ["--db", "sqlite:///typo.db"]
    elif how == "environment":
        monkeypatch.setenv("LEDGER_DATABASE_URL", "sqlite:///typo.db")
    elif how == "--config":
        (empty_folder / "conf").mkdir()
        (empty_folder / "conf" / "ledger.toml").write_text('database_url = "sqlite:///l.db"\n')
        args += ["--config", "conf/ledger.toml"]
    refused = run(*args)
    assert refused.exit_code == 2, refused.output
    advice = re.findall(r"`(ledger migrate[^`]*)`", refused.stderr)
    assert advice, refused.stderr
    assert run(*shlex.split(advice[-1])[1:]).exit_code == 0
    again = run(*args)
    assert again.exit_code == 0, (advice, again.output)


def test_every_command_that_takes_a_database_is_a_reader_or_a_creator() -> None:
    """A new command is classified here, or it escapes the rule unnoticed."""

    def with_db(group: click.Group, prefix: tuple[str, ...]) -> set[tuple[str, ...]]:
        found: set[tuple[str, ...]] = set()
        context = click.Context(group)  # cli imports a command's module as it is named
        for name in group.list_commands(context):
            command = group.get_command(context, name)
            assert command is not None, name
            if isinstance(command, click.Group):
                found |= with_db(command, (*prefix, name))
            elif any(param.name in ("db_url", "config_path") for param in command.params):
                found.add((*prefix, name))
        return found

    readers = {
        command[:2] if command[0] in ("runs", "spool") else command[:1] for command in READERS
    }
    assert isinstance(cli, click.Group)
    assert with_db(cli, ()) - {("config", "check")} == readers | CREATORS


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("sqlite:///missing.db", "missing.db"),
        ("sqlite:///sub/missing.db", "sub/missing.db"),
        ("sqlite:///missing.db?timeout=5", "missing.db"),
        ("sqlite:///file:missing.db?uri=true", "missing.db"),
        ("sqlite:///file:missing.db?mode=ro&uri=true", "missing.db"),
        ("sqlite:///file:mis%20sing.db?uri=true", "mis sing.db"),
        ("sqlite:///m%C3%BCde.db", "müde.db"),
    ],
)
def test_every_form_of_a_sqlite_url_names_the_file_it_looked_for(
    empty_folder: Path, url: str, name: str
) -> None:
    result = run("runs", "list", "--db", url)
    assert result.exit_code == 2, result.output
    assert f"no SQLite database at {empty_folder / name} " in result.stderr
    assert files_in(empty_folder) == []


def test_import_legacy_refuses_a_missing_source(empty_folder: Path) -> None:
    assert run("migrate").exit_code == 0
    result = run("import-legacy", "--from-url", "sqlite:///legacy-typo.db")
    assert result.exit_code == 2, result.output
    assert f"no SQLite database at {empty_folder / 'legacy-typo.db'} " in result.stderr
    assert "ledger migrate" not in result.stderr  # the legacy system's database: not ours to make
    assert files_in(empty_folder) == ["ledger.db"]


def test_an_absolute_path_and_a_folder(empty_folder: Path, tmp_path: Path) -> None:
    absolute = run("status", "--db", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert absolute.exit_code == 2
    assert f"no SQLite database at {tmp_path / 'elsewhere.db'} " in absolute.stderr
    folder = run("verify", "--db", f"sqlite:///{tmp_path}")
    assert folder.exit_code == 2
    assert "it is a folder" in folder.stderr
    assert files_in(empty_folder) == []
    assert not (tmp_path / "elsewhere.db").exists()


def test_a_name_that_could_forge_output_is_shown_escaped(empty_folder: Path) -> None:
    result = run("events", "--db", "sqlite:///a%1B%5B2Jb%E2%80%AE.db")
    assert result.exit_code == 2
    assert "\x1b" not in result.stderr
    assert "\u202e" not in result.stderr
    assert "a\\x1b[2Jb\\u202e.db" in result.stderr
    assert files_in(empty_folder) == []


def test_a_file_that_is_not_a_database_is_the_callers_mistake(empty_folder: Path) -> None:
    (empty_folder / "notes.txt").write_text("not a database\n")
    for command in (("runs", "list"), ("migrate",)):
        result = run(*command, "--db", "sqlite:///notes.txt")
        assert result.exit_code == 2, result.output
        assert "file is not a database" in result.stderr
    assert (empty_folder / "notes.txt").read_text() == "not a database\n"


def test_an_in_memory_database_is_never_refused(empty_folder: Path) -> None:
    for url in ("sqlite://", "sqlite:///:memory:", "sqlite:///file::memory:?uri=true"):
        assert sqlite_file(url) is None
        result = run("events", "--db", url)
        assert result.exit_code == 1, result.output  # empty: the schema is missing
        assert "ledger migrate" in result.stderr
    assert sqlite_file("sqlite:///file:shared?mode=memory&uri=true") is None
    assert files_in(empty_folder) == []


def test_an_existing_file_is_read(empty_folder: Path) -> None:
    assert run("migrate", "--db", "sqlite:///here.db").exit_code == 0
    for url in ("sqlite:///here.db", "sqlite:///file:here.db?mode=ro&uri=true"):
        assert run("events", "--db", url).exit_code == 0
        assert run("verify", "--db", url).exit_code == 0


def test_the_creating_commands_still_create(empty_folder: Path) -> None:
    assert run("migrate").exit_code == 0
    assert (empty_folder / "ledger.db").is_file()
    appended = run("append", str(SAMPLE), "--db", "sqlite:///fresh.db")
    # A new ledger, migrated and said so with its path (it was an empty file, then "run
    # `ledger migrate`", which would have migrated ./ledger.db, not this file)
    assert appended.exit_code == 0, appended.output
    assert f"created a new ledger at {empty_folder.resolve() / 'fresh.db'}" in appended.stderr
    assert (empty_folder / "fresh.db").is_file()
    assert run("events", "--db", "sqlite:///fresh.db").exit_code == 0
    ran = run("run", "csv", "--path", str(SAMPLE_CSV), "--source-id", "1", "--db", "sqlite:///r.db")
    assert (empty_folder / "r.db").is_file(), ran.output
    assert run("demo", "--db", "sqlite:///d.db").exit_code == 0
    assert (empty_folder / "d.db").is_file()


def test_the_library_refuses_only_when_asked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lib.db'}"
    with pytest.raises(DatabaseNotFoundError, match=f"no SQLite database at {tmp_path}/lib.db"):
        Ledger.from_url(url, create=False)
    assert not (tmp_path / "lib.db").exists()
    store = Ledger.from_url(url)  # the default creates, as SQLite does
    try:
        with store.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    finally:
        store.close()
    assert (tmp_path / "lib.db").exists()
    Ledger.from_url(url, create=False).close()


def test_a_relative_path_is_the_current_folders(empty_folder: Path) -> None:
    assert sqlite_file("sqlite:///x/y.db") == empty_folder / "x" / "y.db"
    assert sqlite_file("sqlite:////abs/y.db") == Path("/abs/y.db")
    assert sqlite_file("sqlite:///file:///abs/z.db?uri=true") == Path("/abs/z.db")
    assert os.path.isabs(str(sqlite_file("sqlite:///file:rel.db?uri=true")))


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_an_in_memory_database_is_named_as_such_not_sent_to_migrate(
    url: str, empty_folder: Path
) -> None:
    """``sqlite:///`` (a file name forgotten) is in memory: migrating it in another process
    cannot help, so neither the refusal nor migrate pretend it would."""
    result = run("append", str(SAMPLE), "--db", url)
    assert result.exit_code == 1, result.output
    assert "in-memory SQLite database is new and empty in every process" in result.stderr
    assert "run `ledger migrate`" not in result.stderr
    migrated = run("migrate", "--db", url)
    assert migrated.exit_code == 0, migrated.output
    assert "nothing was kept" in migrated.stderr
    assert "sqlite:///ledger.db" in migrated.stderr
    assert "nothing was kept" not in run("migrate", "--db", "sqlite:///kept.db").stderr
    assert files_in(empty_folder) == ["kept.db"]


@pytest.mark.parametrize("command", [("runs", "list"), ("migrate",), ("append", str(SAMPLE))])
def test_a_sqlite_option_that_would_be_ignored_is_refused(
    command: tuple[str, ...], empty_folder: Path
) -> None:
    """``?mode=ro`` outside a URI was ignored by SQLAlchemy with a Python warning (and the
    database opened read-write): exit 2, naming the URI form, and no file."""
    result = run(*command, "--db", "sqlite:///here.db?mode=ro")
    assert result.exit_code == 2, result.output
    assert "SQLite takes options (mode) only in a URI" in result.stderr
    assert "SAWarning" not in result.stderr
    assert files_in(empty_folder) == []
    assert run("migrate", "--db", "sqlite:///here.db?timeout=5").exit_code == 0  # a driver option


@pytest.mark.parametrize("command", [("runs", "list"), ("migrate",), ("append", str(SAMPLE))])
def test_a_question_mark_that_would_cut_the_file_name_is_refused(
    command: tuple[str, ...], empty_folder: Path
) -> None:
    """``sqlite:///runs?v2.db``: the parser read ``?v2.db`` as an empty query and dropped it.
    Before: `migrate` and `append` made a ledger in the file ``runs``, exit 0."""
    result = run(*command, "--db", "sqlite:///runs?v2.db")
    assert result.exit_code == 2, result.output
    assert "what follows it here is none (NAME=VALUE)" in result.stderr
    assert f"{empty_folder / 'runs'} opened instead; write a '?' in a file name as %3F" in (
        result.stderr
    )
    assert files_in(empty_folder) == []
    assert run("migrate", "--db", "sqlite:///runs%3Fv2.db").exit_code == 0
    assert files_in(empty_folder) == ["runs?v2.db"]


def test_a_part_without_a_value_among_options_is_refused_too(empty_folder: Path) -> None:
    """``sqlite:///runs?v2.db&timeout=5``: the parser dropped ``v2.db`` alone, and `migrate`
    made a ledger in the file ``runs``, exit 0 (only a query of nothing else was refused)."""
    result = run("migrate", "--db", "sqlite:///runs?v2.db&timeout=5")
    assert result.exit_code == 2, result.output
    assert "v2.db among them is no NAME=VALUE" in result.stderr
    assert f"{empty_folder / 'runs'} opened instead; write a '?' in a file name as %3F" in (
        result.stderr
    )
    assert files_in(empty_folder) == []
    assert run("migrate", "--db", "sqlite:///runs%3Fv2.db?timeout=5").exit_code == 0
    assert files_in(empty_folder) == ["runs?v2.db"]


def test_a_schema_missing_names_the_database_to_migrate(empty_folder: Path) -> None:
    """Pasting the advice migrates the database the command read, not ./ledger.db."""
    sqlite_without_schema(empty_folder / "other.db")
    result = run("events", "--db", "sqlite:///other.db")
    assert result.exit_code == 1, result.output
    assert "(`ledger migrate --db sqlite:///other.db`)" in result.stderr


def test_writers_starting_a_ledger_at_once_share_one(empty_folder: Path) -> None:
    """Three `ledger append` processes on a file none of them finds: one makes the ledger (built
    aside, linked in complete), the others use it; nobody sees a half-made one."""
    ledger_bin = Path(sys.executable).parent / "ledger"
    processes = [
        subprocess.Popen(
            [str(ledger_bin), "append", str(SAMPLE), "--db", "sqlite:///shared.db"],
            cwd=empty_folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        results = [process.communicate(timeout=120) for process in processes]
    finally:
        for process in processes:
            stop_process(process, signal.SIGKILL)
    assert [process.returncode for process in processes] == [0, 0, 0], results
    assert sum("created a new ledger" in err for _, err in results) == 1
    assert files_in(empty_folder) == ["shared.db"]
    assert run("verify", "--db", "sqlite:///shared.db").exit_code == 0


def test_a_writer_names_a_missing_folder_or_a_folder_in_the_files_place(
    empty_folder: Path,
) -> None:
    (empty_folder / "a-folder").mkdir()
    folder = run("append", str(SAMPLE), "--db", "sqlite:///a-folder")
    assert folder.exit_code == 2
    assert "is a folder, not a SQLite ledger file" in folder.stderr
    missing = run("append", str(SAMPLE), "--db", "sqlite:///nope/x.db")
    assert missing.exit_code == 2
    assert f"no folder {empty_folder.resolve() / 'nope'}" in missing.stderr


def test_a_writer_in_a_folder_this_user_may_not_write_names_the_file_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new ledger is built in a hidden file beside the target: SQLite's refusal named it
    (`migrate failed on sqlite:////…/ro/.new.db.491.2133c6f1.creating`), a file the user never
    heard of. As another user (root writes anywhere, so a root run forks one that is not);
    under /tmp, not pytest's tmp_path, which the other user may not enter."""
    folder = Path(tempfile.mkdtemp(prefix="ledger-new-"))
    try:
        folder.chmod(0o755)
        (folder / "ro").mkdir(mode=0o555)
        (folder / "ro").chmod(0o555)  # whatever the umask
        monkeypatch.chdir(folder)
        monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
        # The codec append opens a file with, loaded now: the other user may not read the
        # standard library where it is installed under root's home.
        codecs.lookup("utf-8-sig")
        outcomes = as_another_user(
            lambda: [
                ("append", run("append", str(SAMPLE), "--db", "sqlite:///ro/new.db")),
                (
                    "run",
                    run("run", "csv", "--path", str(SAMPLE_CSV), "--db", "sqlite:///ro/new.db"),
                ),
            ]
        )
        assert list((folder / "ro").iterdir()) == []
    finally:
        shutil.rmtree(folder)
    for command, code, output in outcomes:
        assert code == 3, (command, output)
        assert "creating" not in output, (command, output)
        assert output == (
            "Error: migrate failed on sqlite:///ro/new.db: unable to open database file "
            f"({folder.resolve() / 'ro' / 'new.db'}: this user may not open or create it)\n"
        ), command
