"""Redis as the state every worker and replica shares: each key's rate-limit windows, and the
change epoch that tells every process to drop its cached key verdicts.

The design notes: docs/internals.md, "gateway/ratelimit/redis_state.py"."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import redis.asyncio as redis
from redis.exceptions import RedisError

from gateway.ratelimit.limiter import KEY, Charge, Decision, Window, choose_shown
from gateway.units import Limits

__all__ = ["EPOCH_KEY", "RedisState", "is_redis_failure"]

EPOCH_KEY = "gateway:epoch"
_LIMIT_NAMESPACE = "gateway"

# An epoch that does not exist yet starts at Redis's clock in microseconds.
_START_EPOCH = """
local function epoch(key)
  local value = redis.call('GET', key)
  if not value then
    local now = redis.call('TIME')
    value = now[1] .. string.format('%06d', tonumber(now[2]))
    redis.call('SET', key, value)
  end
  return value
end
"""

# KEYS: the windows' keys, then the epoch's. ARGV: the windows' amounts, their lengths in ms, and
# 1 for a window only observed (it never refuses; full, it counts no further), else 0.
_HIT = (
    _START_EPOCH
    + """
local n = #ARGV / 3
local counts, ttls, full, allowed = {}, {}, {}, 1
for i = 1, n do
  local ttl = redis.call('PTTL', KEYS[i])
  local count = 0
  if ttl > 0 then count = tonumber(redis.call('GET', KEYS[i]) or '0') end
  counts[i], ttls[i] = count, ttl
  full[i] = 0
  if count >= tonumber(ARGV[i]) then
    full[i] = 1
    if ARGV[2 * n + i] == '0' then allowed = 0 end
  end
end
if allowed == 1 then
  for i = 1, n do
    if full[i] == 0 then
      if counts[i] == 0 then
        redis.call('SET', KEYS[i], 1, 'PX', ARGV[n + i])
        ttls[i] = tonumber(ARGV[n + i])
      else
        redis.call('INCR', KEYS[i])
      end
      counts[i] = counts[i] + 1
    end
  end
end
return {allowed, counts, ttls, epoch(KEYS[n + 1]), full}
"""
)

_ANNOUNCE = (
    _START_EPOCH
    + """
epoch(KEYS[1])
return redis.call('INCR', KEYS[1])
"""
)


# The credit wallet shared by every replica: per user a hash of its spendable balance ("bal", the
# stored balance less what is spent and reserved), the refill period it was read in, and a
# generation ("gen", new at each read from the store) that reservations carry.
# Connections to Redis per process: each carries one script call at a time.
MAX_CONNECTIONS = 256

WALLET_PREFIX = "gateway-wallet:"
# Each user's change version, apart from the hash so that deleting the hash keeps it: bumped by
# every operator change and every deletion, so that a balance read from the store before one of
# them is never written over it.
_WALLET_VERSION = "gateway-wallet-version:"
_WALLET_GENERATION = "gateway-wallet-generation"

# A new generation: the time in microseconds, or one more than the last if that is later. Never
# reused, even after Redis restarts and loses the counter: a reservation of an earlier generation
# is never given back to a later balance, and its set tag is never taken for another's.
_NEXT_GENERATION = """
local function next_generation(counter)
  local now = redis.call('TIME')
  local g = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local last = tonumber(redis.call('GET', counter) or '0')
  if g <= last then g = last + 1 end
  redis.call('SET', counter, g)
  return g
