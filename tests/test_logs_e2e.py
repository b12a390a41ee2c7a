"""The log on stderr, end to end: a real gateway's lines, as text and as JSON, one started line
per process (workers included), and the logger each line is written by."""

from __future__ import annotations

import json
import re

import httpx

from tests.conftest import GatewayFactory
from tests.servers import GatewayProcess, free_port
from tests.services import machine_redis_url

# uvicorn's own lines of each server's start and stop: a process serves two, so they came twice.
UVICORN_LIFECYCLE = ("Started server process", "Application startup complete", "Finished server process")


def started_lines(gw: GatewayProcess) -> list[str]:
    return [line for line in gw.log.splitlines() if re.search(r"started (process|worker \d+) \d+ ", line)]


def test_text_lines_one_started_line_and_info_not_under_gateway_error(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(admin=True)
    assert gw.wait_for_log("started process ")
    [started] = started_lines(gw)
    assert (
        f" INFO gateway: started process {gw.pid} (public http://127.0.0.1:{gw.port}, admin {gw.admin_url})" in started
    )
    gw.stop()
    for line in UVICORN_LIFECYCLE:
        assert line not in gw.log
    assert " INFO gateway.error:" not in gw.log
    assert len(re.findall(f"INFO gateway: shutting down process {gw.pid} on SIGTERM", gw.log)) == 1
    assert gw.log.count(f"INFO gateway: stopped process {gw.pid}") == 1
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO gateway: forwarding ", gw.log, re.MULTILINE)


def test_json_lines(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(
        {"logging": {"level": "info", "format": "json"}, "upstream": {"url": f"http://127.0.0.1:{free_port()}"}},
        admin=True,
    )
    assert gw.wait_for_log("started process ")
    assert httpx.get(f"{gw.url}/x", headers=gw.auth).status_code == 502  # logs a warning
    assert gw.wait_for_log("upstream request GET")
    gw.stop()
    entries = [json.loads(line) for line in gw.log.splitlines()]
    assert all(list(entry) == ["ts", "level", "logger", "pid", "message"] for entry in entries)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"]) for entry in entries)
    by_message = {entry["message"].split(" (")[0]: entry for entry in entries}
    started = by_message[f"started process {gw.pid}"]
    assert (started["level"], started["logger"], started["pid"]) == ("INFO", "gateway", gw.pid)
    failed = next(entry for entry in entries if entry["message"].startswith("upstream request GET '/x' failed"))
    assert (failed["level"], failed["logger"]) == ("WARNING", "gateway.error")
    assert [entry["message"] for entry in entries].count(f"stopped process {gw.pid}") == 1
    assert not [entry for entry in entries if entry["message"].startswith(UVICORN_LIFECYCLE)]
    assert "Uvicorn running on " + gw.url in gw.log  # the readiness line, once per listener


def test_one_started_line_per_worker(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"redis": {"url": machine_redis_url()}}, workers=2, admin=True)
    assert gw.wait_for_log("started 2 workers: ")
    [pids] = re.findall(r"INFO gateway: started 2 workers: (\d+), (\d+)", gw.log)
    # Workers start after the parent has said it (a busy machine takes seconds).
    assert gw.wait_for_log(f"started worker 2 {pids[1]} ", 60) and gw.wait_for_log(f"started worker 1 {pids[0]} ", 60)
    gw.stop()
    assert sorted(line.split(" INFO gateway: ")[1].split(" (")[0] for line in started_lines(gw)) == [
        f"started worker 1 {pids[0]}",
        f"started worker 2 {pids[1]}",
    ]
    for line in UVICORN_LIFECYCLE:
        assert line not in gw.log
    for index, pid in enumerate(pids, 1):
        assert gw.log.count(f"INFO gateway: stopped worker {index} {pid}") == 1
