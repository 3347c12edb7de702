"""Writer text beside the tool's own words is quoted JSON-style (``quoted``), a name only when
it is more than one word (``shown_name``): whatever the text holds, the quotes end where it
ends, so no message, metadata or name can pass for the words around it."""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st

from ledger.text import is_invisible, quoted, shown_name, shown_value

# One JSON-style string: a quote, then escapes or anything but a quote or a backslash, a quote.
ONE_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


@given(st.text())
def test_the_quotes_end_where_the_text_ends(text: str) -> None:
    shown = quoted(text)
    assert ONE_STRING.fullmatch(shown)  # no quote inside closes it early
    assert not any(is_invisible(char) for char in shown)
    if not any(is_invisible(char) for char in text):
        assert json.loads(shown) == text  # and it reads back as JSON


def test_a_backslash_and_a_quote_are_escaped_and_a_control_character_made_visible() -> None:
    assert quoted('C:\\data "x" · by sweeper') == '"C:\\\\data \\"x\\" · by sweeper"'
    assert quoted("a\x1bb\\x1b") == '"a\\x1bb\\\\x1b"'  # a real ESC, then the four characters


def test_a_name_is_bare_only_when_it_is_one_word() -> None:
    for word in ("sweeper", "operator:alice", "connector-billing", "import:legacy", "東京"):
        assert shown_name(word) == word
    for name in ("Jane Doe", "x · by sweeper", "—", 'a"b', "a\u202eb", ""):
        assert shown_name(name) == quoted(name)


def test_a_value_is_json_with_its_text_quoted() -> None:
    assert [shown_value(v) for v in (12, True, None, "a b")] == ["12", "true", "null", '"a b"']
    assert shown_value({"b": ["x) · by y"], "a": 1}) == '{"a":1,"b":["x) · by y"]}'
