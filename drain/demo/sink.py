"""A local SMTP server (aiosmtpd in a thread) that takes mail and can be told to misbehave.

Used by `drain demo`, the benchmark and the tests as the relay. A `policy` decides, per
message at DATA and per recipient at RCPT, what the server answers: accept, a reply
such as "451 4.3.0 try later", dropping the connection, or stalling first.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from aiosmtpd.controller import Controller

DROP = "drop"


@dataclass(frozen=True)
class Stall:
    """Wait this long (or until `release` is set) before answering."""

    seconds: float = 3600.0
    release: threading.Event | None = None
    then: str | None = None  # the answer after the stall (None: accept)


Action = str | Stall | None
DataPolicy = Callable[[int, "Received"], Action]
RcptPolicy = Callable[[str], str | None]


@dataclass(frozen=True)
class Received:
    sender: str
    recipients: tuple[str, ...]
    data: bytes
    at: float = 0.0  # when DATA ended (time.time())

    @property
    def message_id(self) -> str:
        return str(BytesHeaderParser(policy=compat32).parsebytes(self.data).get("Message-ID", ""))


@dataclass
class _Handler:
    keep: bool
    data_policy: DataPolicy | None = None
    rcpt_policy: RcptPolicy | None = None
    pipelining: bool = True
    accepted: int = 0
    seen: int = 0
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if not self.pipelining:
            return responses
        return [*responses[:-1], "250-PIPELINING", responses[-1]]  # aiosmtpd reads commands in order

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if self.rcpt_policy is not None:
            reply = self.rcpt_policy(address)
            if reply:
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        sender = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        received = Received(sender, tuple(envelope.rcpt_tos), bytes(envelope.content), time.time())
        with self.lock:
            index = self.seen
            self.seen += 1
        action = self.data_policy(index, received) if self.data_policy else None
        if isinstance(action, Stall):
            deadline = asyncio.get_running_loop().time() + action.seconds
            while asyncio.get_running_loop().time() < deadline:
                if action.release is not None and action.release.is_set():
                    break
                await asyncio.sleep(0.01)
            action = action.then
        if action == DROP:
            server.transport.close()
            return "421 4.4.2 connection dropped"
        if action:
            return action
        with self.lock:
            self.accepted += 1
            if self.keep:
                self.messages.append(received)
        return "250 2.0.0 OK queued"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Sink:
    """Context manager: a running SMTP server on 127.0.0.1; `url` is its smtp:// address."""

    def __init__(self, keep: bool = True, data_policy: DataPolicy | None = None,
                 rcpt_policy: RcptPolicy | None = None, host: str = "127.0.0.1", port: int = 0,
                 pipelining: bool = True) -> None:
        self.handler = _Handler(keep=keep, data_policy=data_policy, rcpt_policy=rcpt_policy, pipelining=pipelining)
        self.host = host
        self.port = port or free_port(host)
        self.controller = Controller(self.handler, hostname=host, port=self.port, enable_SMTPUTF8=True,
                                     server_hostname="sink.drain.test", ready_timeout=10)

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    @property
    def accepted(self) -> int:
        return self.handler.accepted

    @property
    def messages(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.messages)

    def set_policy(self, data_policy: DataPolicy | None = None, rcpt_policy: RcptPolicy | None = None) -> None:
        self.handler.data_policy = data_policy
        self.handler.rcpt_policy = rcpt_policy

    def start(self) -> Sink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
