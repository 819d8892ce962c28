"""`drain smtpd --processes N`: N ingress processes serving one listening socket.

The parent binds the address (so a port in use is one error line, before anything starts)
and forks the children, which inherit the socket: the kernel hands each new connection to
whichever child accepts first, so a child busy with a flood takes fewer, and connections
waiting in the backlog are not lost when a child dies. The parent only watches: a child that
exits is started again (after a pause when it lived under a second), its session slot
cleared. SIGTERM or SIGINT to the parent stops the children gracefully (each finishes the
transactions under way: see `Ingress.stop`), then the parent exits.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.context import ForkProcess
from typing import Any

from drain.errors import DrainError
from drain.intake.api import Client
from drain.intake.smtpd import Ingress, check_config
from drain.intake.smtpd_limits import SessionCount
from drain.intake.smtpd_session import Features

log = logging.getLogger(__name__)

BACKLOG = 1024
RESTART_PAUSE_S = 1.0


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for host:port (asyncio's own address handling: IPv4, IPv6, all)."""
    loop = asyncio.new_event_loop()
    try:
        server = loop.run_until_complete(
            loop.create_server(asyncio.Protocol, host or None, port, start_serving=False))
        socks = [socket.socket(fileno=os.dup(s.fileno())) for s in server.sockets]
        server.close()
    except OSError as exc:
        raise DrainError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    finally:
        loop.close()
    for sock in socks:
        sock.listen(BACKLOG)
        sock.setblocking(False)
    return socks


class Pool:
    """The parent of the ingress processes."""

    def __init__(self, api: Client, host: str, port: int, processes: int, *, grace_s: float = 10.0) -> None:
        check_config(api.settings)
        self.api = api
        self.host = host
        self.processes = processes
        self.grace_s = grace_s
        self.features: Features | None = None  # asked once in serve(), not by every child
        self.socks = bind(host, port)
        self.port = int(self.socks[0].getsockname()[1])
        self._slots: Any = multiprocessing.RawArray("q", processes)
        self._context = multiprocessing.get_context("fork")
        self._children: dict[int, tuple[ForkProcess, float]] = {}

    def _child(self, index: int) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):  # the parent's handlers, until serve() sets its own
            signal.signal(sig, signal.SIG_DFL)
        for sock in self.socks:
            sock.setblocking(False)
        ingress = Ingress(self.api, self.host, self.port, features=self.features, socks=self.socks,
                          sessions=SessionCount(self._slots, index))
        ingress.serve(on_ready=lambda _: log.debug("process %d (pid %d) serving", index, os.getpid()))

    def _start(self, index: int) -> None:
        self._slots[index] = 0
        child = self._context.Process(target=self._child, args=(index,), name=f"drain-smtpd-{index}", daemon=False)
        child.start()
        self._children[index] = (child, time.monotonic())

    def serve(self, on_ready: Callable[[Pool], None] | None = None) -> None:
        """Run the children until SIGINT or SIGTERM, then stop them gracefully (main thread only)."""
        stopping = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.features = Features.for_relay(self.api.settings)
            for index in range(self.processes):
                self._start(index)
            if on_ready is not None:
                on_ready(self)
            while not stopping.is_set():
                multiprocessing.connection.wait([c.sentinel for c, _ in self._children.values()], timeout=0.5)
                for index, (child, started) in list(self._children.items()):
                    if child.is_alive() or stopping.is_set():
                        continue
                    child.join()
                    log.warning("smtpd process %d (pid %s) exited with %s; starting another",
                                index, child.pid, child.exitcode)
                    if time.monotonic() - started < RESTART_PAUSE_S and stopping.wait(RESTART_PAUSE_S):
                        break
                    self._start(index)
        finally:
            self._stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self) -> None:
        children = [child for child, _ in self._children.values()]
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s + 5.0
        for child in children:
            child.join(max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                log.error("smtpd process pid %s did not stop in time; killed", child.pid)
                child.kill()
                child.join()
        for sock in self.socks:
            sock.close()

    def describe(self) -> str:
        return f"{self.host}:{self.port} in {self.processes} processes"
