"""Real servers on loopback for end-to-end tests: the gateway and the upstream stub as subprocesses.

Each is started with its own console entry point (``python -m gateway serve``, ``python -m
upstream_stub``) on a free port, and is ready when uvicorn says it is running; it is stopped by
its PID, and its stderr is kept so a test can read the log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

STARTUP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A server subprocess whose stderr is collected line by line by a reader thread."""

    def __init__(self, args: list[str], *, port: int, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._lines: list[str] = []
        self._new_line = threading.Condition()
        self._ready = threading.Event()
        self._ended = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(STARTUP_TIMEOUT) or self.process.poll() is not None:
            self.stop()
            raise RuntimeError(f"{args} did not start:\n{self.log}")

    def _read(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for line in self.process.stderr:
                with self._new_line:
                    self._lines.append(line)
                    self._new_line.notify_all()
                if "Uvicorn running on" in line:
                    self._ready.set()
        self._ready.set()  # ended before becoming ready: wake the waiter
        self._ended.set()

    @property
    def log(self) -> str:
        return "".join(self._lines)

    def wait_for_log(self, text: str, timeout: float = 10.0) -> bool:
        """Whether ``text`` appears in the log within ``timeout`` seconds (woken by each new line)."""
        with self._new_line:
            return self._new_line.wait_for(lambda: text in self.log, timeout)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._ended.wait(5)


def start_stub() -> ServerProcess:
    port = free_port()
    return ServerProcess(["-m", "upstream_stub", "--port", str(port), "--log-level", "info"], port=port)


def start_gateway(tmp_dir: Path, settings: dict[str, Any], *, env: dict[str, str] | None = None) -> ServerProcess:
    """``gateway serve`` with ``settings`` written to a config file in ``tmp_dir``."""
    port = free_port()
    config_file = tmp_dir / f"gateway-{port}.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    return ServerProcess(
        ["-m", "gateway", "serve", "--config", str(config_file), "--port", str(port)],
        port=port,
        env=env,
        cwd=tmp_dir,
    )


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/<pid>/status")
