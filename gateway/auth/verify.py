"""Who is calling: ``Authorization: Bearer <key>`` to an identity, through an in-memory cache.

The design notes: docs/internals.md, "gateway/auth/verify.py"."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import sys
import time
from collections.abc import Callable, Sequence

from limits import RateLimitItem

from gateway.accounting.metrics import Metrics
from gateway.auth.keys import KeyFormat
from gateway.auth.throttle import LookupThrottle
from gateway.auth.verdicts import Identity, Verdict, VerdictCache
from gateway.errors import (
    AuthThrottled,
    InvalidCredentials,
    MissingCredentials,
    StoreUnavailable,
    SubscriptionInactive,
)
from gateway.store import KeyStore
from gateway.units import parse_limits

__all__ = ["Identity", "Verifier", "bearer_token"]

logger = logging.getLogger("gateway.error")

# How long an unknown key's hash is remembered at most (a new key clears it at once anyway).
MISS_TTL = 10.0


def _describe(exc: Exception) -> str:
    """An error's class and message. A driver's message names the failure, never a query's
    parameters, so no key hash can end up in the log."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def bearer_token(values: Sequence[bytes]) -> bytes:
    """The token of the one ``Authorization: Bearer`` header; MissingCredentials or InvalidCredentials."""
    if not values:
        raise MissingCredentials("no Authorization header")
    if len(values) > 1:
        raise InvalidCredentials("more than one Authorization header")
    scheme, _, token = values[0].strip().partition(b" ")
    if scheme.lower() != b"bearer":
        raise InvalidCredentials("Authorization scheme is not Bearer")
    token = token.strip(b" \t")
    if not token or b" " in token or b"\t" in token or b"," in token:
        raise InvalidCredentials("Bearer token is empty or not a single value")
    return token


