"""Which database a ``ledger`` command uses, and a bad one refused: without ``--db``,
``$LEDGER_DATABASE_URL``, else ledger.db in the current folder; an unsupported database, text
that is no URL and bad timeouts in a MariaDB URL are usage errors (a bad URL from the
environment named as such); an unmigrated database says to migrate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from ledger import Ledger
from tests import support
from tests.service.support import run


def test_database_url_from_environment_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    assert run("migrate").exit_code == 0
    assert (tmp_path / "ledger.db").exists()
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    assert run("migrate").exit_code == 0
    assert (tmp_path / "other.db").exists()


def test_bad_urls_are_usage_errors() -> None:
    result = run("migrate", "--db", "postgresql://u:pw-x@localhost/db")
    assert result.exit_code == 2
    assert "unsupported database" in result.stderr
    assert "pw-x" not in result.output
    result = run("migrate", "--db", "not a url")
    assert result.exit_code == 2


def test_unmigrated_database_says_to_migrate(tmp_path: Path) -> None:
    result = run("events", "--db", support.sqlite_without_schema(tmp_path / "empty.db"))
    assert result.exit_code == 1
    assert "ledger migrate" in result.stderr


@pytest.mark.parametrize("query", ["read_timeout=0", "connect_timeout=-1", "write_timeout=abc"])
def test_bad_timeouts_in_a_mysql_url_are_usage_errors(query: str) -> None:
    result = run("status", "--db", f"mysql+pymysql://u:hunter2-pw@127.0.0.1:1/x?{query}")
    assert result.exit_code == 2, result.output
    assert "must be a whole number of seconds above 0" in result.output
    assert "hunter2-pw" not in result.output


def test_a_bad_url_from_the_environment_is_named_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text('database_url = "sqlite:///fine.db"\n', encoding="utf-8")
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql://app@db/x")
    result = run("config", "check", str(config))
    assert result.exit_code == 2, result.output
    assert "$LEDGER_DATABASE_URL (in place of database_url)" in result.output


@pytest.mark.parametrize(
    "query",
    [
        "port=abc",
        "ssl=1",
        "conv=x",
        "compress=1",
        "read_default_file={option_file}",
        "ssl_ca=/no/such/ca.pem",
        "ssl_ca={option_file}",  # a file that holds no certificate
        "defer_connect=1",
    ],
)
def test_options_the_driver_cannot_use_are_usage_errors(tmp_path: Path, query: str) -> None:
    # PyMySQL refuses these with ValueError, AttributeError, NotImplementedError or a
    # configparser error, which were tracebacks; the option file's error quoted its line,
    # password and all.
    option_file = tmp_path / "my.cnf"
    option_file.write_text("password = hunter2-pw\n", encoding="utf-8")
    url = f"mysql+pymysql://u:hunter2-pw@127.0.0.1:1/x?{query.format(option_file=option_file)}"
    result = run("status", "--db", url)
    assert result.exit_code == 2, result.output
    assert "the driver refused the URL's options" in result.stderr
    assert "Traceback" not in result.output
    assert "hunter2-pw" not in result.output


@pytest.mark.parametrize("option", ["cursorclass", "auth_plugin_map", "sql_mode"])
def test_an_option_that_fails_once_connected_is_a_usage_error(option: str) -> None:
    base = support.mysql_base_url()
    if base is None:
        pytest.skip(f"MariaDB half skipped: set {support.MYSQL_URL_ENV} to run it")
    url = make_url(base).update_query_dict({option: "x"})  # sql_mode: the server's 1231
    result = run("status", "--db", url.render_as_string(hide_password=False))
    assert result.exit_code == 2, result.output
    assert "the driver refused the URL's options" in result.stderr


@pytest.mark.parametrize(
    ("url", "meant"),
    [
        ("sqlite://ledger.db", "sqlite:///ledger.db"),
        ("sqlite://data/ledger.db", "sqlite:///data/ledger.db or sqlite:////data/ledger.db"),
    ],
)
def test_a_sqlite_url_with_two_slashes_says_how_many_it_takes(
    url: str, meant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It printed SQLAlchemy's five-line list of "Valid SQLite URL forms": errors are one line.
    monkeypatch.chdir(tmp_path)
    result = run("runs", "list", "--db", url)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"a SQLite URL has no host: write {meant}" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (
            "sqlite:x.db",
            "not a database URL: 'sqlite:x.db': a SQLite URL starts with sqlite:/// (three "
            "slashes before a relative path, four before an absolute one): write sqlite:///x.db",
        ),
        (
            "sqlite:/srv/x.db",
            "write sqlite:///srv/x.db for srv/x.db in the current folder, or sqlite:////srv/x.db "
            "for /srv/x.db",
        ),
        (
            "mysql+pymysql:/app:hunter2-pw@db:3306/ledger",
            "not a database URL: mysql+pymysql: is not followed by // (write "
            "mysql+pymysql://USER:***@HOST:PORT/DATABASE; the rest is not shown",
        ),
        ("ledger.db", "for the SQLite file ledger.db, write sqlite:///ledger.db"),
        ("/srv/ledger.db", "for the SQLite file /srv/ledger.db, write sqlite:////srv/ledger.db"),
    ],
)
def test_a_url_missing_its_slashes_or_scheme_says_the_url_meant(
    url: str, said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "sqlite:/x.db" said "not a database URL: <unparseable ? URL>", which named neither the
    # text nor what it lacked; "ledger.db" did not say that a file takes sqlite:///.
    monkeypatch.chdir(tmp_path)
    for command in (("runs", "list"), ("migrate",), ("append", "-")):
        result = run(*command, "--db", url, input="")
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1, result.stderr
        assert said in result.stderr, result.stderr
        assert "unparseable" not in result.stderr
        assert "hunter2-pw" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_an_empty_db_is_refused_not_taken_for_no_db(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--db "$URL"`` with URL unset passed ``--db ""``, which read as no ``--db``: the events
    went to ``$LEDGER_DATABASE_URL`` (another ledger than the one named) or to a new ledger.db
    made in the current folder, exit 0. An empty URL (``--db``, ``--from-url``) or spool folder
    is a usage error naming the option, and nothing is written anywhere."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    events = here / "events.jsonl"
    started = {"type": "RunStarted", "connector_name": "SOURCE_1", "source_id": 1}
    events.write_text(json.dumps(started) + "\n")
    ledger = Ledger.from_url(db_url)
    head = ledger.head()
    for environment in (db_url, None):
        if environment is None:
            monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
        else:
            monkeypatch.setenv("LEDGER_DATABASE_URL", environment)
        for args in (
            ["append", str(events), "--db", ""],
            ["migrate", "--db", ""],
            ["runs", "list", "--db", ""],
            ["status", "--db", ""],
            ["demo", "--db", ""],
            ["import-legacy", "--from-url", "", "--db", db_url],
            ["run", "csv", "--spool-dir", "", "--db", db_url],
        ):
            result = run(*args)
            assert result.exit_code == 2, (args, result.output)
            assert "is empty" in result.stderr, (args, result.stderr)
    assert ledger.head() == head
    ledger.close()
    assert list(here.iterdir()) == [events]  # no ledger.db, no ledger-demo.db, no spool
