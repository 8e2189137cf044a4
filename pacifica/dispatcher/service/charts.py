"""Charts drawn on the server as SVG text (the operator page needs no script and no internet)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from html import escape

from pacifica.dispatcher.storage.operations import FlowBucket
from pacifica.dispatcher.storage.values import EventStatus

# Stacking order (bottom first) and colours, chosen to stay apart for colour-blind readers.
SERIES: tuple[tuple[EventStatus, str, str], ...] = (
    (EventStatus.SUCCEEDED, "#1b7837", "200 OK"),
    (EventStatus.UNROUTED, "#999999", "422 unrouted"),
    (EventStatus.FAILED, "#d6604d", "500 failed"),
    (EventStatus.PROCESSING, "#4393c3", "102 processing"),
    (EventStatus.ACCEPTED, "#f4a582", "202 waiting"),
)


def flow_chart(
    buckets: Sequence[FlowBucket], end: datetime, minutes: int, title: str, width: int = 760
) -> str:
    """Stacked bars of events received per minute over the ``minutes`` before ``end``, by status."""
    height, left, bottom, top = 190, 44, 24, 22
    plot_w, plot_h = width - left - 8, height - bottom - top
    start = end.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    per_minute: dict[int, dict[EventStatus, int]] = {}
    for bucket in buckets:
        slot = int((bucket.minute - start).total_seconds() // 60)
        if 0 <= slot < minutes:
            per_minute.setdefault(slot, {})[bucket.status] = bucket.events
    peak = max((sum(v.values()) for v in per_minute.values()), default=0)
    scale = _nice_ceiling(peak)
    bar = plot_w / minutes
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} '
        f'{height}" width="{width}" height="{height}"><title>{escape(title)}</title>',
        f'<text x="{left}" y="14" class="chart-title">{escape(title)}</text>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{scale * fraction:g}</text>'
        )
    for slot, counts in sorted(per_minute.items()):
        y = top + plot_h
        for status, colour, label in SERIES:
            count = counts.get(status, 0)
            if not count:
                continue
            h = plot_h * count / scale
            y -= h
            parts.append(
                f'<rect x="{left + slot * bar:.2f}" y="{y:.2f}" width="{max(bar - 0.3, 0.6):.2f}" '
                f'height="{h:.2f}" fill="{colour}"><title>{_clock(start, slot)} {label}: '
                f"{count}</title></rect>"
            )
    for tick in range(0, minutes + 1, max(minutes // 6, 1)):
        x = left + tick * bar
        parts.append(
            f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle">{_clock(start, tick)}</text>'
        )
    if not per_minute:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle">'
            "no events</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def legend() -> str:
    """The statuses' colours, as HTML."""
    return "".join(
        f'<span class="key"><span class="swatch" style="background:{colour}"></span>'
        f"{escape(label)}</span>"
        for _, colour, label in SERIES
    )


def _clock(start: datetime, minute: int) -> str:
    return (start + timedelta(minutes=minute)).strftime("%H:%M")


def _nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10
