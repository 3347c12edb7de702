"""``ledger verify`` on both databases: exit 0 and the counts on honest history, exit 1 naming
the check and the position once an event was altered, with and without ``--chain-only``."""

from __future__ import annotations

import json

from ledger import Ledger
from tests.service.support import SAMPLE, run
from tests.support import drop_triggers


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
