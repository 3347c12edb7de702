"""The connector SDK and the shipped connectors, on SQLite and on MariaDB."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from sqlalchemy import select
from sqlalchemy.engine import make_url

from connectors import (
    SAMPLE_CSV,
    CsvConnector,
    FetchError,
    HttpJsonConnector,
    RunContext,
    RunNotStartedError,
    Spool,
)
from connectors.schema import source_records
from ledger import Ledger, RecordedEvent, RunProgressed, StorageError, ValidationError
from ledger.events import RECORDED_NAMES
from projections import Projector
from service.cli import cli
from tests.net_support import JsonServer
from tests.projection_support import table_rows
from tests.reliability.fault_proxy import FaultProxy

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


def run_events(ledger: Ledger, run_id: int) -> list[RecordedEvent]:
    return ledger.read_run(run_id)


def finished(ledger: Ledger, run_id: int) -> dict[str, Any]:
    last = run_events(ledger, run_id)[-1]
    assert last.type == "RunFinished"
    return last.payload_data


def totals(ledger: Ledger, run_id: int) -> dict[str, int]:
    sums: dict[str, int] = {}
    for event in run_events(ledger, run_id):
        for name, value in event.event.counter_deltas().items():
            sums[name] = sums.get(name, 0) + value
    return sums


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- csv connector


def test_csv_run_ingests_real_records_with_non_zero_counters(ledger: Ledger, spool: Spool) -> None:
    """The seed's objective 4, met by a real connector on a real file."""
    result = CsvConnector(1, SAMPLE_CSV).run(ledger, spool=spool)
    assert result.status == "success"
    assert result.totals["records_fetched"] == result.totals["records_created"] == 20
    with ledger.engine.connect() as conn:
        stored = conn.execute(
            select(source_records.c.external_id, source_records.c.payload).where(
                source_records.c.source_id == 1
            )
        ).all()
    assert len(stored) == 20
    assert json.loads(dict(stored)["ST-0003"])["city"] == "Faro"
    Projector(ledger).run_once()
    row = table_rows(ledger)[result.run_id]
    assert (row["status"], row["connectorName"], row["recordsFetched"], row["recordsCreated"]) == (
        "success",
        "csv",
        20,
        20,
    )
    assert row["completedAt"] is not None
    assert row["duration"] is not None
    metadata = run_events(ledger, result.run_id)[0].payload_data["metadata"]
    assert set(metadata) == {"host", "pid", "connector_version", "trigger"}


def test_csv_rerun_skips_unchanged_and_counts_changes(
    ledger: Ledger, spool: Spool, tmp_path: Path
) -> None:
    data = write(tmp_path / "a.csv", "id,name\n1,a\n2,b\n3,c\n")
    CsvConnector(5, data).run(ledger, spool=spool)
    again = CsvConnector(5, data).run(ledger, spool=spool)
    assert again.totals["records_created"] == 0
    assert again.totals["records_skipped"] == 3
    write(data, "id,name\n1,a\n2,B\n3,c\n4,d\n")
    third = CsvConnector(5, data).run(ledger, spool=spool)
    assert {
        k: third.totals[k]
        for k in ("records_fetched", "records_created", "records_updated", "records_skipped")
    } == {"records_fetched": 4, "records_created": 1, "records_updated": 1, "records_skipped": 2}
    assert CsvConnector(6, data).run(ledger, spool=spool).totals["records_created"] == 4


def test_malformed_rows_make_a_partial_run_that_lists_them(
    ledger: Ledger, spool: Spool, tmp_path: Path
) -> None:
    data = write(tmp_path / "bad.csv", "id,name,city\n1,a,x\n2,b\n3,c,y,extra\n,d,z\n5,e,w\n")
    result = CsvConnector(1, data).run(ledger, spool=spool)
    assert (result.status, result.error_count) == ("partial", 3)
    assert (result.totals["records_fetched"], result.totals["records_created"]) == (5, 2)
    payload = finished(ledger, result.run_id)
    assert payload["status"] == "partial"
    assert payload["error_message"] == "3 error(s); first: line 3: expected 3 fields, got 2"
    messages = [e["message"] for e in payload["error_details"]["errors"]]
    assert messages == [
        "line 3: expected 3 fields, got 2",
        "line 4: expected 3 fields, got 4",
        "line 5: empty key 'id'",
    ]


