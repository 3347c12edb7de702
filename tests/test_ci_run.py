"""``.ci/run``'s install step: it installs what the browser tests need whenever a part is
missing (they skip without it, and CI fails on that skip)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

CI_RUN = Path(__file__).resolve().parents[1] / ".ci" / "run"
BOTH = ("chromium", "chromedriver")  # in /usr/bin, as tests/service/web/test_browser.py needs them


def chromium_install_block() -> str:
    """The ``if … fi`` of ``.ci/run`` that installs chromium and chromium-driver."""
    found = re.search(
        r"^if [^\n]*/usr/bin/chromium[^\n]*\n.*?^fi$", CI_RUN.read_text(), re.MULTILINE | re.DOTALL
    )
    assert found, "no chromium install step in .ci/run"
    return found.group(0)


@pytest.mark.parametrize("present", [(), ("chromium",), ("chromedriver",), BOTH])
def test_the_browser_packages_are_installed_when_either_part_is_missing(
    tmp_path: Path, present: tuple[str, ...]
) -> None:
    """The step ran with its /usr/bin replaced by a folder holding only ``present`` and an
    ``apt-get`` that records its arguments. Chromium without its driver installed nothing."""
    usr_bin = tmp_path / "usr-bin"
    usr_bin.mkdir()
    for name in present:
        tool = usr_bin / name
        tool.write_text("#!/bin/sh\n")
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    shims = tmp_path / "shims"
    shims.mkdir()
    calls = tmp_path / "calls"
    apt_get = shims / "apt-get"
    apt_get.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    apt_get.chmod(0o755)
    block = chromium_install_block().replace("/usr/bin/", f"{usr_bin}/")
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        check=True,
        env={**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"},
        capture_output=True,
        timeout=30,
    )
    installed = calls.read_text() if calls.exists() else ""
    if present == BOTH:
        assert installed == ""
    else:
        assert "install -y -qq chromium chromium-driver" in installed, (present, installed)
