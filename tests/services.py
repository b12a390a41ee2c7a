"""The shared services a scale-out test needs: the machine's Redis and PostgreSQL, and Redis
servers of a test's own, which it may stop and start again.

A test that needs a service skips, saying why, when the service cannot be reached; with
``GATEWAY_REQUIRE_SERVICES=1`` (as ``.ci/run`` sets it) it fails instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import asyncpg
import pytest

from tests.servers import free_port

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# The databases the tests may use, each emptied by every test that uses it: the machine's Redis may
# serve others (0, its default, is never touched). Every test run on the machine shares that Redis,
# in every checkout, and all their users are called "alice": two runs in one database would empty
# and spend each other's state (one run's 120 requests drained the wallet another had just set to
# 30). So each test process (a pytest-xdist worker, or a plain run) leases a database of its own
# for as long as it lives, with a lock file the system lets go of when the process ends, however it
# ends. 15, 14 and 9 down to 4 first: checkouts from before the lease still use 13 down to 10
# unasked.
_REDIS_TEST_DBS = (15, 14, *range(9, 3, -1), *range(13, 9, -1))
_REDIS_LEASE_WAIT = 300.0  # seconds a process waits for a database once every one is leased
_redis_lease: tuple[int, IO[str]] | None = None


def _redis_test_db() -> int:
    """This process's own database on the machine's Redis, leased at its first use."""
    global _redis_lease
    if _redis_lease is None:
        _redis_lease = _lease_redis_db()
    return _redis_lease[0]


def _lease_redis_db() -> tuple[int, IO[str]]:
    deadline = time.monotonic() + _REDIS_LEASE_WAIT
    while True:
        for db in _REDIS_TEST_DBS:
            lock = open(Path(tempfile.gettempdir()) / f"gateway-tests-redis-{REDIS_PORT}-db{db}.lock", "a")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            return db, lock  # held (open) until the process ends
        if time.monotonic() >= deadline:
            unavailable("Redis", f"every test database ({len(_REDIS_TEST_DBS)}) stayed leased by other test runs")
        time.sleep(0.5)


def unavailable(service: str, why: str) -> None:
    """Skip the test, or fail it where the services are required."""
    message = f"{service} is needed and {why}"
    if os.environ.get("GATEWAY_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (GATEWAY_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection((REDIS_HOST, port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def machine_redis_url() -> str:
    """The machine's Redis, the database this process leased emptied."""
    if not _answers_ping(REDIS_PORT):
        unavailable("Redis", f"nothing answers PING on {REDIS_HOST}:{REDIS_PORT}")
    db = _redis_test_db()
    with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=2) as sock:
        sock.sendall(f"SELECT {db}\r\nFLUSHDB\r\n".encode())
        replies = b""
        while replies.count(b"\r\n") < 2:
            replies += sock.recv(64)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


class RedisServer:
    """``redis-server`` of the test's own on a free port, keeping nothing on disk; ``stop()`` and
    ``start()`` again on the same port, as an outage and its end."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server", "is not on PATH")
        self._command = [str(binary), "--bind", REDIS_HOST, "--save", "", "--appendonly", "no"]
        self._folder = folder
        self.port = free_port()
        self.url = f"redis://{REDIS_HOST}:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self._process = subprocess.Popen(
            [*self._command, "--port", str(self.port), "--dir", str(self._folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _answers_ping(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
        self._process = None


POSTGRES_DSN = "postgresql://127.0.0.1:5432/test"


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A store URL on the machine's PostgreSQL, in a schema of its own (dropped afterwards), so
    tests never meet each other's tables."""
    schema = f"gw_test_{secrets.token_hex(6)}"

    async def run(sql: str) -> None:
        connection = await asyncpg.connect(POSTGRES_DSN, timeout=5)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    try:
        asyncio.run(run(f"CREATE SCHEMA {schema}"))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        unavailable("PostgreSQL", f"{POSTGRES_DSN} cannot be used: {exc}")
    try:
        yield f"{POSTGRES_DSN}?search_path={schema}"
    finally:
        asyncio.run(run(f"DROP SCHEMA {schema} CASCADE"))


class PostgresServer:
    """A PostgreSQL cluster of the test's own (``initdb`` in a temporary folder, run as the
    ``postgres`` user when the tests run as root, as PostgreSQL requires), on a free port;
    ``stop()`` and ``start()`` again on the same data, as an outage and its end; ``close()``
    stops it and removes its folder."""

    def __init__(self) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not found:
            unavailable("PostgreSQL's server programs", "are not under /usr/lib/postgresql/*/bin")
        self._bin = found[-1].parent
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        # Not under pytest's folders: those are private to root, and the server runs as postgres.
        self._folder = Path(tempfile.mkdtemp(prefix="gateway-test-pg-"))
        self._data = self._folder / "data"
        if os.geteuid() == 0:
            shutil.chown(self._folder, "postgres")
        self._run("initdb", "-D", str(self._data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.start()

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run([*self._as, str(self._bin / program), *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stderr.strip()}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self._data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self._data), "-o", options, "-l", str(self._data / "log"), "-w", "start")

    def stop(self) -> None:
        """Stop the server (fast: open connections are cut), if it runs."""
        if (self._data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self._data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._folder, ignore_errors=True)
