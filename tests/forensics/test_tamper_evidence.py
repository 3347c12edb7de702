"""Tamper evidence against a careful DBA (issue 12, item 9), as a user meets it: ``ledger
anchor``, ``ledger verify --anchor/--expect-head``, the head in ``verify`` and ``status``, the
skips verify lists and the report names, the trigger check's comparison, and the ``[anchor]``
job of ``ledger serve``. The tampering itself is tried in tests/reliability/test_tampering.py."""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from freezegun import freeze_time
from sqlalchemy import update

from forensics.anchors import read_anchor_file
from forensics.triggers import sql_tokens
from forensics.verify import verify_all
from ledger import Ledger, RunFinished, RunProgressed
from ledger.errors import ConfigurationError
from ledger.schema import GENESIS_HASH, ledger_events, ledger_head, ledger_runs
from projections import PoisonEventError, Projector
from service.cli import cli
from service.config import load_config
from service.serve import LedgerService
from tests.projection_support import records_fetched_capped
from tests.service.support import shows_no_raw_control
from tests.support import drop_triggers, mode, not_broken, restore_triggers, umask

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "sample_events.jsonl"
GENESIS_LINE = f"0 {GENESIS_HASH} -"
A_HASH = "ab" * 32


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def sample_ledger(db_url: str) -> None:
    assert run("append", str(SAMPLE), "--db", db_url).exit_code == 0
    assert run("project", "--db", db_url).exit_code == 0


def head_line(db_url: str) -> str:
    result = run("anchor", "--db", db_url)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


# ---------------------------------------------------------------- the head, everywhere


def test_anchor_status_and_verify_show_the_same_head(ledger: Ledger, db_url: str) -> None:
    assert head_line(db_url) == GENESIS_LINE
    sample_ledger(db_url)
    position, digest, recorded_at = head_line(db_url).split()
    head = ledger.head()
    assert (int(position), digest) == (head.last_position, head.last_hash) == (7, digest)
    assert recorded_at.endswith("Z")
    assert len(recorded_at) == len("2026-01-28T03:00:07.000000Z")
    status = json.loads(run("status", "--format", "json", "--db", db_url).stdout)
    assert (status["head_position"], status["head_hash"]) == (7, digest)
    assert status["head_recorded_at"] == recorded_at
    assert f"head hash:  {digest}" in run("status", "--db", db_url).stdout
    verified = json.loads(run("verify", "--format", "json", "--db", db_url).stdout)
    assert verified["head"] == {"position": 7, "hash": digest, "recorded_at": recorded_at}
    assert verified["triggers"]["checked"] is True
    assert verified["anchors"] == []
    text = run("verify", "--db", db_url).stdout
    assert f"head: position 7, recorded {recorded_at}\n  hash {digest}\n" in text
    assert "as defined" in text
    chain_only = json.loads(
        run("verify", "--chain-only", "--format", "json", "--db", db_url).stdout
    )
    assert chain_only["head"]["hash"] == digest
    assert chain_only["triggers"] is None
    assert chain_only["skips"] is None  # not looked at, rather than "none"


def test_anchor_output_appends_lines_that_verify_accepts(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    anchors = tmp_path / "anchors.txt"
    first = run("anchor", "--output", str(anchors), "--db", db_url)
    assert first.exit_code == 0, first.output
    assert first.stdout == ""
    assert f"appended to {anchors}: {GENESIS_LINE}" in first.stderr
    sample_ledger(db_url)
    # Edited by hand and saved without a final newline: the next line must not be glued on.
    anchors.write_text(anchors.read_text(encoding="utf-8") + "# after the sample", "utf-8")
    assert run("anchor", "-o", str(anchors), "--db", db_url).exit_code == 0
    lines = anchors.read_text(encoding="utf-8").splitlines()
    assert lines == [GENESIS_LINE, "# after the sample", head_line(db_url)]
    assert [a.position for a in read_anchor_file(anchors)] == [0, 7]
    verified = run("verify", "--anchor", str(anchors), "--format", "json", "--db", db_url)
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.stdout)
    assert [(a["source"], a["ok"]) for a in report["anchors"]] == [
        (f"{anchors}:1", True),
        (f"{anchors}:3", True),
    ]
    assert "anchors: 2 of 2 held" in run("verify", "--anchor", str(anchors), "--db", db_url).stdout


