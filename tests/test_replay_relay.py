"""The replay's cheap relay (scripts/replay_relay.py) must count what it is sent exactly as a
real relay would, or the replay's lost/duplicate accounting would be wrong: each message's
Message-ID reaches the policy once, the policy's answer is the reply drain sees, and a
pipelined transaction, a dot-stuffed line, a message whose end arrives in pieces and an empty
header value all come out right."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from drain.demo.sink import free_port
from drain.worker.delivery import Relay, RelayConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import replay_relay


@pytest.fixture()
def relay() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []

    def policy(mid: str, rcpt: str, _at: float) -> str | None:
        seen.append((mid, rcpt))
        return "550 5.7.1 refused by policy" if "refuse" in mid else None

    port = free_port()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(replay_relay.serve(port, policy, stop),))
    thread.start()
    url = f"smtp://127.0.0.1:{port}"
    for _ in range(200):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        threading.Event().wait(0.01)
    yield url, seen
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)


def _message(mid: str, body: bytes = b"hello\r\n") -> bytes:
    return b"From: a@example.com\r\nTo: b@example.org\r\nMessage-ID: " + mid.encode() + b"\r\n\r\n" + body


def test_every_message_reaches_the_policy_once_with_its_message_id(relay: tuple[str, list[tuple[str, str]]]) -> None:
    url, seen = relay
    sender = Relay(RelayConfig.from_url(url))
    assert "pipelining" in sender.extensions()
    results = [sender.send("a@example.com", ["b@example.org"], _message(f"<m{i}@x>")) for i in range(50)]
    assert {r.kind for r in results} == {"delivered"}
    assert seen == [(f"<m{i}@x>", "b@example.org") for i in range(50)]


def test_the_policy_answer_is_the_reply(relay: tuple[str, list[tuple[str, str]]]) -> None:
    url, seen = relay
    result = Relay(RelayConfig.from_url(url)).send("a@example.com", ["c@example.net"], _message("<refuse-1@x>"))
    assert (result.kind, result.code) == ("bounced", 550)
    assert seen == [("<refuse-1@x>", "c@example.net")]


def test_dot_lines_and_split_writes_end_the_message_only_at_its_end(relay: tuple[str, list[tuple[str, str]]]) -> None:
    url, seen = relay
    body = b".leading dot\r\n..\r\n.\r\nnot the end\r\n" + b"x" * 70_000 + b"\r\n"
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as sock:
        stream = sock.makefile("rb")
        assert stream.readline().startswith(b"220")
        sock.sendall(b"EHLO t\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        replies = [stream.readline() for _ in range(5 + 1 + 1 + 1)]
        assert replies[-1].startswith(b"354")
        stuffed = _message("<long@x>", body).replace(b"\r\n.", b"\r\n..")
        stuffed = b"." + stuffed if stuffed.startswith(b".") else stuffed
        wire = stuffed + b".\r\n"
        for cut in range(0, len(wire), 997):  # the end of DATA arrives split across writes
            sock.sendall(wire[cut:cut + 997])
        assert stream.readline().startswith(b"250")
        sock.sendall(b"QUIT\r\n")
        assert stream.readline().startswith(b"221")
    assert seen == [("<long@x>", "b@example.org")]


@pytest.mark.parametrize(("head", "expected"), [
    (b"Message-ID: <a@x>\r\nTo: b\r\n\r\nbody", "<a@x>"),
    (b"To: b\r\nmessage-id:   <b@x>  \r\n\r\nMessage-ID: <body@x>", "<b@x>"),
    (b"To: b\r\n\r\nMessage-ID: <in-body@x>\r\n", ""),
    (b"\xff\xfe no header", ""),
])
def test_message_id_is_read_from_the_header_block_only(head: bytes, expected: str) -> None:
    assert replay_relay.message_id(head) == expected


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        pass


@pytest.mark.parametrize("tail", [1, 2, 3, 4, 5, 6])
def test_the_end_of_data_is_found_when_it_arrives_split(tail: int) -> None:
    seen: list[tuple[str, str]] = []
    protocol = replay_relay.RelayProtocol(lambda mid, rcpt, _at: seen.append((mid, rcpt)))
    transport = _Transport()
    protocol.connection_made(transport)
    protocol.data_received(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    wire = _message("<split@x>") + b".\r\n"
    protocol.data_received(wire[:-tail])  # everything but the last `tail` bytes of "\r\n.\r\n"
    assert seen == []
    protocol.data_received(wire[-tail:])
    assert seen == [("<split@x>", "b@example.org")]
    assert transport.written.endswith(b"354 end with .\r\n250 2.0.0 OK queued\r\n")
