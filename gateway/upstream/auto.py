"""Chooses the upstream hop's HTTP client: ``upstream.client`` selects ``builtin`` (the default: the
gateway's own, on httptools), ``aiohttp`` or ``httpx``. Each is imported only when chosen."""

from __future__ import annotations

from gateway.config import UpstreamConfig
from gateway.upstream.base import UpstreamClient

__all__ = ["open_upstream_client"]


async def open_upstream_client(config: UpstreamConfig) -> UpstreamClient:
    """One pooled client for the app's lifetime; call inside the running event loop."""
    if config.client == "aiohttp":
        from gateway.upstream.aiohttp_client import AiohttpUpstream

        return AiohttpUpstream(config)
    if config.client == "httpx":
        from gateway.upstream.httpx_client import HttpxUpstream

        return HttpxUpstream(config)
    from gateway.upstream.builtin_client import BuiltinUpstream

    return BuiltinUpstream(config)
