"""Every event that ``append`` accepts projects, on both databases.

The ledger refuses at append what no column could hold (JSON nested past the limit, legacy
metadata the projection reads that the legacy TIMESTAMP cannot hold); what it accepts but a
legacy column cannot hold whole (a 70,000-byte ``errorMessage``) is kept whole in the ledger and
stored with a visible marker. When the database still refuses a row (an operator's constraint),
the events before it commit and the error is recorded where ``ledger status``, the metrics and
the report show it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import text

from connectors import RunContext, Spool
from forensics.report import build_report
from ledger import (
    Ledger,
    RecordedEvent,
    RunFinished,
    RunProgressed,
    RunStarted,
    RunTimedOut,
    StreamError,
    Thresholds,
    ValidationError,
)
from ledger.events import actor_problem, name_problem
from ledger.limits import MAX_JSON_DEPTH
from ledger.mapper import payload_json
from projections import PoisonEventError, Projector, rebuild
from projections import projector as projector_module
from projections.fold import LEGACY_TEXT_BYTES, RESERVED_DETAIL_KEYS, fold
from projections.projector import PoisonBackoff
from service import load_config
from service.cli import cli
from service.metrics import LedgerCollector, collect_figures
from service.serve import LedgerService
from tests import support
from tests.projection_support import (
    append_raw,
    records_fetched_capped,
    replayed_rows,
    table_rows,
)
from tests.service.support import write_config


def nested(levels: int, leaf: object = "bottom") -> object:
    value = leaf
    for level in range(levels):
        value = {f"level{levels - level}": value}
    return value


def project(ledger: Ledger) -> None:
    Projector(ledger).run_once()


def row(ledger: Ledger, run_id: int) -> dict[str, Any]:
    return table_rows(ledger)[run_id]


# ---------------------------------------------------------------- errorMessage longer than TEXT


def test_an_error_message_longer_than_text_is_kept_in_the_ledger_and_marked(
    ledger: Ledger,
) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    message = "é" * 20_000 + "𝄞" * 10_000 + "end"  # 80,003 bytes of UTF-8, 2- and 4-byte chars
    appended = ledger.append([RunFinished(run_id=run_id, status="failed", error_message=message)])
    position = appended.last_position
    project(ledger)
    stored = row(ledger, run_id)["errorMessage"]
    assert len(stored.encode("utf-8")) <= LEGACY_TEXT_BYTES
    assert stored.endswith(
        f" … [truncated: {len(message.encode()):,} bytes; the full text is in the ledger, "
        f"position {position}]"
    )
    assert message.startswith(stored.split(" … [truncated")[0])
    assert ledger.read_run(run_id)[-1].payload_data["error_message"] == message
    assert Projector(ledger).checkpoint().position == ledger.head().last_position
    rebuild(ledger)
    assert row(ledger, run_id)["errorMessage"] == stored


# ---------------------------------------------------------------- JSON nesting


def test_error_details_nested_past_the_limit_are_refused_naming_field_and_limit(
    ledger: Ledger,
) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    too_deep = nested(MAX_JSON_DEPTH + 1)
    with pytest.raises(ValidationError, match=r"error_details: nested 21 levels deep; the limit"):
        ledger.append([RunFinished(run_id=run_id, status="failed", error_details=too_deep)])  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"metadata: nested 32 levels deep"):
        ledger.start_run(1, "SOURCE_1", metadata=nested(32))  # type: ignore[arg-type]
    assert ledger.head().last_position == 1
    # At the limit, even under a reserved key (kept one level further down), it projects.
    details = {"late": nested(MAX_JSON_DEPTH - 1), "own": nested(MAX_JSON_DEPTH - 1)}
    ledger.append([RunFinished(run_id=run_id, status="failed", error_details=details)])
    project(ledger)
    stored = row(ledger, run_id)["errorDetails"]
    assert stored == {"own": details["own"], "reported": {"late": details["late"]}}


def test_the_sdk_keeps_details_too_deep_for_the_ledger_as_clipped_text(
    ledger: Ledger, tmp_path: Path
) -> None:
    with RunContext(ledger, 1, "SOURCE_1", spool=Spool(tmp_path / "spool")) as run:
        run.error("a 28-level report", details=nested(28, "x" * 10))  # type: ignore[arg-type]
    project(ledger)
    stored = row(ledger, run.run_id)
    assert stored["status"] == "partial"
    clipped = stored["errorDetails"]["errors"][0]["details"]["clipped"]
    assert '"level28":"' + "x" * 10 in clipped


def test_events_stored_before_the_nesting_limit_still_project(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    payload = {"status": "failed", "error_details": nested(40), "error_message": None}
    payload.update(dict.fromkeys(("records_fetched", "records_created", "records_updated"), 0))
    payload.update(dict.fromkeys(("records_skipped", "claims_created"), 0))
    payload["coverage_cells_updated"] = 0
    append_raw(ledger, run_id, "RunFinished", json.dumps(payload))
    project(ledger)
    stored = row(ledger, run_id)
    assert stored["status"] == "failed"
    # 31 levels as JSON; below them, the rest of the value as its JSON text.
    deepest: Any = stored["errorDetails"]
    for _ in range(30):
        (deepest,) = deepest.values()
    assert isinstance(deepest, str)
    assert deepest.endswith('"bottom"}}}}}}}}}}')
    assert Projector(ledger).checkpoint().error_position is None


# ---------------------------------------------------------------- metadata the projection reads


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2001-02-03T04:05:06", "has no time zone"),
        ("1900-01-01T00:00:00Z", "outside the legacy TIMESTAMP range"),
        ("2999-01-01T00:00:00+00:00", "outside the legacy TIMESTAMP range"),
        ("last tuesday", "is not an ISO-8601 time"),
        (1_000_000, "must be ISO-8601 text with a zone, got int"),
    ],
)
def test_legacy_created_at_is_checked_at_append(
    ledger: Ledger, value: object, message: str
) -> None:
    with pytest.raises(ValidationError, match=f"metadata.legacy_created_at: .*{message}"):
        ledger.start_run(
            1,
            "SOURCE_1",
            metadata={"imported": True, "legacy_created_at": value},
            actor="import:legacy",
        )
    assert ledger.head().last_position == 0


def test_imported_must_be_a_boolean(ledger: Ledger) -> None:
    with pytest.raises(ValidationError, match=r"metadata\.imported: must be true or false"):
        ledger.start_run(1, "SOURCE_1", metadata={"imported": "yes"})


def test_only_the_import_can_date_a_runs_created_at(ledger: Ledger, db_url: str) -> None:
    """``imported: true`` makes the projection take ``createdAt`` from the metadata: a
    connector writing it could date its run 1970 or 2038 in the legacy table. Only an import's
    actor (``import:…``, which the API grants to operators only) may; the run is refused."""
    forged = {"imported": True, "legacy_created_at": "1999-01-01T00:00:00Z"}
    for actor in (None, "connector:sneaky@host:1", "importer", "operator:alice"):
        with pytest.raises(ValidationError, match=r"metadata\.imported: .*import:"):
            ledger.start_run(1, "SOURCE_1", metadata=forged, actor=actor)
    line = {"type": "RunStarted", "source_id": 1, "connector_name": "S", "metadata": forged}
    result = CliRunner().invoke(cli, ["append", "-", "--db", db_url], input=json.dumps(line))
    assert result.exit_code == 2, result.output
    assert "metadata.imported" in result.output
    assert ledger.head().last_position == 0
    # Not a claim at all: imported false, or the import itself.
    ledger.start_run(1, "SOURCE_1", metadata={"imported": False})
    run_id = ledger.start_run(1, "SOURCE_1", metadata=forged, actor="import:legacy")
    project(ledger)
    assert row(ledger, run_id)["createdAt"] == datetime(1999, 1, 1, tzinfo=UTC)


def test_a_valid_legacy_created_at_is_the_rows_created_at(ledger: Ledger) -> None:
    created = "2001-02-03T04:05:06.700+02:00"
    run_id = ledger.start_run(
        1,
        "SOURCE_1",
        metadata={"imported": True, "legacy_created_at": created},
        actor="import:legacy",
        occurred_at=datetime(2001, 2, 3, 2, 6, tzinfo=UTC),
    )
    project(ledger)
    assert row(ledger, run_id)["createdAt"] == datetime(2001, 2, 3, 2, 5, 6, tzinfo=UTC)


def test_a_legacy_created_at_stored_before_the_check_falls_back_to_recorded_at() -> None:

    now = datetime(2026, 5, 1, 12, 0, 0, 500, tzinfo=UTC)
    for bad in ("2001-02-03T04:05:06", "1900-01-01T00:00:00Z", 7, None):
        event = RunStarted(run_id=1, source_id=1, connector_name="S", occurred_at=now)
        payload = json.loads(payload_json(event))
        payload["metadata"] = {"imported": True, "legacy_created_at": bad}
        recorded = RecordedEvent(
            position=1,
            event_id=str(event.event_id),
            run_id=1,
            version=1,
            type="RunStarted",
            schema_version=1,
            payload=json.dumps(payload),
            occurred_at=now,
            recorded_at=now,
            actor=None,
            prev_hash="0" * 64,
            hash="0" * 64,
        )
        folded, _ = fold(None, recorded)
        assert folded["createdAt"] == now.replace(microsecond=0)


# ---------------------------------------------------------------- the ledger's own details


def test_callers_cannot_erase_or_forge_the_ledgers_own_details(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    big = 2**31 - 1
    ledger.append([RunProgressed(run_id=run_id, records_fetched=big) for _ in range(2)])
    forged = {
        "counter_overflow": {},
        "late": "yes",
        "late_heartbeats": {"count": "many"},
        "reason": "stale",
        "detected_by": "sweeper",
        "reported": 1,
        "rows": 7,
    }
    ledger.append([RunFinished(run_id=run_id, status="failed", error_details=forged)])
    project(ledger)
    details = row(ledger, run_id)["errorDetails"]
    assert details["counter_overflow"] == {"recordsFetched": 2 * big}
    assert details["rows"] == 7
    assert details["reported"] == {k: v for k, v in forged.items() if k != "rows"}
    assert set(details) == {"counter_overflow", "rows", "reported"}


def test_late_progress_listed_is_bounded_and_a_late_verdict_still_listed(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunTimedOut(run_id=run_id, reason="stale", detected_by="sweeper")])
    late = [RunProgressed(run_id=run_id, records_fetched=1) for _ in range(130)]
    ledger.append(late)
    ledger.append([RunFinished(run_id=run_id, status="success", error_message="done after all")])
    project(ledger)
    stored = row(ledger, run_id)
    assert stored["recordsFetched"] == 130  # every late count is still added
    listed = stored["errorDetails"]["late"]
    assert [e["type"] for e in listed] == ["RunProgressed"] * 100 + ["RunFinished"]
    assert listed[-1]["error_message"] == "done after all"
    omitted = stored["errorDetails"]["late_omitted"]
    assert (omitted["count"], omitted["last_position"]) == (30, 132)
    assert table_rows(ledger) == replayed_rows(ledger)


# ---------------------------------------------------------------- a row the database refuses


@pytest.fixture
def capped_records_fetched(ledger: Ledger) -> Iterator[None]:
    with records_fetched_capped(ledger):
        yield


def cli_json(*args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--format", "json"], catch_exceptions=False)
    return json.loads(result.stdout)


def metrics(ledger: Ledger) -> str:
    registry = CollectorRegistry()
    registry.register(LedgerCollector(lambda: collect_figures(ledger, Thresholds(), None, None)))
    return generate_latest(registry).decode()


@pytest.mark.usefixtures("capped_records_fetched")
def test_a_refused_row_stops_the_projection_at_its_event_after_the_events_before_it(
    ledger: Ledger, db_url: str
) -> None:
    first = ledger.start_run(1, "SOURCE_1")
    second = ledger.start_run(2, "SOURCE_2")
    ledger.append(
        [
            RunProgressed(run_id=first, records_fetched=10),
            RunProgressed(run_id=second, records_fetched=5000),  # refused by the database
            RunFinished(run_id=first, status="success"),
        ]
    )
    with pytest.raises(PoisonEventError, match="position 4 \\(RunProgressed\\)") as caught:
        project(ledger)
    assert "the database refused its row" in str(caught.value)
    checkpoint = Projector(ledger).checkpoint()
    assert (checkpoint.position, checkpoint.error_position) == (3, 4)
    assert row(ledger, first)["recordsFetched"] == 10  # the events before it committed
    assert row(ledger, second)["recordsFetched"] == 0

    status = cli_json("status", "--db", db_url)
    error = status["projections"][0]["error"]
    assert (error["position"], error["type"]) == (4, "RunProgressed")
    assert "refused" in error["message"]
    table = CliRunner().invoke(cli, ["status", "--db", db_url], catch_exceptions=False).stdout
    assert "STOPPED at position 4 (RunProgressed)" in table
    assert "ledger_projection_error 1.0" in metrics(ledger)
    report = build_report(ledger, thresholds=Thresholds(timedelta(hours=1)))
    (in_sync,) = (c for c in report["conditions"] if c["name"].startswith("projection in sync"))
    assert not in_sync["passed"]
    assert "stopped at position 4 (RunProgressed)" in in_sync["detail"]

    # Every retry stops at the same event, and nothing after it is applied.
    with pytest.raises(PoisonEventError):
        project(ledger)
    assert row(ledger, first)["status"] == "running"
    # The operator's way out: skip it; the projection goes on and the error clears.
    Projector(ledger).skip(4, "over the cap", "operator:test")
    project(ledger)
    assert row(ledger, first)["status"] == "success"
    assert Projector(ledger).checkpoint().error_position is None
    assert "ledger_projection_error 0.0" in metrics(ledger)


def test_an_operators_trigger_that_signals_stops_the_projection_at_its_event(
    ledger: Ledger, backend: str
) -> None:
    """MariaDB reports a trigger's SIGNAL as error 1644, not as a data error: still the data."""
    if backend != "mysql":
        pytest.skip("SIGNAL is MariaDB's; SQLite's RAISE(ABORT) is covered above")
    with ledger.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TRIGGER test_forbidden BEFORE UPDATE ON ingestion_runs FOR EACH ROW "
                "BEGIN IF NEW.errorMessage LIKE '%forbidden%' THEN SIGNAL SQLSTATE '45000' "
                "SET MESSAGE_TEXT = 'operator rule: forbidden'; END IF; END"
            )
        )
    try:
        first, second = ledger.start_run(1, "SOURCE_1"), ledger.start_run(2, "SOURCE_2")
        project(ledger)
        ledger.append([RunFinished(run_id=first, status="success")])
        ledger.append([RunFinished(run_id=second, status="failed", error_message="forbidden")])
        with pytest.raises(PoisonEventError, match="operator rule: forbidden"):
            project(ledger)
        checkpoint = Projector(ledger).checkpoint()
        assert (checkpoint.position, checkpoint.error_position) == (3, 4)
        assert row(ledger, first)["status"] == "success"
    finally:
        with ledger.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER IF EXISTS test_forbidden"))


