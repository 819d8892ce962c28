"""The status page: one self-contained HTML document rendered on the server.

No scripts, no external resources (the page is served with a CSP that forbids both), an
inline SVG chart, and every value that came from Redis passed through `esc`: senders,
recipients and subjects of quarantined mail are written by whoever sent it.
"""

from __future__ import annotations

import html
import time
from typing import Any, cast

from drain.durations import human
from drain.flow import ratelimit
from drain.observe.backlog import BUCKETS_S
from drain.observe.metrics import latency_buckets
from drain.observe.web import Snapshot, View, waiting

DOMAINS_SHOWN = 30
CHART_POINTS = 360


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def num(value: float) -> str:
    return f"{value:,.0f}"


def dur(seconds: float | None) -> str:
    return human(seconds)


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def per_s(rate: float) -> str:
    return f"{rate:,.1f}/s" if rate < 100 else f"{rate:,.0f}/s"


CSS = """
:root{--bg:#f5f6f8;--card:#fff;--ink:#1c2230;--muted:#687186;--line:#e4e7ed;--accent:#2f6fde;
--ok:#1c9451;--warn:#b97204;--bad:#cf3a30;--violet:#7c54e0;--teal:#0f8f8f;--grey:#9aa2b1;--amber:#e0a020}
@media (prefers-color-scheme:dark){:root{--bg:#12151b;--card:#1a1e26;--ink:#e6e9ef;--muted:#98a1b3;
--line:#2a303b;--accent:#6b9cff;--ok:#3ecf7f;--warn:#f0b43c;--bad:#ff6b60}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:22px 28px 36px}
header{display:flex;align-items:center;gap:14px;margin-bottom:16px}
.brand{font-weight:750;font-size:24px;letter-spacing:-.02em}
.sub{color:var(--muted)}
.spacer{flex:1}
.pill{display:inline-block;padding:5px 12px;border-radius:999px;font-weight:650;font-size:13px;color:#fff}
.pill.ok{background:var(--ok)}.pill.run{background:var(--accent)}.pill.warn{background:var(--warn)}
.pill.bad{background:var(--bad)}
.updated{color:var(--muted);font-size:13px}
.banner{border-radius:10px;padding:12px 16px;margin-bottom:14px;font-weight:600;border:1px solid}
.banner.bad{background:#fdecea;border-color:#f2bdb8;color:#8c1d15}
.banner.warn{background:#fff6e0;border-color:#f0d690;color:#7a5200}
.banner small{display:block;font-weight:400;margin-top:2px}
.cards{display:grid;grid-template-columns:repeat(6,1fr);gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:13px 16px}
.label{font-size:11.5px;text-transform:uppercase;letter-spacing:.07em;color:var(--muted);font-weight:600}
.value{font-size:27px;font-weight:680;font-variant-numeric:tabular-nums;letter-spacing:-.01em;margin-top:2px}
.note{font-size:12.5px;color:var(--muted)}
.row{display:grid;grid-template-columns:2fr 1fr;gap:14px;margin-top:14px;align-items:start}
.row.even{grid-template-columns:1fr 1fr}
section{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:16px 18px;margin-top:14px}
.row section{margin-top:0}
h2{font-size:15px;margin:0 0 12px;font-weight:680}
h2 .note{font-weight:400;margin-left:6px}
.bar{display:flex;height:16px;border-radius:6px;overflow:hidden;background:var(--line)}
.bar span{display:block;flex-basis:0;min-width:0}
.legend{display:grid;grid-template-columns:repeat(4,1fr);gap:8px 14px;margin-top:12px;font-size:13.5px}
.legend b{font-variant-numeric:tabular-nums;font-weight:650}
.dot{display:inline-block;width:10px;height:10px;border-radius:3px;margin-right:6px;vertical-align:-1px}
.balance{margin-top:12px;font-size:13.5px}
.yes{color:var(--ok);font-weight:650}.no{color:var(--bad);font-weight:650}
dl{display:grid;grid-template-columns:auto 1fr;gap:7px 14px;margin:0;font-size:14px}
dt{color:var(--muted)}dd{margin:0;font-weight:600}
table{width:100%;border-collapse:collapse;font-size:13.5px;font-variant-numeric:tabular-nums}
th{text-align:left;color:var(--muted);font-weight:600;font-size:12px;padding:6px 8px;
border-bottom:1px solid var(--line);white-space:nowrap}
td{padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
tr:last-child td{border-bottom:0}
.n{text-align:right}
td.h{text-align:right;color:var(--ink)}
td.z{text-align:right;color:var(--grey)}
.dom{font-weight:600;word-break:break-all}
.tag{display:inline-block;font-size:11.5px;font-weight:650;padding:1px 7px;border-radius:6px;margin:0 4px 2px 0}
.tag.bad{background:#fde4e1;color:#9b2219}.tag.warn{background:#fff1cc;color:#7a5200}
.tag.info{background:#e6eefc;color:#234f9e}.tag.q{background:#efe9fd;color:#5533b0}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.subject{word-break:break-word}
.muted{color:var(--muted)}
.empty{color:var(--muted);padding:18px 0;text-align:center}
svg{display:block;width:100%;height:auto}
svg text{font:11px system-ui,sans-serif;fill:var(--muted)}
.hbar{height:9px;border-radius:4px;background:var(--accent);opacity:.75}
footer{margin-top:18px;color:var(--muted);font-size:12.5px;text-align:center}
footer a{color:var(--muted)}
@media (max-width:900px){.cards{grid-template-columns:repeat(3,1fr)}.row,.row.even{grid-template-columns:1fr}}
"""

