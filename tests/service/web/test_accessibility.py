"""Accessibility basics of every page, on SQLite and MariaDB: each table has a header row (a
screen reader names each cell by its column), and each form field a label (its own, one that
wraps it, or aria-label). The Proof page's status distribution was a table of bare cells."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from fastapi.testclient import TestClient

from tests.service.web.support import demo_web_client, log_in, tamper


class Structure(HTMLParser):
    """The tables (whether each has a header cell) and the form fields (whether each is
    labelled) of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[bool] = []
        self.fields: list[tuple[str, bool]] = []
        self.labelled_ids: set[str] = set()
        self._in_label = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            self.tables.append(False)
        elif tag == "th" and self.tables:
            self.tables[-1] = True
        elif tag == "label":
            self._in_label += 1
            if found.get("for"):
                self.labelled_ids.add(str(found["for"]))
        elif tag in ("input", "select", "textarea") and found.get("type") != "hidden":
            name = str(found.get("name") or found.get("id"))
            self.fields.append((name, self._in_label > 0 or "aria-label" in found))
            if found.get("id"):
                self.fields[-1] = (str(found["id"]), self.fields[-1][1])

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._in_label -= 1


def check(path: str, html: str) -> None:
    page = Structure()
    page.feed(html)
    assert all(page.tables), (path, page.tables)
    for field, labelled in page.fields:
        assert labelled or field in page.labelled_ids, (path, field)


def every_page(client: TestClient, open_run: int) -> dict[str, str]:
    pages = {
        path: client.get(path).text
        for path in (
            "/web/runs",
            f"/web/runs/{open_run}",
            "/web/stuck",
            "/web/proof",
            "/web/integrity",
            "/web/runs?at_position=3",
            "/web/proof?at_position=3",
            "/web/integrity?at_position=3",
            "/web/nothing",
        )
    }
    csrf = re.search(r'name="csrf" value="([^"]+)"', pages["/web/stuck"])
    assert csrf
    confirm = client.post(
        f"/web/runs/{open_run}/fail", data={"csrf": csrf.group(1), "reason": "dead"}
    )
    pages["confirm"] = confirm.text
    return pages


def test_every_table_has_headers_and_every_field_a_label(db_url: str, tmp_path: Path) -> None:
    with demo_web_client(db_url, tmp_path / "spool") as client:
        login = client.get("/web/login").text
        check("/web/login", login)
        log_in(client, "oncall")
        open_run = int(
            re.findall(
                r'<tr class="stuck">\s*<td><a href="/web/runs/(\d+)"', client.get("/web/stuck").text
            )[0]
        )
        tamper(db_url)  # the Integrity page's table of problems
        for path, html in every_page(client, open_run).items():
            check(path, html)