@pytest.mark.usefixtures("capped_records_fetched")
def test_follow_backs_off_at_a_refused_row_and_resumes_after_a_skip(ledger: Ledger) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id, records_fetched=5000)])
    ledger.append([RunFinished(run_id=run_id, status="success")])
    projector = Projector(ledger)
    stop = threading.Event()
    follower = threading.Thread(target=projector.follow, args=(stop, 0.01))
    follower.start()
    try:
        wait_until(lambda: projector.checkpoint().error_position == 2)
        projector.skip(2, "over the cap", "operator:test")
        wait_until(lambda: projector.checkpoint().position == 3)
        assert row(ledger, run_id)["status"] == "success"
    finally:
        stop.set()
        follower.join(timeout=60)
    assert not follower.is_alive()


def test_the_pause_after_a_stop_doubles_up_to_its_maximum_and_resets() -> None:
    backoff = PoisonBackoff(1.0, maximum=5.0)
    assert backoff.due()
    assert [backoff.failed() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert not backoff.due()
    backoff.reset()
    assert backoff.due()
    assert backoff.failed() == 1.0


def wait_until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.01)


def test_replay_equals_projection_for_an_imported_run_in_another_zone(ledger: Ledger) -> None:
    zone = timezone(timedelta(hours=-11))
    ledger.start_run(
        1,
        "SOURCE_1",
        metadata={"imported": True, "legacy_created_at": "1970-01-01T00:00:01+00:00"},
        actor="import:legacy",
        occurred_at=datetime(1970, 1, 1, 0, 0, 2, tzinfo=zone),
    )
    project(ledger)
    assert table_rows(ledger) == replayed_rows(ledger)


