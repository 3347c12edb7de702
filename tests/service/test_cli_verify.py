"""``ledger verify`` on both databases: exit 0 and the counts on honest history, exit 1 naming
the check and the position once an event was altered, with and without ``--chain-only``; its
text fits an 80-column terminal."""

from __future__ import annotations

import json

from ledger import Ledger
from ledger.text import cells
from tests.service.support import SAMPLE, run
from tests.support import drop_triggers, restore_triggers

WIDTH = 80


def test_verify_exit_codes(ledger: Ledger, db_url: str) -> None:
    run("append", str(SAMPLE), "--db", db_url)
    ok = run("verify", "--db", db_url)
    assert ok.exit_code == 0
    assert "7 event(s), 2 run(s), no problem" in ok.stdout
    assert "7 event(s)" in run("verify", "--chain-only", "--db", db_url).stdout
    drop_triggers(ledger.engine)
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE ledger_events SET actor = 'operator:mallory' WHERE position = 4"
        )
    for extra in ([], ["--chain-only"]):
        broken = run("verify", "--format", "json", *extra, "--db", db_url)
        assert broken.exit_code == 1
        problem = json.loads(broken.stdout)["problems"][0]
        assert (problem["check"], problem["position"]) == ("chain", 4)


def _too_wide(text: str) -> list[str]:
    return [line for line in text.splitlines() if sum(map(cells, line)) > WIDTH]


def test_verify_fits_80_columns_with_a_hanging_indent(ledger: Ledger, db_url: str) -> None:
    """The quick start's step 6 printed lines of 105, 126 and 95 characters (the verdict, the
    head with its hash, the triggers), which an 80-column terminal wrapped; a problem's line
    too. Now each is broken with a hanging indent, the hash on a line of its own."""
    run("append", str(SAMPLE), "--db", db_url)
    for extra in ([], ["--chain-only"]):
        ok = run("verify", *extra, "--db", db_url)
        assert ok.exit_code == 0, ok.output
        assert not _too_wide(ok.stdout), ok.stdout
        head = ledger.head()
        assert f"\n  hash {head.last_hash}\n" in ok.stdout
    clean = run("verify", "--db", db_url).stdout
    assert clean.startswith(
        "verified chain, stream rules, projection, registry, skips and triggers:\n"
        "  7 event(s), 2 run(s), no problem\n"
    )
    drop_triggers(ledger.engine)
    try:
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE ledger_events SET actor = 'operator:mallory' WHERE position = 4"
            )
    finally:
        restore_triggers(ledger.engine)
    broken = run("verify", "--db", db_url)
    assert broken.exit_code == 1
    assert "[chain]" in broken.stdout
    assert not _too_wide(broken.stdout), broken.stdout
    # A line that starts at the margin is verify's own: a problem goes on indented.
    assert all(
        line.startswith((" ", "head:", "triggers:")) or line.endswith("problem(s):")
        for line in broken.stdout.splitlines()
    ), broken.stdout
