#!/usr/bin/env python3
"""Adopting a deployment at scale: `gateway import` of --keys legacy keys (default 1,000,000) into
an empty SQLite store, and the verification of a legacy key beside a native one.

1. Import: a JSON Lines file of 1,000 users and --keys keys of an earlier system (`mk_live_` and
   `mpa_` plus random characters, hashed with SHA-256) is written to a temporary folder, then
   `gateway import FILE --json` runs as its own process: wall time, keys a second, and that
   process's peak RSS. Baseline in the same run: the same rows inserted by plain sqlite3
   `executemany` into the same schema, in one transaction (the floor for any import).
2. Verification: in process, through a Verifier on that store, --sample legacy keys and as many
   native keys (made with `gateway`'s own generator) verified cold (cache miss, store hit), then
   warm (cache hit); the store look-up alone is the baseline.

    bench/.venv/bin/python bench/import_bench.py [--keys 1000000] [--sample 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sqlite3
import statistics
import string
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository
from bench.keys_bench import percentiles, timed_verifications
from gateway.auth.keys import hash_key
from gateway.auth.verify import Verifier
from gateway.manage.service import ManagementService
from gateway.store import open_store
from gateway.units import parse_limits

ALPHABET = string.ascii_letters + string.digits
USERS = 1000


def old_keys(count: int) -> list[str]:
    rng = random.Random(7)
    return [
        ("mk_live_" + "".join(rng.choices(ALPHABET, k=32)))
        if i % 2
        else ("mpa_" + "".join(rng.choices(ALPHABET, k=40)))
        for i in range(count)
    ]


def _vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:  # it has just ended
        pass
    return 0


def write_file(path: Path, keys: list[str]) -> None:
    with path.open("w") as out:
        for u in range(USERS):
            out.write(json.dumps({"type": "user", "id": f"user_{u}", "subscription": "active"}) + "\n")
        for i, key in enumerate(keys):
            digest = hashlib.sha256(key.encode()).hexdigest()
            record = {"type": "key", "user_id": f"user_{i % USERS}", "sha256": digest, "prefix": key[:12]}
            out.write(json.dumps(record) + "\n")


def baseline_insert(path: Path, keys: list[str]) -> float:
    """Plain sqlite3: the same rows into the same (migrated) schema, one transaction; seconds."""
    started = time.perf_counter()
    with closing(sqlite3.connect(path)) as db:
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO users (id, subscription, created_at, updated_at) VALUES (?, 'active', 0, 0)",
            [(f"user_{u}",) for u in range(USERS)],
        )
        db.executemany(
            "INSERT INTO api_keys (id, user_id, prefix, key_hash, created_at, legacy) VALUES (?, ?, ?, ?, 0, 1)",
            ((f"key_{i}", f"user_{i % USERS}", k[:12], hash_key(k.encode())) for i, k in enumerate(keys)),
        )
        db.execute("COMMIT")
    return time.perf_counter() - started


async def migrated(url: str) -> None:
    await (await open_store(url)).close()


async def verification(url: str, legacy: list[str], sample: int) -> None:
    store = await open_store(url)
    try:
        service = ManagementService(store, key_prefix="mk_live_")
        native = [(await service.create_key("user_0")).key for _ in range(sample)]
        defaults = parse_limits(["100/minute", "10000/day"])

        def verifier() -> Verifier:
            return Verifier(
                store,
                prefix="mk_live_",
                legacy_prefixes=("mk_live_", "mpa_"),
                default_limits=defaults,
                ttl=3600,
                max_entries=10 * sample,
            )

        raw: list[float] = []
        for key in legacy:
            t = time.perf_counter()
            assert await store.find_key(hash_key(key.encode())) is not None
            raw.append(time.perf_counter() - t)
        legacy_verifier, native_verifier = verifier(), verifier()
        cold_legacy, cold_native = [], []
        for old, new in zip(legacy, native, strict=True):  # in turn, so drift hits both alike
            cold_legacy += await timed_verifications(legacy_verifier, [old])
            cold_native += await timed_verifications(native_verifier, [new])
        warm_legacy = await timed_verifications(legacy_verifier, legacy)
        warm_native = await timed_verifications(native_verifier, native)
        print(f"store look-up alone (baseline)   {percentiles(raw)}")
        print(f"cold, legacy key                 {percentiles(cold_legacy)}")
        print(f"cold, native key                 {percentiles(cold_native)}")
        print(f"  legacy / native, p50           {statistics.median(cold_legacy) / statistics.median(cold_native):.2f}")
        print(f"warm, legacy key                 {percentiles(warm_legacy)}")
        print(f"warm, native key                 {percentiles(warm_native)}")
    finally:
        await store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        keys = old_keys(args.keys)
        lines = folder / "old.jsonl"
        write_file(lines, keys)
        print(f"# {args.keys:,} keys and {USERS:,} users: {lines.stat().st_size / 2**20:.0f} MiB of JSON Lines")

        asyncio.run(migrated(f"sqlite:///{folder}/baseline.db"))
        floor = baseline_insert(folder / "baseline.db", keys)

        config = folder / "gateway.yaml"
        url = f"sqlite:///{folder}/gateway.db"
        config.write_text(f"store:\n  url: {url}\nkeys:\n  legacy_prefixes: [mk_live_, mpa_]\n")
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "gateway", "import", str(lines), "--json", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Its own high-water mark, read from /proc while it runs (getrusage's figure for children
        # would include this process's memory, shared at the fork).
        peak_kib = 0
        while child.poll() is None:
            peak_kib = max(peak_kib, _vm_hwm_kib(child.pid))
            time.sleep(0.1)
        took = time.perf_counter() - started
        stdout, stderr = child.communicate()
        peak_mib = peak_kib / 1024
        if child.returncode != 0:
            print(stderr, file=sys.stderr)
            return 1
        report = json.loads(stdout)
        assert report["keys"]["created"] == args.keys, report
        print(f"gateway import      {took:6.1f} s  {args.keys / took:9,.0f} keys/s  peak RSS {peak_mib:.0f} MiB")
        print(f"sqlite3 baseline    {floor:6.1f} s  {args.keys / floor:9,.0f} keys/s  (insert only)")
        print(f"  import / baseline time: {took / floor:.1f}")

        sample = random.Random(11).sample(keys, args.sample)
        asyncio.run(verification(url, sample, args.sample))
    return 0


if __name__ == "__main__":
    sys.exit(main())
