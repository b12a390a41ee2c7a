"""What is degraded, in words an operator can act on: for ``/readyz`` and the console's overview,
so the two say the same."""

from __future__ import annotations

import asyncio
import logging

from gateway.accounting.metrics import Metrics
from gateway.config import GatewayConfig
from gateway.store import KeyStore, StoreError

__all__ = ["redis_problem", "store_problem"]

logger = logging.getLogger("gateway.error")


async def store_problem(store: KeyStore) -> str | None:
    """Why the key store cannot be used, or None when it answers (within 2 s)."""
    try:
        await asyncio.wait_for(store.check(), timeout=2)
    except Exception as exc:  # whatever the reason, not ready
        # Shown without a token (/readyz): the reason is the gateway's own words (a file replaced,
        # a folder gone), or the failure's kind; a driver's message, which may name the server, is
        # only logged.
        logger.warning("readyz: the key store does not answer (%s: %s)", type(exc).__name__, exc)
        return f"store: {(str(exc) if isinstance(exc, StoreError) else '') or type(exc).__name__}"
    return None


def redis_problem(config: GatewayConfig, metrics: Metrics) -> str | None:
    """Why Redis is not in use, or None when it is (or none is configured): the processes that
    count it down (``gateway_redis_degraded``, every worker of this ``serve``)."""
    if config.redis.url is None:
        return None
    degraded = metrics.redis_degraded_processes()
    if not degraded:
        return None
    serving = "serving on with limits per process" if config.redis.on_failure == "open" else "answering 503"
    return f"redis: cannot be used by {degraded} gateway process{'es' if degraded > 1 else ''} ({serving})"
