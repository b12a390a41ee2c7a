"""Charts drawn on the server as SVG, readable without JavaScript and without a chart library.

Each chart is an ``<svg role="img">`` named by its ``<title>`` and described by its ``<desc>``
(the totals a screen reader needs); the page beside it carries the numbers as a table. Colours
come from the console's stylesheet (classes), since the Content-Security-Policy allows no inline
style.
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from gateway.store import DailyUsage

__all__ = ["bar_chart", "day_range", "daily_chart"]

_ids = itertools.count(1)


def day_range(first: str, last: str) -> list[str]:
    """Every day from ``first`` to ``last`` ('YYYY-MM-DD', both included)."""
    start, end = datetime.date.fromisoformat(first), datetime.date.fromisoformat(last)
    return [(start + datetime.timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def _svg(width: int, height: int, title: str, desc: str, body: list[str]) -> Markup:
    chart = f"chart-{next(_ids)}"
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        f' role="img" aria-labelledby="{chart}-title {chart}-desc" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{chart}-title">{escape(title)}</title><desc id="{chart}-desc">{escape(desc)}</desc>'
        + "".join(body)
        + "</svg>"
    )


def daily_chart(days: Sequence[DailyUsage], first: str, last: str, *, title: str) -> Markup:
    """Requests per day from ``first`` to ``last``, a bar a day (days without usage at zero)."""
    by_day = {day.day: day for day in days}
    every = day_range(first, last)
    counts = [by_day[day].requests if day in by_day else 0 for day in every]
    total, top = sum(counts), max(counts, default=0)
    busiest = every[counts.index(top)] if top else None
    desc = f"{total:,} requests from {first} to {last}" + (f"; the most on {busiest}: {top:,}." if busiest else ".")
    width, height, left, bottom, top_margin = 640, 180, 48, 24, 12
    plot_width, plot_height = width - left - 8, height - bottom - top_margin
    step = plot_width / max(len(every), 1)
    body = [
        f'<line class="axis" x1="{left}" y1="{height - bottom}" x2="{width - 8}" y2="{height - bottom}"/>',
        f'<text class="label" x="{left - 6}" y="{top_margin + 4}" text-anchor="end">{top:,}</text>',
        f'<text class="label" x="{left - 6}" y="{height - bottom}" text-anchor="end">0</text>',
        f'<text class="label" x="{left}" y="{height - 6}">{escape(first)}</text>',
        f'<text class="label" x="{width - 8}" y="{height - 6}" text-anchor="end">{escape(last)}</text>',
    ]
    for index, (day, count) in enumerate(zip(every, counts, strict=True)):
        bar = 0.0 if not top else plot_height * count / top
        x = left + index * step + step * 0.15
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{height - bottom - bar:.1f}" width="{step * 0.7:.1f}"'
            f' height="{bar:.1f}"><title>{escape(day)}: {count:,} requests</title></rect>'
        )
    return _svg(width, height, title, desc, body)


def bar_chart(rows: Sequence[tuple[str, int]], *, title: str, unit: str) -> Markup:
    """One horizontal bar per row (a name and a count), the longest for the largest."""
    total, top = sum(count for _, count in rows), max((count for _, count in rows), default=0)
    desc = f"{total:,} {unit} in all" + "".join(f"; {name}: {count:,}" for name, count in rows) + "."
    width, row_height, left = 640, 26, 190
    height = max(len(rows), 1) * row_height + 8
    body = []
    for index, (name, count) in enumerate(rows):
        y = 4 + index * row_height
        bar = 0.0 if not top else (width - left - 80) * count / top
        body += [
            f'<text class="label" x="{left - 8}" y="{y + 17}" text-anchor="end">{escape(name)}</text>',
            f'<rect class="bar bar-{escape(name)}" x="{left}" y="{y + 4}"'
            f' width="{bar:.1f}" height="{row_height - 8}"/>',
            f'<text class="label" x="{left + bar + 6:.1f}" y="{y + 17}">{count:,}</text>',
        ]
    if not rows:
        body.append(f'<text class="label" x="{left}" y="20">no {escape(unit)}</text>')
    return _svg(width, height, title, desc, body)
