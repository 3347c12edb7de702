"""``ledger config check`` refuses what ``ledger serve`` would refuse or fail on (review 4,
defect 2): ``[serve] metrics_port`` on the API's own port (check said "valid", serve printed
"serving … API on http://127.0.0.1:19740" and then exited 2 "Address already in use", its own
metrics listener holding the port), and an ``[anchor] path`` in a folder that is not there or
not writable (check said "valid", serve logged an ERROR at every interval)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from connectors.sdk import MAX_INTERVAL_SECONDS
from ledger import Ledger
from service.cli import cli
from service.config.loading import checked_config
from tests.support import as_another_user


@pytest.fixture(autouse=True)
def _the_files_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)


def config_file(folder: Path, body: str) -> Path:
    path = folder / "ledger.toml"
    path.write_text('database_url = "sqlite:///ledger.db"\n' + body, encoding="utf-8")
    return path


def check(path: Path) -> Result:
    return CliRunner().invoke(cli, ["config", "check", str(path)])


def serve(path: Path, *options: str) -> Result:
    """``ledger serve`` that fails at its start (one that started would not return)."""
    return CliRunner().invoke(cli, ["serve", "--config", str(path), *options])


def ports(metrics_host: str, listen: str, port: int = 19740) -> str:
    return (
        f'[serve]\nmetrics_port = {port}\nmetrics_host = "{metrics_host}"\n'
        f'[api]\nlisten = "{listen}"\n[web]\nenabled = true\n'
    )


@pytest.mark.parametrize(
    ("metrics_host", "listen"),
    [
        ("127.0.0.1", "127.0.0.1:19740"),  # the audit's
        ("0.0.0.0", "127.0.0.1:19740"),  # noqa: S104 (a wildcard takes the port on every interface)
        ("127.0.0.1", "0.0.0.0:19740"),
        ("::", "[::1]:19740"),
        ("::1", "[0:0:0:0:0:0:0:1]:19740"),  # one address, written two ways
        ("localhost", "127.0.0.1:19740"),
        ("Ledger.Example.", "ledger.example:19740"),
    ],
)
def test_metrics_on_the_apis_port_is_refused_by_check_and_serve(
    tmp_path: Path, metrics_host: str, listen: str
) -> None:
    path = config_file(tmp_path, ports(metrics_host, listen))
    problem = (
        f"api: listen {listen} takes the port of [serve] metrics_port 19740 (metrics_host "
        f"{metrics_host}): serve's metrics and its API each need a port of their own"
    )
    for result in (check(path), serve(path)):
        assert result.exit_code == 2, result.output
        assert problem in result.output
        assert "serving" not in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "ledger.db").exists()  # refused before a database was made


@pytest.mark.parametrize(
    ("metrics_host", "listen"),
    [
        ("127.0.0.1", "127.0.0.1:19741"),
        ("127.0.0.1", "[::1]:19740"),  # two loopback addresses, two sockets
        ("127.0.0.1", "192.0.2.1:19740"),
    ],
)
def test_metrics_on_a_port_of_their_own_pass(
    tmp_path: Path, metrics_host: str, listen: str
) -> None:
    result = check(config_file(tmp_path, ports(metrics_host, listen)))
    assert result.exit_code == 0, result.output


def test_serves_metrics_port_option_on_the_apis_port_is_refused(tmp_path: Path) -> None:
    """``--metrics-port`` overrides the file's, after the file was checked."""
    path = config_file(tmp_path, '[api]\nlisten = "127.0.0.1:19740"\n')
    assert check(path).exit_code == 0
    result = serve(path, "--metrics-port", "19740")
    assert result.exit_code == 2, result.output
    assert (
        "--metrics-port 19740: [api] listen 127.0.0.1:19740 takes the port of [serve] "
        "metrics_port 19740 (metrics_host 127.0.0.1)"
    ) in result.output
    assert not (tmp_path / "ledger.db").exists()


def anchor(path: str) -> str:
    return f'[anchor]\npath = "{path}"\ninterval = "1h"\n'


@pytest.mark.parametrize(
    ("anchor_path", "problem"),
    [
        ("/nonexistent_dir/anchors.txt", "anchor.path: no folder /nonexistent_dir to write "),
        ("missing/anchors.txt", "anchor.path: no folder {tmp}/missing to write anchors.txt in"),
        ("folder", "anchor.path is a folder, not a file: {tmp}/folder"),
    ],
)
def test_an_anchor_file_serve_could_not_write_is_refused_by_check_and_serve(
    tmp_path: Path, anchor_path: str, problem: str
) -> None:
    (tmp_path / "folder").mkdir()
    path = config_file(tmp_path, anchor(anchor_path))
    expected = problem.format(tmp=tmp_path.resolve())
    for result in (check(path), serve(path)):
        assert result.exit_code == 2, result.output
        assert "the anchor job would fail" in result.output
        assert expected in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "ledger.db").exists()


