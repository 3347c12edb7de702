"""A three-node MariaDB Galera cluster on 127.0.0.1, in a temporary folder, for the cluster tests
and the cluster benchmark.

Facts this layout relies on (found setting one up, issue 18):

* Galera's IST listener takes ``base_port + 1``: the SST receive address is put at
  ``base_port + 3`` so it never collides with it.
* rsync SST run by root fails with ``Permission denied`` on ``ibdata1``: ``mariadbd`` runs as
  user ``mysql`` (``--user=mysql``, started by root) with every folder owned by ``mysql``.
* Each node gets ``mariadb-install-db --defaults-file=…`` before its first start.
* 64 MB buffer pools and small redo logs keep three nodes small; durability settings are relaxed
  (``innodb_flush_log_at_trx_commit = 2``): the cluster's copies are the durability here.

Every process started here is started in a session of its own and ended by its pid (SIGTERM,
then SIGKILL past a deadline); nothing waits a fixed time: every wait polls a condition until a
deadline.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

GALERA_LIBRARIES = ("/usr/lib/galera/libgalera_smm.so", "/usr/lib/libgalera_smm.so")
MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "mariadb-install-db"
SQL_PORTS = (4306, 4307, 4308)
BASE_PORTS = (4567, 4577, 4587)
# Another layout, for a second test session on this machine: SQL ports P, P+1, P+2 and Galera
# base ports P+10, P+20, P+30 (each with its IST listener at +1 and SST receiver at +3), all
# within P..P+33.
PORT_BASE_ENV = "LEDGER_TEST_GALERA_PORT_BASE"
CLUSTER_NAME = "run_ledger_test"
DB_USER = "ledger"  # created at bootstrap, replicated to every node


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the process that started it dies, even by
    SIGKILL (then no cleanup of ours runs). Its own session keeps a Ctrl-C on the terminal
    for the test run, whose teardown stops the nodes cleanly."""
    os.setsid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def galera_library() -> str | None:
    return next((path for path in GALERA_LIBRARIES if Path(path).exists()), None)


def missing_requirements() -> list[str]:
    """What this machine lacks to run a local cluster (empty when it can)."""
    missing = []
    if galera_library() is None:
        missing.append("galera-4 (libgalera_smm.so)")
    if shutil.which("rsync") is None:
        missing.append("rsync")
    if not Path(MARIADBD).exists():
        missing.append(MARIADBD)
    if shutil.which(INSTALL_DB) is None:
        missing.append(INSTALL_DB)
    try:
        pwd.getpwnam("mysql")
    except KeyError:
        missing.append("the user mysql")
    return missing


def wait_until(
    condition: Callable[[], bool], deadline_s: float, what: str, poll_s: float = 0.1
) -> None:
    """Poll ``condition`` until it holds; TimeoutError naming ``what`` past the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            if condition():
                return
        except pymysql.err.Error:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {deadline_s:.0f}s")
        time.sleep(poll_s)


def cluster_ports(port_base: str | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The nodes' SQL ports and Galera base ports: :data:`SQL_PORTS` and :data:`BASE_PORTS`, or
    the layout from ``$LEDGER_TEST_GALERA_PORT_BASE`` (``port_base``, when given, instead)."""
    text = os.environ.get(PORT_BASE_ENV, "") if port_base is None else port_base
    if not text.strip():
        return SQL_PORTS, BASE_PORTS
    base = int(text)
    if not 1024 <= base <= 65535 - 33:
        raise ValueError(f"{PORT_BASE_ENV}={text}: a port from 1024 to {65535 - 33}")
    return (base, base + 1, base + 2), (base + 10, base + 20, base + 30)


