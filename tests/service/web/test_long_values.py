"""A connector's long value (an error message holding a stack trace, its details) is folded
where it stands on the web view's pages, on SQLite and MariaDB: its first characters, the
whole in a <details> that opens without a script. Shown whole, a trace of thousands of
characters made a run's timeline row (and its legacy row beside it) thousands of lines tall
at a cell's width, the events after it far below (1 MB, an event's limit: a page 1.7 million
pixels tall at a phone's width), and the Proof page's table as wide as the longest message."""

from __future__ import annotations

import html
import re
from pathlib import Path

from ledger import Ledger, RunFinished
from projections import Projector
from service.web.views import FOLD_AT
from tests.service.web.support import demo_web_client, log_in

TRACE = (
    "Traceback (most recent call last):\n"
    + '  File "connector.py", line 12, in fetch\n    page = client.get(url)\n' * 150
    + "ValueError: END-OF-TRACE"
)


def shown_text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def test_a_long_error_message_is_folded_where_it_stands(db_url: str, tmp_path: Path) -> None:
    with demo_web_client(db_url, tmp_path / "spool") as client:
        ledger = Ledger.from_url(db_url)
        try:
            run_id = ledger.start_run(3, "tracer")
            ledger.append(
                [
                    RunFinished(
                        run_id=run_id,
                        status="failed",
                        error_message=TRACE,
                        error_details={"trace": TRACE},
                    )
                ]
            )
            Projector(ledger).run_once()
        finally:
            ledger.close()
        log_in(client, "reader")
        run_page = client.get(f"/web/runs/{run_id}").text
        # The timeline's "what changed", the row's errorMessage and its errorDetails.
        folds = re.findall(
            r'<details class="fold"><summary>(.*?)</summary>(.*?)</details>', run_page, re.S
        )
        assert len(folds) == 3, run_page
        for head, whole in folds:
            assert "END-OF-TRACE" not in head
            assert len(shown_text(head)) <= FOLD_AT + len(" (all 99,999 characters)")
            assert "characters)" in head
            assert "END-OF-TRACE" in whole  # the whole is there, as the CLI's audit shows it
        proof = client.get("/web/proof").text
        cells = re.findall(
            r'<td class="msg"><details class="fold">(.*?)</details></td>', proof, re.S
        )
        assert len(cells) == 1, proof
        assert "END-OF-TRACE" in cells[0]
        # A message that fits is shown as it is, unfolded (its details, a traceback, fold).
        demo_failure = client.get("/web/runs?status=failed").text
        short = re.search(
            r'<a href="/web/runs/(\d+)">\d+</a>(?:(?!</tr>).)*ConnectionRefused', demo_failure, re.S
        )
        assert short is not None
        page = client.get(f"/web/runs/{short.group(1)}").text
        assert '<td class="msg">failed: &#34;ConnectionRefusedError: ' in page
        assert "<dt>errorMessage</dt><dd>ConnectionRefusedError: " in page
        assert page.count('<details class="fold">') == 1  # errorDetails
