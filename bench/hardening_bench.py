#!/usr/bin/env python3
"""Memory, file descriptors and service under abuse: the gateway's figures before and after each
flood, on loopback only, every flood bounded in count and time.

Starts the upstream stub and `gateway serve` (SQLite store in a temporary folder, one user and
key), then, in turn:

  early-disconnect  2,000 requests to a slow upstream path whose client leaves after 50 ms
  malformed         2,000 requests with both Content-Length and Transfer-Encoding
  unknown-keys      5,000 well-formed random keys (the failure throttle off, to reach the store)
  upload-1GiB       one 1 GiB chunked upload, streamed
  download-1GiB     one 1 GiB download, streamed
  slow-loris        500 connections sending a head byte a second for 15 s, while a valid client
                    keeps making requests; its latency is compared with the same client's
                    before the flood (the baseline)

Each line shows the gateway's RSS and open file descriptors at rest before the flood, at its
peak (RSS) or end, and once the flood is over. Usage: bench/.venv/bin/python bench/hardening_bench.py
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
CHUNK = b"x" * 65536


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def rss_mib(pid: int, field: str = "VmRSS:") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextlib.contextmanager
def started(argv: list[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(argv, start_new_session=True, **kwargs)  # type: ignore[call-overload]
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def early_disconnects(port: int, auth: bytes) -> None:
    for _ in range(2000):
        with socket.create_connection((HOST, port)) as sock:
            sock.sendall(b"GET /__stub/slow?delay=2 HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n")
            time.sleep(0.001)


def malformed(port: int, auth: bytes) -> None:
    for _ in range(2000):
        with socket.create_connection((HOST, port)) as sock:
            sock.sendall(
                b"POST /m HTTP/1.1\r\nHost: x\r\n"
                + auth
                + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            )
            sock.recv(4096)


def unknown_keys(port: int, prefix: str) -> None:
    from gateway.auth.keys import generate_key

    with httpx.Client(base_url=f"http://{HOST}:{port}") as client:
        for _ in range(5000):
            client.get("/x", headers={"Authorization": f"Bearer {generate_key(prefix)}"})


def upload(port: int, auth: bytes) -> None:
    def body() -> Iterator[bytes]:
        for _ in range((1 << 30) // len(CHUNK)):
            yield CHUNK

    key = auth.split(b" ", 2)[2].strip().decode()
    with httpx.Client(timeout=120) as client:
        answer = client.post(f"http://{HOST}:{port}/echo", content=body(), headers={"Authorization": f"Bearer {key}"})
        assert answer.json()["body_length"] == 1 << 30, answer.text


def download(port: int, auth: bytes) -> None:
    key = auth.split(b" ", 2)[2].strip().decode()
    got = 0
    url = f"http://{HOST}:{port}/__stub/bytes/{1 << 30}"
    with httpx.stream("GET", url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as answer:
        for chunk in answer.iter_raw():
            got += len(chunk)
    assert got == 1 << 30


def latencies(port: int, key: str, seconds: float) -> list[float]:
    out: list[float] = []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=f"http://{HOST}:{port}", headers={"Authorization": f"Bearer {key}"}) as client:
        while time.monotonic() < deadline:
            started_at = time.perf_counter()
            if client.get("/api/v1/templates").status_code == 200:
                out.append(time.perf_counter() - started_at)
    return out


def slow_loris(port: int, count: int = 500, seconds: float = 15) -> int:
    """Hold ``count`` connections, each sending one head byte a second; how many the gateway closed."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection((HOST, port))
        sock.sendall(b"GET /slow HTTP/1.1\r\n")
        socks.append(sock)
    closed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and closed < count:
        time.sleep(1)
        closed = 0
        for sock in socks:
            try:
                sock.sendall(b"X")
            except OSError:
                closed += 1
    for sock in socks:
        sock.close()
    return closed


def main() -> None:
    python = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="gw-hardening-"))
    stub_port, gw_port = free_port(), free_port()
    config = tmp / "gw.yaml"
    config.write_text(
        f"upstream:\n  url: http://{HOST}:{stub_port}\n  read_timeout: 30s\nstore:\n  url: sqlite:///{tmp}/gw.db\n"
        'rate_limits:\n  default: ["1000000000/minute"]\nauth_failures:\n  limit: null\n'
        "limits:\n  max_body_bytes: 2GiB\nlogging:\n  level: warning\n  access: false\n"
    )
    gateway = [python, "-m", "gateway"]
    subprocess.run([*gateway, "users", "add", "bench", "--config", str(config)], check=True, capture_output=True)
    created = subprocess.run(
        [*gateway, "keys", "create", "--user", "bench", "--json", "--config", str(config)],
        check=True,
        capture_output=True,
        text=True,
    )
    key = json.loads(created.stdout)["key"]
    auth = f"Authorization: Bearer {key}\r\n".encode()
    null = subprocess.DEVNULL
    with (
        started([python, "-m", "upstream_stub", "--port", str(stub_port), "--test-tools"], stdout=null, stderr=null),
        started([*gateway, "serve", "--config", str(config), "--port", str(gw_port)], stdout=null, stderr=null) as gw,
    ):
        wait_port(stub_port)
        wait_port(gw_port)
        baseline = latencies(gw_port, key, 5)
        floods: list[tuple[str, Callable[[], object]]] = [
            ("early-disconnect", lambda: early_disconnects(gw_port, auth)),
            ("malformed", lambda: malformed(gw_port, auth)),
            ("unknown-keys", lambda: unknown_keys(gw_port, "mk_live_")),
            ("upload-1GiB", lambda: upload(gw_port, auth)),
            ("download-1GiB", lambda: download(gw_port, auth)),
        ]
        print("| flood | seconds | RSS before MiB | peak RSS MiB | RSS after MiB | fds before | fds after |")
        print("|---|---|---|---|---|---|---|")
        for name, flood in floods:
            rss0, fd0, hwm0 = rss_mib(gw.pid), fds(gw.pid), rss_mib(gw.pid, "VmHWM:")
            started_at = time.monotonic()
            flood()
            took = time.monotonic() - started_at
            time.sleep(3)  # let cancelled requests and closed connections settle before counting
            hwm = max(hwm0, rss_mib(gw.pid, "VmHWM:"))
            print(
                f"| {name} | {took:.1f} | {rss0:.0f} | {hwm:.0f} | {rss_mib(gw.pid):.0f} | {fd0} | {fds(gw.pid)} |",
                flush=True,
            )

        rss0, fd0 = rss_mib(gw.pid), fds(gw.pid)
        served: list[float] = []
        client = threading.Thread(target=lambda: served.extend(latencies(gw_port, key, 15)))
        client.start()
        closed = slow_loris(gw_port)
        client.join()
        time.sleep(3)
        p50 = statistics.median(served) * 1000
        base50 = statistics.median(baseline) * 1000
        print(
            f"| slow-loris (500 conns, 15 s) | 15.0 | {rss0:.0f} | {rss_mib(gw.pid, 'VmHWM:'):.0f} |"
            f" {rss_mib(gw.pid):.0f} | {fd0} | {fds(gw.pid)} |"
        )
        print(
            f"\nslow-loris: {closed} of 500 connections closed by the gateway (limits.head_timeout);"
            f" the valid client made {len(served)} requests, p50 {p50:.2f} ms against {base50:.2f} ms"
            f" before the flood ({p50 / base50:.2f}x)"
        )
        print(f"baseline: the same client alone for 5 s before the floods, {len(baseline)} requests")


if __name__ == "__main__":
    main()