STATE_COLOURS = (
    ("delivered", "var(--ok)"), ("bounced", "var(--bad)"), ("quarantined", "var(--violet)"),
    ("deleted", "var(--grey)"), ("ready", "var(--accent)"), ("deferred", "var(--amber)"),
    ("in_flight", "var(--teal)"),
)


def render(view: View) -> str:
    snap = view.snapshot
    queued = snap.figures.status.books.queued if snap else None
    title = "drain status" + (f" — {num(queued)} queued" if queued is not None else "")
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{max(5, int(view.refresh_s * 5))}">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        '<meta name="robots" content="noindex">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>",
        _header(view),
        _banner(view),
    ]
    if snap is None:
        parts.append('<section><p class="empty">No figures yet: waiting for the first answer from Redis.</p>'
                     "</section>")
    else:
        parts += [_cards(snap), '<div class="row">', _books(snap), _controls(snap), "</div>",
                  _chart_section(snap, view.now), _domains(snap),
                  '<div class="row even">', _reasons(snap), _latency(snap), "</div>",
                  _recent(snap, view.show_messages)]
    parts.append(_footer(view))
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _header(view: View) -> str:
    snap = view.snapshot
    if not view.up and view.down_since is not None:
        pill = '<span class="pill bad">Redis unreachable</span>'
    elif snap is None:
        pill = '<span class="pill warn">Connecting</span>'
    else:
        st = snap.figures.status
        if snap.figures.limits.get("paused"):
            pill = '<span class="pill warn">Delivery paused</span>'
        elif st.books.queued == 0:
            pill = '<span class="pill ok">All clear</span>'
        elif st.rate_per_s > 0:
            pill = '<span class="pill run">Draining</span>'
        else:
            pill = '<span class="pill warn">Queued, not moving</span>'
    updated = f"figures from {clock(snap.figures.read_at)}" if snap else ""
    return (f'<header><span class="brand">drain</span><span class="sub">mail queue status</span>'
            f'<span class="spacer"></span><span class="updated">{esc(updated)}</span>{pill}</header>')


def _banner(view: View) -> str:
    snap = view.snapshot
    if view.down_since is not None:
        since = clock(view.down_since)
        shown = f"showing figures from {clock(snap.figures.read_at)}" if snap else "no figures to show yet"
        detail = f"<small>{esc(view.error)}</small>" if view.error else ""
        return f'<div class="banner bad">Redis unreachable since {since} — {esc(shown)}{detail}</div>'
    if view.stale and snap is not None:
        return (f'<div class="banner warn">Redis is answering slowly — showing figures from '
                f"{clock(snap.figures.read_at)}</div>")
    return ""


