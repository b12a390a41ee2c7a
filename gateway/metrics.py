"""Prometheus metrics of one gateway process (prometheus-client, a registry of our own).

Served as ``GET /metrics`` on the admin listener. No key material and no per-key labels: the only
label is a request's ``outcome``. ``gateway serve`` runs one process (``--workers`` above 1 is
refused), so no multiprocess collection is needed yet.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["OUTCOMES", "Metrics"]

OUTCOMES = (
    "forwarded",
    "missing_key",
    "invalid_key",
    "subscription_inactive",
    "rate_limited",
    "too_large",
    "upstream_unavailable",
    "upstream_timeout",
    "internal_error",
)
# The gateway's own time is tens of microseconds; the upstream's, milliseconds to seconds.
_FAST = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)
_SLOW = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        requests = Counter(
            "gateway_requests", "Requests on the public listener, by outcome.", ["outcome"], registry=self.registry
        )
        # Bound once, so the hot path does no label lookup and every outcome shows from zero.
        self.outcome = {name: requests.labels(name) for name in OUTCOMES}
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "The gateway's own time per request, without the time spent waiting for the upstream.",
            buckets=_FAST,
            registry=self.registry,
        )
        self.upstream = Histogram(
            "gateway_upstream_seconds",
            "Time from sending a request upstream until its response head (and a small body) arrived.",
            buckets=_SLOW,
            registry=self.registry,
        )
        self.cache_hits = Counter("gateway_cache_hits", "Key verdicts found in the cache.", registry=self.registry)
        self.cache_misses = Counter(
            "gateway_cache_misses", "Key verdicts looked up in the store.", registry=self.registry
        )
        self.store_query = Histogram(
            "gateway_store_query_seconds", "Key look-ups in the store.", buckets=_SLOW, registry=self.registry
        )
        self.usage_flush = Histogram(
            "gateway_usage_flush_seconds",
            "Writes of usage counters to the store.",
            buckets=_SLOW,
            registry=self.registry,
        )
        self.usage_flush_failures = Counter(
            "gateway_usage_flush_failures",
            "Failed writes of usage counters (kept for the next).",
            registry=self.registry,
        )
        self.admin_auth_failures = Counter(
            "gateway_admin_auth_failures", "Admin requests with a missing or wrong token.", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
