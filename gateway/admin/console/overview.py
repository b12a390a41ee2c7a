"""The overview: what the gateway did in the last hour, today's busiest keys, and what is degraded."""

from __future__ import annotations

from starlette.responses import Response

from gateway.admin.console.charts import bar_chart
from gateway.admin.console.web import Visit, page, when
from gateway.admin.health import redis_problem, store_problem

__all__ = ["overview"]

BUSIEST = 10


@page
async def overview(visit: Visit) -> Response:
    console = visit.console
    recent = console.outcomes.last_hour()
    outcomes = sorted(recent.counts.items(), key=lambda item: (-item[1], item[0]))
    store = await store_problem(visit.service.store)
    busiest = [] if store is not None else await visit.service.busiest_keys(BUSIEST)
    return visit.render(
        "overview.html",
        nav="overview",
        since=recent.since,
        outcomes=outcomes,
        outcomes_chart=bar_chart(outcomes, title=f"Requests by outcome since {when(recent.since)}", unit="requests"),
        busiest=busiest,
        store_problem=store,
        redis_configured=console.config.redis.url is not None,
        redis_problem=redis_problem(console.config, console.metrics),
    )
