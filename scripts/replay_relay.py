"""The replay's misbehaving relay, cheap enough not to be what the replay measures.

aiosmtpd runs a coroutine per command and the replay's policy parsed every message's headers
with the email package: together about a third of a core at the replay's rates, on the same two
cores as the workers. This relay is one asyncio.Protocol: it reads commands straight from its
buffer (so a pipelined MAIL, RCPTs and DATA cost one read and one write), finds the end of DATA
with bytes.find and the Message-ID with one search of the header block. It speaks only what the
replay needs: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, and advertises PIPELINING.

The answer for each message comes from a policy(message_id, first_recipient, at) callable that
returns None (250) or a reply line.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

Policy = Callable[[str, str, float], "str | None"]
Taken = Callable[[list[str], float], None]  # every recipient of a message answered 250, and when

_EHLO = (b"250-relay.replay.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
         b"250 SIZE 104857600\r\n")
_END = b"\r\n.\r\n"


def message_id(data: bytes) -> str:
    """The Message-ID header's value from a message's header block, or ''."""
    end = data.find(b"\r\n\r\n")
    head = data[: end if end >= 0 else len(data)]
    low = head.lower()
    at = low.find(b"\nmessage-id:")
    if at < 0:
        if not low.startswith(b"message-id:"):
            return ""
        at = -1
    start = at + 12
    stop = head.find(b"\r\n", start)
    return head[start: stop if stop >= 0 else len(head)].strip().decode("ascii", "replace")


class RelayProtocol(asyncio.Protocol):
    def __init__(self, policy: Policy, taken: Taken | None = None,
                 open_transports: set[asyncio.Transport] | None = None) -> None:
        self.policy = policy
        self.taken = taken
        self.open_transports = open_transports
        self.buf = bytearray()
        self.in_data = False
        self.scanned = 0  # how far DATA has been searched for its end
        self.rcpts: list[str] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.open_transports is not None:
            self.open_transports.add(transport)
        transport.write(b"220 relay.replay.test ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        out: list[bytes] = []
        while self.buf:
            if self.in_data:
                if not self._data(out):
                    break
                continue
            eol = self.buf.find(b"\r\n")
            if eol < 0:
                if len(self.buf) > 4096:
                    out.append(b"500 5.5.2 line too long\r\n")
                    self.buf.clear()
                break
            line = bytes(self.buf[:eol])
            del self.buf[: eol + 2]
            if not self._command(line, out):
                break
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.open_transports is not None and self.transport is not None:
            self.open_transports.discard(self.transport)

    def _command(self, line: bytes, out: list[bytes]) -> bool:
        verb = line[:4].upper()
        if verb == b"MAIL":
            self.rcpts = []
            out.append(b"250 2.1.0 OK\r\n")
        elif verb == b"RCPT":
            address = line[8:].strip().strip(b"<>").decode("utf-8", "replace")
            self.rcpts.append(address)
            out.append(b"250 2.1.5 OK\r\n")
        elif verb == b"DATA":
            if self.rcpts:
                self.in_data, self.scanned = True, 0
                out.append(b"354 end with .\r\n")
            else:
                out.append(b"554 5.5.1 no valid recipients\r\n")
        elif verb == b"EHLO":
            out.append(_EHLO)
        elif verb == b"HELO":
            out.append(b"250 relay.replay.test\r\n")
        elif verb in (b"RSET", b"NOOP"):
            self.rcpts = [] if verb == b"RSET" else self.rcpts
            out.append(b"250 2.0.0 OK\r\n")
        elif verb == b"QUIT":
            out.append(b"221 2.0.0 bye\r\n")
            if self.transport is not None:
                self.transport.write(b"".join(out))
                out.clear()
                self.transport.close()
            return False
        else:
            out.append(b"502 5.5.2 not implemented\r\n")
        return True

    def _data(self, out: list[bytes]) -> bool:
        """Take one message if its end has arrived; False while more bytes are needed."""
        if self.buf[:3] == b".\r\n":
            end, skip = 0, 3
        else:
            found = self.buf.find(_END, max(0, self.scanned - 4))
            if found < 0:
                self.scanned = len(self.buf)
                return False
            end, skip = found + 2, found + 5
        data = bytes(self.buf[:end])
        del self.buf[:skip]
        self.in_data = False
        at = time.time()
        answer = self.policy(message_id(data), self.rcpts[0] if self.rcpts else "", at)
        if answer is None and self.taken is not None:
            self.taken(self.rcpts, at)
        self.rcpts = []
        out.append(b"250 2.0.0 OK queued\r\n" if answer is None else answer.encode() + b"\r\n")
        return True


async def serve(port: int, policy: Policy, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RelayProtocol(policy), "127.0.0.1", port, backlog=128)
    async with server:
        await stop.wait()


class ThreadedRelay:
    """The protocol on its own event loop in a thread, for a benchmark that counts what a relay
    took in its own process: start(), url, and stop(), which closes the listener and drops every
    open session, as a relay that dies does."""

    def __init__(self, taken: Taken, policy: Policy = lambda _mid, _rcpt, _at: None) -> None:
        self.policy, self.taken = policy, taken
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.transports: set[asyncio.Transport] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> ThreadedRelay:
        self.thread.start()

        async def listen() -> None:
            self.server = await self.loop.create_server(
                lambda: RelayProtocol(self.policy, self.taken, self.transports), "127.0.0.1", 0, backlog=128)
            self.port = self.server.sockets[0].getsockname()[1]
        asyncio.run_coroutine_threadsafe(listen(), self.loop).result(timeout=10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self.server is not None:
                self.server.close()
            for transport in list(self.transports):
                transport.abort()
            self.transports.clear()
        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)

    def __enter__(self) -> ThreadedRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