# ---------------------------------------------------------------- the property


EARLIEST = datetime(1970, 1, 1, 0, 0, 1)
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12)), UTC])
any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
# Names the ledger accepts: any plane, no control, format or separator characters at all (and
# what else the name rule refuses: a combining mark first, a Hangul filler).
name_chars = st.characters(blacklist_categories=("Cs", "Cc", "Cf", "Zs", "Zl", "Zp", "Cn", "Co"))


def name_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(name_chars, min_size=1, max_size=max_size).filter(
        lambda name: name_problem(name) is None
    )


names = name_text(100)
actors = st.none() | name_text(200).filter(lambda name: actor_problem(name) is None)
reserved = st.sampled_from(sorted(RESERVED_DETAIL_KEYS))
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(reserved | any_text, inner, max_size=3)
    ),
    max_leaves=12,
)
deep_values = st.builds(
    nested, st.sampled_from([MAX_JSON_DEPTH - 1]) | st.integers(1, MAX_JSON_DEPTH - 1), scalars
)
details = st.dictionaries(reserved | any_text, json_values | deep_values, max_size=5)
# Up to 280 KB of UTF-8, most often right at the legacy TEXT column's 65,535-byte edge for
# characters of 1 to 4 bytes.
edges = [16_383, 16_384, 21_845, 21_846, 32_767, 32_768, 65_535, 65_536, 70_000]
long_text = st.builds(
    lambda char, count, tail: char * count + tail,
    st.sampled_from(["a", "é", "€", "𝄞"]) | st.characters(blacklist_categories=("Cs",)),
    st.sampled_from(edges) | st.integers(0, 70_000),
    any_text,
)
counters = st.integers(0, 2**31 - 1)


