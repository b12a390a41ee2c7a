#!/usr/bin/env python3
"""One replica on SQLite against two replicas on PostgreSQL and Redis behind a load balancer, in
one run, on loopback (127.0.0.1) only, beside the upstream directly.

Targets, each loaded with `wrk -t1 -c32` GET (throughput, p50, p99) for --duration seconds after a
2 s warm-up, the order rotating per round:

  direct              wrk -> nginx upstream, no gateway: the ceiling of this machine
  sqlite-1            one `gateway serve` on SQLite, limits in memory (the embedded defaults)
  pg-redis-1          one `gateway serve` on PostgreSQL and Redis (a Redis round trip per request)
  pg-redis-2-lb       nginx (round robin, keepalive) -> two `gateway serve` on PostgreSQL and Redis
  pg-redis-w2         one `gateway serve --workers 2` on PostgreSQL and Redis (two processes on one
                      listening socket)

Ratios are taken within each round against direct and sqlite-1. By default nothing is pinned: the
replicas and the load balancer share the machine's cores with wrk and the upstream, as they would
on one host. --pin-load CPU pins wrk and the upstream to that CPU (the gateways stay free to use
every core): the way to compare 1 and 2 workers on a 2-core machine. The table also gives the CPU
the gateway processes and the Redis server used per request.

Needs bench/setup.sh (wrk, nginx, bench/.venv with the project), and PostgreSQL (database test)
and Redis (database 14, emptied) on this machine's default ports. The PostgreSQL schema the run
makes is dropped at the end.

    bench/.venv/bin/python bench/scale_out_bench.py [--rounds 3] [--duration 8] [--pin-load 1]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository
from bench.proxy_bench import (
    CLK_TCK,
    HOST,
    UPSTREAM_CONF,
    VENV_BIN,
    Procs,
    Target,
    free_ports,
    gateway_api_key,
    log_tail,
    process_stats,
    run_wrk,
    wait_ready,
)

POSTGRES = "postgresql://127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/14"
LB_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/lb.pid;
error_log {tmp}/lb.error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/lb_body;
    proxy_temp_path {tmp}/lb_proxy;
    fastcgi_temp_path {tmp}/lb_fastcgi;
    uwsgi_temp_path {tmp}/lb_uwsgi;
    scgi_temp_path {tmp}/lb_scgi;
    upstream gateways {{ {servers} keepalive 64; }}
    server {{
        listen {host}:{port} backlog=4096;
        location / {{
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"""


def gateway_config(tmp: Path, name: str, upstream_url: str, store_url: str, redis_url: str | None) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(
        f"upstream:\n  url: {upstream_url}\nstore:\n  url: '{store_url}'\n"
        + (f"redis:\n  url: {redis_url}\n" if redis_url else "")
        + 'rate_limits:\n  default: ["1000000000/minute", "10000000000/day"]\n'
        "logging:\n  level: warning\n  access: true\n"
    )
    return path