def test_an_anchor_file_in_a_folder_there_passes(tmp_path: Path) -> None:
    (tmp_path / "anchors").mkdir()
    result = check(config_file(tmp_path, anchor("anchors/anchors.txt")))
    assert result.exit_code == 0, result.output
    (tmp_path / "anchors" / "anchors.txt").write_text("", encoding="utf-8")
    assert check(config_file(tmp_path, anchor("anchors/anchors.txt"))).exit_code == 0


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder under /tmp (another user must reach it, which pytest's tmp_path forbids)."""
    folder = Path(tempfile.mkdtemp(prefix="ledger-anchor-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_an_anchor_folder_or_file_this_user_may_not_write_is_refused(
    shared_folder: Path,
) -> None:
    """Run as a user who does not own the folder (nobody, when the tests run as root)."""
    (shared_folder / "theirs").mkdir(mode=0o755)
    kept = shared_folder / "kept"
    kept.mkdir()
    kept.chmod(0o777)
    (kept / "anchors.txt").write_text("", encoding="utf-8")
    (kept / "anchors.txt").chmod(0o444)
    (shared_folder / "db").mkdir()
    (shared_folder / "db").chmod(0o777)
    configs = {name: shared_folder / f"{name}.toml" for name in ("folder", "file", "writable")}
    for name, anchor_path in (
        ("folder", "theirs/anchors.txt"),
        ("file", "kept/anchors.txt"),
        ("writable", "kept/new.txt"),
    ):
        configs[name].write_text(
            f'database_url = "sqlite:///db/{name}.db"\n' + anchor(anchor_path), encoding="utf-8"
        )
        configs[name].chmod(0o644)
    outcomes = as_another_user(
        lambda: [
            (f"{name} {command}", run(path))
            for name, path in configs.items()
            for command, run in (("check", check), ("serve", serve))
            if not (name == "writable" and command == "serve")  # it would serve
        ]
    )
    results = {name: (code, output) for name, code, output in outcomes}
    folder = shared_folder / "theirs"
    for command in ("check", "serve"):
        code, output = results[f"folder {command}"]
        assert code == 2, output
        assert f"anchor.path: this user may not create anchors.txt in {folder}" in output
        code, output = results[f"file {command}"]
        assert code == 2, output
        assert f"anchor.path: this user may not write {kept / 'anchors.txt'}" in output
    code, output = results["writable check"]
    assert code == 0, output
    assert list((shared_folder / "db").iterdir()) == []  # serve made no database


def assert_refused_by_check_and_serve(path: Path, db_url: str, message: str) -> None:
    """``config check`` and ``serve`` both exit 2 saying ``message`` (its lines joined), no
    traceback, and nothing is written to the ledger."""
    for command in (check, serve):  # one at a time: a serve that starts does not return
        result = command(path)
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())
        assert "Traceback" not in result.output
    ledger = Ledger.from_url(db_url)
    try:
        assert ledger.head().last_position == 0  # nothing written
    finally:
        ledger.close()


@pytest.mark.parametrize(
    ("key", "value"),
    [("heartbeat_interval", "2d"), ("progress_interval", "25h"), ("heartbeat_interval", "86401s")],
)
def test_an_interval_the_sdk_refuses_is_refused_by_check_and_serve(
    tmp_path: Path, db_url: str, key: str, value: str
) -> None:
    """The audit's: check said "valid" and serve then failed every tick ("heartbeat_interval=
    172800.0: ... at most 86400 is required"), writing nothing, each failed tick claiming its
    slot. The config now carries the SDK's own limit (``MAX_INTERVAL_SECONDS``)."""
    path = tmp_path / "ledger.toml"
    path.write_text(
        f'database_url = "{db_url}"\n[serve]\n{key} = "{value}"\n',
        encoding="utf-8",
    )
    assert_refused_by_check_and_serve(path, db_url, f"serve.{key}: at most 1d")


def test_an_interval_of_a_day_passes_check_and_the_sdk(tmp_path: Path) -> None:
    body = '[serve]\nheartbeat_interval = "1d"\nprogress_interval = "24h"\n'
    result = check(config_file(tmp_path, body))
    assert result.exit_code == 0, result.output
    config = checked_config(config_file(tmp_path, body))
    for interval in (config.serve.heartbeat_interval, config.serve.progress_interval):
        assert interval.total_seconds() == MAX_INTERVAL_SECONDS


CONNECTOR = (
    '[[connectors]]\nname = "api"\ntype = "http-json"\nsource_id = 1\n'
    'schedule = { interval = "1h" }\n'
    'options = { url = "http://127.0.0.1:9/", single_page = true }  # never fetched\n'
)


@pytest.mark.parametrize(
    ("body", "stale_after", "heartbeat"),
    [
        ('[thresholds]\nstale_after = "30s"\n' + CONNECTOR, "30s", "1m"),  # the audit's
        ('[serve]\nheartbeat_interval = "1d"\n' + CONNECTOR, "1h", "1d"),
        (CONNECTOR + 'thresholds = { stale_after = "90s" }\n', "1m30s", "1m"),
    ],
)
def test_a_stale_after_within_two_heartbeats_is_refused_by_check_and_serve(
    tmp_path: Path, db_url: str, body: str, stale_after: str, heartbeat: str
) -> None:
    """The audit's: a connector's page took 50 s, its heartbeat every 60 s, stale_after 30s;
    check said "valid", and serve's own sweeper timed the healthy run out (its success then
    recorded late, the legacy row `failed`). A connector's stale_after must now be at least
    twice the heartbeat interval, its own override or the global one."""
    path = tmp_path / "ledger.toml"
    path.write_text(f'database_url = "{db_url}"\n{body}', encoding="utf-8")
    assert_refused_by_check_and_serve(
        path,
        db_url,
        f"connector 'api': stale_after {stale_after} is shorter than twice [serve] "
        f"heartbeat_interval {heartbeat}",
    )


def test_a_stale_after_of_two_heartbeats_or_a_disabled_connector_passes(tmp_path: Path) -> None:
    fits = '[thresholds]\nstale_after = "2m"\n' + CONNECTOR
    assert check(config_file(tmp_path, fits)).exit_code == 0
    disabled = '[thresholds]\nstale_after = "30s"\n' + CONNECTOR + "enabled = false\n"
    assert check(config_file(tmp_path, disabled)).exit_code == 0


@pytest.mark.parametrize(
    "anchor_path", ["/dev/fd/3", "/dev/fd/1", "/dev/stdout", "/proc/self/fd/4", "/proc/1/fd/1"]
)
def test_an_anchor_path_that_names_a_descriptor_is_refused_as_the_config_is_loaded(
    tmp_path: Path, anchor_path: str
) -> None:
    """`[anchor] path = "/dev/fd/3"` passed `config check` and serve started: opened by serve,
    descriptor 3 is whatever serve holds then (its SQLite ledger, a socket), and the anchor
    was appended into it. Refused where the file is read, naming the file and the key."""
    path = config_file(tmp_path, anchor(anchor_path))
    for command in (check, serve):  # one at a time: a serve that starts does not return
        result = command(path)
        assert result.exit_code == 2, result.output
        assert f"{path}: invalid config" in result.output
        assert f"anchor.path: {anchor_path} names a file descriptor, not a file" in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "ledger.db").exists()


def test_an_anchor_path_that_is_the_ledgers_own_file_is_refused(tmp_path: Path) -> None:
    """`[anchor] path = "ledger.db"` (the config's SQLite ledger): each anchor was appended
    into the database file."""
    for anchor_path in ("ledger.db", "ledger.db-wal", str(tmp_path / "ledger.db")):
        path = config_file(tmp_path, anchor(anchor_path))
        for command in (check, serve):
            result = command(path)
            assert result.exit_code == 2, result.output
            assert "the anchor job would fail" in result.output
            assert "anchor.path is the ledger's own database file: " in result.output
        assert not (tmp_path / "ledger.db").exists()


def test_an_anchor_path_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    """A FIFO (a log shipper's) as serve's anchor file: the job cannot read its last anchor
    back, and waits for ever on one nobody reads. ``ledger anchor --output`` still takes one."""
    fifo = tmp_path / "anchors.fifo"
    os.mkfifo(fifo)
    path = config_file(tmp_path, anchor(str(fifo)))
    for command in (check, serve):
        result = command(path)
        assert result.exit_code == 2, result.output
        assert "anchor.path is not a regular file" in result.output
