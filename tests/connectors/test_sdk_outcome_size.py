"""A run's outcome always reaches the ledger, on SQLite and on MariaDB, whatever text its errors
hold: the SDK budgets the errors kept for RunFinished in bytes of the ledger's canonical JSON
(a character is 1 to 6 bytes of it), keeps the first ones and says how many it dropped; the
pending counts go in an append of their own, so a refusal of the terminal event never takes
them with it; and a terminal event the ledger refuses on its own for what it holds is set aside
and replaced by a short ``failed`` one, as the TypeScript client does."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import connectors.outcome
import connectors.sdk
from connectors import RunClosedError, RunContext, Spool
from ledger import Ledger
from ledger.batch_checks import MAX_PAYLOAD_BYTES
from ledger.mapper import canonical_json
from tests.connectors.support import finished, run_events, totals


def context(ledger: Ledger, spool: Spool, **options: Any) -> RunContext:
    return RunContext(
        ledger,
        1,
        "SOURCE_X",
        spool=spool,
        heartbeat_interval=3600,
        progress_interval=3600,
        **options,
    )


def counts(ledger: Ledger, run_id: int) -> dict[str, int]:
    return {name: total for name, total in totals(ledger, run_id).items() if total}


def stored_bytes(ledger: Ledger, run_id: int) -> int:
    return len(canonical_json(finished(ledger, run_id)).encode("utf-8"))


def test_errors_of_two_byte_text_no_longer_cost_the_run_its_outcome_and_counts(
    ledger: Ledger, spool: Spool
) -> None:
    # The audit's case: 100 errors within the character limits, 1,207,384 bytes of RunFinished.
    # The ledger refused it, the RunProgressed sent with it went too: the run stayed `running`
    # with 0 counts until the sweeper timed it out, both events in the spool's rejected table.
    run = context(ledger, spool)
    run.start()
    run.progress(fetched=5000, created=4900)
    for i in range(100):
        run.error(f"строка {i} не разобрана: " + "ж" * 1990, {"row": "ж" * 3990})
    result = run.finish()

    assert result.status == "partial"
    assert counts(ledger, run.run_id) == {"records_fetched": 5000, "records_created": 4900}
    payload = finished(ledger, run.run_id)
    assert payload["status"] == "partial"
    details = payload["error_details"]
    kept = details["errors"]
    assert details["error_count"] == 100
    assert 0 < len(kept) < 100
    # The first errors are kept, in order; how many were dropped is said, not left to guess.
    assert [e["message"].split(":")[0] for e in kept] == [
        f"строка {i} не разобрана" for i in range(len(kept))
    ]
    assert details["errors_dropped_for_size"] == 100 - len(kept)
    assert details["errors_truncated"] is True
    assert payload["error_message"].startswith(
        f"100 error(s) (the details of {100 - len(kept)} dropped: over the ledger's "
        "1,048,576-byte event limit); first: строка 0 не разобрана"
    )
    assert result.error_message == payload["error_message"]
    assert stored_bytes(ledger, run.run_id) <= MAX_PAYLOAD_BYTES
    assert spool.rejected() == []
    assert spool.status().pending == 0


def test_a_failed_run_with_escaped_text_everywhere_fits(ledger: Ledger, spool: Spool) -> None:
    # Control characters are 6 bytes each once escaped, CJK 3: the errors, the failure's
    # message, its traceback and even its exception class's name at their character limits.
    run = context(ledger, spool)
    run.start()
    run.progress(fetched=7)
    for i in range(100):
        run.error("\x01" * 2000, {"row": "中" * 3990, "i": i})
    failure = raised("\x03", 70_000, 5000)
    assert run.finish(failure).status == "failed"
    payload = finished(ledger, run.run_id)
    assert payload["status"] == "failed"
    assert counts(ledger, run.run_id) == {"records_fetched": 7}
    details = payload["error_details"]
    assert details["error_count"] == 100
    assert len(details["errors"]) + details["errors_dropped_for_size"] == 100
    assert details["exception"].startswith("Failure\x03")
    assert "characters cut]" in details["exception"]
    assert stored_bytes(ledger, run.run_id) <= MAX_PAYLOAD_BYTES
    assert spool.rejected() == []


def test_max_error_details_beyond_what_fits_keeps_what_fits(ledger: Ledger, spool: Spool) -> None:
    run = context(ledger, spool, max_error_details=10_000)
    run.start()
    for i in range(3000):
        run.error(f"row {i}", {"raw": "😀" * 900})
    run.finish()
    details = finished(ledger, run.run_id)["error_details"]
    kept = len(details["errors"])
    assert details["error_count"] == 3000
    assert [e["message"] for e in details["errors"]] == [f"row {i}" for i in range(kept)]
    assert kept + details["errors_dropped_for_size"] == 3000
    assert stored_bytes(ledger, run.run_id) <= MAX_PAYLOAD_BYTES


@pytest.fixture
def sdk_misjudges_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK believes the ledger takes 10 MiB: the ledger itself refuses its RunFinished
    (what any refusal of the terminal event's content the SDK did not foresee does)."""
    for module in (connectors.sdk, connectors.outcome):  # the errors kept, the outcome's size
        monkeypatch.setattr(module, "MAX_PAYLOAD_BYTES", 10 * MAX_PAYLOAD_BYTES)


