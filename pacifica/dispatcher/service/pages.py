"""The operator page's HTML, as strings: no template engine, no script, no external resource."""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from urllib.parse import quote

from pacifica.dispatcher.service.charts import flow_chart, legend
from pacifica.dispatcher.service.operations import Overview, Viewer
from pacifica.dispatcher.storage.deliveries import DeliveryRow
from pacifica.dispatcher.storage.operations import EventDetail

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5em 2em;color:#222;max-width:1280px}
header{display:flex;justify-content:space-between;align-items:baseline;border-bottom:1px solid #ccc}
h1{font-size:20px}h2{font-size:16px;margin:1.4em 0 .4em}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eee;
vertical-align:top}th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:6px 12px}
.card b{display:block;font-size:20px}.charts{display:flex;flex-wrap:wrap;gap:1em}
svg.chart{border:1px solid #ddd;border-radius:6px;max-width:100%;height:auto;font-size:10px}
svg .grid{stroke:#e4e4e4}svg .chart-title{font-size:12px;font-weight:600}
.key{margin-right:1em}.swatch{display:inline-block;width:10px;height:10px;margin-right:4px}
.bad{color:#b2182b}.muted{color:#777}form{display:inline}button{font-size:12px}
pre{background:#f7f7f7;padding:8px;overflow:auto;max-height:320px}
.timeline{position:relative;height:18px;background:#f4f4f4;border-radius:3px;min-width:300px}
.tick{position:absolute;top:2px;width:8px;height:14px;border-radius:2px}
"""


def _page(title: str, viewer: Viewer, body: str) -> str:
    role = "admin" if viewer.admin else "user"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f'<header><h1><a href="/ui/">pacifica-dispatcher</a> · {escape(title)}</h1>'
        f'<form method="get" action="/ui/event"><input name="q" size="40" '
        'placeholder="task id, event id or transaction id"> <button>Find event</button></form>'
        f'<span class="muted">{escape(viewer.user)} ({role})</span></header>{body}</body></html>'
    )


def _when(value: datetime | None) -> str:
    return "—" if value is None else escape(value.strftime("%Y-%m-%d %H:%M:%S"))


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.0f} min" if value < 7200 else f"{value / 3600:.1f} h"


def _button(action: str, label: str, token: str) -> str:
    return (
        f'<form method="post" action="{escape(action)}"><input type="hidden" name="token" '
        f'value="{token}"><button>{escape(label)}</button></form>'
    )


def overview_page(view: Overview, viewer: Viewer, token: str) -> str:
    """The operator overview: event flow, queue, latency, routes and subscriptions."""
    queue = view.queue
    cards = [
        ("waiting", str(queue.waiting)),
        ("processing", str(queue.processing)),
        ("oldest waiting", _seconds(queue.oldest_age(view.now)) if queue.oldest_waiting else "—"),
        ("latency p50 / p99 (1 h)", " / ".join(_seconds(v) for v in view.latency_hour)),
        ("latency p50 / p99 (24 h)", " / ".join(_seconds(v) for v in view.latency_day)),
    ]
    body = [
        '<h2>Event flow</h2><div class="cards">',
        *(f'<div class="card"><b>{value}</b>{label}</div>' for label, value in cards),
        '</div><div class="charts">',
        flow_chart(view.hour, view.now, 60, "Events received per minute, last hour (by status)"),
        flow_chart(view.day, view.now, 1440, "Events received per minute, last 24 hours"),
        f"</div><p>{legend()}</p>",
        _routes(view, viewer),
        _subscriptions(view, token),
    ]
    return _page("operations", viewer, "".join(body))


def _routes(view: Overview, viewer: Viewer) -> str:
    if not viewer.admin:
        return ""
    rows = "".join(
        f"<tr><td>{escape(r.route)}</td><td class=n>{r.runs}</td>"
        f'<td class="n{" bad" if r.failures else ""}">{r.failures}</td>'
        f"<td>{_when(r.last_failure)}</td><td>{escape(r.last_exception or '')}</td>"
        f"<td>{_failing_link(r.route) if r.last_failure else ''}</td></tr>"
        for r in view.routes
    )
    return (
        "<h2>Routes (last 24 hours)</h2><table><tr><th>route</th><th>runs</th><th>failures</th>"
        f"<th>last failure</th><th>exception</th><th></th></tr>{rows}</table>"
    )


def _failing_link(route: str) -> str:
    return f'<a href="/ui/failures?route={quote(route, safe="")}">failing events</a>'


def _subscriptions(view: Overview, token: str) -> str:
    rows = []
    for s in view.subscriptions:
        key = str(s.uuid)
        actions = []
        if s.disabled is not None:
            actions.append(_button(f"/ui/subscriptions/{key}/enable", "Re-enable", token))
        if s.dead:
            actions.append(_button(f"/ui/subscriptions/{key}/retry", "Retry dead", token))
        state = (
            f'<span class="bad">disabled {_when(s.disabled)}</span><br>{escape(s.disabled_reason or "")}'
            if s.disabled
            else "active"
        )
        rows.append(
            f'<tr id="sub-{key}"><td>{escape(s.name)}<br><span class="muted">{escape(s.user)} · '
            f"{escape(s.target_url)}</span></td><td>{state}</td><td class=n>{s.delivered}</td>"
            f'<td class=n>{s.retrying}</td><td class="n{" bad" if s.dead else ""}">{s.dead}</td>'
            f"<td class=n>{s.failed}</td><td class=n>{s.refused}</td>"
            f"<td>{escape(s.last_error or '')}<br><span class=muted>{_when(s.last_error_at)}</span>"
            f"</td><td>{''.join(actions)}</td></tr>"
        )
    return (
        "<h2>Subscriptions</h2><table><tr><th>subscription</th><th>state</th><th>delivered</th>"
        "<th>retrying</th><th>dead</th><th>failed</th><th>refused</th><th>last error (24 h)</th>"
        f"<th></th></tr>{''.join(rows) or '<tr><td colspan=9>none</td></tr>'}</table>"
    )


def event_page(
    term: str, found: Sequence[EventDetail], names: dict[uuidlib.UUID, str], viewer: Viewer
) -> str:
    """Search results: each event's document, route runs and deliveries on a timeline."""
    if not found:
        body = f"<p>No event you may see matches {escape(term)!s}.</p>" if term else ""
    else:
        body = "".join(_event(d, names) for d in found)
    return _page(f"event {term}" if term else "event", viewer, body)


def _event(detail: EventDetail, names: dict[uuidlib.UUID, str]) -> str:
    event = detail.event
    runs = "".join(
        f"<tr><td>{escape(r.route)}</td><td>{int(r.status)}</td><td class=n>{r.attempts}</td>"
        f"<td>{_when(r.started)}</td><td>{_when(r.finished)}</td>"
        f"<td>{escape(f'{r.exc_type}: {r.exc_message}' if r.exc_type else '')}</td></tr>"
        for r in detail.runs
    )
    deliveries = "".join(_delivery(d, names, event.created) for d in detail.deliveries)
    return (
        f'<section class="event"><h2>Event {event.uuid}</h2><table>'
        f"<tr><th>event id</th><td>{escape(event.event_id)}</td><th>source</th><td>"
        f"{escape(event.source)}</td></tr><tr><th>type</th><td>{escape(event.event_type)}</td>"
        f"<th>status</th><td>{escape(event.status.http)}</td></tr><tr><th>received</th><td>"
        f"{_when(event.created)}</td><th>finished</th><td>{_when(event.finished)}</td></tr></table>"
        "<h3>Route runs</h3><table><tr><th>route</th><th>status</th><th>attempts</th>"
        f"<th>started</th><th>finished</th><th>exception</th></tr>{runs}</table>"
        "<h3>Deliveries</h3><table><tr><th>subscription</th><th>status</th><th>attempts</th>"
        f"<th>timeline (requests since receipt)</th><th>error</th></tr>{deliveries}</table>"
        f"<h3>Document as received</h3><pre>{escape(json.dumps(event.document, indent=2))}</pre>"
        "</section>"
    )


def _delivery(row: DeliveryRow, names: dict[uuidlib.UUID, str], received: datetime) -> str:
    times = [(a.created - received).total_seconds() for a in row.requests]
    span = max([*times, 1.0])
    ticks = "".join(
        f'<span class="tick" style="left:calc({100 * t / span:.1f}% - 4px);background:'
        f'{"#1b7837" if (a.status_code or 0) // 100 == 2 else "#d6604d"}" title="#{a.number} '
        f"{escape(a.kind)} {a.status_code or escape(a.error or 'error')} at +{t:.1f}s "
        f'({a.duration * 1000:.0f} ms)"></span>'
        for a, t in zip(row.requests, times, strict=True)
    )
    listing = "; ".join(
        f"#{a.number} {a.kind} {a.status_code or a.error or 'error'} +{t:.1f}s"
        for a, t in zip(row.requests, times, strict=True)
    )
    return (
        f"<tr><td>{escape(names.get(row.subscription, str(row.subscription)))}</td>"
        f"<td>{escape(row.status.name)}</td><td class=n>{row.attempts}</td>"
        f'<td><div class="timeline">{ticks}</div><span class=muted>{escape(listing)}</span></td>'
        f"<td>{escape(row.error or '')}</td></tr>"
    )


def failures_page(route: str, events: Iterable[uuidlib.UUID], viewer: Viewer) -> str:
    """The most recent events a route failed on, each linking to its event page."""
    items = "".join(f'<li><a href="/ui/event?q={e}">{e}</a></li>' for e in events)
    return _page(f"failures of {route}", viewer, f"<ul>{items or '<li>none</li>'}</ul>")
