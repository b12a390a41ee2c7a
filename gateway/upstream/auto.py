"""Chooses the upstream hop's HTTP client: ``upstream.client`` selects ``aiohttp`` (the default),
``httpx`` or ``builtin`` (the gateway's own, on httptools). Each is imported only when chosen."""

from __future__ import annotations

from gateway.config import UpstreamConfig
from gateway.upstream.base import UpstreamClient

__all__ = ["open_upstream_client"]


async def open_upstream_client(config: UpstreamConfig) -> UpstreamClient:
    """One pooled client for the app's lifetime; call inside the running event loop."""
    if config.client == "httpx":
        from gateway.upstream.httpx_client import HttpxUpstream

        return HttpxUpstream(config)
    if config.client == "builtin":
        from gateway.upstream.builtin_client import BuiltinUpstream

        return BuiltinUpstream(config)
    from gateway.upstream.aiohttp_client import AiohttpUpstream

    return AiohttpUpstream(config)
