"""scripts/demo as a new user runs it: real processes on free ports, its store in a folder of the
test's own (GATEWAY_STORE_URL)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "scripts" / "demo"


class Demo:
    def __init__(self, store: Path, *ports: int) -> None:
        self.port, self.stub_port, self.admin_port, self.portal_port = ports
        env = dict(os.environ, GATEWAY_STORE_URL=f"sqlite:///{store}")
        env.pop("GATEWAY_CONFIG", None)
        self.process = subprocess.Popen(
            ["bash", str(DEMO), "--port", str(self.port), "--stub-port", str(self.stub_port)]
            + ["--admin-port", str(self.admin_port), "--portal-port", str(self.portal_port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,  # its own group: the test stops the demo and what it started
        )
        self.output = ""
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                self.output += line
                if line.startswith("Ctrl-C stops both"):
                    self._ready.set()
        self._ready.set()

    def ended(self, timeout: float) -> int:
        """Its exit status, once it has exited and all it printed is read."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout)
        return code

    def ready(self) -> None:
        assert self._ready.wait(120) and self.process.poll() is None, self.output

    @property
    def key(self) -> str:
        return re.findall(r"Authorization: Bearer (\S+)\" http://127.0.0.1:\d+/api", self.output)[0]

    @property
    def admin_token(self) -> str:
        return re.findall(r"Authorization: Bearer (\S+)\" http://127.0.0.1:\d+/admin", self.output)[0]

    @property
    def portal_link(self) -> str:
        return re.findall(rf"^    (http://127.0.0.1:{self.portal_port}/portal/start\?token=\S+)$", self.output, re.M)[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # Ctrl-C, as its user would
        self.ended(30)


@pytest.fixture
def ports() -> tuple[int, int, int, int]:
    return free_port(), free_port(), free_port(), free_port()


@pytest.fixture
def started(tmp_path: Path, ports: tuple[int, int, int, int]) -> Iterator[list[Demo]]:
    demos: list[Demo] = []
    yield demos
    for demo in demos:
        demo.stop()


def test_the_demo_works_and_a_second_run_replaces_its_key(
    tmp_path: Path, ports: tuple[int, int, int, int], started: list[Demo]
) -> None:
    first = Demo(tmp_path / "gateway.db", *ports)
    started.append(first)
    first.ready()
    url = f"http://127.0.0.1:{first.port}/api/v1/templates"
    assert httpx.get(url, headers={"Authorization": f"Bearer {first.key}"}).status_code == 200
    assert httpx.get(url).status_code == 401
    admin = {"Authorization": f"Bearer {first.admin_token}"}
    users = httpx.get(f"http://127.0.0.1:{first.admin_port}/admin/v1/users", headers=admin).json()
    assert [user["id"] for user in users["items"]] == ["demo"]
    # The portal link opens the demo user's keys, once.
    with httpx.Client() as browser:
        opened = browser.get(first.portal_link, follow_redirects=True)
        assert opened.status_code == 200 and "Your API keys" in opened.text and "demo" in opened.text
        assert browser.get(first.portal_link).status_code == 403
    first.stop()
    assert first.process.returncode is not None

    second = Demo(tmp_path / "gateway.db", *ports)
    started.append(second)
    second.ready()
    assert httpx.get(url, headers={"Authorization": f"Bearer {first.key}"}).status_code == 401  # revoked
    assert httpx.get(url, headers={"Authorization": f"Bearer {second.key}"}).status_code == 200
    admin = {"Authorization": f"Bearer {second.admin_token}"}
    keys = httpx.get(f"http://127.0.0.1:{second.admin_port}/admin/v1/keys", headers=admin).json()["items"]
    assert [key["status"] for key in keys] == ["revoked", "active"]  # no pile of working demo keys
    assert keys[1]["expires_at"] is not None


@pytest.mark.parametrize("taken", [0, 1, 2, 3], ids=["gateway-port", "stub-port", "admin-port", "portal-port"])
def test_a_port_taken_by_another_program_stops_the_demo_with_one_line(
    tmp_path: Path, ports: tuple[int, int, int, int], taken: int
) -> None:
    with socket.create_server(("127.0.0.1", ports[taken])):  # someone else's server
        demo = Demo(tmp_path / "gateway.db", *ports)
        code = demo.ended(30)
    assert code == 1
    lines = demo.output.strip().splitlines()
    assert lines == [
        f"error: port {ports[taken]} is in use by another program: stop it, or move the demo"
        " (--port, --stub-port, --admin-port, --portal-port)"
    ]
    assert not (tmp_path / "gateway.db").exists()  # stopped before anything was made
