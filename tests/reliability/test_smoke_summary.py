from tests.reliability.summary import Summary


def test_the_summary_table_lines_up_and_escapes_markdown() -> None:
    summary = Summary()
    summary.record("tampering", "sqlite", "a|b", "held")
    summary.record("bad input", "mysql", "x", "y", ok=False)
    lines = summary.lines()
    assert lines[2].startswith("bad input")
    assert len({len(line) for line in lines}) == 1
    assert "a\\|b" in summary.markdown()
    assert "**FAILED**" in summary.markdown()
