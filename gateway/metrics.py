"""Prometheus metrics of one gateway process, exposed with prometheus-client.

Served as ``GET /metrics`` on the admin listener. No key material and no per-key labels: the only
label is a request's ``outcome``. ``gateway serve`` runs one process (``--workers`` above 1 is
refused), so no multiprocess collection is needed yet.

The per-request metrics (outcomes, the gateway's own time, the upstream's time, cache hits and
misses) are plain integers and lists bumped on the event loop, and turned into metric families
only when scraped (a prometheus-client custom collector): prometheus-client's own Counter and
Histogram take a lock on every update, which measured at about 5 µs a request on the hot path.
The rest (store queries, usage flushes, admin refusals) are prometheus-client metrics as usual.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["OUTCOMES", "Metrics"]

OUTCOMES = (
    "forwarded",
    "missing_key",
    "invalid_key",
    "subscription_inactive",
    "rate_limited",
    "auth_throttled",
    "too_large",
    "upstream_unavailable",
    "upstream_timeout",
    "bad_request",
    "method_not_allowed",
    "request_timeout",
    "headers_too_large",
    "store_unavailable",
    "overloaded",
    "internal_error",
    "client_closed",
)
# The gateway's own time is tens of microseconds; the upstream's, milliseconds to seconds.
_FAST = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)
_SLOW = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class LoopHistogram:
    """Histogram counts without a lock: updated only from the event loop's thread."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.total)


class _HotPathCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        requests = CounterMetricFamily(
            "gateway_requests", "Requests on the public listener, by outcome.", labels=["outcome"]
        )
        for name in OUTCOMES:
            requests.add_metric([name], m.outcomes[name])
        yield requests
        yield m.overhead.family(
            "gateway_overhead_seconds",
            "The gateway's own time per request, without the wait for the upstream's response head.",
        )
        yield m.upstream.family(
            "gateway_upstream_seconds", "Time from sending a request upstream until its response head arrived."
        )
        yield CounterMetricFamily("gateway_cache_hits", "Key verdicts found in the cache.", value=m.cache_hits)
        yield CounterMetricFamily("gateway_cache_misses", "Key verdicts looked up in the store.", value=m.cache_misses)
        # Scraped on the admin listener, which shares the public listener's event loop: a count that
        # grows with traffic and never comes back down is a leak (a request's task left behind).
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # no running loop: rendered outside the server
            return
        yield GaugeMetricFamily("gateway_event_loop_tasks", "Tasks alive on the event loop.", value=tasks)


class Metrics:
    def __init__(self) -> None:
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.overhead = LoopHistogram(_FAST)
        self.upstream = LoopHistogram(_SLOW)
        self.cache_hits = 0
        self.cache_misses = 0
        self.registry = registry = CollectorRegistry()
        registry.register(_HotPathCollector(self))
        # process_open_fds, process_resident_memory_bytes, ...: what a flood or a leak shows in first.
        ProcessCollector(registry=registry)
        self.store_query = Histogram(
            "gateway_store_query_seconds", "Key look-ups in the store.", buckets=_SLOW, registry=registry
        )
        self.usage_flush = Histogram(
            "gateway_usage_flush_seconds", "Writes of usage counters to the store.", buckets=_SLOW, registry=registry
        )
        self.usage_flush_failures = Counter(
            "gateway_usage_flush_failures", "Failed writes of usage counters (kept for the next).", registry=registry
        )
        self.admin_auth_failures = Counter(
            "gateway_admin_auth_failures", "Admin requests with a missing or wrong token.", registry=registry
        )

    def request(self, outcome: str, overhead: float, upstream: float | None) -> None:
        """One request on the public listener; ``upstream`` is None when it was not sent upstream."""
        self.outcomes[outcome] += 1
        self.overhead.observe(overhead)
        if upstream is not None:
            self.upstream.observe(upstream)

    def render(self) -> bytes:
        return generate_latest(self.registry)