@st.composite
def moments(draw: st.DrawFn, latest: datetime) -> datetime:
    naive = draw(st.datetimes(min_value=EARLIEST, max_value=latest.replace(tzinfo=None)))
    return naive.replace(tzinfo=UTC).astimezone(draw(ZONES))


@st.composite
def legacy_metadata(draw: st.DrawFn) -> dict[str, Any] | None:
    metadata: dict[str, Any] | None = draw(st.none() | st.dictionaries(any_text, json_values))
    if metadata is not None and draw(st.booleans()):
        created = draw(
            st.datetimes(min_value=EARLIEST, max_value=datetime(2038, 1, 19, 3, 14, 7))
        ).replace(tzinfo=UTC)
        metadata["imported"] = draw(st.booleans())
        metadata["legacy_created_at"] = created.astimezone(draw(ZONES)).isoformat()
    return metadata


@st.composite
def run_scripts(draw: st.DrawFn, ref: str, latest: datetime) -> list[Any]:
    """One run's events (a run_ref stands for its id): started, progressed, and ended by its
    connector, by a timeout (with late facts after it), or left open."""
    when = moments(latest)
    metadata = draw(legacy_metadata())
    imported = bool(metadata and metadata.get("imported") is True)  # the import's own mark
    events: list[Any] = [
        RunStarted(
            run_ref=ref,
            source_id=draw(counters),
            connector_name=draw(names),
            actor="import:legacy" if imported else draw(actors),
            occurred_at=draw(when),
            metadata=metadata,
        )
    ]

    def progress() -> RunProgressed:
        return RunProgressed(
            run_ref=ref,
            occurred_at=draw(when),
            actor=draw(actors),
            records_fetched=draw(counters),
            records_skipped=draw(counters),
            coverage_cells_updated=draw(counters),
        )

    def finish() -> RunFinished:
        return RunFinished(
            run_ref=ref,
            occurred_at=draw(when),
            actor=draw(actors),
            status=draw(st.sampled_from(["success", "partial", "failed"])),
            error_message=draw(long_text | st.none()),
            error_details=draw(st.none() | details),
            records_created=draw(counters),
        )

    events += [progress() for _ in range(draw(st.integers(0, 3)))]
    ending = draw(st.sampled_from(["finish", "timeout", "open"]))
    if ending == "finish":
        events.append(finish())
    elif ending == "timeout":
        events.append(
            RunTimedOut(
                run_ref=ref,
                occurred_at=draw(when),
                reason=draw(st.text(name_chars, min_size=1, max_size=2000)),
                threshold_seconds=draw(st.none() | st.integers(0, 2**62)),
                last_event_at=draw(st.none() | moments(datetime(9999, 12, 30, tzinfo=UTC))),
                detected_by=draw(name_text(200)),
            )
        )
        events += [progress() for _ in range(draw(st.integers(0, 2)))]
        if draw(st.booleans()):
            events.append(finish())
    return events