class Verifier:
    def __init__(
        self,
        store: KeyStore,
        *,
        prefix: str,
        default_limits: tuple[RateLimitItem, ...],
        ttl: float,
        user_limits: tuple[RateLimitItem, ...] = (),
        max_entries: int,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
        lookup_timeout: float = 2.0,
        degraded_ttl: float = 1.0,
        legacy_prefixes: tuple[str, ...] = (),
        earlier_prefixes: tuple[str, ...] = (),
        throttle: LookupThrottle | None = None,
        changes_announced: bool = False,
    ) -> None:
        self._store = store
        self._throttle = throttle
        self._lookup_timeout = lookup_timeout
        self._metrics = metrics
        self._format = KeyFormat(prefix, legacy_prefixes, earlier_prefixes)
        self._default_limits = default_limits
        self._default_user_limits = user_limits
        # Stored limits as parsed, so that keys and users with the same limits share one tuple
        # (the limiter checks a record's limits by identity first: equality is slow Python).
        self._parsed: dict[str, tuple[RateLimitItem, ...]] = {}
        self._clock = clock
        # The verdicts of stored keys: fresh for the TTL, kept past it for when the store cannot
        # be read, and saying which keys were ever found good (their look-ups are never
        # throttled, so that a client behind the same address as a guesser keeps its key working
        # when its verdict is no longer fresh; an attacker gains nothing from it without a good
        # key). Unknown keys apart, so that a flood of them cannot push good keys out.
        self._known = VerdictCache(max_entries, ttl, timer)
        self._unknown = VerdictCache(max(1024, max_entries // 10), min(ttl, MISS_TTL), timer)
        self._inflight: dict[bytes, asyncio.Future[Verdict]] = {}
        self._seen = store.changes()
        self._store_failing = False
        self._ttl = ttl
        # Whether Redis announces every write (redis.url): see _last_known_holds.
        self._changes_announced = changes_announced
        # The shared change epoch (Redis) last seen; see note_epoch.
        self._epoch: bytes | None = None
        # While Redis cannot tell of changes, verdicts are dropped every degraded_ttl seconds.
        self._timer = timer
        self.degraded_ttl = degraded_ttl
        self._degraded = False
        self._refresh_at = 0.0

    async def verify(self, authorization: Sequence[bytes], address: str | None = None) -> Identity:
        """The caller's identity; raises an AuthenticationError, SubscriptionInactive, StoreUnavailable,
        or AuthThrottled when ``address`` has used up its look-ups of keys not in the cache."""
        token = bearer_token(authorization)
        changes = self._store.changes()
        if changes != self._seen:
            self._seen = changes
            self._forget()
        if self._degraded and self._timer() >= self._refresh_at:
            self._refresh_at = self._timer() + self.degraded_ttl
            self._forget(keep_last_known=True)
        # The cache is keyed by the raw digest (half the memory of the hex the store uses).
        digest = hashlib.sha256(token).digest()
        verdict = self._known.fresh(digest) or self._unknown.fresh(digest)
        if verdict is None:
            if not self._format.accepts(token):
                raise InvalidCredentials("not a well-formed key (prefix, length or checksum)")
            if self._metrics is not None:
                self._metrics.cache_misses += 1
            counted = self._count_look_up(digest, address)
            try:
                verdict = await self._look_up(digest)
            except StoreUnavailable:
                self._refund(counted)  # no fault of the client's
                # A key that was good when last read stays good while the store cannot answer:
                # nothing can have been written meanwhile, or the change counter would have
                # emptied this cache too.
                known = self._known.last_known(digest)
                if known is None or not self._last_known_holds():
                    raise
                verdict = known
            else:
                if verdict.identity is not None and not verdict.revoked:
                    self._refund(counted)
        elif self._metrics is not None:
            self._metrics.cache_hits += 1
        identity = verdict.identity
        if identity is None:
            raise InvalidCredentials("unknown key")
        if verdict.revoked:
            raise InvalidCredentials(f"key {identity.key_id} is revoked")
        if verdict.valid_until is not None and self._clock() >= verdict.valid_until:
            raise InvalidCredentials(f"key {identity.key_id} has expired")
        if not verdict.subscription_active:
            raise SubscriptionInactive(f"user {identity.user_id} has no active subscription")
        return identity

    def _last_known_holds(self) -> bool:
        """Whether verdicts read before the store stopped answering still hold: while a write made
        by others would still be heard of (a known write forgets them). For a file on this host,
        always (a lock that keeps this process out keeps writers out too). For a database server
        others may reach, while Redis announces writes, or the store's own notifications are
        heard; once neither is, for one cache TTL, as a cached verdict would."""
        if not self._store.shared or (self._changes_announced and not self._degraded):
            return True
        unheard = self._store.unheard_for()
        return unheard is None or unheard < self._ttl

    def _count_look_up(self, digest: bytes, address: str | None) -> str | None:
        """Count a look-up against ``address`` before it starts (so that concurrent guesses cannot
        all reach the store); the address counted, or None. Joining a look-up already under way
        costs the store nothing and is not counted. Raises AuthThrottled when the address's count
        is used up."""
        throttle = self._throttle
        if throttle is None or address is None or digest in self._inflight or self._known.found_good(digest):
            return None
        retry_after = throttle.reserve(address)
        if retry_after is not None:
            limit = throttle.limit
            raise AuthThrottled(
                limit=limit.amount, window=f"{limit.get_expiry()}s", retry_after=retry_after, scope="address"
            )
        return address

    def _refund(self, counted: str | None) -> None:
        if counted is not None and self._throttle is not None:
            self._throttle.refund(counted)

    def note_epoch(self, epoch: bytes) -> bool:
        """The shared change epoch, as read with this request's rate limits: True if it moved
        since last seen (then every cached verdict is gone, and the caller checks its key again)."""
        if epoch == self._epoch:
            return False
        self._epoch = epoch
        self._forget()
        return True

    def set_degraded(self, degraded: bool) -> None:
        """Redis cannot (True) or can again (False) announce changes."""
        self._degraded = degraded
        self._refresh_at = self._timer() + self.degraded_ttl
        if not degraded:
            self._forget(keep_last_known=True)

    def _forget(self, *, keep_last_known: bool = False) -> None:
        if keep_last_known:
            self._known.expire_all()
        else:
            # Only a known write forgets these: they answer for a store that cannot be read.
            self._known.forget_all()
        self._unknown.expire_all()
        # Look-ups already under way may have read the old state: let them finish for their
        # own waiters, but make new requests start afresh.
        self._inflight = {}

    async def _look_up(self, digest: bytes) -> Verdict:
        pending = self._inflight.get(digest)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request was cancelled, not the look-up
                # The request that was looking it up left (its client gone): look again for this one.
                return await self._look_up(digest)
        inflight = self._inflight
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        inflight[digest] = future
        changes_before, generation = self._store.changes(), self._known.generation
        try:
            verdict = await self._fetch(digest.hex())
        except asyncio.CancelledError:
            future.cancel()  # its waiters look again (above)
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody else needs to
            raise
        finally:
            inflight.pop(digest, None)
        future.set_result(verdict)
        # Cache only what was read with no write in between: a write during the look-up may
        # have been missed by it.
        if self._store.changes() == changes_before == self._seen and generation == self._known.generation:
            (self._unknown if verdict.identity is None else self._known).put(digest, verdict)
        return verdict

    def _limits(
        self, stored: str | None, default: tuple[RateLimitItem, ...], kind: str, owner: str
    ) -> tuple[RateLimitItem, ...]:
        """Stored limits ("1000/minute;100000/day") as the limiter takes them, or ``default``."""
        if stored is None:
            return default
        parsed = self._parsed.get(stored)
        if parsed is None:
            try:
                parsed = parse_limits(stored)
            except ValueError:
                logger.error("%s %s has unreadable rate limits; using the default ones", kind, owner)
                return default
            if len(self._parsed) >= 10_000:  # bounded: cheap to parse again
                self._parsed.clear()
            self._parsed[stored] = parsed
        return parsed

    async def _fetch(self, key_hash: str) -> Verdict:
        started = time.perf_counter()
        try:
            # A locked SQLite file makes a read wait about 10 s before it fails: answer sooner.
            async with asyncio.timeout(self._lookup_timeout):
                found = await self._store.find_key(key_hash)
        except Exception as exc:
            # Neither let in nor turned away, and never cached: the next request asks again.
            if not self._store_failing:
                self._store_failing = True
                logger.warning("the key store cannot be read (%s); keys not known good get 503", _describe(exc))
            raise StoreUnavailable(f"key store: {_describe(exc)}") from None
        if self._store_failing:
            self._store_failing = False
            logger.warning("the key store answers again")
        if self._metrics is not None:
            self._metrics.store_query.observe(time.perf_counter() - started)
        if found is None or not hmac.compare_digest(found[0].key_hash, key_hash):
            return Verdict(identity=None)  # one each: the cache stamps it
        key, user = found
        return Verdict(
            identity=Identity(
                # One string per user for all its keys' identities.
                user_id=sys.intern(key.user_id),
                key_id=key.id,
                limits=self._limits(key.rate_limits, self._default_limits, "key", key.id),
                user_limits=self._limits(user.rate_limits, self._default_user_limits, "user", user.id),
            ),
            revoked=key.revoked_at is not None,
            valid_until=key.expires_at,
            subscription_active=user.subscription == "active",
        )
