"""drain.worker.heap: a worker process that frees a batch of large bodies and reads the next
one takes its memory from the heap it kept, without faulting pages in again (counted by the
kernel: minor page faults, not time)."""

from __future__ import annotations

import subprocess
import sys

from drain.worker import heap

_BATCHES = """
import resource, sys
from drain.worker import heap
taken = heap.keep_freed_memory() if sys.argv[1] == "keep" else None
def batch():
    bodies = [bytes([n % 251]) * 102400 for n in range(300)]  # a batch of 100 KB messages (30 MB)
    return sum(len(b) for b in bodies)
batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    batch()
print(taken, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _BATCHES, mode], capture_output=True, text=True, check=True)
    taken, faults = out.stdout.split()
    return taken, int(faults)


def test_batches_after_the_first_take_kept_memory_without_page_faults() -> None:
    taken, kept = _faults("keep")
    _none, given_back = _faults("default")
    assert taken == "True"
    # 4 batches of 300 x 100 KB: ~30,000 pages faulted in again by default, next to none kept.
    assert given_back > 12000
    assert kept < given_back // 10, (kept, given_back)


def test_the_thresholds_are_what_the_module_says() -> None:
    assert heap.TRIM_THRESHOLD >= 16 * 1024 * 1024 and heap.TOP_PAD <= heap.TRIM_THRESHOLD
    assert heap.MMAP_THRESHOLD <= 32 * 1024 * 1024  # glibc refuses more on 64-bit