def big_errors(run: RunContext) -> None:
    for i in range(100):
        run.error(f"строка {i}: " + "ж" * 1990, {"row": "ж" * 3990})


@pytest.mark.usefixtures("sdk_misjudges_the_limit")
def test_a_terminal_event_refused_on_its_own_is_replaced_and_the_counts_kept(
    ledger: Ledger, spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    run = context(ledger, spool)
    run.start()
    run.progress(fetched=5000, created=4900)
    big_errors(run)
    with pytest.raises(RunClosedError) as told:
        run.finish()
    assert "the ledger refused its partial outcome" in str(told.value)
    assert "1 event(s) it refused are kept in" in str(told.value)
    result = run.result
    assert result is not None
    assert result.status == "failed"
    # The counts went in their own append: the refusal did not take them.
    assert counts(ledger, run.run_id) == {"records_fetched": 5000, "records_created": 4900}
    assert [e.type for e in run_events(ledger, run.run_id)] == [
        "RunStarted",
        "RunProgressed",
        "RunFinished",
    ]
    payload = finished(ledger, run.run_id)
    assert payload["status"] == "failed"
    assert payload["error_message"].startswith(
        "the ledger refused this run's partial outcome: event 1 ("
    )
    assert "over the 1,048,576-byte limit" in payload["error_message"]
    assert result.error_message == payload["error_message"]
    rejected = spool.rejected()
    assert [(r["run_id"], r["type"]) for r in rejected] == [(run.run_id, "RunFinished")]
    assert payload["error_details"] == {
        "reason": "outcome-refused",
        "refused_status": "partial",
        "refused_event_id": rejected[0]["event_id"],
        "error_count": 100,
    }
    assert "the ledger refused its partial outcome" in str(rejected[0]["reason"])
    assert spool.status().pending == 0
    assert not [r for r in caplog.records if r.exc_info]
    assert [r.levelno for r in caplog.records if "takes its place" in r.getMessage()] == [
        logging.ERROR
    ]


@pytest.mark.usefixtures("sdk_misjudges_the_limit")
def test_a_replaced_outcome_does_not_mask_the_connectors_own_exception(
    ledger: Ledger, spool: Spool
) -> None:
    run = context(ledger, spool)
    run.start()
    run.progress(fetched=3)
    big_errors(run)
    # The connector's own exception on its way out: the refusal does not replace it.
    assert run.finish(ValueError("the source broke")).status == "failed"
    assert counts(ledger, run.run_id) == {"records_fetched": 3}
    payload = finished(ledger, run.run_id)
    assert payload["error_details"]["reason"] == "outcome-refused"
    assert payload["error_details"]["refused_status"] == "failed"
    assert [r["type"] for r in spool.rejected()] == ["RunFinished"]


# Characters at their worst in canonical JSON: 1 to 4 bytes of UTF-8, 2 escaped (a quote, a
# backslash), 6 escaped (a control character), a surrogate (stored as its 6-character escape,
# whose backslash is escaped again), a bidi override.
WORST = ["a", "ж", "中", "😀", '"', "\\", "\x01", "\x7f", "\ud800", "\u202e"]
WORST_CHARS = st.sampled_from(WORST)
Errors = list[tuple[str, dict[str, Any] | None]]


def lengths(most: int) -> st.SearchStrategy[int]:
    """A length, as often at the edges (none, the SDK's limit, over it) as anywhere between."""
    return st.sampled_from([most, most - 1, most // 2, 1, 0]) | st.integers(0, most)


def alike_errors(
    count: int, chars: list[str], prefix: str, message_length: int, shape: str, size: int
) -> Errors:
    """``count`` errors of one shape: a run's errors are alike (one bad column, row after row),
    and alike they reach the ledger's limit."""
    errors: Errors = []
    for i in range(count):
        char = chars[i % len(chars)]
        details: dict[str, Any] | None = None
        if shape == "flat":
            details = {"row": char * size, "i": i}
        elif shape == "keys":  # many small values: under the character limit, escapes galore
            details = {char * (k + 1): char * 20 for k in range(size // 100)}
        elif shape == "nested":  # the deepest that is kept as it is, and deeper
            details = {"v": char * (size // 20)}
            for _ in range(i % 25):
                details = {"d": details}
        errors.append((f"{prefix}{i}:" + char * message_length, details))
    return errors


def error_batches(at_most: bool) -> st.SearchStrategy[Errors]:
    """Alike errors of any sizes, or (``at_most``) of the most the SDK takes in characters."""
    size = (lambda most: st.just(most)) if at_most else lengths
    return st.builds(
        alike_errors,
        size(140),
        st.lists(WORST_CHARS, min_size=1, max_size=3),
        st.text(max_size=5),
        size(2600),
        st.sampled_from(["flat", "none", "keys", "nested"]),
        size(5000),
    )


def raised(char: str, length: int, name_length: int) -> Exception:
    # A class's name is any text UTF-8 can carry (type() refuses a surrogate).
    name_char = "?" if char == "\ud800" else char
    kind = type("Failure" + name_char * name_length, (Exception,), {})
    try:
        raise kind(char * length)
    except Exception as exc:
        return exc


def check_outcome(
    ledger: Ledger,
    spool: Spool,
    errors: Errors,
    max_error_details: int,
    failure: Exception | None,
) -> tuple[int, int]:
    """The run's errors as the connector reports them, and its end: the ledger records its
    outcome, its counts and every error's count, within its limit, nothing set aside.
    Returns the RunFinished's size and how many errors it dropped for size."""
    run = context(ledger, spool, max_error_details=max_error_details)
    run.start()
    run.progress(fetched=len(errors) + 1)
    for message, details in errors:
        run.error(message, details)
    result = run.finish(failure)

    expected = "failed" if failure else "partial" if errors else "success"
    assert result.status == expected
    payload = finished(ledger, run.run_id)
    assert payload["status"] == expected
    assert counts(ledger, run.run_id) == {"records_fetched": len(errors) + 1}
    size = stored_bytes(ledger, run.run_id)
    assert size <= MAX_PAYLOAD_BYTES
    dropped = 0
    if errors:
        details = payload["error_details"]
        assert details["error_count"] == len(errors)
        kept = len(details["errors"])
        dropped = details.get("errors_dropped_for_size", 0)
        assert kept + dropped == min(len(errors), max_error_details)
        assert details["errors_truncated"] is (kept < len(errors))
        assert [e["message"].split(":")[0] for e in details["errors"]] == [
            f"{errors[i][0].split(':')[0]}" for i in range(kept)
        ]
    assert spool.rejected() == []
    assert spool.status().pending == 0
    return size, dropped


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    errors=error_batches(at_most=True) | error_batches(at_most=False),
    max_error_details=st.sampled_from([100, 500, 100, 7, 0]),
    failure=st.none() | st.builds(raised, WORST_CHARS, lengths(80_000), lengths(3000)),
)
def test_any_errors_the_sdk_accepts_make_an_outcome_the_ledger_accepts(
    ledger: Ledger,
    spool: Spool,
    errors: Errors,
    max_error_details: int,
    failure: Exception | None,
) -> None:
    size, dropped = check_outcome(ledger, spool, errors, max_error_details, failure)
    event(f"RunFinished of {size * 4 // MAX_PAYLOAD_BYTES}/4 MiB or more")
    event("errors dropped for size" if dropped else "every error kept")


@pytest.mark.parametrize("failed", [False, True], ids=["partial", "failed"])
@pytest.mark.parametrize("char", WORST, ids=ascii)
def test_every_worst_character_at_every_limit_makes_an_outcome_the_ledger_accepts(
    ledger: Ledger, spool: Spool, char: str, failed: bool
) -> None:
    # Where the property's random draws seldom go all at once: 140 errors of the longest
    # message and details, a failure of the longest message, traceback and class name.
    errors = alike_errors(140, [char], "e", 2600, "flat", 5000)
    check_outcome(ledger, spool, errors, 500, raised(char, 80_000, 3000) if failed else None)
