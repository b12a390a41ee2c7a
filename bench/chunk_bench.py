#!/usr/bin/env python3
"""What tiny request-body chunks cost the gateway, and what they cost its other clients, on loopback
only, every loop bounded in count and time.

Starts the upstream stub and `gateway serve` (SQLite store in a temporary folder, one user and
key), then:

  chunk sizes   for 1 byte, 16 bytes, 1 KiB and 64 KiB: a body of --mib MiB (default 1) uploaded with
                `Transfer-Encoding: chunked` over a raw socket to the stub's echo path, in chunks
                of that size sent in large sendall batches (many chunks per read, as an attacker
                would send them); each answer is checked (200 echoing the body's length; the
                table's "answers" column counts anything else rather than stopping). The gateway
                process's CPU time (utime + stime from /proc/<pid>/stat) across each upload gives
                CPU seconds per MiB of body and per MiB of chunked body on the wire; medians of
                --repeat runs (default 3), the sizes interleaved
  fairness      a client making plain authenticated GETs of /api/v1/templates on one keep-alive
                connection, alone for 3 s (the baseline), then for --seconds (default 8) while 3
                threads each keep one upload of --fairness-chunk-byte chunks (default 1) running;
                its p50 and p99 in both

Prints markdown tables and the machine context. Usage: bench/.venv/bin/python bench/chunk_bench.py
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository
from bench.hardening_bench import HOST, free_port, started, wait_port

REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20
SIZES = (1, 16, 1024, 65536)
BATCH = 256 * 1024  # bytes of chunked body per sendall
UPLOAD_DEADLINE = 120.0  # seconds, per upload
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # fields from the 3rd (state) on
    return (int(fields[11]) + int(fields[12])) / TICKS


def chunked(total: int, size: int) -> bytes:
    """``total`` bytes of body as chunks of ``size`` bytes (the last one shorter), then the last-chunk."""
    whole, rest = divmod(total, size)
    out = (b"%x\r\n" % size + b"x" * size + b"\r\n") * whole
    if rest:
        out += b"%x\r\n" % rest + b"x" * rest + b"\r\n"
    return out + b"0\r\n\r\n"


@dataclass
class Upload:
    status: int  # 0: no answer (the connection broke)
    echoed: int  # the echo's body_length, -1 if none
    wall: float


def upload(port: int, key: str, wire: bytes) -> Upload:
    """POST ``wire`` (an already chunked body) to the echo; its status and echoed length."""
    head = (
        f"POST /__stub/echo HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    started_at = time.monotonic()
    deadline = started_at + UPLOAD_DEADLINE
    view = memoryview(wire)
    with socket.create_connection((HOST, port), timeout=60) as sock:
        try:
            sock.sendall(head)
            for offset in range(0, len(view), BATCH):
                if time.monotonic() > deadline:
                    raise TimeoutError("upload deadline")
                sock.sendall(view[offset : offset + BATCH])
        except OSError:
            pass  # answered early (and closed), or broke: the answer, if any, says which
        answer = http.client.HTTPResponse(sock, method="POST")
        try:
            answer.begin()
            body = answer.read()
        except (OSError, http.client.HTTPException):
            return Upload(0, -1, time.monotonic() - started_at)
    echoed = -1
    if answer.status == 200:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            echoed = int(json.loads(body)["body_length"])
    return Upload(answer.status, echoed, time.monotonic() - started_at)


def latencies(port: int, key: str, seconds: float, stop: threading.Event | None = None) -> tuple[list[float], int]:
    """GETs of a small stub path on one keep-alive connection for ``seconds`` (at most 100,000, and
    until ``stop`` is set): the latencies of the 200s, and how many requests failed."""
    out: list[float] = []
    failed = 0
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + seconds
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        for _ in range(100_000):
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                break
            started_at = time.perf_counter()
            try:
                connection.request("GET", "/api/v1/templates", headers=headers)
                answer = connection.getresponse()
                answer.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                failed += 1
                continue
            if answer.status == 200:
                out.append(time.perf_counter() - started_at)
            else:
                failed += 1
    finally:
        connection.close()
    return out, failed


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def answers(runs: list[Upload], total: int) -> str:
    counts: dict[str, int] = {}
    for run in runs:
        label = "no answer" if run.status == 0 else str(run.status)
        if run.status == 200 and run.echoed != total:
            label = f"200 (echoed {run.echoed} B)"
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{label} ×{count}" for label, count in counts.items())


def size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def gateway_package(python: str) -> str:
    """Where the gateway processes started with cwd=REPO import the package from."""
    found = subprocess.run(
        [python, "-c", "import gateway; print(gateway.__file__)"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return found.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=float, default=1.0, help="body size of each upload, in MiB (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="uploads per chunk size; the median is shown (default 3)")
    parser.add_argument("--seconds", type=float, default=8.0, help="the fairness window, in seconds (default 8)")
    parser.add_argument(
        "--fairness-chunk", type=int, default=1, choices=SIZES, help="chunk size of the fairness uploads (default 1)"
    )
    args = parser.parse_args()
    total = int(args.mib * MIB)
    if total < 1 or args.repeat < 1 or args.seconds <= 0:
        parser.error("--mib, --repeat and --seconds must be positive")

    python = sys.executable
    package = gateway_package(python)
    tmp = Path(tempfile.mkdtemp(prefix="gw-chunks-"))
    try:
        run(python, tmp, total, args.repeat, args.seconds, package, args.fairness_chunk)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(python: str, tmp: Path, total: int, repeat: int, seconds: float, package: str, fair_chunk: int) -> None:
    stub_port, gw_port = free_port(), free_port()
    config = tmp / "gw.yaml"
    max_body = max(16, 2 * math.ceil(total / MIB))
    config.write_text(
        f"upstream:\n  url: http://{HOST}:{stub_port}\n  read_timeout: 60s\nstore:\n  url: sqlite:///{tmp}/gw.db\n"
        'rate_limits:\n  default: ["1000000000/minute"]\nauth_failures:\n  limit: null\n'
        f"limits:\n  max_body_bytes: {max_body}MiB\nlogging:\n  level: warning\n  access: false\n"
    )
    gateway = [python, "-m", "gateway"]
    subprocess.run(
        [*gateway, "users", "add", "bench", "--config", str(config)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=60,
    )
    created = subprocess.run(
        [*gateway, "keys", "create", "--user", "bench", "--json", "--config", str(config)],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    key = json.loads(created.stdout)["key"]
    wires = {size: chunked(total, size) for size in SIZES}
    null = subprocess.DEVNULL
    began = time.monotonic()
    with (
        started(
            [python, "-m", "upstream_stub", "--port", str(stub_port), "--test-tools"],
            cwd=REPO,
            stdout=null,
            stderr=null,
        ),
        started(
            [*gateway, "serve", "--config", str(config), "--port", str(gw_port)], cwd=REPO, stdout=null, stderr=null
        ) as gw,
    ):
        wait_port(stub_port)
        wait_port(gw_port)
        # Warm-up: the key's first look-up and the upstream pool's first connection are not measured.
        latencies(gw_port, key, 1)
        upload(gw_port, key, wires[SIZES[-1]])

        runs: dict[int, list[Upload]] = {size: [] for size in SIZES}
        cpus: dict[int, list[float]] = {size: [] for size in SIZES}
        for _ in range(repeat):
            for size in SIZES:
                cpu0 = cpu_seconds(gw.pid)
                runs[size].append(upload(gw_port, key, wires[size]))
                cpus[size].append(cpu_seconds(gw.pid) - cpu0)

        baseline, baseline_failed = latencies(gw_port, key, 3)
        stop = threading.Event()
        done: list[Upload] = []

        def keep_uploading() -> None:
            for _ in range(1000):
                if stop.is_set():
                    return
                done.append(upload(gw_port, key, wires[fair_chunk]))

        uploaders = [threading.Thread(target=keep_uploading, daemon=True) for _ in range(3)]
        cpu0, window0 = cpu_seconds(gw.pid), time.monotonic()
        for thread in uploaders:
            thread.start()
        time.sleep(0.2)  # the uploads are under way
        loaded, loaded_failed = latencies(gw_port, key, seconds)
        stop.set()
        for thread in uploaders:
            thread.join(UPLOAD_DEADLINE + 10)
        window = time.monotonic() - window0
        fair_cpu = cpu_seconds(gw.pid) - cpu0
        left = sum(thread.is_alive() for thread in uploaders)
        elapsed = time.monotonic() - began

    print(
        f"\nmachine: nproc {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), Python {platform.python_version()}"
        f" ({python}), {platform.platform()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(f"gateway package: {package}")
    print(
        f"\nChunked uploads of {total / MIB:g} MiB to /__stub/echo, medians of {repeat} runs; gateway CPU is"
        f" utime+stime from /proc/<pid>/stat (resolution {1 / TICKS:g} s); wire MiB is the chunked body as sent\n"
    )
    print("| chunk | wire MiB | answers | wall s | gateway CPU s | CPU s / MiB body | CPU s / MiB wire |")
    print("|---|---|---|---|---|---|---|")
    for size in SIZES:
        wire_mib = len(wires[size]) / MIB
        cpu = statistics.median(cpus[size])
        wall = statistics.median(run.wall for run in runs[size])
        print(
            f"| {size_label(size)} | {wire_mib:.2f} | {answers(runs[size], total)} | {wall:.3f} | {cpu:.3f} |"
            f" {cpu / (total / MIB):.3f} | {cpu / wire_mib:.3f} |"
        )

    print(
        f"\nFairness: GET /api/v1/templates on one keep-alive connection, alone for 3 s, then for {seconds:g} s"
        f" while 3 threads each keep a {size_label(fair_chunk)}-chunk upload running\n"
    )
    print("| GET client | requests | failed | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for name, values, failed in (
        ("alone (baseline)", baseline, baseline_failed),
        (f"during 3 × {size_label(fair_chunk)}-chunk uploads", loaded, loaded_failed),
    ):
        if values:
            p50_ms, p99_ms = statistics.median(values) * 1000, p99(values) * 1000
            print(f"| {name} | {len(values)} | {failed} | {p50_ms:.2f} | {p99_ms:.2f} |")
        else:
            print(f"| {name} | 0 | {failed} | - | - |")
    if baseline and loaded:
        ratio = statistics.median(loaded) / statistics.median(baseline)
        print(f"\np50 under the uploads: {ratio:.1f}x the baseline")
    print(
        f"uploads during the window: {len(done)} finished ({answers(done, total) or 'none'}), {left} still running"
        f" at the end; gateway CPU {fair_cpu:.2f} s over {window:.1f} s"
    )
    print(f"run time with the servers up: {elapsed:.0f} s")


if __name__ == "__main__":
    main()