@dataclass
class Node:
    index: int  # 1, 2, 3
    folder: Path
    sql_port: int
    base_port: int
    cluster_address: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"node{self.index}"

    @property
    def datadir(self) -> Path:
        return self.folder / "data"

    @property
    def config(self) -> Path:
        return self.folder / "my.cnf"

    @property
    def galera_config(self) -> Path:
        return self.folder / "galera.cnf"

    @property
    def socket(self) -> Path:
        return self.folder / "mysqld.sock"

    @property
    def error_log(self) -> Path:
        return self.folder / "error.log"

    def write_config(self, library: str) -> None:
        base = self.base_port
        # A node that vanishes is declared gone within seconds rather than Galera's default
        # 15 s (commits on the others wait for that): suspected after 3 s, evicted after 5 s.
        provider = ";".join(
            (
                f"base_port={base}",
                f"ist.recv_addr=127.0.0.1:{base + 1}",
                "gcache.size=64M",
                "gcs.fc_limit=64",
                "evs.keepalive_period=PT0.5S",
                "evs.inactive_check_period=PT0.5S",
                "evs.suspect_timeout=PT3S",
                "evs.inactive_timeout=PT5S",
            )
        )
        self.config.write_text(
            f"""[mysqld]
datadir={self.datadir}
socket={self.socket}
pid-file={self.folder / "mysqld.pid"}
log-error={self.error_log}
tmpdir={self.folder / "tmp"}
port={self.sql_port}
bind-address=127.0.0.1
user=mysql
skip-name-resolve
character-set-server=utf8mb4
collation-server=utf8mb4_general_ci
default-storage-engine=InnoDB
innodb_buffer_pool_size=64M
innodb_log_file_size=16M
innodb_flush_log_at_trx_commit=2
innodb_autoinc_lock_mode=2
binlog_format=ROW
max_connections=200
performance_schema=OFF
"""
        )
        # mariadb-install-db reads the server's settings alone: with wsrep on, its bootstrap
        # fails (ERROR 1051 on mysql.tmp_user_sys).
        self.galera_config.write_text(
            f"""!include {self.config}
[mysqld]
wsrep_on=ON
wsrep_provider={library}
wsrep_cluster_name={CLUSTER_NAME}
wsrep_cluster_address={self.cluster_address}
wsrep_node_name={self.name}
wsrep_node_address=127.0.0.1:{base}
wsrep_provider_options="{provider}"
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:{base + 3}
wsrep_slave_threads=2
"""
        )

    def install(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                INSTALL_DB,
                f"--defaults-file={self.config}",
                "--user=mysql",
                "--skip-test-db",
                "--auth-root-authentication-method=socket",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def start(self, new_cluster: bool = False) -> None:
        args = [MARIADBD, f"--defaults-file={self.galera_config}"]
        if new_cluster:
            args.append("--wsrep-new-cluster")
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the node vanishes as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, deadline_s: float = 30.0) -> None:
        """SIGTERM (a clean shutdown), SIGKILL past the deadline."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def connect(self, *, database: str | None = None, as_root: bool = False) -> pymysql.Connection:
        if as_root:  # the unix_socket account, before the cluster's own user exists
            return pymysql.connect(
                unix_socket=str(self.socket), user="root", database=database, autocommit=True
            )
        return pymysql.connect(
            host="127.0.0.1",
            port=self.sql_port,
            user=DB_USER,
            database=database,
            autocommit=True,
            connect_timeout=2,
        )

    def status(self, variable: str) -> str | None:
        with contextlib.closing(self.connect(as_root=True)) as conn, conn.cursor() as cursor:
            cursor.execute("SHOW GLOBAL STATUS LIKE %s", (variable,))
            row = cursor.fetchone()
        return None if row is None else str(row[1])

    def synced(self, size: int = 3) -> bool:
        if not self.running:
            raise RuntimeError(f"{self.name} exited; see {self.error_log}:\n{self.log_tail()}")
        return (
            self.status("wsrep_ready") == "ON"
            and self.status("wsrep_cluster_size") == str(size)
            and self.status("wsrep_local_state_comment") == "Synced"
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no error log)"

    def url(self, database: str) -> str:
        return f"mysql+pymysql://{DB_USER}@127.0.0.1:{self.sql_port}/{database}"


@dataclass
class Cluster:
    folder: Path
    nodes: list[Node] = field(default_factory=list)
    started_in_s: float = 0.0

    def url(self, index: int, database: str) -> str:
        return self.nodes[index - 1].url(database)

    def node(self, index: int) -> Node:
        return self.nodes[index - 1]

    def wait_synced(self, deadline_s: float = 60.0) -> None:
        for node in self.nodes:
            wait_until(
                lambda n=node: n.synced(len(self.nodes)),  # type: ignore[misc]
                deadline_s,
                f"{node.name} synced in a cluster of {len(self.nodes)}",
            )

    def wait_size(self, size: int, nodes: list[Node], deadline_s: float = 60.0) -> None:
        for node in nodes:
            wait_until(
                lambda n=node: n.synced(size),  # type: ignore[misc]
                deadline_s,
                f"{node.name} synced in a cluster of {size}",
            )

    def restart(self, index: int, deadline_s: float = 90.0) -> None:
        """Start a stopped or killed node again: it rejoins (IST when the others' gcache still
        holds what it missed) and is waited for until it is synced."""
        node = self.node(index)
        node.start()
        self.wait_synced(deadline_s)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


FOLDER_PREFIX = "ledger-galera-"
# In a cluster's folder: the pid and start time of the process that made it (a test session, a
# benchmark), so that another session on this machine tells a live cluster from a dead run's.
OWNER_FILE = "owner"


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (``/proc/PID/stat`` field 22, clock ticks after boot), or
    None when there is no such process: with the pid, it names one process even once the pid
    is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2, the command's name, is in parentheses and may hold spaces: count after it.
    return stat.rsplit(")", 1)[1].split()[19]


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (a zombie, ended but not yet waited
    for by its parent, has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def write_owner(folder: Path, pid: int | None = None) -> None:
    """Record ``pid`` (this process by default) as the owner of the cluster in ``folder``."""
    pid = os.getpid() if pid is None else pid
    (folder / OWNER_FILE).write_text(f"{pid} {_process_start(pid)}\n")


def owner_alive(folder: Path) -> bool | None:
    """Whether the process that made the cluster in ``folder`` still runs; None when the
    folder names no owner (made by a release before owners were recorded, or being made right
    now): then it is not this session's to judge."""
    try:
        pid, started = (folder / OWNER_FILE).read_text().split()
        return _process_start(int(pid)) == started
    except (OSError, ValueError):
        return None