def test_json_lines_input(ledger: Ledger, spool: Spool, tmp_path: Path) -> None:
    data = write(tmp_path / "r.jsonl", '{"id": 1, "v": 1}\n{"v": 2}\nnot json\n\n{"id": 3}\n')
    result = CsvConnector(1, data).run(ledger, spool=spool)
    assert (result.status, result.error_count, result.totals["records_created"]) == (
        "partial",
        2,
        2,
    )


# ---------------------------------------------------------------- run context


def test_a_body_that_raises_fails_the_run_with_its_traceback(ledger: Ledger, spool: Spool) -> None:
    def ingest_that_breaks() -> None:
        raise ConnectionResetError("source went away")

    run = RunContext(ledger, 1, "SOURCE_1", spool=spool)

    def body() -> None:
        with run:
            run.progress(fetched=3)
            ingest_that_breaks()

    with pytest.raises(ConnectionResetError):
        body()
    payload = finished(ledger, run.run_id)
    assert payload["status"] == "failed"
    assert payload["error_message"] == "ConnectionResetError: source went away"
    assert "ingest_that_breaks" in payload["error_details"]["traceback"]
    assert totals(ledger, run.run_id)["records_fetched"] == 3  # the remainder went out first


def test_keyboard_interrupt_is_failed_interrupted(ledger: Ledger, spool: Spool) -> None:
    with pytest.raises(KeyboardInterrupt), RunContext(ledger, 1, "SOURCE_1", spool=spool) as run:
        raise KeyboardInterrupt
    payload = finished(ledger, run.run_id)
    assert (payload["status"], payload["error_details"]["reason"]) == ("failed", "interrupted")
    assert payload["error_message"] == "interrupted by Ctrl-C (SIGINT)"
    assert ledger.run(run.run_id).state == "finished"  # type: ignore[union-attr]


def test_progress_is_coalesced_and_never_lost(ledger: Ledger, spool: Spool) -> None:
    with freeze_time("2026-03-01 12:00:00") as clock:
        with RunContext(
            ledger, 1, "SOURCE_1", spool=spool, progress_interval=5, heartbeat_interval=3600
        ) as run:
            for _ in range(4):  # within 5 s: no event yet
                run.progress(fetched=10, created=1)
                clock.tick(1)
            assert len(run_events(ledger, run.run_id)) == 1
            clock.tick(1)
            run.progress(fetched=10, skipped=2)  # 5 s since the start: one event with the sum
            events = run_events(ledger, run.run_id)
            assert len(events) == 2
            assert (
                events[1].payload_data["records_fetched"],
                events[1].payload_data["records_created"],
            ) == (50, 4)
            run.progress(updated=7, claims=1, coverage_cells=2)  # pending at exit
        types = [e.type for e in run_events(ledger, run.run_id)]
    assert types == ["RunStarted", "RunProgressed", "RunProgressed", "RunFinished"]
    assert totals(ledger, run.run_id) == {
        "records_fetched": 50,
        "records_created": 4,
        "records_updated": 7,
        "records_skipped": 2,
        "claims_created": 1,
        "coverage_cells_updated": 2,
    }


def test_error_count_is_exact_and_details_capped(ledger: Ledger, spool: Spool) -> None:
    with RunContext(ledger, 1, "SOURCE_1", spool=spool, max_error_details=3) as run:
        for i in range(10):
            run.error(f"row {i} bad", {"row": i})
    payload = finished(ledger, run.run_id)
    details = payload["error_details"]
    assert (
        payload["status"],
        details["error_count"],
        len(details["errors"]),
        details["errors_truncated"],
    ) == ("partial", 10, 3, True)
    assert details["errors"][0] == {"message": "row 0 bad", "details": {"row": 0}}


def test_invalid_progress_is_refused(ledger: Ledger, spool: Spool) -> None:
    from ledger import ValidationError

    with RunContext(ledger, 1, "SOURCE_1", spool=spool) as run:
        with pytest.raises(ValidationError, match="fetched=-1"):
            run.progress(fetched=-1)
        with pytest.raises(ValidationError):
            run.progress(created=1.5)  # type: ignore[arg-type]
    assert finished(ledger, run.run_id)["status"] == "success"


