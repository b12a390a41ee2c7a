"""What the verifier remembers of each key it has looked up: one verdict per key digest, in one
plain dict, bounded and with a lifetime.

One dict answers three questions that three caches used to (cachetools' ``TTLCache`` for fresh
verdicts and two ``LRUCache`` for the last known ones and the keys ever found good): 54 of the 122
MiB that 100,000 active keys took (``bench/keys_bench.py``), for each cache keeps its own dict, a
linked node and an order dict per entry. Here an entry is the verdict itself, which carries the
stamps that say which questions it still answers:

- ``fresh``: read within the TTL and since the last ``expire_all`` (a change made elsewhere, or the
  periodic refresh while Redis cannot announce changes). A fresh verdict is used as it is.
- ``last_known``: read since the last ``forget_all`` (a write this process knows of), however long
  ago. It answers for a store that cannot be read: nothing can have been written meanwhile.
- ``found_good``: a good key's verdict, of any age (a write does not remove it). Its look-ups are
  never throttled, so that a client behind the address of a guesser keeps working.

The generation and epoch stamps are shared int objects, and the entries are kept in the order they
were read (a new read moves an entry to the end), so the oldest go first, a sixteenth at a time,
when the dict is full: one pass over the front of the dict per batch, never one per entry.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem

__all__ = ["Identity", "Verdict", "VerdictCache"]


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    key_id: str
    # The key's rate limits: its own, or rate_limits.default (the very same tuple).
    limits: tuple[RateLimitItem, ...] = ()
    # Its user's limits over all its keys: its own, or rate_limits.per_user (none: empty).
    user_limits: tuple[RateLimitItem, ...] = ()


@dataclass(slots=True)
class Verdict:
    identity: Identity | None  # None: no such key
    revoked: bool = False
    valid_until: float | None = None
    subscription_active: bool = True
    # Set by the cache that keeps it: until when it is fresh, and the cache's generation and epoch
    # when it was kept.
    fresh_until: float = 0.0
    generation: int = -1
    epoch: int = -1


class VerdictCache:
    def __init__(self, max_entries: int, ttl: float, timer: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._entries: dict[bytes, Verdict] = {}
        self.max_entries = max_entries
        self.ttl = ttl
        self._timer = timer
        self._batch = max(1, max_entries // 16)
        self.generation = 0  # advanced by expire_all and forget_all: nothing read before is fresh
        self.epoch = 0  # advanced by forget_all: nothing read before is known

    def __len__(self) -> int:
        return len(self._entries)

    def fresh(self, digest: bytes) -> Verdict | None:
        verdict = self._entries.get(digest)
        if verdict is None or verdict.generation != self.generation or self._timer() >= verdict.fresh_until:
            return None
        return verdict

    def last_known(self, digest: bytes) -> Verdict | None:
        verdict = self._entries.get(digest)
        if verdict is None or verdict.epoch != self.epoch:
            return None
        return verdict

    def found_good(self, digest: bytes) -> bool:
        verdict = self._entries.get(digest)
        return verdict is not None and verdict.identity is not None and not verdict.revoked

    def put(self, digest: bytes, verdict: Verdict) -> None:
        """Keep ``verdict``, just read from the store, as fresh for the TTL."""
        entries = self._entries
        if entries.pop(digest, None) is None and len(entries) >= self.max_entries:
            for oldest in list(itertools.islice(entries, self._batch)):
                del entries[oldest]
        verdict.fresh_until = self._timer() + self.ttl
        verdict.generation = self.generation
        verdict.epoch = self.epoch
        entries[digest] = verdict

    def expire_all(self) -> None:
        """No verdict kept so far is fresh any more; each stays known."""
        self.generation += 1

    def forget_all(self) -> None:
        """No verdict kept so far is fresh or known any more (each still says whether its key was found good)."""
        self.generation += 1
        self.epoch += 1
