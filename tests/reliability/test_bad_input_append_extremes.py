"""``ledger append FILE`` on hand-made extreme files, on SQLite and on MariaDB: 10 MB lines (a
10 MB field, 10 MB of garbage, a 10-million-digit counter), invalid UTF-8 in the middle of a
file, 100,000-deep nesting, empty, blank and BOM-opened files, a 5,000-line file with its bad
line near the end. Each bad one is refused (exit 2) naming its line and field in little output,
the store unchanged; each valid one is appended whole."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ledger import Ledger
from ledger.batch_checks import MAX_PAYLOAD_BYTES
from tests.reliability.bad_input_support import (
    assert_refused_naming,
    json_line,
    run_cli,
    seed,
    store_state,
    template,
)
from tests.reliability.summary import Summary

TEN_MB = 10 * 1024 * 1024


VALID_PROGRESS = json_line({"type": "RunProgressed", "run_id": 1, "records_fetched": 1})


def file_of(*lines: bytes) -> bytes:
    return b"\n".join(lines) + b"\n"


@dataclass(frozen=True)
class Extreme:
    name: str
    content: bytes
    bad_lines: dict[int, tuple[str, ...]]  # empty: the file is valid and appends every event
    appended: int = 0


def extremes() -> Iterator[Extreme]:
    ten_mb = "x" * TEN_MB
    around = (VALID_PROGRESS, VALID_PROGRESS)
    yield Extreme(
        "10 MB error_message",
        file_of(*around, json_line(template("RunFinished") | {"error_message": ten_mb})),
        {3: ("payload", "error_message")},
    )
    yield Extreme(
        "10 MB metadata",
        file_of(json_line(template("RunStarted") | {"metadata": {"blob": ten_mb}}), *around),
        {1: ("payload", "metadata")},
    )
    yield Extreme(
        "10 MB actor",
        file_of(VALID_PROGRESS, json_line(template("RunProgressed") | {"actor": ten_mb})),
        {2: ("actor",)},
    )
    yield Extreme(
        "10 MB type",
        file_of(VALID_PROGRESS, json_line(template("RunProgressed") | {"type": ten_mb})),
        {2: ("type",)},
    )
    yield Extreme(
        "10 MB unknown key",
        file_of(json_line(template("RunProgressed") | {ten_mb: 1})),
        {1: ("xxxxxxxxxx",)},
    )
    yield Extreme(
        "10-million-digit counter",
        file_of(
            b'{"type": "RunProgressed", "run_id": 1, "records_fetched": ' + b"7" * TEN_MB + b"}"
        ),
        {1: ("records_fetched",)},
    )
    yield Extreme("10 MB of x", file_of(*around, b"x" * TEN_MB), {3: ("JSON",)})
    every_byte_but_newline = bytes(range(11, 256))
    garbage = every_byte_but_newline * (TEN_MB // len(every_byte_but_newline))
    yield Extreme("10 MB of every byte", file_of(VALID_PROGRESS, garbage), {2: ("UTF-8",)})
    yield Extreme(
        "invalid UTF-8 mid-file",
        file_of(
            *around, VALID_PROGRESS.replace(b'"RunProgressed"', b'"Run\xe9Progressed"'), *around
        ),
        {3: ("UTF-8",)},
    )
    yield Extreme(
        "nested 100,000 deep",
        file_of(
            VALID_PROGRESS,
            b'{"type": "RunStarted", "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        ),
        {2: ("nested too deeply",)},
    )
    yield Extreme(
        "BOM on line 2",
        file_of(VALID_PROGRESS, b"\xef\xbb\xbf" + VALID_PROGRESS),
        {2: ("JSON",)},
    )
    long_file = [VALID_PROGRESS] * 5000
    long_file[4990] = json_line(template("RunProgressed") | {"records_updated": -1})
    yield Extreme("5,000 lines, line 4,991 bad", file_of(*long_file), {4991: ("records_updated",)})
    yield Extreme("empty file", b"", {})
    yield Extreme("blank lines only", b"\n  \n\t\r\n\n", {})
    yield Extreme("a BOM only", b"\xef\xbb\xbf", {})
    yield Extreme("BOM, then two events", b"\xef\xbb\xbf" + file_of(*around), {}, appended=2)
    just_under = {"blob": "x" * (MAX_PAYLOAD_BYTES - 200)}  # the rest of the payload fits
    yield Extreme(
        "an event just under the 1 MiB payload limit",
        file_of(
            json_line(
                {
                    "type": "RunStarted",
                    "source_id": 1,
                    "connector_name": "big",
                    "metadata": just_under,
                }
            )
        ),
        {},
        appended=1,
    )


def test_extreme_files_are_refused_or_appended_whole(
    ledger: Ledger, db_url: str, backend: str, tmp_path: Path, reliability: Summary
) -> None:
    seed(ledger)
    source = tmp_path / "extreme.jsonl"
    cases = list(extremes())
    for case in cases:
        before = store_state(ledger)
        source.write_bytes(case.content)
        result = run_cli("append", str(source), "--db", db_url)
        assert len(result.output) < 20_000, (case.name, len(result.output))  # no echoed MBs
        if case.bad_lines:
            assert_refused_naming(result, case.bad_lines)
            assert store_state(ledger) == before, case.name
        else:
            assert result.exit_code == 0, (case.name, result.output[:2000])
            assert json.loads(result.stdout)["appended"] == case.appended, case.name
            assert ledger.head().last_position == before.head.last_position + case.appended
    reliability.record(
        "bad input: ledger append extremes",
        backend,
        f"{len(cases)} hand-made files: 10 MB lines (a field, garbage, every byte, a 10-million-"
        "digit counter), mid-file invalid UTF-8, 100,000-deep nesting, BOMs, empty and blank "
        "files, a 5,000-line file bad at line 4,991, a 1 MiB event",
        "each bad one exit 2 naming its line and field in under 20 KB of output, store "
        "unchanged; the valid ones (empty, blank, BOM, 1 MiB) exit 0 appending exactly their "
        "events",
    )
