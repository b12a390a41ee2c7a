"""Opens the store that ``store.url`` names, choosing the backend (each imported only when chosen)."""

from __future__ import annotations

from gateway.store.base import KeyStore, StoreError

__all__ = ["open_store"]


async def open_store(url: str) -> KeyStore:
    """Open (and migrate) the store that ``url`` names."""
    if url.startswith("sqlite:///"):
        from gateway.store.sqlite import SQLiteStore

        return await SQLiteStore.open(url)
    if url.startswith(("postgresql://", "postgres://")):
        from gateway.store.postgres import PostgresStore

        return await PostgresStore.open(url)
    raise StoreError(f"store.url {url.split(':', 1)[0]}:// is not supported: use sqlite:///path.db or postgresql://")
