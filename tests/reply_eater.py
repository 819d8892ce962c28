"""A TCP proxy in front of the test Redis that loses one reply on purpose.

The first time (after `skip` others) a client sends a command that holds `mark` (a key name
that only one drain script uses), the proxy forwards it, so Redis runs it, then closes the client's connection
instead of passing the reply on: the client cannot know whether its command ran (it did).
Every other connection, and everything before the marked command, is passed through as is.
"""

from __future__ import annotations

import contextlib
import socket
import threading


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


class ReplyEater:
    def __init__(self, upstream_port: int, mark: bytes, skip: int = 0) -> None:
        self.upstream_port = upstream_port
        self.mark = mark
        self.skip = skip  # marked commands passed on as usual before the one whose reply is lost
        self.eaten = 0  # how many replies were lost (at most one)
        self.lost_reply = b""  # the start of the reply that never reached the client
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                client, _addr = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._links += [client, upstream]
            cut = threading.Event()
            threading.Thread(target=self._up, args=(client, upstream, cut), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, cut), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, cut: threading.Event) -> None:
        """Client to Redis. The marked command goes on to Redis after the client is cut off,
        so no reply can reach it; the downstream side then reads the reply and drops it."""
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    eat = self.eaten == 0 and self.mark in data
                    if eat and self.skip > 0:
                        self.skip, eat = self.skip - 1, False
                    if eat:
                        self.eaten = 1
                if eat:
                    cut.set()
                    client.shutdown(socket.SHUT_RDWR)  # nothing more reaches the client...
                    upstream.sendall(data)  # ...but Redis runs the command
                    return  # the downstream side closes both once the reply is in
                upstream.sendall(data)
        _close(client, upstream)

    def _down(self, upstream: socket.socket, client: socket.socket, cut: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if cut.is_set():
                    self.lost_reply = data  # the reply to the marked command, thrown away
                    break
                client.sendall(data)
        _close(client, upstream)

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            _close(*self._links)
