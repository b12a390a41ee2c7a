#!/usr/bin/env python3
"""Large bodies through the gateway and through the raw ASGI + aiohttp proxy, in one run, on
loopback (127.0.0.1) only: what a request body and a streamed download cost per MiB.

Targets (as in proxy_bench.py, each pinned to --proxy-cpu, wrk and the nginx upstream to
--load-cpu): raw-asgi-aiohttp (the lean Python proxy, no auth) and gateway-builtin (the gateway
with its defaults: a cached key, both windows, usage, metrics, the access log). Per round, per
target, the order rotating:

  post    wrk -t1 -c32 POST of a --post-kib KiB body (default 64) to /api/v1/mockups/generate,
          which nginx reads and answers with a small JSON
  download  wrk -t1 -c8 GET of a --download-mib MiB file (default 10) that nginx serves with a
          Content-Length; both proxies stream it through

For each: req/s, the proxy's CPU per request and per MiB of body carried, and the ratio to the
raw proxy's req/s and CPU per MiB within the round (medians over rounds in the table).

    bench/.venv/bin/python bench/bodies_bench.py [--rounds 3] [--duration 6]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository
from bench.proxy_bench import (
    HOST,
    POST_PATH,
    START_TIMEOUT_S,
    UPSTREAM_CONF,
    CpuSnapshot,
    Procs,
    build_target,
    free_ports,
    http,
    log_tail,
    run_wrk,
    wait_ready,
)

DOWNLOAD_PATH = "/api/v1/download"
TARGETS = ("raw-asgi-aiohttp", "gateway-builtin")
MIB = 1024 * 1024


def measure(
    t: Any, scenario: str, args: argparse.Namespace, pin: list[str], ours: set[int], files: dict[str, Path]
) -> dict[str, float]:
    conns = 32 if scenario == "post" else 8
    path, body = (POST_PATH, files["post"]) if scenario == "post" else (DOWNLOAD_PATH, None)
    run_wrk(t.port, conns=conns, seconds=1, key=t.api_key, pin=pin, path=path, body_file=body)  # warm-up
    before = CpuSnapshot.take(t.proc.pid, ours)
    r = run_wrk(t.port, conns=conns, seconds=args.duration, key=t.api_key, pin=pin, path=path, body_file=body)
    after = CpuSnapshot.take(t.proc.pid, ours)
    body_bytes = files["post"].stat().st_size if scenario == "post" else files["download"].stat().st_size
    mib = r["requests"] * body_bytes / MIB
    cpu_s = before.target_cpu_s(after)
    return {
        "rps": r["rps"],
        "mib_s": mib / (r["duration_us"] / 1e6),
        "cpu_us_per_req": cpu_s * 1e6 / r["requests"] if r["requests"] else float("nan"),
        "cpu_ms_per_mib": cpu_s * 1e3 / mib if mib else float("nan"),
        "errors": r["errors"],
        "noise_pct": before.foreign_cpu_s(after) / (r["duration_us"] / 1e6) * 100,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=6, help="seconds per wrk run (default 6)")
    ap.add_argument("--post-kib", type=int, default=64)
    ap.add_argument("--download-mib", type=int, default=10)
    ap.add_argument("--proxy-cpu", default="0")
    ap.add_argument("--load-cpu", default="1")
    args = ap.parse_args()
    pin_proxy = ["taskset", "-c", args.proxy_cpu]
    pin_load = ["taskset", "-c", args.load_cpu]
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    tmp = Path(tempfile.mkdtemp(prefix="gw-bodies-"))
    tmp.chmod(0o755)  # nginx's worker (not root) serves the download file from here
    files = {"post": tmp / "post.bin", "download": tmp / "download.bin"}
    files["post"].write_bytes(b"x" * (args.post_kib * 1024))
    files["download"].write_bytes(os.urandom(MIB) * args.download_mib)
    procs = Procs()
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    ratios: dict[tuple[str, str], list[float]] = {}
    try:
        upstream_port, *ports = free_ports(1 + len(TARGETS))
        upstream_url = f"http://{HOST}:{upstream_port}"
        conf = tmp / "upstream.conf"
        conf.write_text(UPSTREAM_CONF.read_text().replace("@TMP@", str(tmp)).replace("@PORT@", str(upstream_port)))
        nginx = ["nginx", "-p", str(tmp), "-e", str(tmp / "up.err"), "-c", str(conf)]
        procs.start(pin_load + nginx, log=tmp / "up.log")
        targets = [build_target(n, p, tmp, upstream_url) for n, p in zip(TARGETS, ports, strict=True)]
        env = dict(os.environ, BENCH_UPSTREAM=upstream_url, PYTHONHASHSEED="0")
        for t in targets:
            t.proc = procs.start(pin_proxy + t.argv, log=tmp / f"{t.name}.log", cwd=t.cwd, env=env | t.env)
        for t in targets:
            if not wait_ready(t, START_TIMEOUT_S):
                raise RuntimeError(f"{t.name} did not start: {log_tail(tmp / f'{t.name}.log')}")
            status, body = http("GET", t.port, DOWNLOAD_PATH, t.api_key)
            if status != 200 or body != files["download"].read_bytes():
                raise RuntimeError(f"{t.name}: download smoke check failed (status {status}, {len(body)} bytes)")
            status, body = http("POST", t.port, POST_PATH, t.api_key, files["post"].read_bytes())
            if status != 200 or f'"received_content_length":"{args.post_kib * 1024}"'.encode() not in body:
                raise RuntimeError(f"{t.name}: POST smoke check failed (status {status}, {body[:120]!r})")
        for rnd in range(args.rounds):
            order = targets[rnd % 2 :] + targets[: rnd % 2]
            by_target: dict[tuple[str, str], dict[str, float]] = {}
            for scenario in ("post", "download"):
                for t in order:
                    r = measure(t, scenario, args, pin_load, {p.pid for p in procs.started}, files)
                    by_target[t.name, scenario] = r
                    rows.setdefault((t.name, scenario), []).append(r)
                    print(
                        f"  round {rnd + 1} {scenario:8s} {t.name:18s} {r['rps']:8,.0f} req/s "
                        f"{r['mib_s']:7,.0f} MiB/s  CPU {r['cpu_ms_per_mib']:6.2f} ms/MiB  "
                        f"errors {r['errors']:.0f}  noise {r['noise_pct']:3.0f}%",
                        flush=True,
                    )
            for scenario in ("post", "download"):
                gw, raw = by_target["gateway-builtin", scenario], by_target["raw-asgi-aiohttp", scenario]
                ratios.setdefault(("rps", scenario), []).append(gw["rps"] / raw["rps"])
                ratios.setdefault(("cpu", scenario), []).append(gw["cpu_ms_per_mib"] / raw["cpu_ms_per_mib"])
    except KeyboardInterrupt:
        print("# interrupted: stopping everything this run started", file=sys.stderr)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"# error: {e}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    if not ratios:
        return 1
    print(
        f"\nmedian of {args.rounds} round(s); POST {args.post_kib} KiB c32, GET {args.download_mib} MiB c8, "
        f"wrk -d{args.duration}s; × raw = gateway ÷ raw-asgi-aiohttp within a round\n"
    )
    print("| scenario | target | req/s | MiB/s | proxy CPU µs/req | proxy CPU ms/MiB | errors | noise |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (name, scenario), rs in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        errors, noise = sum(r["errors"] for r in rs), max(r["noise_pct"] for r in rs)
        print(
            f"| {scenario} | {name} | {med['rps']:,.0f} | {med['mib_s']:,.0f} | {med['cpu_us_per_req']:,.0f} | "
            f"{med['cpu_ms_per_mib']:.2f} | {errors:.0f} | {noise:.0f}% |"
        )
    print()
    for scenario in ("post", "download"):
        rps, cpu = ratios["rps", scenario], ratios["cpu", scenario]
        rps_rounds, cpu_rounds = ", ".join(f"{x:.2f}" for x in rps), ", ".join(f"{x:.2f}" for x in cpu)
        print(
            f"{scenario}: gateway req/s {statistics.median(rps):.2f}× raw (rounds {rps_rounds}); "
            f"CPU per MiB {statistics.median(cpu):.2f}× raw (rounds {cpu_rounds})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
