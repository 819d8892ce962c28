"""The size series' asyncio sink (scripts/bench_sink.py) counts every message drain sends it,
once, whatever the message holds (dot lines, a 100 KB body, nothing) and however its end
arrives; the bench reads the count and the sink's CPU from outside its process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from drain.worker.delivery import Relay, RelayConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bench_sink


def _message(number: int, body: bytes) -> bytes:
    return f"From: a@example.com\r\nTo: b@example.org\r\nMessage-ID: <{number}@x>\r\n\r\n".encode() + body


BODIES = [b"hello\r\n", b".leading dot\r\n..\r\n.\r\nnot the end\r\n", b"", b"x" * 76 + b"\r\n" * 1400,
          b"tail without line end", b"\r\n.\r\n.\r\n"]


def test_the_sink_counts_each_message_once_over_one_session() -> None:
    with bench_sink.CountingRelay() as sink:
        relay = Relay(RelayConfig.from_url(sink.url))
        assert "pipelining" in relay.extensions()
        sink.mark()
        used = sink.cpu_s()
        results = [relay.send("a@example.com", ["b@example.org", "c@example.org"], _message(i, body))
                   for i in range(20) for body in BODIES]
        relay.close()
        assert {r.kind for r in results} == {"delivered"}
        sink.wait_for(len(results), 0.0, timeout_s=30)
        assert sink.since() == len(results) == 20 * len(BODIES)
        assert sink.cpu_s() >= used
        sink.mark()
        assert sink.since() == 0


@pytest.mark.parametrize("tail", [1, 2, 3, 4, 5, 6])
def test_a_message_counts_only_when_its_end_has_arrived(tail: int) -> None:
    counter = memoryview(bytearray(8)).cast("Q")
    protocol = bench_sink.CountingProtocol(counter)
    # No transport: the replies go nowhere (the session test above reads them); the count and
    # what is left in the buffer tell where the protocol stands.
    protocol.data_received(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    wire = _message(1, b"..dotted\r\nbody\r\n") + b".\r\n"
    protocol.data_received(wire[:-tail])  # all but the last `tail` bytes of CRLF . CRLF
    assert counter[0] == 0
    protocol.data_received(wire[-tail:] + b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n.\r\n")
    assert counter[0] == 2  # the second one empty, pipelined behind the first one's end
    assert not protocol.in_data and protocol.buf == b""
