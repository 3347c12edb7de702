from tests.reliability.summary import Summary


def test_the_summary_lists_rows_by_area_and_escapes_markdown() -> None:
    summary = Summary()
    summary.record("tampering", "sqlite", "a|b", "held")
    summary.record("bad input", "mysql", "x", "y", ok=False)
    lines = summary.lines()
    assert lines[0] == "[FAILED] bad input (mysql)"
    assert lines[3:] == ["[held] tampering (sqlite)", "    tried: a|b", "    held:  held"]
    assert "a\\|b" in summary.markdown()
    assert "**FAILED**" in summary.markdown()
