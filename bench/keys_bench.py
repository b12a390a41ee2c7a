#!/usr/bin/env python3
"""Cold verification and memory at scale, in process (no HTTP): what the proxy bench cannot show.

1. Cold verification: a SQLite store with --keys keys (default 1,000,000); --sample keys chosen at
   random are verified once each through a Verifier whose cache is empty, so every one is a cache
   miss and a store hit (format check, one indexed look-up by hash, verdict). Prints p50/p99/max.
   Baseline in the same run: the bare indexed SELECT through aiosqlite for the same keys. Beside
   it, as many well-formed keys that are not stored, verified cold in turn with them: whether a
   key exists must not show in the time its check takes.
2. Memory: --active keys (default 100,000, spread over --users users, default 20,000) each
   verified (cache filled) and charged to the default limits (100/minute and 10000/day: two
   windows each); then again with per-user limits (two windows per user), one route limit per
   key and per user, as a POST to that route is charged, and the credit wallet paying 1 credit for
   it. Prints the memory the cache, the limiter and the wallet hold (tracemalloc) once the charged
   windows and the spent credits are taken as a usage flush takes them.

    bench/.venv/bin/python bench/keys_bench.py [--keys 1000000] [--sample 2000] [--active 100000] [--users 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sqlite3
import statistics
import tempfile
import time
import tracemalloc
from contextlib import closing
from pathlib import Path

from gateway.accounting.wallet import Wallet
from gateway.auth.keys import display_prefix, generate_key, hash_key
from gateway.auth.verify import Verifier
from gateway.config import RateLimitsConfig, RouteLimit
from gateway.errors import InvalidCredentials
from gateway.ratelimit.charges import ChargePlan
from gateway.ratelimit.limiter import Limiter
from gateway.store import open_store
from gateway.units import parse_limits

PREFIX = "mk_live_"


def fill(path: Path, count: int, users: int) -> list[str]:
    """``count`` keys spread over ``users`` users, inserted in one transaction; returns the full keys."""
    keys = [generate_key(PREFIX) for _ in range(count)]
    with closing(sqlite3.connect(path)) as db:
        db.execute("BEGIN")
        db.executemany(
            # A credit balance each, for the wallet's part of the memory figure.
            "INSERT INTO users (id, subscription, credit_balance, created_at, updated_at)"
            " VALUES (?, 'active', 1000000, 0, 0)",
            [(f"user_{u}",) for u in range(users)],
        )
        db.executemany(
            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at) VALUES (?, ?, NULL, ?, ?, 0)",
            (
                (f"key_{i:016d}", f"user_{i % users}", display_prefix(k, PREFIX), hash_key(k.encode()))
                for i, k in enumerate(keys)
            ),
        )
        db.execute("COMMIT")
    return keys


async def timed_verifications(verifier: Verifier, keys: list[str]) -> list[float]:
    """Seconds each key's verification took, in order."""
    took: list[float] = []
    for key in keys:
        header = [b"Bearer " + key.encode()]
        t = time.perf_counter()
        try:
            await verifier.verify(header)
        except InvalidCredentials:  # an unknown key's answer
            pass
        took.append(time.perf_counter() - t)
    return took


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p = statistics.quantiles(ordered, n=100)
    return f"p50 {p[49] * 1e3:.3f} ms  p99 {p[98] * 1e3:.3f} ms  max {ordered[-1] * 1e3:.3f} ms"


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        store = await open_store(url)  # creates and migrates the schema
        started = time.perf_counter()
        keys = fill(Path(tmp) / "bench.db", args.keys, args.users)
        print(f"# {args.keys:,} keys generated and stored in {time.perf_counter() - started:.1f} s")
        try:
            sample = random.Random(7).sample(keys, args.sample)
            defaults = parse_limits(["100/minute", "10000/day"])

            # Baseline: the look-up alone, as the store makes it.
            raw: list[float] = []
            for key in sample:
                t = time.perf_counter()
                assert await store.find_key(hash_key(key.encode())) is not None
                raw.append(time.perf_counter() - t)

            verifier = Verifier(store, prefix=PREFIX, default_limits=defaults, ttl=3600, max_entries=args.keys)
            # Well-formed keys that are not stored, verified cold on a verifier of their own, in turn
            # with the existing ones (so drift in the machine's speed hits both alike): whether a key
            # exists must not show in the time its check takes.
            unknown = [generate_key(PREFIX) for _ in sample]
            guesser = Verifier(store, prefix=PREFIX, default_limits=defaults, ttl=3600, max_entries=args.keys)
            cold, cold_unknown = [], []
            for known_key, unknown_key in zip(sample, unknown, strict=True):
                cold += await timed_verifications(verifier, [known_key])  # a cache miss
                cold_unknown += await timed_verifications(guesser, [unknown_key])
            hot = await timed_verifications(verifier, sample)  # each a cache hit
            print(f"store look-up alone (baseline)  {percentiles(raw)}")
            print(f"cold verification (cache miss)  {percentiles(cold)}")
            print(f"  of unknown keys               {percentiles(cold_unknown)}")
            print(f"  unknown / existing, p50       {statistics.median(cold_unknown) / statistics.median(cold):.2f}")
            print(f"warm verification (cache hit)   {percentiles(hot)}")

            # Memory of the cache and the limiter for --active keys: each key's two windows, then
            # also its user's (--users users, two windows each) and a route's, per key and per user.
            active = keys[: args.active]
            headers = [[b"Bearer " + key.encode()] for key in active]
            route = RouteLimit("POST", "/api/v1/mockups/generate", parse_limits("10/minute"), parse_limits("50/minute"))
            quotas = RateLimitsConfig(
                default=defaults, per_user=parse_limits(["1000/minute", "100000/day"]), routes=(route,)
            )
            for label, config, paid in (
                ("key windows only", RateLimitsConfig(default=defaults), False),
                ("with users, a route and the wallet", quotas, True),
            ):
                gc.collect()
                tracemalloc.start()
                verifier = Verifier(
                    store,
                    prefix=PREFIX,
                    default_limits=config.default,
                    user_limits=config.per_user,
                    ttl=3600,
                    max_entries=args.active,
                )
                limiter = Limiter()
                plan = ChargePlan(config)
                wallet = Wallet(store) if paid else None
                before = tracemalloc.take_snapshot()
                for header in headers:
                    identity = await verifier.verify(header)
                    charges = plan.charges(identity, "POST", "/api/v1/mockups/generate")
                    if charges is None:
                        limiter.hit(identity.key_id, identity.limits)
                    else:
                        limiter.hit_all(charges)
                    if wallet is not None:
                        token = await wallet.reserve(identity.user_id, 1)
                        assert token is not None, "the bench's users have credits"
                        wallet.commit(identity.user_id, 1, token)
                # As the usage flush does every second: what is left is steady.
                limiter.take_changed()
                if wallet is not None:
                    await wallet.flush()
                gc.collect()
                after = tracemalloc.take_snapshot()
                tracemalloc.stop()
                grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
                print(
                    f"memory for {args.active:,} active keys over {args.users:,} users, {label}: "
                    f"{grown / 2**20:.1f} MiB (tracemalloc; the verdict cache, the limiter and the wallet)"
                )
                del verifier, limiter, wallet
        finally:
            await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--active", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=20_000, help="the keys' owners (default 20,000)")
    asyncio.run(main(parser.parse_args()))
