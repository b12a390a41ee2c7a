"""Prometheus metrics of the gateway, exposed with prometheus-client.

The design notes: docs/internals.md, "gateway/accounting/metrics.py"."""

from __future__ import annotations

import asyncio
import mmap
import struct
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway import __version__

__all__ = ["CODE_CLASSES", "OUTCOMES", "Metrics", "WorkerSlots"]

OUTCOMES = (
    "forwarded",
    "missing_key",
    "invalid_key",
    "subscription_inactive",
    "rate_limited",
    "auth_throttled",
    "concurrency_limited",
    "insufficient_credits",
    "too_large",
    "upstream_unavailable",
    "upstream_timeout",
    "bad_request",
    "method_not_allowed",
    "request_timeout",
    "headers_too_large",
    "store_unavailable",
    "overloaded",
    "upstream_busy",
    "internal_error",
    "client_closed",
)
# The status class of the answer a client got: "2xx" for 200 to 299 (index status // 100; 0 unused).
CODE_CLASSES = ("", "1xx", "2xx", "3xx", "4xx", "5xx")
# Listed from the start, at 0, so that a rate of them is 0 rather than nothing: a forwarded answer
# in each class the upstream may give, every other outcome (the gateway's own answers, 4xx or 5xx
# in every profile) in both. Any other pair is listed once counted (a client that left after a
# 2xx head: client_closed, 2xx).
_LISTED = {outcome: (2, 3, 4, 5) if outcome == "forwarded" else (4, 5) for outcome in OUTCOMES}
# The gateway's own time is tens of microseconds; the upstream's, milliseconds to seconds.
_FAST = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)
_SLOW = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PUBLISH_SECONDS = 1.0


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

    def values(self) -> list[float]:
        return [*self.counts, self.total]

    def family(self, name: str, documentation: str, values: Sequence[float]) -> HistogramMetricFamily:
        cumulative, buckets = 0.0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), values[:-1], strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=values[-1])


class LoopCounter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self) -> None:
        self.value += 1

    def set(self, value: float) -> None:
        self.value = value