def orphaned(folder: Path) -> bool:
    """Whether the cluster in ``folder`` belongs to a run that has ended (killed itself, its
    nodes left behind): only such a cluster is reaped. A live session's never is, nor one
    whose owner is unknown."""
    return owner_alive(folder) is False


def _cluster_folders(root: Path) -> list[Path]:
    return sorted(path for path in root.glob(FOLDER_PREFIX + "*") if path.is_dir())


def _nodes_by_folder(root: Path) -> dict[Path, list[int]]:
    """The pids of the ``mariadbd`` processes whose config is in a cluster folder under
    ``root``, by folder."""
    marker = f"--defaults-file={root / FOLDER_PREFIX}"
    nodes: dict[Path, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        words = [arg.decode(errors="replace") for arg in args]
        configs = [
            word.removeprefix("--defaults-file=") for word in words if word.startswith(marker)
        ]
        if words and words[0] == MARIADBD and configs:
            folder = Path(configs[0]).parents[1]  # <folder>/nodeN/galera.cnf
            nodes.setdefault(folder, []).append(int(entry.name))
    return nodes


def reap_orphaned_nodes(deadline_s: float, root: Path | None = None) -> list[Path]:
    """SIGKILL the nodes of an earlier run that was killed itself, and remove its folder:
    ``mariadbd`` switches to user mysql, which clears the kill-with-parent setting, and a
    SIGKILLed test run cleans up nothing. Only clusters whose owner has ended
    (:func:`orphaned`): a second test session on this machine must not kill the first one's
    cluster mid-test. Returns the folders removed."""
    root = Path(tempfile.gettempdir()) if root is None else root
    nodes = _nodes_by_folder(root)
    dead = [folder for folder in {*_cluster_folders(root), *nodes} if orphaned(folder)]
    stale = [pid for folder in dead for pid in nodes.get(folder, [])]
    for pid in stale:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: not any(_running(pid) for pid in stale),
        deadline_s,
        f"an interrupted run's cluster nodes {stale} to end",
    )
    for folder in dead:
        shutil.rmtree(folder, ignore_errors=True)
    return sorted(dead)


