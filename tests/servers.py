"""Real servers on loopback for end-to-end tests: the gateway and the upstream stub as subprocesses.

Each is started with its own console entry point (``python -m gateway serve``, ``python -m
upstream_stub``) on a free port, and is ready when uvicorn says it is running; it is stopped by
its PID, and its stderr and stdout are kept so a test can read the log and the access log.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import load_config
from gateway.manage.service import CreatedKey, ManagementService
from gateway.store import open_store

T = TypeVar("T")

STARTUP_TIMEOUT = 20.0
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A server subprocess whose stderr and stdout are collected line by line by reader threads."""

    def __init__(self, args: list[str], *, port: int, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.port = port
        self._ready_line = f"Uvicorn running on http://127.0.0.1:{port} "
        self.url = f"http://127.0.0.1:{port}"
        self._lines: list[str] = []
        self._out_lines: list[str] = []
        self._new_line = threading.Condition()
        self._ready = threading.Event()
        self._ended = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._out_reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._out_reader.start()
        if not self._ready.wait(STARTUP_TIMEOUT) or self.process.poll() is not None:
            self.stop()
            raise RuntimeError(f"{args} did not start:\n{self.log}")

    def _read(self) -> None:
        assert self.process.stderr is not None
        self._collect(self.process.stderr, self._lines, watch_ready=True)
        self._ready.set()  # ended before becoming ready: wake the waiter
        self._ended.set()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        self._collect(self.process.stdout, self._out_lines, watch_ready=False)

    def _collect(self, stream: IO[str], lines: list[str], *, watch_ready: bool) -> None:
        """Append each line of ``stream`` to ``lines``, waking whoever waits for one."""
        with stream:
            for line in stream:
                with self._new_line:
                    lines.append(line)
                    self._new_line.notify_all()
                if watch_ready and self._ready_line in line:
                    self._ready.set()

    @property
    def log(self) -> str:
        return "".join(self._lines)

    @property
    def stdout(self) -> str:
        return "".join(self._out_lines)

    def access_entry(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The access-log entry (a JSON line on stdout) of the request with this id, once written."""

        def find() -> dict[str, Any] | None:
            for line in self._out_lines:
                entry: dict[str, Any] = json.loads(line)
                if entry["request_id"] == request_id:
                    return entry
            return None

        with self._new_line:
            entry = self._new_line.wait_for(find, timeout)
        if entry is None:
            raise AssertionError(f"no access-log line for request {request_id} in {timeout} s:\n{self.stdout}")
        return entry

    def wait_for_stdout_lines(self, count: int, timeout: float = 10.0) -> list[str]:
        """The first ``count`` lines of stdout, once written (fewer if ``timeout`` passes first)."""
        with self._new_line:
            self._new_line.wait_for(lambda: len(self._out_lines) >= count, timeout)
            return self._out_lines[:count]

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
        self._out_reader.join(5)


def start_stub(*options: str, test_tools: bool = True) -> ServerProcess:
    """The stub on a free port; with its ``/__stub/`` test tools and echo unless ``test_tools=False``."""
    port = free_port()
    command = ["-m", "upstream_stub", "--port", str(port), "--log-level", "info", *options]
    if test_tools:
        command.append("--test-tools")
    return ServerProcess(command, port=port)


class GatewayProcess(ServerProcess):
    """``gateway serve`` on a config file and a SQLite store of its own, with one user and key;
    with ``admin=True`` its admin listener (``admin_url``), with ``portal=True`` its portal
    listener (``portal_url``) on a free port each."""

    ADMIN_TOKEN = "test-admin-token-0123456789abcdef"

    def __init__(
        self,
        tmp_dir: Path,
        settings: dict[str, Any],
        *,
        env: dict[str, str] | None = None,
        admin: bool = False,
        portal: bool = False,
        parser: str = "gateway",
        workers: int = 1,
    ):
        """``parser="h11"`` serves the same app with plain uvicorn and its h11 parser instead of
        ``gateway serve`` (its own httptools protocol): for the framing tests' comparison."""
        port = free_port()
        settings = dict(settings)
        env = dict(env or {})
        self.admin_url: str | None = None
        if admin:
            admin_port = free_port()
            settings["admin"] = {"host": "127.0.0.1", "port": admin_port} | settings.get("admin", {})
            self.admin_url = f"http://127.0.0.1:{admin_port}"
            env["GATEWAY_ADMIN_TOKEN"] = self.ADMIN_TOKEN
        self.portal_url: str | None = None
        if portal:
            portal_port = free_port()
            settings["portal"] = {"host": "127.0.0.1", "port": portal_port} | settings.get("portal", {})
            self.portal_url = f"http://127.0.0.1:{portal_port}"
        settings["store"] = {"url": f"sqlite:///{tmp_dir}/gateway.db"} | settings.get("store", {})
        self.config_path = tmp_dir / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(settings))
        self.config = load_config(self.config_path, environ={})
        self.user_id = "alice"
        created = self.run_service(lambda service: _user_with_key(service, self.user_id))
        self.key: str = created.key
        self.key_id = created.record.id
        self.parser = parser
        self.workers = workers
        command = ["-m", "gateway", "serve", "--config", str(self.config_path), "--port", str(port)]
        command += ["--workers", str(workers)]
        if parser == "h11":
            command = ["-m", "uvicorn", "--factory", "tests.adversarial.h11_gateway:create", "--http", "h11"]
            command += ["--port", str(port), "--app-dir", str(REPO), "--no-server-header", "--no-access-log"]
            env["GATEWAY_CONFIG"] = str(self.config_path)
        super().__init__(command, port=port, env=env, cwd=tmp_dir)
        for name, url in (("admin", self.admin_url), ("portal", self.portal_url)):
            if url is not None and not self.wait_for_log(f"Uvicorn running on {url} ", 20):
                self.stop()
                raise RuntimeError(f"the {name} listener did not start:\n{self.log}")
        self._wait_for_workers()

    def _wait_for_workers(self) -> None:
        """With --workers N the parent says "Uvicorn running" as it binds the sockets; connections
        wait in the backlog until a worker serves, which each says (a busy machine takes seconds)."""
        for index in range(1, self.workers + 1 if self.workers > 1 else 1):
            if not self.wait_for_log(f"started worker {index} ", STARTUP_TIMEOUT * 3):
                self.stop()
                raise RuntimeError(f"worker {index} did not start:\n{self.log}")

    @classmethod
    def restart(cls, old: GatewayProcess) -> GatewayProcess:
        """A new ``gateway serve`` (on a new port) on the config and store of ``old``: a restart once
        ``old`` has exited, or another replica beside it. The caller stops it."""
        new = cls.__new__(cls)
        for name in ("config_path", "config", "user_id", "key", "key_id", "parser", "workers"):
            setattr(new, name, getattr(old, name))
        new.admin_url = None
        new.portal_url = None
        port = free_port()
        command = ["-m", "gateway", "serve", "--config", str(old.config_path), "--port", str(port)]
        command += ["--workers", str(old.workers)]
        ServerProcess.__init__(new, command, port=port, cwd=old.config_path.parent)
        new._wait_for_workers()
        return new

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def auth_line(self) -> bytes:
        return f"Authorization: Bearer {self.key}\r\n".encode()

    def run_service(self, action: Callable[[ManagementService], Awaitable[T]]) -> T:
        """Run ``action`` on the gateway's store through the service layer, in this process."""
        return run_service(self.config.store.url, self.config.keys.prefix, action)


async def _user_with_key(service: ManagementService, user_id: str) -> CreatedKey:
    await service.add_user(user_id)
    return await service.create_key(user_id, name="tests")


# SQLite's WAL-index locks are fcntl locks on bytes 120 to 127 of the -shm file; holding them all
# keeps every other process from starting a read or a write.
WAL_LOCKS = (120, 8)


@contextlib.contextmanager
def store_locked(gateway: GatewayProcess) -> Iterator[None]:
    """A real lock on the gateway's SQLite store, held by this process as a backup tool or a stuck
    writer would hold it."""
    database = gateway.config.store.url.removeprefix("sqlite:///")
    fd = os.open(database + "-shm", os.O_RDWR)
    try:
        start, length = WAL_LOCKS
        # Waits while the gateway holds them for a read or a write of its own (a usage flush).
        fcntl.lockf(fd, fcntl.LOCK_EX, length, start)
        yield
    finally:
        os.close(fd)  # releases the lock


def run_service(store_url: str, prefix: str, action: Callable[[ManagementService], Awaitable[T]]) -> T:
    async def main() -> T:
        store = await open_store(store_url)
        try:
            return await action(ManagementService(store, key_prefix=prefix))
        finally:
            await store.close()

    return asyncio.run(main())


def samples(gw: GatewayProcess, token: bool = True) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on ``gw``'s /metrics, by name and labels (the admin token sent unless not ``token``)."""
    headers = {"Authorization": f"Bearer {GatewayProcess.ADMIN_TOKEN}"} if token else {}
    response = httpx.get(f"{gw.admin_url}/metrics", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/<pid>/status")


def gateway_cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``gateway ARGS --config CONFIG`` in a process of its own, as an operator would run it."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli_json(gateway: GatewayProcess, *args: str) -> Any:
    """``gateway ARGS --json`` against ``gateway``'s config in another process; its JSON answer."""
    done = gateway_cli(gateway.config_path, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _received(stub: ServerProcess) -> list[dict[str, Any]]:
    """The requests whose body the stub's echo received completely."""
    with urllib.request.urlopen(stub.url + "/__stub/received", timeout=10) as answer:
        return list(json.load(answer)["requests"])


def received_ids(stub: ServerProcess) -> list[str | None]:
    """The X-Request-Id of every request whose body the stub received completely."""
    return [r["request_id"] for r in _received(stub)]


def received_paths(stub: ServerProcess) -> list[str]:
    """The raw path of every request whose body the stub received completely."""
    return [r["raw_path"] for r in _received(stub)]
