"""The status page's chart of the backlog over time: inline SVG drawn on the server (no scripts)."""

from __future__ import annotations

import time
from typing import Any

from drain.observe.markup import clock, dur, esc
from drain.observe.model import Snapshot

CHART_POINTS = 360


def _nice(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at least value (an axis top)."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** (len(str(int(value))) - 1)
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if step * magnitude >= value:
            return step * magnitude
    return 10.0 * magnitude


def _points(history: list[dict[str, Any]]) -> list[tuple[float, float, float | None]]:
    """(t, queued, delivered per minute since the previous kept sample), thinned to CHART_POINTS."""
    step = max(1, -(-len(history) // CHART_POINTS))
    kept = history[::step]
    if history and kept[-1] is not history[-1]:
        kept.append(history[-1])
    out: list[tuple[float, float, float | None]] = []
    previous: dict[str, Any] | None = None
    for sample in kept:
        rate: float | None = None
        if previous is not None:
            dt = float(sample["t"]) - float(previous["t"])
            if dt > 0:
                rate = max(0.0, (int(sample["delivered"]) - int(previous["delivered"])) * 60 / dt)
        out.append((float(sample["t"]), float(sample["queued"]), rate))
        previous = sample
    return out


def _svg_panel(points: list[tuple[float, float | None]], t0: float, t1: float, height: int, colour: str,
               label: str, area: bool, gap_s: float) -> str:
    width, left, right, top, bottom = 1100, 64, 12, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _t, v in points if v is not None]
    top_value = _nice(max(values, default=0.0))

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * plot_w if t1 > t0 else left + plot_w

    def y(v: float) -> float:
        return top + plot_h - v / top_value * plot_h

    grid = []
    for i in range(5):
        g = top_value * i / 4
        grid.append(f'<line x1="{left}" x2="{width - right}" y1="{y(g):.1f}" y2="{y(g):.1f}" '
                    f'stroke="var(--line)" stroke-width="1"/>'
                    f'<text x="{left - 8}" y="{y(g) + 4:.1f}" text-anchor="end">{esc(_short(g))}</text>')
    ticks = []
    fmt = "%H:%M" if t1 - t0 >= 1800 else "%H:%M:%S"
    for i in range(7):
        t = t0 + (t1 - t0) * i / 6
        anchor = "start" if i == 0 else "end" if i == 6 else "middle"
        ticks.append(f'<text x="{x(t):.1f}" y="{height - 6}" text-anchor="{anchor}">'
                     f'{esc(time.strftime(fmt, time.localtime(t)))}</text>')
    segments: list[list[tuple[float, float]]] = []
    last_t: float | None = None
    for t, v in points:
        if v is None:
            continue
        if last_t is None or t - last_t > gap_s or not segments:
            segments.append([])
        segments[-1].append((x(t), y(v)))
        last_t = t
    shapes = []
    for seg in segments:
        line = " ".join(f"{px:.1f},{py:.1f}" for px, py in seg)
        if area and len(seg) > 1:
            base = top + plot_h
            shapes.append(f'<polygon points="{seg[0][0]:.1f},{base} {line} {seg[-1][0]:.1f},{base}" '
                          f'fill="{colour}" fill-opacity="0.14"/>')
        if len(seg) == 1:
            shapes.append(f'<circle cx="{seg[0][0]:.1f}" cy="{seg[0][1]:.1f}" r="2.5" fill="{colour}"/>')
        shapes.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2" '
                      f'stroke-linejoin="round"/>')
    return (f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}">'
            + "".join(grid) + "".join(shapes) + "".join(ticks) + "</svg>")


def _short(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def chart_section(snap: Snapshot) -> str:
    """The backlog over time: messages queued, and delivered per minute (inline SVG)."""
    history = snap.history
    if len(history) < 2:
        return ("<section><h2>Backlog over time</h2><p class=\"empty\">No history yet: workers record the books "
                "every 10 seconds while they run.</p></section>")
    points = _points(history)
    t0, t1 = points[0][0], max(points[-1][0], points[0][0] + 60)
    gap = max(120.0, 3 * (t1 - t0) / max(1, len(points)))
    queued = _svg_panel([(t, q) for t, q, _r in points], t0, t1, 220, "var(--accent)", "messages queued", True, gap)
    rates = _svg_panel([(t, r) for t, _q, r in points], t0, t1, 130, "var(--ok)", "delivered per minute", False, gap)
    return (f'<section><h2>Backlog over the last {esc(dur(t1 - t0))} '
            f'<span class="note">one sample every 10 s; figures from {clock(points[-1][0])}</span></h2>'
            f'<div class="label">Messages queued</div>{queued}'
            f'<div class="label" style="margin-top:8px">Delivered per minute</div>{rates}</section>')
