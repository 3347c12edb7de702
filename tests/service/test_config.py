"""The TOML config of `ledger serve`: validation, per-connector overrides, paths."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger import ConfigurationError, Ledger, stuck_runs
from ledger.durations import parse_duration
from service import load_config
from service.cli import cli


def test_connector_overrides_keep_global_fields_and_are_per_source(
    tmp_path: Path, ledger: Ledger
) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text(
        '[thresholds]\nstale_after = "60m"\nmax_runtime = "6h"\n'
        '[[connectors]]\nname = "api"\ntype = "csv"\nsource_id = 2\n'
        'schedule = { interval = "5m" }\nthresholds = { stale_after = "10m" }\n'
        'options = { path = "api.csv" }\n'
        '[[connectors]]\nname = "api"\ntype = "csv"\nsource_id = 3\n'
        'schedule = { interval = "5m" }\nthresholds = { stale_after = "3h" }\n'
        'options = { path = "api.csv" }\n'
    )
    loaded = load_config(config)
    overrides = loaded.overrides()
    assert overrides[("api", 2)].max_runtime == timedelta(hours=6)  # inherited
    assert overrides[("api", 2)].stale_after == timedelta(minutes=10)
    assert overrides[("api", 3)].stale_after == timedelta(hours=3)
    from freezegun import freeze_time

    from ledger.clock import utcnow

    now = utcnow()
    with freeze_time(now - timedelta(minutes=20)):
        two = ledger.start_run(2, "api")
        three = ledger.start_run(3, "api")
    found = {r.run_id for r in stuck_runs(ledger, now=now, overrides=overrides)}
    assert found == {two}
    assert three not in found


def test_absurd_durations_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="longer than 3650 days"):
        parse_duration("999999d", "stale_after")


def test_config_paths_are_relative_to_the_config_file() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "ledger.toml"
    config = load_config(example)
    path = Path(config.connectors[0].options["path"])
    assert path.is_absolute()
    assert path.exists()


# ------------------------------------------------------------ issue 15, item 12


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("sqlite:///ledger.db", "sqlite:///{folder}/ledger.db"),
        ("sqlite:///../data/ledger.db?timeout=5", "sqlite:///{parent}/data/ledger.db?timeout=5"),
        ("sqlite:////srv/ledger.db", "sqlite:////srv/ledger.db"),  # absolute: as written
        ("sqlite://", "sqlite://"),  # in memory
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("mysql+pymysql://u:p@db:3306/ledger", "mysql+pymysql://u:p@db:3306/ledger"),
        # Left out, its default is beside the file too (it was ledger.db in the current folder).
        (None, "sqlite:///{folder}/ledger.db"),
    ],
)
def test_a_sqlite_database_url_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str | None, expected: str
) -> None:
    text = "" if written is None else f'database_url = "{written}"\n'
    config = write(tmp_path / "conf" / "ledger.toml", text + '[sweeper]\ninterval = "15m"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    folder = config.parent.resolve()
    wanted = expected.format(folder=folder, parent=folder.parent)
    assert load_config(config).database_url == wanted


def test_the_environments_database_url_stays_relative_to_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path / "conf" / "ledger.toml", 'database_url = "sqlite:///a.db"\n')
    monkeypatch.setenv("LEDGER_DATABASE_URL", "sqlite:///b.db")
    assert load_config(config).database_url == "sqlite:///b.db"


@pytest.mark.parametrize(
    ("spool", "environment", "expected"),
    [
        ('[spool]\ndir = "spool"\n', None, "{folder}/spool"),
        ('[spool]\ndir = "../queue"\n', None, "{parent}/queue"),
        ('[spool]\ndir = "/srv/spool"\n', None, "/srv/spool"),  # absolute: as written
        ("", None, "{folder}/.ledger-spool"),  # the default too: beside the file
        ('[spool]\nflush_interval = "5m"\n', None, "{folder}/.ledger-spool"),
        ("", "env-spool", None),  # $LEDGER_SPOOL_DIR, as without a config
        ('[spool]\ndir = "spool"\n', "env-spool", "{folder}/spool"),  # the file's, as before
    ],
)
def test_the_spool_folder_is_relative_to_the_config_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spool: str,
    environment: str | None,
    expected: str | None,
) -> None:
    # [spool] dir, and its default, were relative to the current folder: `status --config`
    # run from two folders showed two spools, and serve started elsewhere spooled elsewhere.
    config = write(tmp_path / "conf" / "ledger.toml", 'database_url = "sqlite:///l.db"\n' + spool)
    monkeypatch.chdir(tmp_path)
    if environment is None:
        monkeypatch.delenv("LEDGER_SPOOL_DIR", raising=False)
    else:
        monkeypatch.setenv("LEDGER_SPOOL_DIR", environment)
    folder = config.parent.resolve()
    wanted = None if expected is None else expected.format(folder=folder, parent=folder.parent)
    assert load_config(config).spool.dir == wanted


def test_status_with_a_config_shows_one_spool_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    config = write(tmp_path / "conf" / "ledger.toml", f'database_url = "{db_url}"\n')
    monkeypatch.delenv("LEDGER_SPOOL_DIR", raising=False)
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    shown = []
    for folder, path in ((tmp_path, str(config)), (config.parent, "ledger.toml")):
        monkeypatch.chdir(folder)
        result = CliRunner().invoke(cli, ["status", "--config", path, "--format", "json"])
        assert result.exit_code == 0, result.output
        shown.append(json.loads(result.output)["spool_path"])
    assert shown == [str(config.parent.resolve() / ".ledger-spool" / "spool.db")] * 2


def test_a_config_without_database_url_names_one_ledger_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default database of a config file is ledger.db beside it, as a config that spells
    the default out says (`database_url = "sqlite:///ledger.db"`, relative to the file): it was
    ledger.db in the current folder, so `status --config` from the config's folder found the
    ledger and from any other folder refused a missing file (and serve made a new one there)."""
    config = write(tmp_path / "conf" / "ledger.toml", '[sweeper]\ninterval = "15m"\n')
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    monkeypatch.delenv("LEDGER_SPOOL_DIR", raising=False)
    beside = config.parent.resolve() / "ledger.db"
    migrated = CliRunner().invoke(cli, ["migrate", "--db", f"sqlite:///{beside}"])
    assert migrated.exit_code == 0, migrated.output
    shown = []
    for folder, path in ((tmp_path, str(config)), (config.parent, "ledger.toml")):
        monkeypatch.chdir(folder)
        result = CliRunner().invoke(cli, ["status", "--config", path, "--format", "json"])
        assert result.exit_code == 0, result.output
        shown.append(json.loads(result.output)["database"])
        checked = CliRunner().invoke(cli, ["config", "check", path])
        assert f"database sqlite:///{beside}" in checked.output, checked.output
    assert shown == [f"sqlite:///{beside}"] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf"]  # no ledger.db made here