@pytest.mark.slow
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(data=st.data())
def test_any_batch_that_append_accepts_projects(
    data: st.DataObject, backend: str, sqlite_template: Path, tmp_path: Path, db_url: str
) -> None:
    latest = datetime.now(UTC) + timedelta(minutes=4)
    runs = data.draw(st.integers(1, 3))
    events = [e for index in range(runs) for e in data.draw(run_scripts(f"run{index}", latest))]
    ledger = support.fresh_store(
        backend, sqlite_template, tmp_path, db_url if backend == "mysql" else None
    )
    try:
        try:
            ledger.append(events)
        except (ValidationError, StreamError):
            assume(False)  # not accepted: outside the property
        Projector(ledger, batch_size=data.draw(st.integers(1, 20))).run_once()
        checkpoint = Projector(ledger).checkpoint()
        assert checkpoint.error_position is None
        assert checkpoint.position == ledger.head().last_position
        projected = table_rows(ledger)
        assert projected == replayed_rows(ledger)
        for run in projected.values():
            assert len((run["errorMessage"] or "").encode("utf-8")) <= LEGACY_TEXT_BYTES
        rebuild(ledger)
        assert table_rows(ledger) == projected
    finally:
        ledger.close()


@pytest.mark.usefixtures("capped_records_fetched")
def test_serve_retries_a_stopped_projection_with_a_growing_pause(
    ledger: Ledger, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    ledger.append([RunProgressed(run_id=run_id, records_fetched=5000)])
    config = load_config(write_config(tmp_path / "ledger.toml", db_url, tmp_path / "spool", ""))
    service = LedgerService(config)
    try:
        with caplog.at_level("ERROR", logger="service.serve"):
            service.projector_job()
            service.projector_job()  # at the next tick: still within the pause, not retried
        stops = [r for r in caplog.records if "projector stopped, retrying in 1s" in r.message]
        assert len(stops) == 1
        assert Projector(ledger).checkpoint().error_position == 2
    finally:
        service.ledger.close()
        service.scrape_ledger.close()


def test_a_batch_of_large_events_is_cut_short_by_size_and_the_rest_follows(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events of up to 1 MiB are accepted: a batch stops after MAX_BATCH_PAYLOAD_BYTES of
    payload (made small here), so the projector's memory stays bounded, and nothing is lost."""
    run_id = ledger.start_run(1, "SOURCE_1", metadata={"blob": "x" * 9_000})
    ledger.append(
        [RunProgressed(run_id=run_id, records_fetched=1) for _ in range(3)]
        + [RunFinished(run_id=run_id, status="failed", error_message="y" * 9_000)]
    )
    sizes = [len(event.payload) for event in ledger.read_all()]
    monkeypatch.setattr(projector_module, "READ_PAGE", 2)
    # Past the first page's payload, reached within the second page.
    monkeypatch.setattr(projector_module, "MAX_BATCH_PAYLOAD_BYTES", sizes[0] + sizes[1] + 1)
    projector = Projector(ledger, batch_size=1000)
    processed, more = projector.apply_batch()
    assert (processed, more) == (4, True)  # two pages of 2 events, then over the size
    assert projector.run_once() == 1
    assert row(ledger, run_id)["recordsFetched"] == 3
    assert projector.checkpoint().position == 5


def test_a_refusal_quoting_data_is_one_line_in_the_error_and_exact_in_the_json(
    ledger: Ledger, db_url: str, backend: str
) -> None:
    """The database's refusal quotes what it likes (an operator's trigger message, a duplicate
    key's value): its line breaks and ESC sequences are shown as escapes in the error that
    ``ledger project`` prints, or the refusal would print lines of its own after "Error:";
    the checkpoint keeps it exact (``status --format json``)."""
    refusal = "rule\nProjection in sync: OK\x1b[2J"
    with ledger.engine.begin() as conn:
        if backend == "sqlite":
            for when in ("INSERT", "UPDATE"):
                conn.execute(
                    text(
                        f"CREATE TRIGGER test_forged_{when.lower()} BEFORE {when} ON "
                        "ingestion_runs WHEN NEW.errorMessage = 'forged' BEGIN "
                        f"SELECT RAISE(ABORT, '{refusal}'); END"
                    )
                )
        else:
            for when in ("INSERT", "UPDATE"):
                conn.execute(
                    text(
                        f"CREATE TRIGGER test_forged_{when.lower()} BEFORE {when} ON "
                        "ingestion_runs FOR EACH ROW BEGIN IF NEW.errorMessage = 'forged' THEN "
                        f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{refusal}'; END IF; END"
                    )
                )
    try:
        run_id = ledger.start_run(1, "SOURCE_1")
        ledger.append([RunFinished(run_id=run_id, status="failed", error_message="forged")])
        result = CliRunner().invoke(cli, ["project", "--db", db_url])
        assert result.exit_code == 1, result.output
        (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert "the database refused its row: " in error
        assert "rule\\nProjection in sync: OK" in error  # PyMySQL's message is a tuple's repr
        assert "\x1b" not in result.stderr
        assert not any(line.startswith("Projection in sync") for line in result.stderr.splitlines())
        stored = cli_json("status", "--db", db_url)["projections"][0]["error"]["message"]
        if backend == "sqlite":  # MariaDB's own message shows ESC as \001B
            assert stored == f"the database refused its row: {refusal}"
    finally:
        with ledger.engine.begin() as conn:
            for name in ("test_forged_insert", "test_forged_update"):
                conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