def _live_owners(root: Path) -> list[str]:
    """The clusters under ``root`` whose owner runs, as ``folder (pid N)``."""
    owners = []
    for folder in _cluster_folders(root):
        with contextlib.suppress(OSError, IndexError):
            if owner_alive(folder):
                owners.append(f"{folder} (pid {(folder / OWNER_FILE).read_text().split()[0]})")
    return owners


def _listening(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _chown_tree(path: Path) -> None:
    user = pwd.getpwnam("mysql")
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid)


@contextlib.contextmanager
def running_cluster(deadline_s: float = 90.0) -> Iterator[Cluster]:
    """Three nodes: node 1 bootstraps (``--wsrep-new-cluster``), nodes 2 and 3 join by rsync
    SST; yields once every node is Synced in a cluster of 3 and ``wsrep_ready``. Stopped and
    removed when the block ends, however it ends (an atexit hook covers an interpreter exit
    that skips the block's end)."""
    library = galera_library()
    if library is None:
        raise RuntimeError("galera-4 is not installed")
    started = time.monotonic()
    sql_ports, base_ports = cluster_ports()
    # Only a dead run's nodes: they may hold the ports this session needs.
    reap_orphaned_nodes(deadline_s)
    # The SQL ports, Galera's (base), its IST listeners (base + 1) and the SST receivers (base + 3)
    ports = (*sql_ports, *base_ports, *(p + 1 for p in base_ports), *(p + 3 for p in base_ports))
    busy = [port for port in ports if _listening(port)]
    if busy:
        live = _live_owners(Path(tempfile.gettempdir()))
        holder = (
            f"the cluster of a live session, {', '.join(live)}"
            if live
            else "another cluster (`pgrep -af ledger-galera`)"
        )
        raise RuntimeError(
            f"ports {busy} are in use on 127.0.0.1: {holder} or another server holds them; "
            f"{PORT_BASE_ENV}=P moves this session's cluster to ports P..P+33"
        )
    folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
    write_owner(folder)  # before any node starts: a folder with nodes always names its owner
    folder.chmod(0o755)  # mariadbd runs as mysql: it must reach its folders
    address = "gcomm://" + ",".join(f"127.0.0.1:{port}" for port in base_ports)
    cluster = Cluster(folder)
    for index, (sql_port, base_port) in enumerate(zip(sql_ports, base_ports, strict=True), 1):
        node = Node(index, folder / f"node{index}", sql_port, base_port, address)
        node.datadir.mkdir(parents=True)
        (node.folder / "tmp").mkdir()  # own temp tables: /tmp is shared with other servers
        node.write_config(library)
        cluster.nodes.append(node)
    _chown_tree(folder)
    atexit.register(cluster.cleanup)
    try:
        installs = [node.install() for node in cluster.nodes]
        for node, install in zip(cluster.nodes, installs, strict=True):
            _, err = install.communicate(timeout=deadline_s)
            if install.returncode != 0:
                raise RuntimeError(f"{INSTALL_DB} for {node.name} failed: {err.decode()[-2000:]}")
        first = cluster.nodes[0]
        first.start(new_cluster=True)
        wait_until(lambda: first.synced(1), deadline_s, "node1 bootstrapped")
        with contextlib.closing(first.connect(as_root=True)) as conn, conn.cursor() as cursor:
            cursor.execute(f"CREATE USER IF NOT EXISTS '{DB_USER}'@'127.0.0.1'")
            cursor.execute(f"GRANT ALL ON *.* TO '{DB_USER}'@'127.0.0.1' WITH GRANT OPTION")
        for node in cluster.nodes[1:]:
            node.start()
        cluster.wait_synced(deadline_s)
        cluster.started_in_s = time.monotonic() - started
        yield cluster
    except BaseException:
        for node in cluster.nodes:
            if node.running or node.error_log.exists():
                print(f"--- {node.name} error log (tail)\n{node.log_tail()}")
        raise
    finally:
        cluster.cleanup()
        atexit.unregister(cluster.cleanup)
