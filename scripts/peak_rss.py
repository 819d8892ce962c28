"""Peak resident memory of process trees while a benchmark step runs.

psutil finds the processes (a root and all its descendants, sampled every `every_s`
seconds, so workers forked later and Postfix's on-demand daemons are found too); each
process's peak is the kernel's own high-water mark (VmHWM in /proc/PID/status), so a spike
between two samples is not missed. Where /proc has no VmHWM, the largest RSS psutil saw
stands in. The sum over a tree is sampled: the largest total PSS (proportional set size:
pages shared between processes, such as a forked parent's or shared libraries, counted
once across them) seen at one moment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

MB = 1024 * 1024


def high_water(pid: int) -> int | None:
    """The kernel's peak RSS of a process in bytes (VmHWM), or None where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class PeakRss:
    """`with PeakRss(lambda: [pid]) as rss: ...` then `rss.summary()`.

    `roots` is called at each sample (a root may not exist yet, or change: Postfix's master
    pid is read from its pid file)."""

    def __init__(self, roots: Callable[[], list[int]], every_s: float = 0.2) -> None:
        self.roots = roots
        self.every_s = every_s
        self.peaks: dict[int, tuple[str, int]] = {}  # pid -> (name, peak bytes)
        self.total_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.every_s):
                return

    def sample(self) -> None:
        total = 0
        for root in self.roots():
            try:
                top = psutil.Process(root)
                procs = [top, *top.children(recursive=True)]
            except psutil.Error:
                continue
            for proc in procs:
                try:
                    full = proc.memory_full_info()
                    rss = full.rss
                    name = proc.name()
                except psutil.Error:
                    continue
                total += getattr(full, "pss", rss)
                peak = max(high_water(proc.pid) or 0, rss, self.peaks.get(proc.pid, ("", 0))[1])
                self.peaks[proc.pid] = (name, peak)
        self.total_peak = max(self.total_peak, total)

    def summary(self) -> dict[str, Any]:
        """Peaks in MB: the largest process (RSS), the largest PSS sum at one moment, by process name."""
        by_name: dict[str, float] = {}
        for name, peak in self.peaks.values():
            by_name[name] = max(by_name.get(name, 0.0), round(peak / MB, 1))
        largest = max(self.peaks.values(), key=lambda p: p[1], default=("", 0))
        return {"processes": len(self.peaks), "largest_mb": round(largest[1] / MB, 1), "largest": largest[0],
                "sum_mb": round(self.total_peak / MB, 1), "by_name": by_name}


def brief(summary: dict[str, Any] | None) -> str:
    """One table cell: the largest process's peak RSS and the tree's peak PSS sum."""
    if not summary or not summary.get("processes"):
        return ""
    return f"{summary['largest_mb']} ({summary['largest']}) / {summary['sum_mb']} in {summary['processes']}"
