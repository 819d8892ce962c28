"""The status page: one self-contained HTML document rendered on the server.

No scripts, no external resources (the page is served with a CSP that forbids both), an
inline SVG chart, and every value that came from Redis passed through `esc`: senders,
recipients and subjects of quarantined mail are written by whoever sent it.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any, cast

from drain.flow import ratelimit
from drain.observe.backlog import BUCKETS_S
from drain.observe.chart import chart_section
from drain.observe.markup import clock, dur, esc, num, per_s
from drain.observe.model import Snapshot, View, latency_buckets, waiting

DOMAINS_SHOWN = 30


# The page's style sheet, inlined into every page (the CSP forbids loading it).
CSS = resources.files("drain.observe").joinpath("page.css").read_text(encoding="utf-8")

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
        parts += [_cards(snap), '<div class="row">', _books(snap), _controls(snap), "</div>", _cells(snap),
                  chart_section(snap), _domains(snap), _tenants(snap, view.show_messages),
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
        down = [str(c["cell"]) for c in snap.figures.cells if not c.get("up", True)]
        if down:
            pill = f'<span class="pill bad">{esc("Cell " + ", ".join(down) + " down")}</span>'
        elif snap.figures.limits.get("paused"):
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
        _card("ETA", _headline(st.eta_s, st.held_by) if b.queued or "*" in st.held_by else "done",
              _held_note(st.held_by)),
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


def _cells(snap: Snapshot) -> str:
    """A row per cell (several cells only): the figures above are their sums."""
    if not snap.figures.cells:
        return ""
    head = ('<tr><th>Cell</th><th>Redis</th>' + "".join(f'<th class="n">{esc(k.replace("_", " "))}</th>'
                                                       for k in CELL_FIELDS) + '<th class="n">Rate</th></tr>')
    rows = []
    for row in snap.figures.cells:
        if row["up"]:
            rows.append(f'<tr><td>{esc(row["cell"])}</td><td class="yes">up</td>'
                        + "".join(f'<td class="n">{num(row[k])}</td>' for k in CELL_FIELDS)
                        + f'<td class="n">{esc(per_s(row["rate_per_s"]))}</td></tr>')
        else:
            rows.append(f'<tr><td>{esc(row["cell"])}</td><td class="no">DOWN</td>'
                        f'<td colspan="{len(CELL_FIELDS) + 1}" class="muted">{esc(row.get("error", ""))}; its '
                        f"mail is not in the figures above and waits for it</td></tr>")
    return (f'<section><h2>Cells <span class="note">{len(rows)} Redis; the figures above add them up</span></h2>'
            f"<table>{head}{''.join(rows)}</table></section>")


CELL_FIELDS = ("accepted", "ready", "deferred", "in_flight", "delivered", "quarantined")


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
        ("Relays", "<br>".join(
            f"{esc(name)}: {num(int(str(r['handed'])))} handed, {num(int(str(r['failed'])))} without a session"
            + (' <span class="no">breaker open</span>' if r["open"] else "")
            + (f' <span class="no">refusing everything: {esc(str(cast(dict[str, Any], r["refusing"])["reply"]))}</span>'
               if isinstance(r.get("refusing"), dict) else "")
            for name, r in f.status.relays.items()) or "none"),
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


def _age_label(lower: int) -> str:
    return "<5m" if lower == 0 else f"{lower // 60}m"


def _tenants(snap: Snapshot, show: bool) -> str:
    """Queued mail by tenant, most first; tenant names (customers) only with --show-messages."""
    st = snap.figures.status
    if not st.tenants:
        return ""
    paused = set(st.tenants_paused)
    rows = [f'<tr><td class="dom">{esc(name) if show else f"tenant {rank}"}</td><td class="n"><b>{num(count)}</b>'
            f"</td><td>{'paused' if name in paused else ''}</td></tr>"
            for rank, (name, count) in enumerate(st.tenants, start=1)]
    note = "" if show else "; names are not shown on this page (drain serve --show-messages shows them)"
    return (f'<section><h2>Queued by tenant <span class="note">{num(st.tenants_queued)} tenants with queued mail'
            f'{note}</span></h2><table><tr><th>Tenant</th><th class="n">Queued</th><th></th></tr>'
            f"{''.join(rows)}</table></section>")


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
                    + f'<td class="n">{esc(_eta(d.eta_s, d.held_by, d.eta_at_least))}</td>'
                    f"<td>{_limit_tags(limits.get(d.domain, {}), d.domain in opened)}</td></tr>")
    rest = shape.domains[DOMAINS_SHOWN:]
    if rest:
        rows.append(f'<tr><td class="muted" colspan="{len(BUCKETS_S) + 4}">and {num(len(rest))} more domains '
                    f"({num(sum(d.total for d in rest))} messages)</td></tr>")
    return (f'<section><h2>Queued by destination <span class="note">{num(shape.total)} messages, '
            f"{num(len(shape.domains))} domains; columns by age, like qshape</span></h2>"
            f"<table>{head}{''.join(rows)}</table></section>")


def _eta(eta_s: float | None, held_by: str | None, at_least: bool = False) -> str:
    # From backlog.forecast, like the CLI: a held domain says why instead of a number.
    return held_by or ("at least " if at_least and eta_s is not None else "") + dur(eta_s)


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
