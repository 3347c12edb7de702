"""``ledger.text.wrap_cells``: the text report's own line breaks, by terminal cells."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.text import cells, wrap_cells

INDENT = "      "
# ASCII and ideographic spaces, letters, wide letters, a combining mark, no-break spaces.
CHARS = st.sampled_from(["a", "b", " ", "\u3000", "\u4e00", "\u0301", "\u00a0", "é"])


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=CHARS, max_size=400))
def test_no_line_is_wider_than_the_width_and_every_later_line_is_indented(text: str) -> None:
    lines = wrap_cells(text, 80, INDENT)
    for number, line in enumerate(lines):
        assert sum(cells(char) for char in line) <= 80, line
        if number:
            assert line == "" or line.startswith(INDENT), line


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(["a", "b", "\u4e00"]), min_size=1, max_size=400))
def test_no_character_is_lost(text: str) -> None:
    """Without spaces to break at, the lines are the text cut by width, indents aside."""
    lines = wrap_cells(text, 80, INDENT)
    assert lines[0] + "".join(line.removeprefix(INDENT) for line in lines[1:]) == text


def test_a_break_comes_at_the_last_space_that_fits() -> None:
    text = "word " * 20
    lines = wrap_cells(text.strip(), 30, "  ")
    assert lines[0] == "word word word word word word"
    assert all(line.startswith("  word") for line in lines[1:])
