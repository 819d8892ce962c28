"""A counting SMTP sink for the size series that costs little per KB, in its own process.

Postfix's smtp-sink reads DATA a character at a time: measured here it spends ~4.5 µs of CPU
per KB (447 µs for a 100 KB message, 130 µs at 20 KB, 57 µs at 2 KB;
benchmarks/cpu-size-2026-11-30.md). On a 2-core box shared with the system under test, a sink
that takes nearly as much CPU per message as the drain worker itself flattens every ratio
toward 1x at 100 KB: it is the relay, not drain or Postfix, that the series then measures.

This sink is scripts/replay_relay.py's asyncio protocol (commands read straight from the
buffer, PIPELINING, the end of DATA found with bytes.find) with the message counted and
dropped where that relay copies it out for its policy: a message's bytes are appended to one
buffer and searched once. The count is kept in an 8-byte shared file (mmap), read by the
bench without a round trip. Both systems of a round deliver into the same sink.

    python scripts/bench_sink.py PORT COUNT_FILE      # serve until SIGTERM (bench use)
"""

from __future__ import annotations

import asyncio
import mmap
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_postfix
import replay_relay

_END = b"\r\n.\r\n"


class CountingProtocol(replay_relay.RelayProtocol):
    """Takes every message (250) and adds one to counter[0]; nothing of it is kept."""

    def __init__(self, counter: memoryview) -> None:
        super().__init__(lambda _mid, _rcpt, _at: None)
        self.counter = counter

    def _data(self, out: list[bytes]) -> bool:
        buf = self.buf
        if buf.startswith(b".\r\n"):  # an empty message
            taken = 3
        else:
            found = buf.find(_END, max(0, self.scanned - 4))
            if found < 0:
                self.scanned = len(buf)
                return False
            taken = found + len(_END)
        del buf[:taken]  # from the front of a bytearray: no copy of what follows
        self.in_data = False
        self.rcpts = []
        self.counter[0] += 1
        out.append(b"250 2.0.0 OK\r\n")
        return True


def _counter(path: str) -> tuple[mmap.mmap, memoryview]:
    with open(path, "r+b") as file:
        mapped = mmap.mmap(file.fileno(), 8)
    return mapped, memoryview(mapped).cast("Q")


async def _serve(port: int, counter: memoryview) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_server(lambda: CountingProtocol(counter), "127.0.0.1", port, backlog=1024)
    async with server:
        await stop.wait()


class CountingRelay(bench_postfix.CountingSink):
    """bench_postfix.CountingSink's interface (url, port, mark, since, wait_for, cpu_s) over
    this sink in a child process."""

    name = "asyncio counting sink (scripts/bench_sink.py)"

    def __init__(self) -> None:
        super().__init__()
        self._file = ""
        self._view: memoryview | None = None
        self._map: mmap.mmap | None = None

    def __enter__(self) -> CountingRelay:
        handle, self._file = tempfile.mkstemp(prefix="drain-sink-", suffix=".count")
        os.write(handle, bytes(8))
        os.close(handle)
        self._map, self._view = _counter(self._file)
        self._proc = subprocess.Popen([sys.executable, __file__, str(self.port), self._file])
        bench_postfix._wait_listening(self.port, "bench_sink", self._proc)
        return self

    def _now(self) -> int:
        assert self._view is not None
        self.count = int(self._view[0])
        return self.count

    def mark(self) -> None:
        self._base = self._now()

    def since(self) -> int:
        return self._now() - self._base

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        if self._view is not None and self._map is not None:
            self._view.release()
            self._map.close()
        if self._file:
            Path(self._file).unlink(missing_ok=True)


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    _mapped, counter = _counter(path)
    asyncio.run(_serve(port, counter))


if __name__ == "__main__":
    main()