def test_heartbeats_keep_a_blocked_run_alive(ledger: Ledger, spool: Spool) -> None:
    """Real time: the body blocks until the ledger shows three heartbeats of its run."""
    with RunContext(ledger, 1, "SOURCE_1", spool=spool, heartbeat_interval=0.05) as run:
        deadline = time.monotonic() + 30
        while len(run_events(ledger, run.run_id)) < 4 and time.monotonic() < deadline:
            threading.Event().wait(0.01)  # the body "blocks": it reports nothing itself
    events = run_events(ledger, run.run_id)
    heartbeats = [e for e in events if e.type == "RunProgressed"]
    assert len(heartbeats) >= 3
    assert all(isinstance(e.event, RunProgressed) and e.event.is_heartbeat for e in heartbeats)
    assert events[-1].type == "RunFinished"
    count = len(events)
    threading.Event().wait(0.2)
    assert len(run_events(ledger, run.run_id)) == count  # heartbeats stop with the run


def test_an_unreachable_ledger_means_the_run_does_not_start(spool: Spool) -> None:
    ledger = Ledger.from_url("mysql+pymysql://app:sekret-pw@127.0.0.1:1/ledger")
    with pytest.raises(RunNotStartedError, match="not started: the ledger is unreachable") as e:
        RunContext(ledger, 1, "SOURCE_1", spool=spool).start()
    assert "sekret-pw" not in str(e.value)
    assert not spool.has_pending()


def test_sigkill_leaves_the_run_open_for_the_stuck_query(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    code = (
        "import sys\n"
        "from connectors import RunContext, Spool\n"
        "from ledger import Ledger\n"
        f"run = RunContext(Ledger.from_url({db_url!r}), 1, 'SOURCE_1', "
        f"spool=Spool({str(tmp_path)!r}))\n"
        "print(run.start(), flush=True)\n"
        "sys.stdin.read()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    run_id = int(process.stdout.readline())
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)  # reaps it and closes the pipes
    state = ledger.run(run_id)
    assert state is not None
    assert state.state == "open"


def test_sigterm_during_ledger_run_closes_the_run_as_interrupted(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    fifo = tmp_path / "never-ending.csv"
    write(fifo, "id,name\n" + "".join(f"{i},x\n" for i in range(200_000)))
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from service.cli import main; main()",
            "-v",
            "run",
            "csv",
            "--path",
            str(fifo),
            "--progress-interval",
            "0",
            "--spool-dir",
            str(tmp_path / "s"),
            "--db",
            db_url,
        ],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "started" in line:
            break
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=120)
    run_id = max(ledger.read_all(), key=lambda e: e.run_id).run_id
    payload = finished(ledger, run_id)
    assert payload["status"] == "failed"
    assert payload["error_details"]["reason"] == "interrupted"
    assert payload["error_message"] == "stopped by SIGTERM"  # not "SystemExit: 143"
    assert json.loads(stdout)["error"] == "stopped by SIGTERM"


# ---------------------------------------------------------------- http-json connector


def paged(query: dict[str, str], _call: int) -> tuple[int, Any]:
    page = int(query.get("page", "1"))
    items = [{"id": f"p{page}-{i}", "n": i} for i in range(3)] if page <= 3 else []
    return 200, {"data": {"items": items}}


def linked(query: dict[str, str], _call: int) -> tuple[int, Any]:
    cursor = int(query.get("cursor", "0"))
    body: dict[str, Any] = {"results": [{"key": f"k{cursor}-{i}"} for i in range(2)]}
    if cursor < 2:
        body["links"] = {"next": f"/linked?cursor={cursor + 1}"}
    return 200, body


def flaky(query: dict[str, str], call: int) -> tuple[int, Any]:
    if call == 2:  # page 2 fails once, then recovers
        return 500, {"error": "try again"}
    return paged(query, call)


def broken(_query: dict[str, str], _call: int) -> tuple[int, Any]:
    return 503, {"error": "down"}


