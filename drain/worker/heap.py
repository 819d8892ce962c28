"""A worker keeps the heap memory its batches free, instead of giving it back to the kernel
after each batch and faulting it in again for the next one.

A batch of large mail is megabytes of bodies (100 messages of 100 KB: ~10 MB as read from
Redis, more with their CRLF and DATA forms), all freed when the batch ends. glibc's malloc
hands the top of its heap back to the kernel once more than M_TRIM_THRESHOLD (128 KB by
default) of it is free, and the next batch touches the same addresses again: each 4 KB page
is a minor fault and a zero-filled page, ~2.8 µs each on this machine (a VM): 25 of them,
~70 µs, for every 100 KB allocated again. Measured on a worker draining 100 KB messages,
start-up left out: ~5-9 faults per message by default, ~2 with the thresholds below
(benchmarks/cpu-size-2026-11-30.md).

What a worker may then hold without using: at most TRIM_THRESHOLD of free heap plus TOP_PAD;
its peak is what its largest batch needs, as before. Only glibc has these knobs: elsewhere
(musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
# Free heap kept before any is returned; extra asked of the kernel at each growth.
TRIM_THRESHOLD = 64 * 1024 * 1024
TOP_PAD = 16 * 1024 * 1024
# Setting the two above turns off glibc's sliding mmap threshold, which would otherwise rise
# to the size of the largest block freed: fixed here at its ceiling (32 MB on 64-bit), so a
# message of a few MB is not mapped and unmapped (and faulted in) at every copy.
MMAP_THRESHOLD = 32 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Set the thresholds for this process; True when the C library took them."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    taken = [mallopt(option, value) for option, value in
             ((M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD), (M_MMAP_THRESHOLD, MMAP_THRESHOLD))]
    return all(taken)