def _card(label: str, value: str, note: str = "") -> str:
    return (f'<div class="card"><div class="label">{esc(label)}</div><div class="value">{esc(value)}</div>'
            f'<div class="note">{esc(note) or "&nbsp;"}</div></div>')


def _cards(snap: Snapshot) -> str:
    st = snap.figures.status
    b = st.books
    limit = snap.figures.limits.get("global")
    return '<div class="cards">' + "".join([
        _card("Queued", num(b.queued), f"{num(b.ready)} ready · {num(b.deferred)} deferred ("
              f"{num(st.deferred_by.get('rate', 0))} held for rate · {num(st.deferred_by.get('breaker', 0))} held by "
              f"a breaker · {num(st.deferred_by.get('relay', 0))} deferred by the relay)"),
        _card("Oldest waiting", dur(st.oldest_age_s) if b.queued else "—", "oldest queued message"),
        _card("Delivery rate", per_s(st.rate_per_s),
              f"limit {ratelimit.format_rate(limit if isinstance(limit, float) else None)}"),
        _card("ETA", _headline(st.eta_s, st.held_by) if b.queued else "done", _held_note(st.held_by)),
        _card("Delivered", num(b.delivered), f"{num(b.bounced)} bounced"),
        _card("Quarantined", num(b.quarantined), f"{num(b.deleted)} deleted"),
    ]) + "</div>"


def _books(snap: Snapshot) -> str:
    b = snap.figures.status.books.as_dict()
    bar = "".join(f'<span style="flex-grow:{b[k]};background:{c}" title="{esc(k)}"></span>'
                  for k, c in STATE_COLOURS if b[k])
    legend = "".join(f'<div><span class="dot" style="background:{c}"></span>{esc(k.replace("_", " "))} '
                     f"<b>{num(b[k])}</b></div>" for k, c in STATE_COLOURS)
    ok = snap.figures.status.books.balanced
    verdict = '<span class="yes">balanced ✓</span>' if ok else '<span class="no">NOT balanced</span>'
    terms = " + ".join(num(b[k]) for k in ("ready", "deferred", "in_flight", "delivered", "bounced",
                                              "quarantined", "deleted"))
    return (f'<section><h2>The books <span class="note">every accepted message, where it is now</span></h2>'
            f'<div class="bar">{bar}</div><div class="legend">{legend}</div>'
            f'<div class="balance">{verdict} <span class="muted">accepted {num(b["accepted"])} = {terms}</span></div>'
            f"</section>")


def _controls(snap: Snapshot) -> str:
    f = snap.figures
    limit = f.limits.get("global")
    domains = cast(dict[str, dict[str, Any]], f.limits.get("domains", {}))
    opened = f.status.breakers_open
    paused = f.limits.get("paused")
    rows = [
        ("Delivery", '<span class="no">paused</span>' if paused else '<span class="yes">running</span>'),
        ("Global rate", esc(ratelimit.format_rate(limit if isinstance(limit, float) else None))),
        ("SMTP intake", '<span class="no">paused</span>' if f.intake_paused else '<span class="yes">open</span>'),
        ("Domains limited", esc(num(len(domains)))),
        ("Domains paused", esc(", ".join(n for n, d in domains.items() if d.get("paused")) or "none")),
        ("Circuits open", esc(", ".join(opened) or "none")),
        ("Waiting on limits", _waiting(snap)),
    ]
    body = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return f"<section><h2>Controls</h2><dl>{body}</dl></section>"


WAITING_SHOWN = 5


