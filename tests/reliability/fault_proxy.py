"""A TCP proxy on 127.0.0.1 in front of MariaDB that injects the faults a real network has.

It reads just enough of the MySQL client/server protocol to aim a fault at the right moment:
a command packet is a 3-byte length, a sequence byte, then the command byte (0x03 COM_QUERY,
followed by the SQL text). Faults are armed one at a time and fire on the next connection that
sends a matching command:

* ``cut-mid-transaction``: the connection is closed instead of forwarding the next INSERT, so
  the server holds an open transaction (and its locks) until it sees the connection gone;
* ``cut-before-commit``: closed instead of forwarding COMMIT: the server rolls back;
* ``lose-commit-reply``: COMMIT is forwarded and committed, but its reply is swallowed and the
  connection closed: the client cannot know its write is durable;
* ``stall``: the next INSERT and everything after it is held, never forwarded, until the client
  gives up (its read timeout) and closes.

Besides armed faults: ``drop_all()`` closes every live connection (idle pooled ones too),
``outage()`` refuses new connections until ``restore()``, and ``freeze()`` makes the database
stop answering (connections stay open, nothing is forwarded either way) until ``thaw()``, which
drops the frozen connections.

With backups (``FaultProxy(upstream, backup, …)``) it is also the load balancer of a cluster,
as HAProxy's ``backup`` servers make one: each new connection goes to the first upstream
that accepts it, in order, so when a node dies its clients' next connections reach the next.

``vanish_after(marker)`` is the client that disappears without a trace (a machine lost, a NAT
that keeps the flow): the next connection to send a query containing ``marker`` has it
forwarded, with its reply, and from its next packet on nothing more is forwarded either way;
when the client's socket closes (its process killed), the server's side stays open, so the
server sees an idle session, never a disconnect, until it closes the session itself.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter

COM_QUERY = 0x03
FAULTS = ("cut-mid-transaction", "cut-before-commit", "lose-commit-reply", "stall")
TRIGGERS = {
    "cut-mid-transaction": b"INSERT",
    "cut-before-commit": b"COMMIT",
    "lose-commit-reply": b"COMMIT",
    "stall": b"INSERT",
}


def query_text(packet: bytes) -> bytes | None:
    """The SQL of a COM_QUERY packet at the start of ``packet``, else None."""
    if len(packet) > 5 and packet[4] == COM_QUERY:
        return packet[5:].lstrip().upper()
    return None


class Link:
    """One proxied client connection and its upstream connection."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.swallow_reply = False
        self.frozen = False
        self.closed = threading.Event()
        self.vanishing = False  # the marker went through: the next packet is the last seen
        self.marked_at: float | None = None  # monotonic time the marker query was forwarded
        self.vanished_at: float | None = None  # monotonic time nothing more was forwarded
        self.server_closed_at: float | None = None  # when the server ended a vanished session

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class FaultProxy:
    def __init__(self, upstream: tuple[str, int], *backups: tuple[str, int]) -> None:
        self.upstreams = (upstream, *backups)
        self.connected: Counter[tuple[str, int]] = Counter()  # connections made, by upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.fired: Counter[str] = Counter()
        self.refused = 0
        self._armed: str | None = None
        self._accepting = threading.Event()
        self._accepting.set()
        self._frozen = threading.Event()
        self._lock = threading.Lock()
        self._links: set[Link] = set()
        self._vanish_marker: bytes | None = None
        self.vanished: list[Link] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    # ------------------------------------------------------------------ control

    def arm(self, fault: str) -> None:
        assert fault in FAULTS, fault
        with self._lock:
            self._armed = fault

    @property
    def armed(self) -> str | None:
        with self._lock:
            return self._armed

    def disarm(self) -> None:
        with self._lock:
            self._armed = None

    def vanish_after(self, marker: bytes) -> None:
        """Arm the disappearing client (see the module's docstring)."""
        with self._lock:
            self._vanish_marker = marker.upper()

    def drop_all(self) -> None:
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()
        self.fired["drop-all"] += 1

    def outage(self) -> None:
        """The database is gone: every connection dropped, new ones refused."""
        self._accepting.clear()
        self.drop_all()
        self.fired["outage"] += 1

    def restore(self) -> None:
        self._accepting.set()

    def freeze(self) -> None:
        """The database stops answering: nothing is forwarded, nothing is closed."""
        self._frozen.set()
        self.fired["freeze"] += 1

    @property
    def held_calls(self) -> int:
        """Connections whose client sent something since the freeze (held, never answered)."""
        with self._lock:
            return sum(link.frozen for link in self._links)

    def thaw(self) -> None:
        """Answer again; the connections that froze are dropped (their clients gave up)."""
        self._frozen.clear()
        with self._lock:
            links = [link for link in self._links if link.frozen]
        for link in links:
            link.close()

    def close(self) -> None:
        self._closed = True
        self._accepting.clear()
        self.drop_all()
        self.listener.close()

    # ------------------------------------------------------------------ forwarding

    def _take(self, packet: bytes) -> str | None:
        """The armed fault, consumed, if ``packet`` is what it waits for."""
        sql = query_text(packet)
        if sql is None:
            return None
        with self._lock:
            fault = self._armed
            if fault is None or not sql.startswith(TRIGGERS[fault]):
                return None
            self._armed = None
            self.fired[fault] += 1
            return fault

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self._accepting.is_set():
                self.refused += 1
                client.close()
                continue
            server = self._connect()
            if server is None:
                client.close()
                continue
            server.settimeout(None)
            link = Link(client, server)
            with self._lock:
                self._links.add(link)
            threading.Thread(target=self._upstream, args=(link,), daemon=True).start()
            threading.Thread(target=self._downstream, args=(link,), daemon=True).start()

    def _connect(self) -> socket.socket | None:
        """A connection to the first upstream that accepts one, or None."""
        for upstream in self.upstreams:
            try:
                server = socket.create_connection(upstream, timeout=5)
            except OSError:
                continue
            self.connected[upstream] += 1
            return server
        return None

    def _vanishes(self, link: Link, packet: bytes) -> bool:
        """Whether this packet is the first one a vanishing client never delivers."""
        if link.vanishing:
            link.vanished_at = time.monotonic()
            return True
        sql = query_text(packet)
        with self._lock:
            marker = self._vanish_marker
            if sql is not None and marker is not None and marker in sql:
                self._vanish_marker = None
                self.fired["vanish"] += 1
                self.vanished.append(link)
                link.vanishing = True
                link.marked_at = time.monotonic()
        return False

    def _upstream(self, link: Link) -> None:
        """Client to server, where the faults are aimed."""
        try:
            while data := link.client.recv(65536):
                if self._held(link):
                    continue
                if link.vanished_at is not None or self._vanishes(link, data):
                    continue  # swallowed until the client is gone
                fault = self._take(data)
                if fault in ("cut-mid-transaction", "cut-before-commit"):
                    return
                if fault == "stall":
                    while link.client.recv(65536):  # hold everything until the client gives up
                        pass
                    return
                if fault == "lose-commit-reply":
                    link.swallow_reply = True  # set before COMMIT leaves: its reply is next
                link.server.sendall(data)
        except OSError:
            pass
        finally:
            if link.vanished_at is None:
                self._forget(link)
            else:  # the client is gone; the server must not know: its side stays open
                with contextlib.suppress(OSError):
                    link.client.close()

    def _downstream(self, link: Link) -> None:
        try:
            while data := link.server.recv(65536):
                if self._held(link) or link.vanished_at is not None:
                    continue
                if link.swallow_reply:  # COMMIT's reply: committed on the server, never told
                    return
                link.client.sendall(data)
        except OSError:
            pass
        finally:
            if link.vanished_at is not None and not link.closed.is_set():
                link.server_closed_at = time.monotonic()  # the server ended the session
            self._forget(link)

    def _held(self, link: Link) -> bool:
        """While frozen, data is swallowed; a link that froze stays frozen until dropped."""
        if self._frozen.is_set():
            link.frozen = True
        return link.frozen

    def _forget(self, link: Link) -> None:
        link.close()
        with self._lock:
            self._links.discard(link)
