"""The cluster fixture's own safety on a shared machine (issue 18's audit, item 4): a test session
reaps only the cluster nodes of a run that has ended, never a live session's cluster; its ports
can be moved. No cluster is needed: the "nodes" here are shells whose command line looks like
a node's, in cluster folders under the test's own temporary folder.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.galera import (
    BASE_PORTS,
    FOLDER_PREFIX,
    MARIADBD,
    OWNER_FILE,
    SQL_PORTS,
    cluster_ports,
    orphaned,
    owner_alive,
    reap_orphaned_nodes,
    wait_until,
    write_owner,
)


@pytest.fixture
def ended_pid() -> int:
    """The pid of a process that ran and has ended, recorded while it ran."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    assert child.stdin is not None
    child.stdin.close()
    child.wait(timeout=30)
    return child.pid


def cluster_folder(root: Path, name: str) -> Path:
    folder = root / f"{FOLDER_PREFIX}{name}"
    (folder / "node1").mkdir(parents=True)
    return folder


@pytest.fixture
def fake_nodes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Started by the test: each one ended afterwards, by its pid, whatever the test did."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def start_fake_node(folder: Path, started: list[subprocess.Popen[bytes]]) -> int:
    """A shell waiting on its stdin, its command line a node's: ``mariadbd`` and the node's
    ``--defaults-file`` in ``folder``."""
    process = subprocess.Popen(
        [MARIADBD, "-c", "read line", f"--defaults-file={folder / 'node1' / 'galera.cnf'}"],
        executable="/bin/sh",
        stdin=subprocess.PIPE,
    )
    started.append(process)
    return process.pid


def looks_like_a_node(pid: int) -> bool:
    """Whether the child has exec'd (until then its command line is the test's own)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(MARIADBD.encode())


def test_a_cluster_is_orphaned_only_once_its_owner_has_ended(
    tmp_path: Path, ended_pid: int
) -> None:
    live = cluster_folder(tmp_path, "live")
    write_owner(live)  # this test session
    dead = cluster_folder(tmp_path, "dead")
    (dead / OWNER_FILE).write_text(f"{ended_pid} 1\n")  # that pid runs no more
    reused = cluster_folder(tmp_path, "reused")
    pid = (live / OWNER_FILE).read_text().split()[0]
    (reused / OWNER_FILE).write_text(f"{pid} 0\n")  # a live pid, but not the process that made it
    unknown = cluster_folder(tmp_path, "unknown")  # an older release's, or being made now
    garbled = cluster_folder(tmp_path, "garbled")
    (garbled / OWNER_FILE).write_text("not a pid\n")

    judged = {
        name: (owner_alive(folder), orphaned(folder))
        for name, folder in [
            ("live", live),
            ("dead", dead),
            ("reused", reused),
            ("unknown", unknown),
            ("garbled", garbled),
        ]
    }
    assert judged == {
        "live": (True, False),
        "dead": (False, True),
        "reused": (False, True),
        "unknown": (None, False),
        "garbled": (None, False),
    }


def test_the_reaper_kills_a_dead_runs_nodes_and_spares_a_live_sessions(
    tmp_path: Path, ended_pid: int, fake_nodes: list[subprocess.Popen[bytes]]
) -> None:
    live = cluster_folder(tmp_path, "live")
    write_owner(live)
    dead = cluster_folder(tmp_path, "dead")
    (dead / OWNER_FILE).write_text(f"{ended_pid} 1\n")
    unknown = cluster_folder(tmp_path, "unknown")
    leftover = cluster_folder(tmp_path, "leftover")  # a dead run's folder, its nodes gone
    (leftover / OWNER_FILE).write_text(f"{ended_pid} 1\n")
    live_node = start_fake_node(live, fake_nodes)
    dead_node = start_fake_node(dead, fake_nodes)
    unknown_node = start_fake_node(unknown, fake_nodes)
    for pid in (live_node, dead_node, unknown_node):
        wait_until(lambda pid=pid: looks_like_a_node(pid), 30, f"fake node {pid} started")  # type: ignore[misc]

    assert reap_orphaned_nodes(30, root=tmp_path) == sorted([dead, leftover])

    assert fake_nodes[1].wait(timeout=30) == -9  # SIGKILLed
    assert [fake_nodes[0].poll(), fake_nodes[2].poll()] == [None, None]  # still running
    assert [folder.exists() for folder in (live, unknown, dead, leftover)] == [
        True,
        True,
        False,
        False,
    ]


def test_the_ports_are_todays_unless_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_TEST_GALERA_PORT_BASE", raising=False)
    assert cluster_ports() == (SQL_PORTS, BASE_PORTS) == ((4306, 4307, 4308), (4567, 4577, 4587))
    monkeypatch.setenv("LEDGER_TEST_GALERA_PORT_BASE", "18600")
    assert cluster_ports() == ((18600, 18601, 18602), (18610, 18620, 18630))
    with pytest.raises(ValueError, match="LEDGER_TEST_GALERA_PORT_BASE=80"):
        cluster_ports("80")
