"""The public listener's ASGI application: the lifespan that owns the upstream client, and the proxy.

Nothing on this listener is reserved for the gateway: every path belongs to the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from urllib.parse import urlsplit

from gateway.accounting.access_log import AccessLog
from gateway.accounting.metrics import Metrics
from gateway.accounting.usage import UsageRecorder
from gateway.accounting.wallet import CreditWallet, Wallet
from gateway.auth.throttle import LookupThrottle
from gateway.auth.verify import Verifier
from gateway.config import GatewayConfig
from gateway.http.headers import RequestHeaderRules
from gateway.http.ledger import Ledger
from gateway.http.proxy import Proxy
from gateway.ratelimit.limiter import Limiter
from gateway.store import open_store
from gateway.types import Receive, Scope, Send
from gateway.upstream.auto import open_upstream_client
from gateway.upstream.base import UpstreamClient

__all__ = ["GatewayApp", "create_app"]

logger = logging.getLogger("gateway.error")


class GatewayApp:
    """The public listener's app. What the HTTP protocol needs from the first connection on (the
    header rules, the ledger) is made here; the proxy, which needs the store and the upstream
    client, is made whole by the lifespan's start-up, before the first request."""

    def __init__(
        self, config: GatewayConfig, *, upstream_client: UpstreamClient | None = None, metrics: Metrics | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        identity = config.identity_headers
        self.rules = RequestHeaderRules(
            urlsplit(config.upstream.url).netloc.encode("latin-1"),
            preserve_host=config.upstream.preserve_host,
            trusted_peers=config.proxy.trusted_peers,
            identity_headers=(identity.user_id, identity.key_id),
            forward_authorization=config.upstream.forward_authorization,
        )
        self.ledger = Ledger(self.metrics, AccessLog() if config.logging.access else None)
        self._given_client = upstream_client
        self._proxy: Proxy | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            proxy = self._proxy
            if proxy is None:
                raise RuntimeError("a request before the lifespan's start-up: the app is not started")
            await proxy(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        # Other scopes (websocket) never arrive: the server runs with ws="none", and Upgrade is
        # hop-by-hop, so an upgrade request is forwarded as a plain HTTP request.

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        async with contextlib.AsyncExitStack() as resources:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    try:
                        self._proxy = await self._start(resources)
                    except Exception as exc:
                        logger.error("cannot start: %s", exc)
                        await send({"type": "lifespan.startup.failed", "message": f"cannot start: {exc}"})
                        return
                    # Everything made so far lives as long as the process: keep it out of the
                    # cyclic GC's scans, which otherwise walk it on every full collection.
                    gc.freeze()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await resources.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _start(self, resources: contextlib.AsyncExitStack) -> Proxy:
        """Open the access log, the store (migrating it), the limiter, the usage recorder and the
        upstream client, and the proxy that uses them.

        On shutdown they close in reverse order: the last usage is written before the store closes,
        and the last access-log line after everything else.
        """
        config = self.config
        access_log = self.ledger.access_log
        if access_log is not None:
            access_log.start()
            resources.push_async_callback(asyncio.to_thread, access_log.close)
        store = await open_store(config.store.url)
        resources.push_async_callback(store.close)
        verifier = Verifier(
            store,
            prefix=config.keys.prefix,
            default_limits=config.rate_limits.default,
            user_limits=config.rate_limits.per_user,
            ttl=config.cache.ttl_seconds,
            max_entries=config.cache.max_entries,
            metrics=self.metrics,
            lookup_timeout=config.store.lookup_timeout,
            degraded_ttl=config.cache.degraded_ttl_seconds,
            legacy_prefixes=config.keys.legacy_prefixes,
            earlier_prefixes=config.keys.earlier_prefixes,
            changes_announced=config.redis.url is not None,
            throttle=LookupThrottle(config.auth_failures.limit) if config.auth_failures.limit is not None else None,
        )
        limiter = Limiter()
        shared = None
        if config.redis.url is not None:
            from gateway.ratelimit.redis_state import RedisState
            from gateway.ratelimit.shared import SharedLimiter

            shared = SharedLimiter(
                RedisState(config.redis.url, timeout=config.redis.timeout),
                limiter,
                verifier,
                fail_open=config.redis.on_failure == "open",
                metrics=self.metrics,
            )
            resources.push_async_callback(shared.aclose)
        if shared is None:
            # Limits counted in this process alone: resume the windows the last run saved.
            limiter.restore(await store.load_windows(limiter.clock()))
        wallet = Wallet(store, refill=config.credits.refill) if config.credits.wallet else None
        credit_wallet: CreditWallet | None = wallet
        if wallet is not None and shared is not None:
            from gateway.ratelimit.shared_wallet import SharedWallet

            credit_wallet = shared_wallet = SharedWallet(
                shared.state,
                wallet,
                refill=config.credits.refill,
                fail_open=config.redis.on_failure == "open",
                degraded=lambda: shared.degraded,
            )
            resources.push_async_callback(shared_wallet.aclose)  # before Redis closes
        usage = UsageRecorder(
            store,
            metrics=self.metrics,
            windows=limiter if shared is None else None,
            history_days=config.usage.history_days,
            wallet=wallet,
        )
        flusher = asyncio.create_task(usage.run(config.usage.flush_seconds))
        resources.push_async_callback(_stop_usage, usage, flusher)
        publisher = asyncio.create_task(self.metrics.publish_forever())
        resources.callback(self.metrics.publish)  # runs after the cancel below: the last counts
        resources.callback(publisher.cancel)
        client = self._given_client or await open_upstream_client(config.upstream)
        resources.push_async_callback(client.aclose)
        return Proxy(
            config,
            rules=self.rules,
            ledger=self.ledger,
            verifier=verifier,
            limiter=limiter,
            shared_limiter=shared,
            usage=usage,
            client=client,
            wallet=credit_wallet,
        )


async def _stop_usage(usage: UsageRecorder, flusher: asyncio.Task[None]) -> None:
    """Let the usage task write what is pending, then end."""
    usage.stop()
    await flusher


def create_app(
    config: GatewayConfig, *, upstream_client: UpstreamClient | None = None, metrics: Metrics | None = None
) -> GatewayApp:
    """The gateway as an ASGI app; ``upstream_client`` replaces the one the lifespan would open, and
    ``metrics`` is shared with the admin listener."""
    return GatewayApp(config, upstream_client=upstream_client, metrics=metrics)