def _waiting(snap: Snapshot) -> str:
    """Messages held back by a paused or capped destination, per destination."""
    waits = waiting(snap.figures)
    rows = cast(list[dict[str, Any]], waits["domains"])
    parts = [f"{esc(r['domain'])}: <b>{num(r['queued'])}</b> ({esc(r['why'])})" for r in rows[:WAITING_SHOWN]]
    if len(rows) > WAITING_SHOWN:
        rest = rows[WAITING_SHOWN:]
        parts.append(f"and {num(len(rest))} more ({num(sum(r['queued'] for r in rest))} messages)")
    if waits["delivery_paused"]:
        parts.insert(0, f"all {num(snap.figures.status.books.queued)} queued (delivery paused)")
    return "<br>".join(parts) or "none"


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


def _chart_section(snap: Snapshot, now: float) -> str:
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


def _age_label(lower: int) -> str:
    return "<5m" if lower == 0 else f"{lower // 60}m"


def _domains(snap: Snapshot) -> str:
    shape = snap.figures.shape
    if not shape.domains:
        return '<section><h2>Queued by destination</h2><p class="empty">Nothing queued.</p></section>'
    shown = shape.domains[:DOMAINS_SHOWN]
    peak = max((n for d in shown for n in d.by_age), default=1) or 1
    limits = cast(dict[str, dict[str, Any]], snap.figures.limits.get("domains", {}))
    opened = set(snap.figures.status.breakers_open)
    head = ('<tr><th>Domain</th><th class="n">Queued</th>'
            + "".join(f'<th class="n">{esc(_age_label(b))}</th>' for b in BUCKETS_S)
            + '<th class="n">ETA</th><th>Limits</th></tr>')
    rows = []
    for d in shown:
        cells = []
        for n in d.by_age:
            if n:
                alpha = 0.08 + 0.5 * n / peak
                cells.append(f'<td class="h" style="background:rgba(47,111,222,{alpha:.2f})">{num(n)}</td>')
            else:
                cells.append('<td class="z">·</td>')
        rows.append(f'<tr><td class="dom">{esc(d.domain)}</td><td class="n"><b>{num(d.total)}</b></td>'
                    + "".join(cells)
                    + f'<td class="n">{esc(_eta(d.eta_s, d.held_by))}</td>'
                    f"<td>{_limit_tags(limits.get(d.domain, {}), d.domain in opened)}</td></tr>")
    rest = shape.domains[DOMAINS_SHOWN:]
    if rest:
        rows.append(f'<tr><td class="muted" colspan="{len(BUCKETS_S) + 4}">and {num(len(rest))} more domains '
                    f"({num(sum(d.total for d in rest))} messages)</td></tr>")
    return (f'<section><h2>Queued by destination <span class="note">{num(shape.total)} messages, '
            f"{num(len(shape.domains))} domains; columns by age, like qshape</span></h2>"
            f"<table>{head}{''.join(rows)}</table></section>")


def _eta(eta_s: float | None, held_by: str | None) -> str:
    # From backlog.forecast, like the CLI: a held domain says why instead of a number.
    return held_by or dur(eta_s)


def _headline(eta_s: float | None, held_by: dict[str, str]) -> str:
    return held_by["*"] if "*" in held_by else dur(eta_s)


def _held_note(held_by: dict[str, str]) -> str:
    if not held_by or "*" in held_by:
        return "by each domain's cap and share"
    named = ", ".join(f"{d}: {why}" for d, why in sorted(held_by.items())[:2])
    return f"not counted, held: {named}" + (f" and {len(held_by) - 2} more" if len(held_by) > 2 else "")


def _limit_tags(limit: dict[str, Any], circuit_open: bool) -> str:
    tags = []
    if circuit_open:
        tags.append('<span class="tag bad">circuit open</span>')
    if limit.get("paused"):
        tags.append('<span class="tag warn">paused</span>')
    if limit.get("rate"):
        tags.append(f'<span class="tag info">cap {esc(ratelimit.format_rate(float(limit["rate"])))}</span>')
    if limit.get("effective"):
        tags.append(f'<span class="tag warn">throttled {esc(ratelimit.format_rate(float(limit["effective"])))}'
                    "</span>")
    if limit.get("concurrency"):
        tags.append(f'<span class="tag info">{esc(limit["concurrency"])} at once</span>')
    return "".join(tags) or '<span class="muted">—</span>'