def serve_argv(config: Path, port: int, workers: int = 1) -> list[str]:
    return [
        str(VENV_BIN / "gateway"),
        "serve",
        "--config",
        str(config),
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def tree_cpu_ticks(roots: list[int]) -> int:
    """utime + stime of the processes `roots` and their children (a `--workers N` parent's
    workers each lead a process group of their own)."""
    return sum(used for pid, parent, _, used in process_stats() if pid in roots or parent in roots)


def redis_cpu_ticks() -> int:
    """utime + stime of the Redis server, which every request on a Redis-backed gateway calls."""
    info = subprocess.run(["redis-cli", "info", "server"], check=True, capture_output=True, text=True).stdout
    pid = next(line.split(":")[1].strip() for line in info.splitlines() if line.startswith("process_id:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def postgres(sql: str) -> None:
    connection = await asyncpg.connect(POSTGRES)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--pin-load", metavar="CPU", help="taskset CPU list for wrk and the upstream (default: none)")
    args = parser.parse_args()
    pin_load = ["taskset", "-c", args.pin_load] if args.pin_load else []

    schema = f"gw_bench_{secrets.token_hex(4)}"
    asyncio.run(postgres(f"CREATE SCHEMA {schema}"))
    subprocess.run(["redis-cli", "-n", "14", "flushdb"], check=True, capture_output=True)
    store_pg = f"{POSTGRES}?search_path={schema}"
    tmp = Path(tempfile.mkdtemp(prefix="gw-scale-bench-"))
    procs = Procs()
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        upstream_port, sqlite_port, pg_port, replica_a, replica_b, lb_port, w2_port = free_ports(7)
        upstream_url = f"http://{HOST}:{upstream_port}"
        conf = tmp / "upstream.conf"
        conf.write_text(UPSTREAM_CONF.read_text().replace("@TMP@", str(tmp)).replace("@PORT@", str(upstream_port)))
        upstream = procs.start(pin_load + ["nginx", "-p", str(tmp), "-c", str(conf)], log=tmp / "upstream.log")

        sqlite_config = gateway_config(tmp, "sqlite-1", upstream_url, f"sqlite:///{tmp}/sqlite-1.db", None)
        pg_config = gateway_config(tmp, "pg-redis", upstream_url, store_pg, REDIS)
        sqlite_key = gateway_api_key("aiohttp", sqlite_config, tmp)
        pg_key = gateway_api_key("aiohttp", pg_config, tmp)  # one store for the three replicas
        lb_conf = tmp / "lb.conf"
        servers = f"server {HOST}:{replica_a}; server {HOST}:{replica_b};"
        lb_conf.write_text(LB_CONF.format(tmp=tmp, servers=servers, host=HOST, port=lb_port))

        targets = [
            Target("direct", upstream_port, proc=upstream),
            Target("sqlite-1", sqlite_port, serve_argv(sqlite_config, sqlite_port), api_key=sqlite_key),
            Target("pg-redis-1", pg_port, serve_argv(pg_config, pg_port), api_key=pg_key),
            Target("pg-redis-2-lb", lb_port, ["nginx", "-p", str(tmp), "-c", str(lb_conf)], api_key=pg_key),
            Target("pg-redis-w2", w2_port, serve_argv(pg_config, w2_port, workers=2), api_key=pg_key),
        ]
        for port in (replica_a, replica_b):
            procs.start(serve_argv(pg_config, port), log=tmp / f"replica-{port}.log", cwd=tmp)
        for t in targets[1:]:
            t.proc = procs.start(t.argv, log=tmp / f"{t.name}.log", cwd=tmp)
        for t in targets:
            if not wait_ready(t, 30):
                print(f"# {t.name} is not answering; its log ends:\n{log_tail(tmp / f'{t.name}.log')}")
                return 1
        pinning = f"wrk and the upstream pinned to CPU {args.pin_load}" if pin_load else "no pinning"
        print(f"# {len(targets)} targets x {args.rounds} rounds of wrk -t1 -c32 -d{args.duration}s, GET, {pinning}")
        for rnd in range(args.rounds):
            k = rnd % len(targets)
            for t in targets[k:] + targets[:k]:
                run_wrk(t.port, conns=32, seconds=2, key=t.api_key, pin=pin_load)
                assert t.proc is not None
                # The LB row's gateways are the two replicas, started just after the upstream.
                roots = [p.pid for p in procs.started[1:3]] if t.name == "pg-redis-2-lb" else [t.proc.pid]
                gateway_before, redis_before = tree_cpu_ticks(roots), redis_cpu_ticks()
                r = run_wrk(t.port, conns=32, seconds=args.duration, key=t.api_key, pin=pin_load)
                ticks = tree_cpu_ticks(roots) - gateway_before
                redis_after = redis_cpu_ticks()
                r["gateway_cpu_us"] = ticks / CLK_TCK * 1e6 / max(1, r["requests"]) if t.name != "direct" else 0.0
                r["redis_cpu_us"] = (redis_after - redis_before) / CLK_TCK * 1e6 / max(1, r["requests"])
                results.setdefault(t.name, []).append(r)
                print(
                    f"  round {rnd + 1} {t.name:14s} {r['rps']:8,.0f} req/s  p50 {r['lat_p50_us'] / 1000:6.2f} ms"
                    f"  p99 {r['lat_p99_us'] / 1000:6.2f} ms  gateway CPU {r['gateway_cpu_us']:4.0f} µs/req"
                    f"  Redis CPU {r['redis_cpu_us']:3.0f} µs/req  errors {r['errors']}",
                    flush=True,
                )
    finally:
        procs.stop_all()
        asyncio.run(postgres(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))

    print(
        "\n| target | req/s | × direct | × sqlite-1 | p50 ms | p99 ms | gateway CPU µs/req | Redis CPU µs/req "
        "| errors |\n|---|---|---|---|---|---|---|---|---|"
    )
    for name, runs in results.items():
        x_direct = statistics.median(r["rps"] / d["rps"] for r, d in zip(runs, results["direct"], strict=True))
        x_sqlite = statistics.median(r["rps"] / s["rps"] for r, s in zip(runs, results["sqlite-1"], strict=True))
        print(
            f"| {name} | {statistics.median(r['rps'] for r in runs):,.0f} | {x_direct:.2f} | {x_sqlite:.2f}"
            f" | {statistics.median(r['lat_p50_us'] for r in runs) / 1000:.2f}"
            f" | {statistics.median(r['lat_p99_us'] for r in runs) / 1000:.2f}"
            f" | {statistics.median(r['gateway_cpu_us'] for r in runs):.0f}"
            f" | {statistics.median(r['redis_cpu_us'] for r in runs):.0f} | {sum(r['errors'] for r in runs)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
