"""A loopback TCP proxy the test controls: the database "goes down" when the test cuts it and comes
back when the test restores it, without touching the real server.

Shared by tests/test_sql_postgres.py and the reliability suite.
"""

from __future__ import annotations

import socket
import threading

import sqlalchemy as sa


class Proxy:
    """A loopback TCP proxy to a server that the test can cut (connections die, new ones are
    refused by closing them at once) and restore. Starts cut: the database is down until `restore()`."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.up = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.refused = 0  # connection attempts turned away while cut
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                self.refused += 1
                client.close()
                continue
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for s in (client, server):  # forward at once: Nagle plus delayed ACKs would add 40 ms stalls
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.up.clear()
        self.cuts += 1
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()

    def url(self, url: str) -> str:
        """`url` (a SQLAlchemy URL of the proxied server) pointed at this proxy instead."""
        return sa.make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    @classmethod
    def for_url(cls, url: str) -> Proxy:
        u = sa.make_url(url)
        return cls(u.host or "127.0.0.1", u.port or 5432)