end
"""

# A user's hash: bal (left to spend), period (the refill period it is of), gen (its generation,
# new whenever the balance is read or set anew), setat (the tag of the operator's last --set, a
# string: spending is taken off the store only under the set it was made under).
#
# KEYS: the hash, the version. ARGV: the cost, the refill period. {-1, version}: not known (or of
# an earlier period): read it from the store first; {0, bal}: refused; {1, bal left, gen, setat}:
# reserved. A hash of a later period than the caller's (its clock lags) is the current one.
_WALLET_RESERVE = """
local h = redis.call('HMGET', KEYS[1], 'bal', 'period', 'gen', 'setat')
if not h[1] or not h[2] or h[2] < ARGV[2] then
  return {-1, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
local bal = tonumber(h[1])
if bal < tonumber(ARGV[1]) then return {0, bal} end
bal = redis.call('HINCRBY', KEYS[1], 'bal', -tonumber(ARGV[1]))
return {1, bal, tonumber(h[3]), h[4] or '0'}
"""

# KEYS: the hash, the generation counter, the version. ARGV: the balance read from the store, its
# period, the set's tag, the version seen before it was read. Written only if no change came
# since (else the caller reads again), and over no balance of the same or a later period (another
# replica's read stands: its reservations are in it already).
_WALLET_START = (
    _NEXT_GENERATION
    + """
if tonumber(redis.call('GET', KEYS[3]) or '0') ~= tonumber(ARGV[4]) then return 0 end
local period = redis.call('HGET', KEYS[1], 'period')
if period and period >= ARGV[2] then return 1 end
redis.call('HSET', KEYS[1], 'bal', ARGV[1], 'period', ARGV[2], 'setat', ARGV[3], 'gen', next_generation(KEYS[2]))
return 1
"""
)

# KEYS: the hash, the generation counter, the version. ARGV: 'add', 'set' or 'forget', the
# credits, the set's tag. An operator's change made to the balance in Redis as to the store's,
# so that the reservations in flight stay counted (reading the balance again would give them
# back). A set starts a new generation: what was reserved before it is not given back to it.
# 'forget' deletes the balance: every replica reads it from the store again.
_WALLET_CHANGE = (
    _NEXT_GENERATION
    + """
redis.call('INCR', KEYS[3])
if ARGV[1] == 'forget' then redis.call('DEL', KEYS[1]) return 1 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == 'add' then
  redis.call('HINCRBY', KEYS[1], 'bal', ARGV[2])
else
  redis.call('HSET', KEYS[1], 'bal', ARGV[2], 'setat', ARGV[3], 'gen', next_generation(KEYS[2]))
end
return 1
"""
)

# KEYS: the hash. ARGV: the cost, the reservation's generation: given back only to the balance it
# was taken from (a balance read again since already has it).
_WALLET_RELEASE = """
if tonumber(redis.call('HGET', KEYS[1], 'gen')) == tonumber(ARGV[2]) then
  redis.call('HINCRBY', KEYS[1], 'bal', ARGV[1])
end
return 0
"""


def is_redis_failure(exc: BaseException) -> bool:
    """Redis could not be used: refused, reset, timed out, or an error it answered. uvloop raises
    RuntimeError for a write to a connection the peer has reset, which redis-py lets through."""
    return isinstance(exc, RedisError | OSError | TimeoutError | RuntimeError)


class RedisState:
    def __init__(self, url: str, *, timeout: float, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        # No retries of its own: a request waits at most one timeout, then the gateway's
        # redis.on_failure decides. Connections are pooled; health is probed on failure only.
        # A burst of more requests than the pool holds waits for a connection (up to the same
        # timeout): redis-py's plain pool refuses at once past 100, which would be taken for a
        # Redis failure and degrade every limit to this process's own.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=None,
        )
        self.client: redis.Redis = redis.Redis.from_pool(pool)
        self._hit: Any = self.client.register_script(_HIT)
        self._announce: Any = self.client.register_script(_ANNOUNCE)
        self._wallet_reserve: Any = self.client.register_script(_WALLET_RESERVE)
        self._wallet_start: Any = self.client.register_script(_WALLET_START)
        self._wallet_release: Any = self.client.register_script(_WALLET_RELEASE)
        self._wallet_change: Any = self.client.register_script(_WALLET_CHANGE)
        # Per API key: its limits, and the script's keys and arguments for them. Found by the key's
        # id and checked by identity first: hashing limits costs microseconds (Python __hash__).
        self._calls: dict[str, tuple[Limits, list[str], list[int]]] = {}

    async def hit(self, key_id: str, limits: Limits) -> tuple[Decision, bytes]:
        """Charge one request to every window of the key, or to none if any is full; with the epoch."""
        call = self._calls.get(key_id)
        if call is None or (call[0] is not limits and call[0] != limits):
            if len(self._calls) > 100_000:  # bounded: cheap to make again
                self._calls.clear()
            keys = [item.key_for(_LIMIT_NAMESPACE, key_id) for item in limits] + [EPOCH_KEY]
            args = [item.amount for item in limits] + [item.get_expiry() * 1000 for item in limits] + [0] * len(limits)
            call = self._calls[key_id] = (limits, keys, args)
        allowed, counts, ttls, epoch, _ = await self._hit(keys=call[1], args=call[2])
        now = self.clock()
        windows = tuple(
            Window(item, item.amount - count, now + ttl / 1000 if count else now)
            for item, count, ttl in zip(limits, counts, ttls, strict=True)
        )
        return Decision(bool(allowed), choose_shown(bool(allowed), windows), windows), bytes(epoch)

    async def hit_all(self, charges: tuple[Charge, ...]) -> tuple[Decision, bytes]:
        """Charge one request to every window of every owner, or to none if any is full (one
        script: exact across every worker and replica); with the epoch."""
        keys: list[str] = []
        amounts: list[int] = []
        lengths: list[int] = []
        observes: list[int] = []
        for scope, owner, limits, observe in charges:
            # A key's windows keep the names they have always had; the others' are apart from them.
            # Their scope (a route's has "/" in it) and owner (a user id may) are escaped, since
            # limits joins a name's parts with "/": "user:POST /a" + "b/c" must not be "user:POST /a/b" + "c".
            if scope != KEY:
                scope_name, owner = quote(scope, safe=""), quote(owner, safe="")
                namespace = f"{_LIMIT_NAMESPACE}-{scope_name}"
            else:
                namespace = _LIMIT_NAMESPACE
            keys += [item.key_for(namespace, owner) for item in limits]
            amounts += [item.amount for item in limits]
            lengths += [item.get_expiry() * 1000 for item in limits]
            observes += [int(observe)] * len(limits)
        allowed, counts, ttls, epoch, full = await self._hit(keys=[*keys, EPOCH_KEY], args=amounts + lengths + observes)
        now = self.clock()
        windows: list[Window] = []
        observed: list[Window] = []
        each = [(scope, observe, item) for scope, _, limits, observe in charges for item in limits]
        for (scope, observe, item), count, ttl, was_full in zip(each, counts, ttls, full, strict=True):
            window = Window(item, item.amount - count, now + ttl / 1000 if count else now, scope)
            if not observe:
                windows.append(window)
            elif was_full and allowed:
                observed.append(window)
        shown = tuple(windows)
        decision = Decision(
            bool(allowed), choose_shown(bool(allowed), shown) if shown else None, shown, tuple(observed)
        )
        return decision, bytes(epoch)

    async def announce_change(self) -> int:
        """Advance the epoch: every process drops its cached verdicts at its next request."""
        return int(await self._announce(keys=[EPOCH_KEY]))

    async def reserve_credits(self, user_id: str, cost: int, period: str) -> tuple[int, int, int, float]:
        """(-1, version, 0, 0): the balance is not known for this period, read it (and start it
        with that version); (0, balance, 0, 0): refused; (1, left, generation, the set's tag):
        reserved."""
        answer = await self._wallet_reserve(
            keys=[WALLET_PREFIX + user_id, _WALLET_VERSION + user_id], args=[cost, period]
        )
        if answer[0] != 1:
            return answer[0], answer[1] if len(answer) > 1 else 0, 0, 0.0
        return 1, answer[1], answer[2], float(answer[3])

    async def start_credits(self, user_id: str, balance: int, period: str, set_at: float, version: int) -> bool:
        """Whether the balance read is the user's in Redis now (False: a change came since it was
        read: read it again)."""
        keys = [WALLET_PREFIX + user_id, _WALLET_GENERATION, _WALLET_VERSION + user_id]
        return bool(await self._wallet_start(keys=keys, args=[balance, period, repr(set_at), version]))

    async def change_credits(self, user_id: str, *, add: int | None, set_to: int | None, set_at: float) -> None:
        """An operator changed the stored balance: the same change to the balance in Redis (if a
        gateway holds one), so that every replica spends the new balance at its next request."""
        if set_to is None and not add:
            # `users credits USER --add 0`: read the stored balance again (after a change Redis
            # missed). The reservations in flight are given back then, as after a Redis restart.
            await self.forget_credits(user_id)
            return
        mode, amount = ("set", set_to) if set_to is not None else ("add", add)
        await self._wallet_change(keys=self._change_keys(user_id), args=[mode, amount, repr(set_at)])

    async def release_credits(self, user_id: str, cost: int, generation: int) -> None:
        await self._wallet_release(keys=[WALLET_PREFIX + user_id], args=[cost, generation])

    async def forget_credits(self, user_id: str) -> None:
        """Every replica reads the user's balance from the store again at its next request (and a
        read under way is not written)."""
        await self._wallet_change(keys=self._change_keys(user_id), args=["forget", 0, "0"])

    @staticmethod
    def _change_keys(user_id: str) -> list[str]:
        return [WALLET_PREFIX + user_id, _WALLET_GENERATION, _WALLET_VERSION + user_id]

    async def ping(self) -> None:
        await self.client.ping()

    async def aclose(self) -> None:
        await self.client.aclose()