@pytest.fixture
def api() -> Any:
    with JsonServer(
        {"/paged": paged, "/linked": linked, "/flaky": flaky, "/broken": broken}
    ) as server:
        yield server


def test_http_json_pages_by_parameter(ledger: Ledger, spool: Spool, api: JsonServer) -> None:
    connector = HttpJsonConnector(
        3, f"{api.base}/paged", records_path="data.items", page_param="page", backoff=0.01
    )
    result = connector.run(ledger, spool=spool)
    assert (result.status, result.totals["records_fetched"], result.totals["records_created"]) == (
        "success",
        9,
        9,
    )
    assert api.calls["/paged"] == 4  # three pages and the empty one that ends it


def test_http_json_follows_next_links(ledger: Ledger, spool: Spool, api: JsonServer) -> None:
    connector = HttpJsonConnector(
        3, f"{api.base}/linked", key="key", records_path="results", next_path="links.next"
    )
    result = connector.run(ledger, spool=spool)
    assert (result.status, result.totals["records_created"]) == ("success", 6)


def test_http_json_retries_a_page_that_fails_then_recovers(
    ledger: Ledger, spool: Spool, api: JsonServer
) -> None:
    connector = HttpJsonConnector(
        3, f"{api.base}/flaky", records_path="data.items", page_param="page", backoff=0.01
    )
    result = connector.run(ledger, spool=spool)
    assert (result.status, result.totals["records_created"]) == ("success", 9)
    assert api.calls["/flaky"] == 5


def test_http_json_against_a_server_that_stays_broken_fails(
    ledger: Ledger, spool: Spool, api: JsonServer
) -> None:
    connector = HttpJsonConnector(3, f"{api.base}/broken", retries=2, backoff=0.01)
    with pytest.raises(FetchError, match="still failing after 2 retries"):
        connector.run(ledger, spool=spool)
    assert api.calls["/broken"] == 3
    run_id = ledger.head().last_run_id
    payload = finished(ledger, run_id)
    assert payload["status"] == "failed"
    assert payload["error_details"]["exception"] == "FetchError"


# ---------------------------------------------------------------- outage and the spool