def test_an_anchor_file_is_private_whatever_the_umask(db_url: str, tmp_path: Path) -> None:
    # Under umask 0 a new anchor file was 0666: anyone on the host could rewrite the evidence.
    anchors = tmp_path / "anchors.txt"
    theirs = tmp_path / "theirs.txt"
    theirs.write_text("")
    theirs.chmod(0o644)  # the operator's own file, shipped by a log shipper: left as it is
    with umask(0o000):
        assert run("anchor", "--output", str(anchors), "--db", db_url).exit_code == 0
        assert run("anchor", "--output", str(theirs), "--db", db_url).exit_code == 0
    assert (mode(anchors), mode(theirs)) == (0o600, 0o644)
    assert anchors.read_text("utf-8") == theirs.read_text("utf-8") == GENESIS_LINE + "\n"


def test_anchor_into_a_folder_that_does_not_exist_is_a_usage_error(
    db_url: str, tmp_path: Path
) -> None:
    target = tmp_path / "missing" / "anchors.txt"
    result = run("anchor", "--output", str(target), "--db", db_url)
    assert result.exit_code == 2
    assert f"{target}: cannot append to the anchor file" in result.stderr


def test_anchor_refuses_a_head_that_does_not_match_the_last_event(
    ledger: Ledger, db_url: str
) -> None:
    sample_ledger(db_url)
    with ledger.engine.begin() as conn:
        conn.execute(update(ledger_head).values(last_hash=A_HASH))
    result = run("anchor", "--db", db_url)
    assert result.exit_code == 1
    assert "ledger_head says position 7 has hash" in result.stderr
    assert "run `ledger verify`" in result.stderr


