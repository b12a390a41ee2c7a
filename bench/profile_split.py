#!/usr/bin/env python3
"""Where the gateway's CPU goes, by part of the hot path, from a py-spy profile in collapsed-stack
form (``bench/run.sh --profile gateway-builtin --profile-format raw``, or ``py-spy record -f raw``).

Each sample goes to the part of its innermost frame that belongs to one (so a socket write made by
the upstream client counts for the client, one made by uvicorn's response for the response write);
samples in no part (the event loop, asyncio, the interpreter) are "event loop and the rest".

    bench/.venv/bin/python bench/profile_split.py bench/results/<run>/profile-gateway-builtin.txt
"""

from __future__ import annotations

import sys
from collections import Counter

# (part, what a frame holds when it belongs to it), tried in this order on each frame.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("upstream client", ("upstream/builtin_client.py", "upstream/aiohttp_client.py", "aiohttp/", "httpx", "httpcore")),
    ("authentication", ("auth/verify.py", "auth/verdicts.py", "auth/keys.py")),
    ("rate limiter", ("ratelimit/limiter.py", "ratelimit/shared.py", "ratelimit/redis_state.py")),
    ("rate-limit headers", ("ratelimit/headers.py",)),
    ("request and response headers", ("http/headers.py",)),
    ("access log", ("accounting/access_log.py", "http/ledger.py", "http/request_id.py")),
    ("metrics", ("accounting/metrics.py",)),
    ("usage counting", ("accounting/usage.py",)),
    ("response write (uvicorn send)", ("send (uvicorn", "httptools_impl.py:send", "flow_control")),
    ("listener parse (protocol, llhttp)", ("http/protocol.py", "httptools_impl.py", "httptools/parser")),
    ("proxy route (the rest of proxy.py)", ("http/proxy.py", "http/answers.py", "http/app.py")),
)


def part_of(stack: list[str]) -> str:
    for frame in reversed(stack):  # innermost first
        for part, marks in PARTS:
            if any(mark in frame for mark in marks):
                return part
    return "event loop and the rest"


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    samples: Counter[str] = Counter()
    with open(sys.argv[1]) as f:
        for line in f:
            stack, _, number = line.rstrip("\n").rpartition(" ")
            if stack and number.isdigit():
                samples[part_of(stack.split(";"))] += int(number)
    total = sum(samples.values()) or 1
    print("| part | share of CPU samples |\n|---|---:|")
    for part, count in samples.most_common():
        print(f"| {part} | {count / total:.1%} |")
    print(f"\n{total} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
