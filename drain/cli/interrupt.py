"""Ctrl-C held off for the length of a step that must end whole (a chunk queued and its ids
reported): the interrupt then stops the command right after the step, as it would have.

A second Ctrl-C within the step interrupts at once (a Redis that hangs must not trap the
operator). Outside the main thread, or where SIGINT is not Python's own handler (ignored,
or set by someone else), the step runs as it is."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def held() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    caught: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        if caught:
            raise KeyboardInterrupt
        caught.append(signum)

    signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt
