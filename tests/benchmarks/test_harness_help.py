"""``python -m benchmarks --help`` speaks to a user of the harness: what it measures and how,
not the project's issue tracker."""

from __future__ import annotations

import re

import pytest

from benchmarks.harness import main


def test_the_help_does_not_mention_issue_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert "usage: python -m benchmarks" in shown
    assert re.search(r"\bissues?\s*#?\d|#\d", shown, re.IGNORECASE) is None, shown


def test_the_help_fits_80_columns_and_names_every_option(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The description was the module's docstring as written (reST ``markup``, lines of 97
    columns, a usage line of its own missing --api): it is the one argparse wraps."""
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = capsys.readouterr().out
    assert [line for line in shown.splitlines() if len(line) > 80] == []
    assert "``" not in shown
    assert shown.count("usage:") == 1


@pytest.mark.parametrize(
    ("server", "words"),
    [
        ("notaurl", ["not a database URL: 'notaurl'"]),
        ("sqlite:///x.db", ["a MariaDB/MySQL server URL", "sqlite"]),
        ("mysql+pymysql://root:s3cret@127.0.0.1:99999/x", ["port 99999", "root:***@"]),
        ("mysql+pymysql://root:s3cret@127.0.0.1:1/x", ["127.0.0.1:1", "root:***@"]),
    ],
)
def test_a_db_it_cannot_use_is_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str], server: str, words: list[str]
) -> None:
    """``--db`` with a typo, another database or a server that cannot be reached ended in a
    traceback, after the whole SQLite half had run: it is one line before anything runs, exit
    2 for the URL, 3 for the server, password masked."""
    with pytest.raises(SystemExit) as exited:
        main(["--db", server, "--tiny"])
    assert exited.value.code == (3 if server.endswith(":1/x") else 2)
    captured = capsys.readouterr()
    assert captured.out == ""
    error = captured.err.strip().splitlines()[-1]
    for word in words:
        assert word in error, captured.err
    assert "s3cret" not in captured.err
    assert "Traceback" not in captured.err
    assert "live appends" not in captured.err  # the SQLite half did not run
