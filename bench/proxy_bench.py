#!/usr/bin/env python3
"""Gateway vs. plain-proxy benchmark, in one run, on loopback (127.0.0.1) only.

Starts an nginx upstream (bench/conf/upstream.conf: 1 worker, canned ~300-byte JSON), then
every selected target on its own port, and runs wrk against each in turn:

  direct            wrk -> nginx upstream, no proxy: the ceiling of this machine
  raw-asgi-aiohttp  bench/baselines/raw_asgi_aiohttp.py: raw ASGI + aiohttp, uvicorn (uvloop, httptools)
  asgiproxy         the published asgiproxy (PyPI) as its CLI sets it up, uvicorn (uvloop, httptools)
  gateway-aiohttp   `gateway serve` with upstream.client: aiohttp
  gateway-httpx     `gateway serve` with upstream.client: httpx
  gateway-builtin   `gateway serve` with upstream.client: builtin
  gateway-aiohttp-no-access-log   gateway-aiohttp with logging.access: false (the access log's cost)

Per round and target: 2 s warm-up, `wrk -t1 -c32 -d{duration}s` GET (throughput, p50/p99),
`wrk -t1 -c1 -d{duration}s` GET (added latency). The order of the targets rotates per round.
Prints a Markdown table of medians over the rounds, with ratios taken within each round, and
writes it and the raw numbers to bench/results/<timestamp>/.

The proxy under test runs on CPU 0 (taskset), wrk and the upstream on CPU 1. Every process is
started in its own process group, and only those groups are ever signalled (also on Ctrl-C).

Examples
  bench/run.sh                                        # all targets, 3 rounds of 10 s (~6 min)
  bench/run.sh --rounds 1 --duration 3 --targets direct,raw-asgi-aiohttp,asgiproxy
  bench/run.sh --profile gateway-aiohttp              # + py-spy flame graph of one c32 run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV_BIN = BENCH / ".venv" / "bin"
LUA = BENCH / "wrk" / "bench.lua"
UPSTREAM_CONF = BENCH / "conf" / "upstream.conf"
HOST = "127.0.0.1"
GET_PATH = "/api/v1/templates"
POST_PATH = "/api/v1/mockups/generate"
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 30.0
WRK_REQUEST_TIMEOUT_S = 5

TARGETS: dict[str, str] = {
    "direct": "wrk -> nginx upstream (no proxy): the ceiling of this machine",
    "raw-asgi-aiohttp": "raw ASGI callable + aiohttp (bench/baselines), uvicorn uvloop+httptools, no access log",
    "asgiproxy": "published asgiproxy 0.2 (aiohttp), set up as its CLI does, uvicorn uvloop+httptools, no access log",
    "gateway-aiohttp": "the product: gateway serve, upstream.client = aiohttp",
    "gateway-httpx": "the product: gateway serve, upstream.client = httpx",
    "gateway-builtin": "the product: gateway serve, upstream.client = builtin (its own client)",
    "gateway-aiohttp-no-access-log": "gateway-aiohttp with logging.access: false",
    "gateway-builtin-quotas": "gateway-builtin with per-user limits, a route limit per key and per user on the GET,"
    " and the credit wallet paying 1 credit for each GET",
}
# Ratios are taken against these, when they ran in the same round.
REFERENCES = ("direct", "raw-asgi-aiohttp", "asgiproxy")
# The hot path's targets for the gateway (issue 19), as ratios within one run: at least the raw
# proxy's req/s and 1.3 times asgiproxy's, and no more added latency at one connection than the raw proxy.
GOAL_X_ASGIPROXY = 1.3
GOAL_X_RAW = 1.0


# ------------------------------------------------------------------------------ targets
@dataclass
class Target:
    name: str
    port: int
    argv: list[str] = field(default_factory=list)  # empty for direct (the upstream itself)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    api_key: str | None = None  # sent as "Authorization: Bearer <key>" when set
    proc: subprocess.Popen[bytes] | None = None
    failed: str | None = None


def uvicorn_argv(app: str, port: int) -> list[str]:
    return [
        str(VENV_BIN / "uvicorn"),
        app,
        "--app-dir",
        str(BENCH),
        "--host",
        HOST,
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        "--backlog",
        "4096",
    ]


def write_gateway_config(
    tmp: Path, name: str, client: str, upstream_url: str, *, access_log: bool, quotas: bool = False
) -> Path:
    """The gateway's config for one target: its upstream client and a SQLite store of its own.
    The access log goes to the target's log file, as stdout to a file would in production. With
    ``quotas``, each request is also charged to its user's two windows and a route's, per key and
    per user (issue 14's quotas)."""
    path = tmp / f"{name}.yaml"
    # Two windows, as in production, set high enough that the run never fills them.
    extra = (
        '  per_user: ["1000000000/minute", "10000000000/day"]\n'
        f'  routes: [{{method: GET, path: "{GET_PATH}", per_key: ["1000000000/minute"],'
        ' per_user: ["1000000000/hour"]}]\n'
        if quotas
        else ""
    )
    wallet = f"credits:\n  wallet: true\n  rules: [{{method: GET, path: {GET_PATH}, cost: 1}}]\n" if quotas else ""
    path.write_text(
        f"upstream:\n  url: {upstream_url}\n  client: {client}\nstore:\n  url: sqlite:///{tmp}/{name}.db\n"
        'rate_limits:\n  default: ["1000000000/minute", "10000000000/day"]\n'
        + extra
        + wallet
        + f"logging:\n  level: warning\n  access: {str(access_log).lower()}\n"
    )
    return path


def gateway_api_key(client: str, config: Path, tmp: Path) -> str | None:
    """A user and a key in the target's store, made with the gateway's own CLI; the key is sent as
    `Authorization: Bearer <key>` on every smoke check and wrk request, so the gateway runs its
    whole hot path (key check from its cache) on each."""
    gateway = str(VENV_BIN / "gateway")
    subprocess.run([gateway, "users", "add", "bench", "--config", str(config)], cwd=tmp, check=True, timeout=60)
    # Credits for a wallet's costed GET that the run can never spend (the quotas target).
    credits = [gateway, "users", "credits", "bench", "--set", "1000000000000", "--config", str(config)]
    subprocess.run(credits, cwd=tmp, check=True, timeout=60, capture_output=True)
    created = subprocess.run(
        [gateway, "keys", "create", "--user", "bench", "--json", "--config", str(config)],
        cwd=tmp,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    return str(json.loads(created.stdout)["key"])


def build_target(name: str, port: int, tmp: Path, upstream_url: str) -> Target:
    if name == "direct":
        return Target(name, port)
    if name == "raw-asgi-aiohttp":
        return Target(name, port, uvicorn_argv("baselines.raw_asgi_aiohttp:app", port), cwd=tmp)
    if name == "asgiproxy":
        return Target(name, port, uvicorn_argv("baselines.asgiproxy_app:app", port), cwd=tmp)
    client = name.removeprefix("gateway-").removesuffix("-no-access-log").removesuffix("-quotas")
    config = write_gateway_config(
        tmp,
        name,
        client,
        upstream_url,
        access_log=not name.endswith("-no-access-log"),
        quotas=name.endswith("-quotas"),
    )
    argv = [str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--host", HOST, "--port", str(port)]
    return Target(name, port, argv, cwd=tmp, api_key=gateway_api_key(client, config, tmp))


# ---------------------------------------------------------------------------- processes
class Procs:
    """The processes this run started. Each gets its own session, hence process group
    (pgid == pid), and only those groups are ever signalled."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, argv: list[str], *, log: Path, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with open(log, "ab") as logf:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(proc)
        return proc

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None:
                self._signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in reversed(self.started):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait(timeout=5)
        # Leftover members of our own groups (e.g. nginx workers, uvicorn children).
        for proc in self.started:
            self._signal(proc, signal.SIGKILL)
        self.started.clear()


def process_stats() -> Iterator[tuple[int, int, int, int]]:
    """(pid, parent pid, process group, utime + stime) of each live process, from /proc."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        yield int(entry), int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12])


def cpu_ticks_by_pgroup() -> dict[int, int]:
    """utime + stime of the live processes, summed per process group."""
    ticks: dict[int, int] = {}
    for _, _, pgid, used in process_stats():
        ticks[pgid] = ticks.get(pgid, 0) + used
    return ticks


@dataclass(frozen=True)
class CpuSnapshot:
    """Where the machine's CPU time went: the target, all of this run's groups, everything."""

    target_ticks: int
    ours_ticks: int
    system_ticks: int
    self_and_children_s: float

    @classmethod
    def take(cls, target_pgid: int, our_pgids: set[int]) -> CpuSnapshot:
        by_group = cpu_ticks_by_pgroup()
        with open("/proc/stat") as f:
            # user + nice + system over all CPUs. irq/softirq are left out: loopback packet
            # processing lands there, is charged to no process, and would read as noise.
            user, nice, system = (int(v) for v in f.readline().split()[1:4])
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once reaped
        return cls(
            target_ticks=by_group.get(target_pgid, 0),
            ours_ticks=sum(by_group.get(pgid, 0) for pgid in our_pgids),
            system_ticks=user + nice + system,
            self_and_children_s=own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime,
        )

    def target_cpu_s(self, later: CpuSnapshot) -> float:
        return (later.target_ticks - self.target_ticks) / CLK_TCK

    def foreign_cpu_s(self, later: CpuSnapshot) -> float:
        """CPU seconds used meanwhile by processes this run did not start (another job)."""
        system = (later.system_ticks - self.system_ticks) / CLK_TCK
        ours = (later.ours_ticks - self.ours_ticks) / CLK_TCK
        return max(0.0, system - ours - (later.self_and_children_s - self.self_and_children_s))


# ------------------------------------------------------------------------------- network
def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held together while picking, so no repeats)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


def http(method: str, port: int, path: str, key: str | None, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", data=body, method=method)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(t: Target, seconds: float) -> bool:
    """Until the target answers a GET with 200, its process dies, or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if t.proc is not None and t.proc.poll() is not None:
            return False
        if port_open(t.port):
            try:
                if http("GET", t.port, GET_PATH, t.api_key)[0] == 200:
                    return True
            except OSError:
                pass
        time.sleep(0.2)
    return False


def smoke_check(t: Target, expected_body: bytes) -> tuple[str | None, str | None]:
    """(failure, warning): GET must return nginx's exact body; a broken POST is only a warning
    (the timed runs are GETs), but it is shown, since a proxy must forward request bodies."""
    status, body = http("GET", t.port, GET_PATH, t.api_key)
    if status != 200 or body != expected_body:
        return f"GET smoke check: status {status}, body {body[:120]!r}", None
    post_body = b'{"template_id":"tpl_001","fields":{"name":"smoke"}}'
    status, body = http("POST", t.port, POST_PATH, t.api_key, post_body)
    if status != 200 or f'"received_content_length":"{len(post_body)}"'.encode() not in body:
        return None, f"POST smoke check: status {status}, body {body[:120]!r}"
    return None, None


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ----------------------------------------------------------------------------------- wrk
def run_wrk(
    port: int,
    *,
    conns: int,
    seconds: int,
    key: str | None,
    pin: list[str],
    path: str = GET_PATH,
    body_file: Path | None = None,
) -> dict[str, Any]:
    """One wrk run: GET `path`, or POST `body_file`'s bytes to it when one is given."""
    argv = pin + [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{seconds}s",
        "--timeout",
        f"{WRK_REQUEST_TIMEOUT_S}s",
        "-s",
        str(LUA),
        f"http://{HOST}:{port}{path}",
    ]
    env = dict(os.environ, BENCH_API_KEY=key or "", BENCH_METHOD="POST" if body_file else "GET")
    if body_file:
        env["BENCH_BODY_FILE"] = str(body_file)
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 30)
    for line in out.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            r: dict[str, Any] = json.loads(line.removeprefix("BENCHJSON "))
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0
            r["errors"] = sum(r[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
            return r
    raise RuntimeError(f"wrk gave no result (rc={out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")


def measure(t: Target, args: argparse.Namespace, pin_load: list[str], our_pgids: set[int]) -> dict[str, Any]:
    assert t.proc is not None
    if args.warmup:
        run_wrk(t.port, conns=32, seconds=args.warmup, key=t.api_key, pin=pin_load)
    before = CpuSnapshot.take(t.proc.pid, our_pgids)
    c32 = run_wrk(t.port, conns=32, seconds=args.duration, key=t.api_key, pin=pin_load)
    after = CpuSnapshot.take(t.proc.pid, our_pgids)
    c1 = run_wrk(t.port, conns=1, seconds=args.duration, key=t.api_key, pin=pin_load)
    cpu_s = before.target_cpu_s(after)
    wall_s = c32["duration_us"] / 1e6 or float(args.duration)
    return {
        "rps": c32["rps"],
        "p50_ms": c32["lat_p50_us"] / 1000,
        "p99_ms": c32["lat_p99_us"] / 1000,
        "c1_rps": c1["rps"],
        "c1_p50_us": c1["lat_p50_us"],
        "c1_p99_us": c1["lat_p99_us"],
        "cpu_us_per_req": cpu_s * 1e6 / c32["requests"] if c32["requests"] else None,
        "errors": c32["errors"] + c1["errors"],
        "noise_pct": before.foreign_cpu_s(after) / wall_s * 100,
        "raw": {"c32": c32, "c1": c1},
    }


def profile(t: Target, args: argparse.Namespace, procs: Procs, pin_load: list[str], out: Path, tmp: Path) -> None:
    """py-spy record on the target's PID during one extra (untimed) c32 GET run."""
    assert t.proc is not None
    ext = {"flamegraph": "svg", "speedscope": "json", "raw": "txt"}[args.profile_format]
    dest = out / f"profile-{t.name}.{ext}"
    argv = pin_load + [
        str(VENV_BIN / "py-spy"),
        "record",
        "--pid",
        str(t.proc.pid),
        "--duration",
        str(args.duration),
        "--format",
        args.profile_format,
        # Samples of the thread holding the GIL only: CPU spent, not threads waiting (the access
        # log's writer sits in a blocking queue get that py-spy would count as busy).
        "--gil",
        "--output",
        str(dest),
    ]
    spy = procs.start(argv, log=tmp / "py-spy.log")
    time.sleep(1.0)  # let py-spy attach before the load starts
    run_wrk(t.port, conns=32, seconds=args.duration, key=t.api_key, pin=pin_load)
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(spy.pid, signal.SIGKILL)
    if dest.exists():
        print(f"# profile of {t.name}: {dest}")
    else:
        print(f"# profile of {t.name} failed (py-spy rc={spy.returncode}):\n{log_tail(tmp / 'py-spy.log')}")


# ------------------------------------------------------------------------------- summary
def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(rounds: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        per = [r[name] for r in rounds if r.get(name)]
        if not per:
            continue
        row: dict[str, Any] = {"target": name, "rounds": len(per)}
        for k in ("rps", "p50_ms", "p99_ms", "c1_p50_us", "c1_p99_us", "cpu_us_per_req", "errors", "noise_pct"):
            row[k] = median([p[k] for p in per])
            row[k + "_all"] = [p[k] for p in per]
        rps = [p["rps"] for p in per]
        row["noise_max_pct"] = max(p["noise_pct"] for p in per)
        row["rps_spread_pct"] = (max(rps) - min(rps)) / statistics.median(rps) * 100 if len(rps) > 1 else None
        for ref in REFERENCES:
            both = [r for r in rounds if r.get(name) and r.get(ref)]
            row["x_" + ref] = median([r[name]["rps"] / r[ref]["rps"] for r in both])
            if ref == "direct":
                row["added_c1_p50_us"] = median([r[name]["c1_p50_us"] - r[ref]["c1_p50_us"] for r in both])
        rows.append(row)
    return rows


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else format(value, spec) + unit


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        [
            "target",
            "req/s c32",
            "spread",
            "p50 ms c32",
            "p99 ms c32",
            "c1 p50 µs",
            "c1 p99 µs",
            "+p50 vs direct µs (c1)",
            "proxy CPU µs/req",
        ]
        + [f"× {ref}" for ref in REFERENCES]
        + ["errors", "noise"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["target"],
            fmt(r["rps"], ",.0f"),
            fmt(r["rps_spread_pct"], ".0f", "%"),
            fmt(r["p50_ms"], ".2f"),
            fmt(r["p99_ms"], ".2f"),
            fmt(r["c1_p50_us"], ".0f"),
            fmt(r["c1_p99_us"], ".0f"),
            fmt(r["added_c1_p50_us"], "+.0f"),
            fmt(r["cpu_us_per_req"], ".0f"),
        ]
        cells += [fmt(r["x_" + ref], ".2f") for ref in REFERENCES]
        cells += [fmt(r["errors"], ".0f"), fmt(r["noise_max_pct"], ".0f", "%")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goals(rows: list[dict[str, Any]]) -> str:
    """The issue's targets for each gateway-* row: met, missed, or n/a (reference not run)."""

    def check(value: float | None, ok: bool, text: str) -> str:
        return f"{text}: n/a" if value is None else f"{text}: {'ok' if ok else 'MISSED'}"

    lines = []
    raw = next((r for r in rows if r["target"] == "raw-asgi-aiohttp"), None)
    raw_added = None if raw is None else raw["added_c1_p50_us"]
    for r in rows:
        if not r["target"].startswith("gateway-"):
            continue
        xa, xr, added = r["x_asgiproxy"], r["x_raw-asgi-aiohttp"], r["added_c1_p50_us"]
        parts = [
            check(xr, xr is not None and xr >= GOAL_X_RAW, f"{fmt(xr, '.2f')}× raw-asgi-aiohttp (≥ {GOAL_X_RAW})"),
            check(xa, xa is not None and xa >= GOAL_X_ASGIPROXY, f"{fmt(xa, '.2f')}× asgiproxy (≥ {GOAL_X_ASGIPROXY})"),
            check(
                None if added is None or raw_added is None else added,
                added is not None and raw_added is not None and added <= raw_added,
                f"+{fmt(added, '.0f')} µs p50 at c1 (≤ the raw proxy's +{fmt(raw_added, '.0f')})",
            ),
        ]
        lines.append(f"- {r['target']}: " + "; ".join(parts))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the table shows medians (default 3)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run, c32 and c1 each (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of untimed c32 load before each target (default 2)")
    ap.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated subset of: {', '.join(TARGETS)} (direct is always added)",
    )
    ap.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    ap.add_argument("--proxy-cpu", default="0", help="taskset CPU list for the proxy under test (default 0)")
    ap.add_argument("--load-cpu", default="1", help="taskset CPU list for wrk, the upstream and py-spy (default 1)")
    ap.add_argument("--profile", metavar="TARGET", help="py-spy record TARGET during one extra c32 GET run")
    ap.add_argument(
        "--profile-format",
        choices=["flamegraph", "speedscope", "raw"],
        default="flamegraph",
        help="flamegraph (SVG), speedscope (JSON) or raw (collapsed stacks, for bench/profile_split.py)"
        " (default flamegraph)",
    )
    ap.add_argument("--out", type=Path, help="results directory (default bench/results/<timestamp>)")
    args = ap.parse_args()
    wanted = [s.strip() for s in args.targets.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(TARGETS))
    if unknown:
        ap.error(f"unknown targets: {', '.join(unknown)} (known: {', '.join(TARGETS)})")
    args.targets = [name for name in TARGETS if name in wanted or name == "direct"]
    if args.profile and args.profile not in args.targets:
        ap.error(f"--profile {args.profile}: not among the targets of this run")
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0:
        ap.error("--rounds and --duration must be >= 1, --warmup >= 0")
    return args


def preflight(args: argparse.Namespace) -> str | None:
    tools = ["wrk", "nginx"] + ([] if args.no_pin else ["taskset"])
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)}: run bash bench/setup.sh"
    needed = [VENV_BIN / "uvicorn"] + [VENV_BIN / "gateway" for n in args.targets if n.startswith("gateway-")]
    needed += [VENV_BIN / "py-spy"] if args.profile else []
    missing = [str(p) for p in dict.fromkeys(needed) if not p.exists()]
    if missing:
        return f"missing {', '.join(missing)}: run bash bench/setup.sh"
    if not args.no_pin:
        cpus = os.sched_getaffinity(0)
        for spec in (args.proxy_cpu, args.load_cpu):
            if not all(c.isdigit() and int(c) in cpus for c in spec.split(",")):
                return f"CPU list {spec!r} is not available here (have {sorted(cpus)}): use --no-pin or other CPUs"
    return None


def on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    problem = preflight(args)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    pin_proxy = [] if args.no_pin else ["taskset", "-c", args.proxy_cpu]
    pin_load = [] if args.no_pin else ["taskset", "-c", args.load_cpu]
    # Explicit SIGINT too: a shell starts background jobs with SIGINT ignored, and Python then
    # keeps it ignored; SIGHUP for a closed terminal.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    out: Path = args.out or BENCH / "results" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    per_target_s = args.warmup + 2 * args.duration
    print(
        f"# {len(args.targets)} targets x {args.rounds} rounds, ~{per_target_s} s per target per round "
        f"(~{len(args.targets) * args.rounds * per_target_s / 60:.1f} min of load); results: {out}"
    )
    pinning = f"proxy on CPU {args.proxy_cpu}; wrk + upstream on CPU {args.load_cpu}"
    print("# pinning: " + ("none" if args.no_pin else pinning))

    procs = Procs()
    meta = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "nproc": os.cpu_count(),
        "uname": os.uname().release,
        "targets": {n: TARGETS[n] for n in args.targets},
    }
    rounds: list[dict[str, Any]] = []
    targets: list[Target] = []
    try:
        upstream_port, *ports = free_ports(1 + len(args.targets))
        upstream_url = f"http://{HOST}:{upstream_port}"
        targets = [
            build_target(n, upstream_port if n == "direct" else p, tmp, upstream_url)
            for n, p in zip(args.targets, ports, strict=True)
        ]

        conf = tmp / "upstream.conf"
        conf.write_text(UPSTREAM_CONF.read_text().replace("@TMP@", str(tmp)).replace("@PORT@", str(upstream_port)))
        nginx = ["nginx", "-p", str(tmp), "-e", str(tmp / "upstream.stderr.log"), "-c", str(conf)]
        upstream = procs.start(pin_load + nginx, log=tmp / "direct.log")
        env = dict(os.environ, BENCH_UPSTREAM=upstream_url, PYTHONHASHSEED="0")
        for t in targets:
            if t.name == "direct":
                t.proc = upstream
            else:
                t.proc = procs.start(pin_proxy + t.argv, log=tmp / f"{t.name}.log", cwd=t.cwd, env=env | t.env)

        expected_body = b""
        for t in targets:  # direct first: its body is what every proxy must return
            if not wait_ready(t, START_TIMEOUT_S):
                rc = t.proc.poll() if t.proc is not None else None
                t.failed = (
                    f"exited with status {rc} before answering"
                    if rc is not None
                    else f"not answering 200 on GET {GET_PATH} within {START_TIMEOUT_S:.0f} s"
                )
            else:
                if t.name == "direct":
                    expected_body = http("GET", t.port, GET_PATH, None)[1]
                t.failed, warning = smoke_check(t, expected_body)
                if warning:
                    print(f"# WARNING {t.name}: {warning}")
            if t.failed:
                shutil.copy(tmp / f"{t.name}.log", out / f"{t.name}.log")  # tmp is removed at the end
                print(
                    f"# SKIP {t.name}: {t.failed}; its log ({out / (t.name + '.log')}) ends:\n"
                    + log_tail(tmp / f"{t.name}.log")
                )
                if t.name == "direct":
                    raise RuntimeError("the nginx upstream (direct) failed; nothing to measure against")
        live = [t for t in targets if not t.failed]

        for rnd in range(args.rounds):
            k = rnd % len(live)
            result: dict[str, Any] = {}
            for t in live[k:] + live[:k]:
                assert t.proc is not None
                if t.proc.poll() is not None:
                    print(f"# {t.name} exited (rc={t.proc.returncode}); no numbers this round")
                    result[t.name] = None
                    continue
                r = result[t.name] = measure(t, args, pin_load, {p.pid for p in procs.started})
                print(
                    f"  round {rnd + 1} {t.name:18s} {r['rps']:9,.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                    f"p99 {r['p99_ms']:6.2f} ms  c1 p50 {r['c1_p50_us']:5.0f} µs  c1 p99 {r['c1_p99_us']:5.0f} µs  "
                    f"errors {r['errors']}  noise {r['noise_pct']:3.0f}%",
                    flush=True,
                )
            rounds.append(result)
            (out / "rounds.json").write_text(json.dumps({"meta": meta, "rounds": rounds}, indent=1))

        if args.profile:
            t = next(t for t in targets if t.name == args.profile)
            if t.failed or t.proc is None or t.proc.poll() is not None:
                print(f"# no profile: {t.name} is not running")
            else:
                profile(t, args, procs, pin_load, out, tmp)
    except KeyboardInterrupt:
        print("# interrupted: stopping everything this run started", file=sys.stderr)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"# error: {e}; stopping everything this run started", file=sys.stderr)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    skipped = {t.name: t.failed for t in targets if t.failed}
    (out / "rounds.json").write_text(json.dumps({"meta": meta, "skipped": skipped, "rounds": rounds}, indent=1))
    if not rounds:
        print(f"# no complete round; see {out}", file=sys.stderr)
        return 1
    rows = summarize(rounds, [t.name for t in targets if not t.failed])
    header = (
        f"median of {len(rounds)} round(s); GET {GET_PATH}; c32 = wrk -t1 -c32 -d{args.duration}s, "
        f"c1 = wrk -t1 -c1 -d{args.duration}s; spread = (max-min)/median of req/s c32; "
        f"× = req/s c32 ratio to that target within a round (median); +p50 = c1 p50 minus direct's, "
        f"within a round (median); proxy CPU = CPU time of the target's process group per request at c32; "
        f"noise = most CPU used by processes this run did not start during a c32 run (% of one core)"
    )
    text = header + "\n\n" + table(rows) + "\n"
    verdict = goals(rows)
    if verdict:
        heading = "Goals (≥ 1.0× raw-asgi-aiohttp, ≥ 1.3× asgiproxy, added p50 at c1 ≤ the raw proxy's)"
        text += f"\n{heading}:\n{verdict}\n"
    if skipped:
        text += "\nSkipped: " + "; ".join(f"{n}: {why}" for n, why in skipped.items()) + "\n"
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    print("\n" + text + f"\n# results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