def csv_connector(path: str, enabled: bool = True) -> str:
    return (
        '[[connectors]]\nname = "stations"\ntype = "csv"\nsource_id = 1\n'
        f'schedule = {{ interval = "15m" }}\noptions = {{ path = "{path}" }}\n'
        f"enabled = {str(enabled).lower()}\n"
    )


def test_config_check_fails_on_a_missing_csv_file_naming_the_connector_and_the_path(
    tmp_path: Path,
) -> None:
    config = write(tmp_path / "conf" / "ledger.toml", csv_connector("data/stations.csv"))
    result = CliRunner().invoke(cli, ["config", "check", str(config)])
    assert result.exit_code == 2, result.output
    looked_for = tmp_path.resolve() / "conf" / "data" / "stations.csv"
    assert f"connectors[0] ('stations', source 1): no file at options.path: {looked_for}" in (
        result.output
    )
    assert "Traceback" not in result.output


def test_config_check_names_a_folder_given_as_a_csv_file_and_ignores_disabled_connectors(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").mkdir()
    folder = write(tmp_path / "folder.toml", csv_connector("data"))
    result = CliRunner().invoke(cli, ["config", "check", str(folder)])
    assert result.exit_code == 2, result.output
    assert "options.path is a folder, not a file" in result.output
    disabled = write(tmp_path / "disabled.toml", csv_connector("missing.csv", enabled=False))
    assert CliRunner().invoke(cli, ["config", "check", str(disabled)]).exit_code == 0


def test_config_check_says_valid_in_lines_that_fit_80_columns(tmp_path: Path) -> None:
    """ "valid", the database and the schedule's summary were one line of 141 characters for the
    shipped example: now a line each, the database URL and the path whole."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "stations.csv").write_text("id\n")
    config = write(tmp_path / "ledger.toml", csv_connector("data/stations.csv"))
    result = CliRunner().invoke(cli, ["config", "check", str(config)])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"{config}: valid\n"
        f"  database sqlite:///{tmp_path.resolve() / 'ledger.db'}\n"  # beside the file
        "  1 connector(s) scheduled of 1; stale after 1h; sweep every 15m\n"
    )


def test_config_check_warns_of_a_web_view_serve_would_not_serve(tmp_path: Path) -> None:
    """``[web] enabled`` without ``[api] listen`` was "valid", and serve then served no page
    without a word. Still valid (``ledger api --listen`` serves it), with a warning."""
    config = write(tmp_path / "ledger.toml", "[web]\nenabled = true\n")
    result = CliRunner().invoke(cli, ["config", "check", str(config)])
    assert result.exit_code == 0, result.output
    assert result.stderr == (  # 80 columns, a hanging indent
        "warning: [web] enabled = true, but [api] listen is not set: `ledger serve`\n"
        "  serves no pages (the web view is served on the API's listener; `ledger api\n"
        "  --listen HOST:PORT` would serve it)\n"
    )
    served = write(
        tmp_path / "served.toml", '[api]\nlisten = "127.0.0.1:8080"\n[web]\nenabled = true\n'
    )
    assert CliRunner().invoke(cli, ["config", "check", str(served)]).stderr == ""


def http_json_connector(options: str) -> str:
    return (
        '[[connectors]]\nname = "api"\ntype = "http-json"\nsource_id = 2\n'
        f'schedule = {{ interval = "15m" }}\noptions = {{ {options} }}\n'
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ('url = "file:///etc/passwd"', "url: 'file:///etc/passwd' is not an http(s) URL"),
        ('url = "ftp://example.org/x"', "url: 'ftp://example.org/x' is not an http(s) URL"),
        (
            'url = "https://example.org", page_param = "page", single_page = true',
            "give only one of page_param, next_path and single_page",
        ),
        ("url = 123", "url: expected non-empty text, got 123"),
        # "valid", then every scheduled run failed: can only concatenate str (not "int") to str
        (
            'url = "https://example.org", page_param = "page", first_page = "x"',
            "first_page: expected a whole number >= 0, got 'x'",
        ),
        ('url = "https://example.org", first_page = 1.5', "first_page: expected a whole"),
        # "valid", then every record of every run was "missing key"
        ('url = "https://example.org", key = 5', "key: expected non-empty text, got 5"),
        ('url = "https://example.org", records_path = 3', "records_path: expected text, got 3"),
        (
            'url = "https://example.org", next_path = ["a"]',
            "next_path: expected non-empty text, got ['a']",
        ),
        # refused as "unsupported operand type(s) for +: 'int' and 'str'", naming no option
        (
            'url = "https://example.org", single_page = "false"',
            "single_page: expected true or false, got 'false'",
        ),
    ],
)
def test_config_check_refuses_what_the_http_json_connector_refuses(
    tmp_path: Path, options: str, message: str
) -> None:
    """The rules of `ledger run http-json` hold for a configured connector too (a file:// URL
    would let a config read local files into source_records)."""
    config = write(tmp_path / "ledger.toml", http_json_connector(options))
    result = CliRunner().invoke(cli, ["config", "check", str(config)])
    assert result.exit_code == 2, result.output
    assert f"connectors[0]: connector 'api' (http-json): {message}" in result.output
    assert "Traceback" not in result.output


def test_config_check_refuses_a_csv_key_that_is_not_text(tmp_path: Path) -> None:
    """`key = ["id"]` was "valid", then every row of every run was "missing key"."""
    (tmp_path / "s.csv").write_text("id\n1\n")
    config = write(
        tmp_path / "ledger.toml",
        '[[connectors]]\nname = "s"\ntype = "csv"\nsource_id = 2\n'
        'schedule = { interval = "15m" }\noptions = { path = "s.csv", key = ["id"] }\n',
    )
    result = CliRunner().invoke(cli, ["config", "check", str(config)])
    assert result.exit_code == 2, result.output
    assert "connectors[0]: connector 's' (csv): key: expected non-empty text, got ['id']" in (
        result.stderr
    )


def test_a_disabled_connector_may_leave_its_options_for_later(tmp_path: Path) -> None:
    config = write(
        tmp_path / "ledger.toml",
        '[[connectors]]\nname = "later"\ntype = "http-json"\nsource_id = 3\n'
        'schedule = { interval = "1h" }\nenabled = false\n',
    )
    result = CliRunner().invoke(cli, ["config", "check", str(config)])
    assert result.exit_code == 0, result.output


def test_a_misspelt_key_is_named_with_the_keys_it_could_be(tmp_path: Path) -> None:
    """A typo in a key said pydantic's "Extra inputs are not permitted"; config check says the
    key is unknown, the one meant when one is close, and the keys that section takes."""
    config = tmp_path / "ledger.toml"
    config.write_text(
        'databse_url = "sqlite:///x.db"\n[thresholds]\nstale_afer = "1h"\n'
        '[[connectors]]\nname = "a"\ntype = "csv"\nsource_id = 1\n'
        'schedule = { interval = "1h", run_at_strat = true }\noptions = { path = "x.csv" }\n'
        "enable = true\n"
    )
    result = CliRunner().invoke(cli, ["config", "check", str(config)])
    assert result.exit_code == 2
    said = result.stderr
    assert "Extra inputs" not in said
    assert "  databse_url: unknown key (did you mean database_url?)" in said
    assert (
        "  thresholds.stale_afer: unknown key (did you mean stale_after?); "
        "known: stale_after, max_runtime"
    ) in said
    # A key inside a connector names the connector too: its name and source.
    assert (
        "  connectors[0] ('a', source 1).schedule.run_at_strat: unknown key (did you mean "
        "run_at_start?)"
    ) in said
    assert "  connectors[0] ('a', source 1).enable: unknown key (did you mean enabled?)" in said


def test_a_huge_or_hostile_key_is_clipped_and_escaped(tmp_path: Path) -> None:
    """A key is echoed as an event's unknown field is: at most 100 characters, control and
    format characters escaped (a 200,000-character key printed 200 KB)."""
    config = tmp_path / "ledger.toml"
    config.write_text(
        'database_url = "sqlite:///x.db"\n'
        f'"{"k" * 200_000}" = 1\n'
        '[thresholds]\n"stale_afte\\u001b[2J\\u202e" = "1h"\n'
    )
    result = CliRunner().invoke(cli, ["config", "check", str(config)])
    assert result.exit_code == 2
    said = result.stderr
    assert len(said) < 2_000, len(said)
    assert "k" * 100 in said
    assert "characters cut" in said
    assert "\x1b" not in said
    assert "\u202e" not in said
    assert "thresholds.stale_afte\\x1b[2J\\u202e: unknown key" in said


def test_a_problem_inside_a_connector_names_the_connector(tmp_path: Path) -> None:
    """A required key missing from a connector said ``connectors[1].source_id: Field
    required``: the reader of a file with many ``[[connectors]]`` tables had to count them.
    Each problem inside a connector now names it by what its table gives (its name, its
    source), leaving out the key the problem is about."""
    config = tmp_path / "ledger.toml"
    table = '[[connectors]]\ntype = "csv"\nschedule = {{ interval = "15m" }}\n{keys}'
    config.write_text(
        table.format(keys='name = "ok"\nsource_id = 1\noptions = { path = "x.csv" }\n')
        + table.format(keys='name = "no-source"\noptions = { path = "x.csv" }\n')
        + table.format(keys='source_id = 3\noptions = { path = "x.csv" }\n')
        + table.format(keys='name = "bad-option"\nsource_id = 4\noptions = { pth = "x" }\n')
        + table.format(keys='name = "nul"\nsource_id = 5\noptions = { path = "a\\u0000" }\n'),
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["config", "check", str(config)])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"Error: {config}: invalid config",
        "  connectors[4] ('nul', source 5).options.path: a path cannot contain a NUL character",
    ]
    config.write_text(config.read_text(encoding="utf-8").replace("\\u0000", ""))
    result = CliRunner().invoke(cli, ["config", "check", str(config)])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[1:] == [
        "  connectors[1] ('no-source').source_id: Field required",
        "  connectors[2] (source 3).name: Field required",
        "  connectors[3] ('bad-option', source 4).options: unknown option(s) pth; known: "
        "batch_size, key, path",
    ]
