"""The console's server-drawn charts and the last hour's outcomes, on an injected clock."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from gateway.admin.console.charts import bar_chart, daily_chart, day_range
from gateway.admin.console.outcomes import HOUR, OutcomeHistory
from gateway.store import DailyUsage
from tests.fakes import Clock

SVG = "{http://www.w3.org/2000/svg}"


def test_a_daily_chart_has_a_bar_a_day_and_says_what_it_shows() -> None:
    days = [DailyUsage("2026-12-02", 10, 0, 0, 0), DailyUsage("2026-12-04", 40, 1, 2, 0)]
    svg = ET.fromstring(str(daily_chart(days, "2026-12-01", "2026-12-05", title="Requests per day of bob")))
    assert svg.get("role") == "img"
    title, desc = svg.find(f"{SVG}title"), svg.find(f"{SVG}desc")
    assert title is not None and title.text == "Requests per day of bob"
    assert desc is not None and desc.text == "50 requests from 2026-12-01 to 2026-12-05; the most on 2026-12-04: 40."
    assert set((svg.get("aria-labelledby") or "").split()) == {title.get("id"), desc.get("id")}
    bars = svg.findall(f"{SVG}rect")
    assert [bar.findtext(f"{SVG}title") for bar in bars] == [
        f"2026-12-0{day}: {count} requests" for day, count in ((1, 0), (2, 10), (3, 0), (4, 40), (5, 0))
    ]
    heights = [float(bar.get("height") or 0) for bar in bars]
    assert heights[3] == max(heights) and heights[1] == heights[3] / 4 and heights[0] == 0


def test_charts_escape_what_they_name_and_have_ids_of_their_own() -> None:
    one = str(bar_chart([("<script>", 3)], title="a & b", unit="requests"))
    two = str(bar_chart([], title="none", unit="requests"))
    assert "<script>" not in one and "&lt;script&gt;" in one and "a &amp; b" in one
    assert "no requests" in two
    assert re.findall(r'id="(chart-\d+)-title"', one) != re.findall(r'id="(chart-\d+)-title"', two)


def test_day_range() -> None:
    assert day_range("2026-12-30", "2027-01-02") == ["2026-12-30", "2026-12-31", "2027-01-01", "2027-01-02"]


def test_the_last_hour_is_what_the_counts_grew_since_an_hour_ago(clock: Clock) -> None:
    counts = {"forwarded": 100, "invalid_key": 5}
    history = OutcomeHistory(lambda: counts, clock)
    started = clock.now
    counts["forwarded"] += 7
    recent = history.last_hour()
    assert (recent.since, recent.counts) == (started, {"forwarded": 7})  # a young process: since it started
    for _ in range(90):  # an hour and a half, a snapshot a minute
        clock.tick(60)
        counts["forwarded"] += 1
        history.sample()
    counts["invalid_key"] += 2
    recent = history.last_hour()
    assert clock.now - recent.since == HOUR
    assert recent.counts == {"forwarded": 60, "invalid_key": 2}