class Metrics:
    def __init__(self, slots: WorkerSlots | None = None, slot: int = 0) -> None:
        # Per outcome, its requests by the status class of the answer (index status // 100).
        self.requests = {outcome: [0] * len(CODE_CLASSES) for outcome in OUTCOMES}
        self.overhead = LoopHistogram(_FAST)
        self.upstream = LoopHistogram(_SLOW)
        self.store_query = LoopHistogram(_SLOW)
        self.usage_flush = LoopHistogram(_SLOW)
        self.cache_hits = 0
        self.cache_misses = 0
        self.usage_flush_failures = LoopCounter()
        self.admin_auth_failures = LoopCounter()
        self.redis_failures = LoopCounter()
        self.rate_limit_observed = LoopCounter()
        self.redis_degraded = LoopCounter()  # a gauge: 1 while degraded
        self._slots, self._slot = slots, slot
        if slots is not None:
            self._restore(slots.read(slot))
        self.registry = registry = CollectorRegistry()
        registry.register(_Collector(self))
        # process_open_fds, process_resident_memory_bytes, ...: what a flood or a leak shows in first.
        ProcessCollector(registry=registry)

    def request(self, outcome: str, status: int, overhead: float, upstream: float | None) -> None:
        """One request on the public listener, answered with ``status`` (499: the client left
        first); ``upstream`` is None when it was not sent upstream."""
        self.requests[outcome][status // 100] += 1
        self.overhead.observe(overhead)
        if upstream is not None:
            self.upstream.observe(upstream)

    @property
    def outcomes(self) -> dict[str, int]:
        """Requests by outcome, every class together."""
        return {outcome: sum(counts) for outcome, counts in self.requests.items()}

    def values(self) -> list[float]:
        """Every value, flat, in a fixed order (the slots' layout); the live gauges last."""
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # no running loop: rendered outside the server
            tasks = 0
        return [
            *(count for counts in self.requests.values() for count in counts),
            *self.overhead.values(),
            *self.upstream.values(),
            *self.store_query.values(),
            *self.usage_flush.values(),
            self.cache_hits,
            self.cache_misses,
            self.usage_flush_failures.value,
            self.admin_auth_failures.value,
            self.redis_failures.value,
            self.rate_limit_observed.value,
            self.redis_degraded.value,
            tasks,
        ]

    def _restore(self, values: Sequence[float]) -> None:
        """Start counting from a dead worker's last values (its gauges are not carried over)."""
        if not any(values):
            return
        it = iter(values)
        for counts in self.requests.values():
            counts[:] = [int(next(it)) for _ in counts]
        for histogram in (self.overhead, self.upstream, self.store_query, self.usage_flush):
            histogram.counts = [int(next(it)) for _ in histogram.counts]
            histogram.total = next(it)
        self.cache_hits, self.cache_misses = int(next(it)), int(next(it))
        for counter in (
            self.usage_flush_failures,
            self.admin_auth_failures,
            self.redis_failures,
            self.rate_limit_observed,
        ):
            counter.value = next(it)

    def totals(self) -> list[float]:
        """This process's values, plus every other worker's last published ones."""
        own = self.values()
        if self._slots is None:
            return own
        return self._slots.add_others(self._slot, own)

    def outcome_totals(self) -> dict[str, int]:
        """Requests by outcome, every worker's together (as /metrics counts them)."""
        values, width = self.totals(), len(CODE_CLASSES)  # each outcome's counts by status class
        return {outcome: int(sum(values[i * width : (i + 1) * width])) for i, outcome in enumerate(OUTCOMES)}

    def redis_degraded_processes(self) -> int:
        """Processes that cannot use Redis, every worker's together (gateway_redis_degraded)."""
        return int(self.totals()[-2])  # values() ends with this gauge and the task count

    def publish(self) -> None:
        """Copy the values into this worker's slot (with --workers N)."""
        if self._slots is not None:
            self._slots.write(self._slot, self.values())

    async def publish_forever(self) -> None:
        """Publish every PUBLISH_SECONDS (and once more at shutdown: see the app's lifespan)."""
        if self._slots is None:
            return
        while True:
            self.publish()
            await asyncio.sleep(PUBLISH_SECONDS)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def vector_size() -> int:
    return len(Metrics().values())


class WorkerSlots:
    """One row of doubles per worker in an anonymous shared mapping, made before forking."""

    def __init__(self, workers: int) -> None:
        self._row = struct.Struct(f"<{vector_size()}d")
        self.workers = workers
        self._map = mmap.mmap(-1, self._row.size * workers)

    def write(self, slot: int, values: Sequence[float]) -> None:
        self._row.pack_into(self._map, slot * self._row.size, *values)

    def read(self, slot: int) -> tuple[float, ...]:
        return self._row.unpack_from(self._map, slot * self._row.size)

    def add_others(self, slot: int, own: Sequence[float]) -> list[float]:
        total = list(own)
        for other in range(self.workers):
            if other != slot:
                for i, value in enumerate(self.read(other)):
                    total[i] += value
        return total


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        values = m.totals()
        at = 0

        def take(count: int) -> Sequence[float]:
            nonlocal at
            at += count
            return values[at - count : at]

        build = GaugeMetricFamily(
            "gateway_build_info", "The gateway's version, as a label; the value is 1.", labels=["version"]
        )
        build.add_metric([__version__], 1)
        yield build
        requests = CounterMetricFamily(
            "gateway_requests",
            "Requests on the public listener, by outcome and by the status class of the answer the client got.",
            labels=["outcome", "code_class"],
        )
        for outcome in OUTCOMES:
            counts = take(len(CODE_CLASSES))
            for index, count in enumerate(counts):
                if count or index in _LISTED[outcome]:
                    requests.add_metric([outcome, CODE_CLASSES[index]], count)
        yield requests
        histograms = (
            (
                m.overhead,
                "gateway_overhead_seconds",
                "The gateway's own time per request, without the wait for the upstream's response head.",
            ),
            (
                m.upstream,
                "gateway_upstream_seconds",
                "Time from sending a request upstream until its response head arrived.",
            ),
            (m.store_query, "gateway_store_query_seconds", "Key look-ups in the store."),
            (m.usage_flush, "gateway_usage_flush_seconds", "Writes of usage counters to the store."),
        )
        for histogram, name, documentation in histograms:
            yield histogram.family(name, documentation, take(len(histogram.counts) + 1))
        for name, documentation in (
            ("gateway_cache_hits", "Key verdicts found in the cache."),
            ("gateway_cache_misses", "Key verdicts looked up in the store."),
            ("gateway_usage_flush_failures", "Failed writes of usage counters (kept for the next)."),
            ("gateway_admin_auth_failures", "Admin requests with a missing or wrong token."),
            ("gateway_redis_failures", "Times Redis stopped answering (each starts a degraded spell)."),
            (
                "gateway_rate_limit_observed",
                "Requests that a limit in observe mode would have refused (forwarded all the same).",
            ),
        ):
            yield CounterMetricFamily(name, documentation, value=take(1)[0])
        yield GaugeMetricFamily(
            "gateway_redis_degraded",
            "Processes that cannot use Redis (limits per process, or 503 with redis.on_failure: closed).",
            value=take(1)[0],
        )
        # A count that grows with traffic and never comes back down is a leak (a request's task
        # left behind).
        yield GaugeMetricFamily("gateway_event_loop_tasks", "Tasks alive on the event loops.", value=take(1)[0])