def _reasons(snap: Snapshot) -> str:
    q = snap.quarantine
    found = snap.figures.findings
    held = q.held_by_reason
    codes = sorted(set(found) | set(held or {}), key=lambda c: (-(held or {}).get(c, 0), -found.get(c, 0), c))
    if not codes:
        return ('<section><h2>Quarantine by reason</h2><p class="empty">Nothing has been quarantined.</p>'
                "</section>")
    rows = "".join(f'<tr><td><code>{esc(c)}</code></td>'
                   f'<td class="n">{"—" if held is None else num(held.get(c, 0))}</td>'
                   f'<td class="n">{num(found.get(c, 0))}</td></tr>' for c in codes)
    note = f"{num(q.held)} held now"
    if held is None:
        note += "; too many to count by reason here (drain quarantine list --reason)"
    return (f'<section><h2>Quarantine by reason <span class="note">{esc(note)}</span></h2>'
            f'<table><tr><th>Reason</th><th class="n">Held now</th><th class="n">Found in all</th></tr>{rows}'
            f"</table></section>")


def _latency(snap: Snapshot) -> str:
    buckets, total, count = latency_buckets(snap.figures.latency)
    if not count:
        return ('<section><h2>Delivery latency</h2><p class="empty">Nothing delivered yet.</p></section>')
    previous = 0.0
    rows = []
    per_bucket = []
    for le, cumulative in buckets:
        per_bucket.append((le, cumulative - previous))
        previous = cumulative
    peak = max(n for _le, n in per_bucket) or 1
    for le, n in per_bucket:
        label = "over 1 d" if le == "+Inf" else f"≤ {dur(float(le))}"
        rows.append(f"<tr><td>{esc(label)}</td><td class=\"n\">{num(n)}</td>"
                    f'<td style="width:55%"><div class="hbar" style="width:{100 * n / peak:.1f}%"></div></td></tr>')
    return (f'<section><h2>Delivery latency <span class="note">accepted to delivered; mean '
            f"{esc(dur(total / count))} over {num(count)} messages</span></h2><table>{''.join(rows)}</table>"
            f"</section>")


def _recent(snap: Snapshot, show: bool) -> str:
    if not show:
        return ('<section><h2>Recently quarantined</h2><p class="empty">Senders, recipients and subjects are '
                "not shown on this page (drain serve --show-messages shows them on an internal page).</p></section>")
    recent = snap.quarantine.recent
    if not recent:
        return '<section><h2>Recently quarantined</h2><p class="empty">Nothing held.</p></section>'
    rows = []
    for r in recent:
        rcpts = ", ".join(r.recipients[:2]) + (f" +{len(r.recipients) - 2}" if len(r.recipients) > 2 else "")
        reasons = "".join(f'<span class="tag q">{esc(code)}</span>' for code in r.reasons)
        rows.append(f"<tr><td>{esc(time.strftime('%H:%M:%S', time.localtime(r.quarantined_at)))}<br>"
                    f'<span class="muted"><code>{esc(r.id)}</code></span></td><td>{reasons}</td>'
                    f"<td>{esc(r.sender or '<>')}</td><td>{esc(rcpts)}</td>"
                    f'<td class="subject">{esc(r.subject) or "<span class=muted>(no subject)</span>"}</td></tr>')
    return ('<section><h2>Recently quarantined <span class="note">newest first; shown as text, exactly as '
            "received</span></h2><table><tr><th>When / id</th><th>Reasons</th><th>Sender</th><th>Recipients</th>"
            f"<th>Subject</th></tr>{''.join(rows)}</table></section>")


def _footer(view: View) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(view.now))
    return (f"<footer>Read-only status page, no login. Page generated {esc(stamp)}; figures refreshed every "
            f"{view.refresh_s:g} s; this page reloads itself. "
            '<a href="/status.json">status.json</a> · <a href="/metrics">metrics</a></footer>')