def test_sqlite_outage_spools_then_delivers_in_order(
    ledger: Ledger, backend: str, spool: Spool
) -> None:
    if backend != "sqlite":
        pytest.skip("the MariaDB outage goes through a TCP proxy (next test)")
    path = make_url(ledger.url).database
    impatient = Ledger.from_url(ledger.url, sqlite_busy_timeout_ms=50)
    with RunContext(impatient, 1, "SOURCE_1", spool=spool, progress_interval=0) as run:
        run.progress(fetched=1)
        blocker = sqlite3.connect(str(path), isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
        run.progress(fetched=2)
        run.progress(fetched=4)
        assert spool.status().pending == 2
        blocker.execute("ROLLBACK")
        blocker.close()
        run.progress(fetched=8)  # delivers the spooled two first, then itself
        assert not spool.has_pending()
    assert run.result is not None
    assert run.result.spooled
    events = run_events(ledger, run.run_id)
    assert [e.payload_data.get("records_fetched") for e in events[1:-1]] == [1, 2, 4, 8]
    assert [e.version for e in events] == list(range(1, 7))
    assert events[-1].type == "RunFinished"


def test_mariadb_outage_through_a_cut_proxy(
    ledger: Ledger, backend: str, db_url: str, spool: Spool
) -> None:
    if backend != "mysql":
        pytest.skip("needs a server to put a proxy in front of")
    url = make_url(db_url)
    proxy = FaultProxy((url.host or "127.0.0.1", url.port or 3306))
    proxied = Ledger.from_url(
        url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    )
    try:
        with RunContext(proxied, 1, "SOURCE_1", spool=spool, progress_interval=0) as run:
            for _ in range(3):
                run.progress(fetched=1, created=1)
            proxy.outage()
            for _ in range(3):
                run.progress(fetched=10, created=10)
            run.error("one bad record")
            assert spool.status().pending == 3
            proxy.restore()
            run.progress(fetched=100, skipped=100)
    finally:
        proxy.close()
        proxied.close()
    assert run.result is not None
    assert run.result.status == "partial"
    assert not spool.has_pending()
    events = run_events(ledger, run.run_id)
    assert len({e.event_id for e in events}) == len(events) == 1 + 3 + 3 + 1 + 1
    assert totals(ledger, run.run_id) == {
        "records_fetched": 133,
        "records_created": 33,
        "records_updated": 0,
        "records_skipped": 100,
        "claims_created": 0,
        "coverage_cells_updated": 0,
    }
    assert ledger.run(run.run_id).state == "finished"  # type: ignore[union-attr]


def test_spool_flush_and_status_through_the_cli(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    run_id = ledger.start_run(1, "SOURCE_1")
    local = Spool(spool_dir)
    local.put(
        [
            RunProgressed(run_id=run_id, records_fetched=5),
            RunProgressed(run_id=9999, records_fetched=1),
        ]
    )  # 9999 never started
    runner = CliRunner()
    status = runner.invoke(cli, ["spool", "status", "--spool-dir", str(spool_dir)])
    assert status.exit_code == 1
    assert "pending:   2 event(s) of 2 run(s)" in status.output
    flushed = runner.invoke(cli, ["spool", "flush", "--spool-dir", str(spool_dir), "--db", db_url])
    assert flushed.exit_code == 1  # one event is refused for good
    assert json.loads(flushed.stdout) == {
        "delivered": 1,
        "duplicates": 0,
        "rejected": 1,
        "remaining": 0,
    }
    assert totals(ledger, run_id)["records_fetched"] == 5
    status = runner.invoke(
        cli, ["spool", "status", "--spool-dir", str(spool_dir), "--format", "json"]
    )
    report = json.loads(status.stdout)
    assert (report["pending"], report["rejected"]) == (0, 1)
    assert "no RunStarted" in report["rejected_events"][0]["reason"]
    again = runner.invoke(cli, ["spool", "flush", "--spool-dir", str(spool_dir), "--db", db_url])
    assert json.loads(again.stdout)["delivered"] == 0


def test_ledger_run_csv_cli(ledger: Ledger, db_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["run", "csv", "--source-id", "4", "--spool-dir", str(tmp_path), "--db", db_url]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["records_created"]) == ("success", 20)
    bad = write(tmp_path / "bad.csv", "id,name\n1\n")
    partial = runner.invoke(
        cli, ["run", "csv", "--path", str(bad), "--spool-dir", str(tmp_path), "--db", db_url]
    )
    assert partial.exit_code == 1
    assert json.loads(partial.stdout)["status"] == "partial"
    help_text = runner.invoke(cli, ["run", "csv", "--help"]).output
    assert "by default the sample the package ships" in " ".join(help_text.split())


def test_a_lost_reply_to_run_started_does_not_orphan_the_run(
    ledger: Ledger, spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_append = Ledger.append
    calls: list[int] = []

    def commit_then_lose_the_reply(self: Ledger, events: Any, **kwargs: Any) -> Any:
        result = real_append(self, events, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            from ledger import StorageError

            raise StorageError("connection lost after COMMIT")
        return result

    monkeypatch.setattr(Ledger, "append", commit_then_lose_the_reply)
    run = RunContext(ledger, 1, "SOURCE_1", spool=spool)
    run_id = run.start()
    monkeypatch.undo()
    run.finish()
    events = ledger.read_run(run_id)
    assert [e.type for e in events] == ["RunStarted", "RunFinished"]
    assert ledger.head().last_run_id == run_id  # one run, not an orphan and a second one


def test_a_file_where_the_spool_folder_should_be_is_a_usage_error(tmp_path: Path) -> None:
    not_a_folder = write(tmp_path / "spool", "a file\n")
    (tmp_path / "ledger.db").touch()  # a database that exists (a missing one is refused)
    database = ["--db", f"sqlite:///{tmp_path}/ledger.db"]
    for args in (["spool", "flush", *database], ["spool", "status"]):
        result = CliRunner().invoke(cli, [*args, "--spool-dir", str(not_a_folder)])
        assert result.exit_code == 2, result.output
        assert "is not a folder" in result.output


def test_spool_status_of_a_folder_never_used_creates_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "never-used"
    result = CliRunner().invoke(cli, ["spool", "status", "--spool-dir", str(folder)])
    assert result.exit_code == 0, result.output
    assert "pending:   0 event(s)" in result.output
    assert not folder.exists()


@pytest.mark.parametrize("name", ["stations ", "sta\u200btions", "\u202estations"])
def test_a_connector_name_that_could_pass_for_another_is_refused_before_the_run(
    ledger: Ledger, spool: Spool, name: str
) -> None:
    with pytest.raises(ValidationError, match=r"^connector_name: .* is not allowed$"):
        CsvConnector(1, SAMPLE_CSV, name=name).run(ledger, spool=spool)
    assert ledger.head().last_position == 0


def test_a_spooled_event_that_todays_rules_refuse_is_set_aside_not_blocking(
    ledger: Ledger, spool: Spool
) -> None:
    """An event spooled by an earlier release with a name the name rule now refuses goes to
    the rejected table; the events behind it are delivered."""
    first, second = ledger.start_run(1, "SOURCE_1"), ledger.start_run(2, "SOURCE_2")
    old = RunProgressed.model_validate(
        {"run_id": first, "records_fetched": 1, "actor": "connector:stations\u200b@host:42"},
        context=RECORDED_NAMES,
    )
    spool.put([old, RunProgressed(run_id=second, records_fetched=2)])
    result = spool.flush(ledger)
    assert (result.delivered, result.rejected, result.remaining) == (1, 1, 0)
    assert [e.type for e in ledger.read_run(second)] == ["RunStarted", "RunProgressed"]
    assert "U+200B ZERO WIDTH SPACE" in str(spool.rejected()[0]["reason"])


def test_http_json_secrets_never_reach_the_ledger(ledger: Ledger, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    connector = HttpJsonConnector(
        1,
        f"http://user:pass-word@127.0.0.1:{port}/x?api_key=TOPSECRET",
        retries=1,
        backoff=0.01,
        timeout=1,
    )
    with pytest.raises(Exception, match="still failing"):
        connector.run(ledger, spool=Spool(tmp_path))
    stored = " ".join(e.payload for e in ledger.read_all())
    assert "TOPSECRET" not in stored
    assert "pass-word" not in stored
    assert "api_key=***" in stored


def test_record_keys_are_case_sensitive_on_both_databases(ledger: Ledger, tmp_path: Path) -> None:
    data = tmp_path / "keys.csv"
    data.write_text("id,v\nabc,1\nABC,2\nabc ,3\n")
    result = CsvConnector(1, data).run(ledger, spool=Spool(tmp_path))
    # "abc" and "ABC" are two records everywhere; "abc " is "abc" (keys are trimmed, as
    # MariaDB's PAD SPACE collations would compare them anyway), here with a new value.
    assert (result.status, result.totals["records_created"], result.totals["records_updated"]) == (
        "success",
        2,
        1,
    )


def test_counts_survive_a_failed_send_and_spool(
    ledger: Ledger, backend: str, tmp_path: Path
) -> None:
    if backend != "sqlite":
        pytest.skip("the outage is made with SQLite's write lock")
    blocker_file = tmp_path / "not-a-folder"
    blocker_file.write_text("")
    broken_spool = Spool(blocker_file / "spool")  # cannot be created: a file is in the way
    impatient = Ledger.from_url(ledger.url, sqlite_busy_timeout_ms=50)
    run = RunContext(impatient, 1, "SOURCE_1", spool=broken_spool, progress_interval=0)
    run.start()
    path = make_url(ledger.url).database
    blocker = sqlite3.connect(str(path), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StorageError, match="spool"):
        run.progress(fetched=5)
    with pytest.raises(StorageError):
        run.finish()
    blocker.execute("ROLLBACK")
    blocker.close()
    result = run.finish()  # nothing was lost: the 5 go out before RunFinished
    assert result.status == "success"
    fetched = sum(e.payload_data.get("records_fetched", 0) for e in ledger.read_run(run.run_id))
    assert fetched == 5


def test_a_corrupt_spool_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "spool.db").write_bytes(b"this is not a database" * 100)
    result = CliRunner().invoke(cli, ["spool", "status", "--spool-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "spool" in result.stderr
    assert "Traceback" not in result.output
