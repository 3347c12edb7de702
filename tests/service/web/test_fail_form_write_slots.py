"""The web view's fail form takes one of the write slots the API's appends and fails take, on
SQLite and MariaDB: each post held a worker thread of its own while the append waited on the
head lock, so an operator's burst of posts behind a lock held elsewhere (a stalled writer)
took every thread the pages and the API's reads need, past ``[api] database_timeout``."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.service.support import head_lock_held, wait_for
from tests.service.web.support import demo_with_open_run, log_in, web_client

BOUND_S = 4


def test_fail_posts_behind_a_held_lock_wait_for_a_write_slot_and_say_busy(
    backend: str, db_url: str, tmp_path: Path
) -> None:
    run = demo_with_open_run(db_url, tmp_path / "spool")["open"]
    with web_client(db_url, api={"database_timeout": f"{BOUND_S}s"}) as client:
        csrf = log_in(client, "oncall")
        slots = client.app.state.api.write_slots  # type: ignore[attr-defined]
        total = int(slots.total_tokens)
        posts = total + 3

        def fail() -> tuple[int, str]:
            answer = client.post(
                f"/web/runs/{run}/fail",
                data={"csrf": csrf, "reason": "process killed", "confirm": "yes"},
                follow_redirects=False,
            )
            return answer.status_code, answer.text

        with head_lock_held(backend, db_url), ThreadPoolExecutor(posts) as pool:
            answers = [pool.submit(fail) for _ in range(posts)]
            # The slots all taken by posts waiting on the lock, the others waiting for a slot.
            wait_for(
                lambda: (
                    slots.statistics().borrowed_tokens == total
                    and slots.statistics().tasks_waiting == posts - total
                ),
                timeout=30,
            )
            # The pages still answer meanwhile (reads need no write slot).
            assert client.get("/web/runs").status_code == 200
            refused = [future.result(timeout=60) for future in answers]
        kinds = Counter(status for status, _ in refused)
        assert kinds == {503: posts}, kinds
        no_slot = [text for _, text in refused if "writes this server runs at once" in text]
        assert len(no_slot) >= posts - 2 * total, len(no_slot)
        assert all("Database busy" in text for _, text in refused)
        # The lock let go: the form fails the run as before.
        status, _ = fail()
        assert status == 303
        assert "operator:oncall" in client.get(f"/web/runs/{run}").text