def test_a_forged_head_hash_is_shown_not_obeyed_and_never_anchored(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    """A DBA who writes text with control characters as the last event's hash and the head's:
    verify printed the head's raw (a line cleared, a fake verdict drawn under the problems),
    ``anchor`` printed it as an anchor line and ``anchor -o`` was a traceback
    (UnicodeEncodeError)."""
    sample_ledger(db_url)
    forged = "\u00e9\x1b[2K\r\nverified chain: no problem\n"
    drop_triggers(ledger.engine)
    try:
        with ledger.engine.begin() as conn:
            conn.execute(
                update(ledger_events).where(ledger_events.c.position == 7).values(hash=forged)
            )
            conn.execute(update(ledger_head).values(last_hash=forged))
    finally:
        restore_triggers(ledger.engine)
    verified = run("verify", "--db", db_url)
    assert verified.exit_code == 1
    assert shows_no_raw_control(verified.output), verified.output
    assert "\n  hash \u00e9\\x1b[2K\\r\\nverified chain: no problem\\n\n" in verified.stdout
    anchors = tmp_path / "anchors.txt"
    for args in (["anchor"], ["anchor", "-o", str(anchors)]):
        result = run(*args, "--db", db_url)
        assert result.exit_code == 1, result.output
        assert shows_no_raw_control(result.output), result.output
        assert "the event at position 7 holds" in result.stderr
        assert "not 64 hexadecimal digits" in result.stderr
        assert result.stdout == ""
    assert not anchors.exists()


# ---------------------------------------------------------------- anchor files


def test_anchor_files_as_operators_keep_them_pass(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    sample_ledger(db_url)
    position, digest, recorded_at = head_line(db_url).split()
    middle = next(iter(ledger.read_all(after=2, limit=1)))
    middle_line = f"3 {middle.hash.upper()} {middle.recorded_at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"
    anchors = tmp_path / "anchors.txt"
    anchors.write_bytes(
        b"\xef\xbb\xbf# shipped by the log shipper\r\n"
        + f"{GENESIS_LINE}\r\n\r\n   \t\r\n".encode()
        + f"  {middle_line}  \r\n".encode()
        + f"{position}\t{digest} {recorded_at}".encode()  # no final newline
    )
    result = run("verify", "--anchor", str(anchors), "--format", "json", "--db", db_url)
    assert result.exit_code == 0, result.output
    checks = json.loads(result.stdout)["anchors"]
    assert [(c["position"], c["ok"]) for c in checks] == [(0, True), (3, True), (7, True)]
    both = run(
        "verify",
        "--anchor",
        str(anchors),
        "--anchor",
        str(anchors),
        "--expect-head",
        f"{position}:{digest}",
        "--expect-head",
        f"0:{GENESIS_HASH}",
        "--format",
        "json",
        "--db",
        db_url,
    )
    assert both.exit_code == 0, both.output
    assert len(json.loads(both.stdout)["anchors"]) == 8


GOOD = f"7 {A_HASH} 2026-01-28T03:00:07.000000Z"
MALFORMED = {
    "a hash one character short": f"7 {A_HASH[:-1]} 2026-01-28T03:00:07.000000Z",
    "a hash one character long": f"7 {A_HASH}a 2026-01-28T03:00:07.000000Z",
    "a hash that is not hexadecimal": f"7 {A_HASH[:-1]}g 2026-01-28T03:00:07.000000Z",
    "a negative position": f"-7 {A_HASH} 2026-01-28T03:00:07.000000Z",
    "a signed position": f"+7 {A_HASH} 2026-01-28T03:00:07.000000Z",
    "a position with an underscore": f"1_0 {A_HASH} 2026-01-28T03:00:07.000000Z",
    "a position beyond BIGINT": f"{2**63} {A_HASH} 2026-01-28T03:00:07.000000Z",
    "two fields": f"7 {A_HASH}",
    "four fields": f"{GOOD} extra",
    "a space inside the time": f"7 {A_HASH} 2026-01-28 03:00:07",
    "a time without Z": f"7 {A_HASH} 2026-01-28T03:00:07.000000",
    "a time with an offset": f"7 {A_HASH} 2026-01-28T03:00:07+00:00",
    "an impossible date": f"7 {A_HASH} 2026-02-30T03:00:07Z",
    "a dash where a time is due": f"7 {A_HASH} -",
    "a genesis line with another hash": f"0 {A_HASH} -",
    "a genesis line with a time": f"0 {GENESIS_HASH} 2026-01-28T03:00:07Z",
    "positions and hash swapped": f"{A_HASH} 7 2026-01-28T03:00:07Z",
    "a colon form in a file": f"7:{A_HASH}",
}


@pytest.mark.parametrize("line", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_anchor_line_is_a_usage_error_naming_file_and_line(
    line: str, tmp_path: Path
) -> None:
    anchors = tmp_path / "anchors.txt"
    anchors.write_text(f"{GOOD}\n# a comment\n{line}\n{GOOD}\n", encoding="utf-8")
    result = run("verify", "--anchor", str(anchors), "--db", f"sqlite:///{tmp_path / 'no.db'}")
    assert result.exit_code == 2, result.output
    assert f"{anchors}:3: " in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "no.db").exists()  # refused before any database is opened


def test_every_malformed_line_is_kept_the_first_is_shown(tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.txt"
    anchors.write_text("7 x y\n\n8 x y\r\n", encoding="utf-8")
    result = run("verify", "--anchor", str(anchors), "--db", f"sqlite:///{tmp_path / 'no.db'}")
    assert result.exit_code == 2
    assert f"{anchors}:1: " in result.stderr
    assert "(and 1 more malformed line(s))" in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read the anchor file"),
        ("folder", "cannot read the anchor file"),
        (b"", "no anchor line in the file"),
        (b"# only a comment\r\n\r\n", "no anchor line in the file"),
        (GOOD.encode() + b"\n\xff\xfe\n", ":2: not valid UTF-8"),
    ],
    ids=["missing", "a folder", "empty", "comments only", "not UTF-8"],
)
def test_an_unusable_anchor_file_is_a_usage_error(
    content: bytes | str | None, expected: str, tmp_path: Path
) -> None:
    anchors = tmp_path / "anchors.txt"
    if content == "folder":
        anchors.mkdir()
    elif isinstance(content, bytes):
        anchors.write_bytes(content)
    result = run("verify", "--anchor", str(anchors), "--db", f"sqlite:///{tmp_path / 'no.db'}")
    assert result.exit_code == 2, result.output
    assert str(anchors) in result.stderr
    assert expected in result.stderr


@pytest.mark.parametrize(
    "value",
    [
        "7",
        "7:",
        f":{A_HASH}",
        f"x:{A_HASH}",
        f"7:{A_HASH[:10]}",
        f"7 {A_HASH}",
        "",
        f"{'9' * 5000}:{A_HASH}",
    ],
)
def test_a_malformed_expect_head_is_a_usage_error(value: str, tmp_path: Path) -> None:
    # 5,000 digits: int()'s own ValueError advised calling sys.set_int_max_str_digits().
    result = run("verify", "--expect-head", value, "--db", f"sqlite:///{tmp_path / 'no.db'}")
    assert result.exit_code == 2, result.output
    assert "--expect-head" in result.stderr
    assert "digits" not in result.stderr, result.stderr


def test_anchors_the_ledger_does_not_hold_fail_naming_them(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    sample_ledger(db_url)
    third = next(iter(ledger.read_all(after=2, limit=1)))
    when = third.recorded_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    other_time = third.recorded_at.replace(year=2020).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    anchors = tmp_path / "anchors.txt"
    anchors.write_text(
        f"3 {third.hash} {when}\n"  # holds
        f"3 {A_HASH} {when}\n"  # another hash at a stored position
        f"12 {third.hash} {when}\n"  # above the head
        f"3 {third.hash} {other_time}\n",  # the right hash, another time
        encoding="utf-8",
    )
    result = run("verify", "--anchor", str(anchors), "--format", "json", "--db", db_url)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert [a["ok"] for a in report["anchors"]] == [True, False, False, False]
    problems = {p["message"].split(":")[1]: p for p in report["problems"]}
    assert set(problems) == {"2", "3", "4"}
    assert f"the event stored there has hash {third.hash}" in problems["2"]["message"]
    assert "the ledger head is at position 7" in problems["3"]["message"]
    assert problems["3"]["position"] == 12
    assert "the hash matches but the event was recorded at" in problems["4"]["message"]
    text = run("verify", "--anchor", str(anchors), "--db", db_url).stdout
    assert not_broken(f"[anchor] anchor {anchors}:3: position 12 hash {third.hash}") in (
        not_broken(text)
    )
    assert "anchors: 1 of 4 held" in text
    inline = run("verify", "--expect-head", f"99:{third.hash}", "--db", db_url)
    assert inline.exit_code == 1
    expected_head = f"anchor --expect-head: position 99 hash {third.hash}"
    assert not_broken(expected_head) in not_broken(inline.stdout)


def test_anchors_keep_holding_while_the_ledger_grows(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    anchors = tmp_path / "anchors.txt"
    run_id = ledger.start_run(1, "SOURCE_1")
    for _ in range(3):
        assert run("anchor", "-o", str(anchors), "--db", db_url).exit_code == 0
        ledger.append([RunProgressed(run_id=run_id, records_fetched=1)])
    ledger.append([RunFinished(run_id=run_id, status="success")])
    Projector(ledger).run_once()
    result = run("verify", "--anchor", str(anchors), "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "anchors: 3 of 3 held" in result.stdout


# ---------------------------------------------------------------- skips


def test_an_operator_skip_passes_verify_and_the_report_names_it(
    ledger: Ledger, db_url: str
) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    Projector(ledger).run_once()
    dev_event = ledger.append([RunProgressed(run_id=run_id, records_fetched=10**6)])
    position = dev_event.events[0].position
    with records_fetched_capped(ledger):  # the projection stops at it: a skip is the way out
        assert run("project", "--db", db_url).exit_code == 1
    blank_actor = run(
        "project", "--skip-position", str(position), "--reason", "dev build", "--actor", " ",
        "--db", db_url,
    )  # fmt: skip
    assert blank_actor.exit_code == 2
    # The option's own check answers before the skip's "needs an actor".
    assert "'--actor': ' ' names no one" in blank_actor.stderr
    skipped = run(
        "project", "--skip-position", str(position), "--reason", "test event from a dev build",
        "--actor", "operator:al", "--db", db_url,
    )  # fmt: skip
    assert skipped.exit_code == 0, skipped.output
    verified = run("verify", "--format", "json", "--db", db_url)
    assert verified.exit_code == 0, verified.output
    (skip,) = json.loads(verified.stdout)["skips"]
    assert (skip["position"], skip["event_type"], skip["run_id"]) == (
        position,
        "RunProgressed",
        run_id,
    )
    assert skip["actor"] == "operator:al"
    text = run("verify", "--db", db_url).stdout
    skipped_line = f"position {position} (RunProgressed of run {run_id}) by operator:al"
    assert not_broken(skipped_line) in not_broken(text)
    report = json.loads(run("report", "--format", "json", "--db", db_url).stdout)
    (in_sync,) = [c for c in report["conditions"] if c["name"].startswith("projection in sync")]
    assert not in_sync["passed"]
    assert (
        f"1 skipped event(s) not in the table: position {position} (RunProgressed, run "
        f'{run_id}) skipped by operator:al: "test event from a dev build"'
    ) in in_sync["detail"]


def test_a_skip_made_after_the_clock_stepped_back_passes_verify(ledger: Ledger) -> None:
    """review43: the clock set back an hour after the append of a poison event (recorded_at
    never goes back, so the event stays recorded an hour ahead of the clock), then the
    operator's skip of it. The skip was dated by the clock alone, and verify called the honest
    skip forged: "skipped ... before the event was recorded" (and once dated right, "in the
    future" against the clock alone)."""
    ahead = datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
    with freeze_time(ahead):
        run_id = ledger.start_run(1, "SOURCE_1")
        event = ledger.append([RunProgressed(run_id=run_id, records_fetched=5000)]).events[0]
    with records_fetched_capped(ledger), freeze_time(ahead - timedelta(hours=1)):
        with pytest.raises(PoisonEventError):
            Projector(ledger).run_once()
        skip = Projector(ledger).skip(event.position, "over the cap", "operator:al")
        report = verify_all(ledger)
    assert skip.skipped_at >= event.recorded_at
    assert [p.message for p in report.by_check("skips")] == []


# ---------------------------------------------------------------- trigger definitions


def test_trigger_definitions_compare_by_tokens_not_spelling() -> None:
    stored = "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'no UPDATE (I1)'"
    assert sql_tokens(stored) == sql_tokens(
        "signal\n  sqlstate '45000'set message_text='no UPDATE (I1)'"
    )
    assert sql_tokens("CREATE TRIGGER `t` BEFORE") == sql_tokens('create trigger "T" before')
    for different in (
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'no update (I1)'",  # a literal's case
        "SIGNAL SQLSTATE '01000' SET MESSAGE_TEXT = 'no UPDATE (I1)'",
        "/*!50000 SET @x = 1 */ SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'no UPDATE (I1)'",
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'no UPDATE (I1)' -- note",
    ):
        assert sql_tokens(different) != sql_tokens(stored), different


# ---------------------------------------------------------------- serve


def anchor_config(tmp_path: Path, db_url: str, section: str) -> Path:
    path = tmp_path / "ledger.toml"
    path.write_text(
        f'database_url = "{db_url}"\n[spool]\ndir = "{tmp_path / "spool"}"\n{section}',
        encoding="utf-8",
    )
    return path


def test_serve_writes_anchor_lines_to_the_configured_file(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    config = load_config(anchor_config(tmp_path, db_url, '[anchor]\npath = "anchors.txt"\n'))
    assert config.anchor is not None
    assert config.anchor.path == str(tmp_path / "anchors.txt")  # beside the config file
    assert config.anchor.interval.total_seconds() == 3600
    service = LedgerService(config)
    try:
        service.add_jobs()
        job = service.scheduler.get_job("anchor")
        assert job is not None
        service.anchor_job()
        ledger.start_run(1, "SOURCE_1")
        service.anchor_job()
    finally:
        service.ledger.close()
        service.scrape_ledger.close()
    lines = (tmp_path / "anchors.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == GENESIS_LINE
    assert lines[1] == head_line(db_url)
    assert run("verify", "--anchor", str(tmp_path / "anchors.txt"), "--db", db_url).exit_code == 0


def run_anchor_job(
    tmp_path: Path, db_url: str, section: str, caplog: pytest.LogCaptureFixture
) -> None:
    """serve's anchor job, once, with the config's ``section``; its errors in ``caplog``."""
    service = LedgerService(load_config(anchor_config(tmp_path, db_url, section)))
    try:
        with caplog.at_level(logging.ERROR, logger="service.serve"):
            service.anchor_job()
    finally:
        service.ledger.close()
        service.scrape_ledger.close()


def test_a_failing_anchor_job_is_logged_not_raised(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-folder").mkdir()
    run_anchor_job(tmp_path, db_url, '[anchor]\npath = "a-folder"\n', caplog)
    assert "anchor: " in caplog.text
    assert "cannot append to the anchor file" in caplog.text


def test_an_anchor_file_replaced_by_a_fifo_nobody_reads_does_not_hold_the_job(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """serve's anchor job opened a FIFO nobody reads and waited in its ``open`` for ever: every
    later interval skipped ("maximum running instances"). A path that is not a regular file
    (checked at start, and again at each interval: a file replaced since) is an error logged;
    the job returns."""
    os.mkfifo(tmp_path / "anchors.fifo")
    finished = threading.Event()

    def job() -> None:
        run_anchor_job(tmp_path, db_url, '[anchor]\npath = "anchors.fifo"\n', caplog)
        finished.set()

    threading.Thread(target=job, daemon=True).start()
    if not finished.wait(60):
        # Free the thread held in open(): a reader opened and closed.
        os.close(os.open(tmp_path / "anchors.fifo", os.O_RDONLY | os.O_NONBLOCK))
        pytest.fail("the anchor job was still waiting on the FIFO after 60 s")
    assert "anchor: anchor.path is not a regular file" in caplog.text


def restore_an_older_backup(ledger: Ledger, kept: int) -> None:
    """What restoring a backup taken at position ``kept`` leaves: the events after it gone,
    the head and the registry as they were then, the triggers in place."""
    kept_row = ledger.engine.connect()
    try:
        event = kept_row.execute(
            ledger_events.select().where(ledger_events.c.position == kept)
        ).one()
    finally:
        kept_row.close()
    drop_triggers(ledger.engine)
    with ledger.engine.begin() as conn:
        conn.execute(ledger_events.delete().where(ledger_events.c.position > kept))
        conn.execute(
            update(ledger_head).values(
                last_position=kept, last_hash=event.hash, last_recorded_at=event.recorded_at
            )
        )
        conn.execute(ledger_runs.delete().where(ledger_runs.c.run_id > event.run_id))
    restore_triggers(ledger.engine)


def anchor_then_roll_back(ledger: Ledger, db_url: str, anchors: Path) -> None:
    """Two runs, each anchored in ``anchors``; then an older backup (of the first) restored:
    the file's last anchor is past the ledger's head."""
    ledger.start_run(1, "SOURCE_1")
    kept = ledger.head().last_position
    assert run("anchor", "-o", str(anchors), "--db", db_url).exit_code == 0
    ledger.start_run(2, "SOURCE_2")
    assert run("anchor", "-o", str(anchors), "--db", db_url).exit_code == 0
    restore_an_older_backup(ledger, kept)


def test_anchoring_a_history_rolled_back_behind_the_file_is_refused(
    ledger: Ledger, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An older backup restored behind the anchor file. Before: `ledger anchor --output` and
    serve's anchor job appended the older head below the newer one, exit 0, every interval;
    only a later `verify --anchor` told."""
    anchors = tmp_path / "anchors.txt"
    anchor_then_roll_back(ledger, db_url, anchors)
    anchored = anchors.read_text(encoding="utf-8")
    refused = run("anchor", "-o", str(anchors), "--db", db_url)
    assert refused.exit_code == 1, refused.output
    assert f"anchor {anchors} (its last anchor): position 2 hash" in refused.stderr
    assert "the ledger head is at position 1, below the anchored position" in refused.stderr
    assert "rolled back (an older backup restored?)" in refused.stderr
    assert f"nothing was appended to {anchors}" in refused.stderr
    assert anchors.read_text(encoding="utf-8") == anchored
    run_anchor_job(tmp_path, db_url, f'[anchor]\npath = "{anchors}"\n', caplog)
    assert "anchor: anchor" in caplog.text
    assert "rolled back" in caplog.text
    assert anchors.read_text(encoding="utf-8") == anchored
    # A new file anchors the ledger as it now is; the old one stays the evidence.
    fresh = tmp_path / "after-the-restore.txt"
    assert run("anchor", "-o", str(fresh), "--db", db_url).exit_code == 0
    assert run("verify", "--anchor", str(fresh), "--db", db_url).exit_code == 0


def test_a_refused_anchor_names_its_file_on_one_line(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    """The refusal of a rolled-back history named the anchor file raw, three times: a newline
    in its name started lines of their own ("Error: ..."), as --output's others no longer do."""
    anchors = tmp_path / "a\nError: forged"
    anchor_then_roll_back(ledger, db_url, anchors)
    refused = run("anchor", "-o", str(anchors), "--db", db_url)
    assert refused.exit_code == 1, refused.output
    assert "nothing was appended to" in refused.stderr
    assert refused.stderr.count("\n") == 1  # one line
    assert not any(line.startswith("Error: forged") for line in refused.stderr.splitlines())
    assert "a\\nError: forged (its last anchor)" in refused.stderr


def test_no_anchor_section_no_anchor_job(db_url: str, tmp_path: Path) -> None:
    service = LedgerService(load_config(anchor_config(tmp_path, db_url, "")))
    try:
        service.add_jobs()
        assert service.scheduler.get_job("anchor") is None
    finally:
        service.ledger.close()
        service.scrape_ledger.close()


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ('[anchor]\ninterval = "1h"\n', "anchor.path: Field required"),
        ('[anchor]\npath = ""\n', "anchor.path"),
        ('[anchor]\npath = "  "\n', "anchor.path: give a file path"),
        ('[anchor]\npath = "a\\u0000b"\n', "anchor.path: a path cannot contain a NUL"),
        ('[anchor]\npath = "a.txt"\ninterval = "0s"\n', "anchor.interval"),
        ('[anchor]\npath = "a.txt"\ninterval = 60\n', "anchor.interval"),
        ('[anchor]\npath = "a.txt"\nevery = "1h"\n', "anchor.every"),
    ],
)
def test_a_bad_anchor_section_is_named(section: str, named: str, tmp_path: Path) -> None:
    path = anchor_config(tmp_path, f"sqlite:///{tmp_path / 'l.db'}", section)
    with pytest.raises(ConfigurationError) as caught:
        load_config(path)
    assert named in str(caught.value)
