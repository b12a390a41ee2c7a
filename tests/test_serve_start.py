"""`gateway serve` when it cannot start: one line that says what to do, and exit status 3 when
it cannot listen, 2 when the config cannot be served."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.services import machine_redis_url


def serve(settings: dict[str, object], tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``gateway serve`` on ``settings``, without the GATEWAY_ variables of the tests' own run."""
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(settings))
    return subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        check=False,
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_in_use_stops_the_start_with_one_line(tmp_path: Path, workers: int) -> None:
    settings: dict[str, object] = {"store": {"url": f"sqlite:///{tmp_path}/gateway.db"}}
    if workers > 1:
        settings["redis"] = {"url": machine_redis_url()}
    with socket.create_server(("127.0.0.1", 0)) as taken:  # another program's server
        port = taken.getsockname()[1]
        done = serve(settings, tmp_path, "--port", str(port), "--workers", str(workers))
    assert done.returncode == 3
    errors = [line for line in done.stderr.splitlines() if "Error" in line or "ERROR" in line]
    assert errors == [
        f"Error: 127.0.0.1:{port} is in use by another program: stop what holds it,"
        " or choose another address or port (--port, listen.port)"
    ]
    assert "Traceback" not in done.stderr


def test_a_portal_with_its_sessions_in_redis_needs_an_admin_token(tmp_path: Path) -> None:
    settings = {
        "store": {"url": f"sqlite:///{tmp_path}/gateway.db"},
        "redis": {"url": machine_redis_url()},
        "portal": {"port": 0},
    }
    done = serve(settings, tmp_path, "--port", "0")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "Error: portal.port: the portal keeps its sessions in Redis (redis.url), signed with a key from the admin"
        " tokens; set one (GATEWAY_ADMIN_TOKEN or admin.token_file)"
    ]
