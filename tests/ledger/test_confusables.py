"""The confusable skeleton reserved actors are compared by (no database)."""

from __future__ import annotations

import pytest

from ledger.confusables import LOOK_ALIKES, skeleton


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\u0455weeper", "sweeper"),  # Cyrillic dze
        ("SW\u0415EPER", "sweeper"),  # Cyrillic capital ie, then case
        ("operator\ua789all", "operator:all"),  # modifier letter colon
        ("operator\uff1aall", "operator:all"),  # full-width colon (NFKC)
        ("ledger\u2011run:h:1", "ledger-run:h:1"),  # non-breaking hyphen
        ("ledger\u2212run:h:1", "ledger-run:h:1"),  # minus sign
        ("LEDGER-RU\u039d:h", "ledger-run:h"),  # Greek capital nu is N, though its small is v
        ("\u0130mport:x", "import:x"),  # Turkish dotted capital I
        ("\u0131mport:x", "import:x"),  # dotless i
        ("i\u0307mport:x", "import:x"),  # i and a combining dot above
    ],
)
def test_look_alikes_share_the_skeleton_of_what_they_look_like(text: str, expected: str) -> None:
    assert skeleton(text) == expected


def test_letters_of_another_script_that_look_like_no_ascii_one_are_kept() -> None:
    name = "connector:\u0441\u0431\u043e\u0440-\u0434\u0430\u043d\u043d\u044b\u0445"
    assert skeleton(name) == "connector:c\u0431op-\u0434a\u043d\u043d\u044bx"


def test_the_table_maps_only_non_ascii_characters_to_one_ascii_character() -> None:
    assert all(chr(code) > "\x7f" for code in LOOK_ALIKES)
    assert all(len(ascii_char) == 1 and ascii_char.isascii() for ascii_char in LOOK_ALIKES.values())
