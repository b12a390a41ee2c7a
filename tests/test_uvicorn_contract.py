"""What ``gateway/http/protocol.py`` takes from uvicorn's private ``HttpToolsProtocol``: if a
uvicorn release renames, removes or reshapes any of it, this fails first, naming the piece.
(pyproject.toml bounds uvicorn to the versions these tests passed with.)"""

from __future__ import annotations

import inspect

import pytest
from uvicorn.protocols.http import flow_control, httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from tests.inprocess import AppGateway, FakeTimers, connect

# The methods the gateway's protocol overrides or calls, with the parameters it relies on.
METHODS = {
    "__init__": ["self", "config", "server_state", "app_state", "_loop"],
    "connection_made": ["self", "transport"],
    "connection_lost": ["self", "exc"],
    "data_received": ["self", "data"],
    "on_message_begin": ["self"],
    "on_url": ["self", "url"],
    "on_header": ["self", "name", "value"],
    "on_headers_complete": ["self"],
    "on_body": ["self", "body"],
    "on_message_complete": ["self"],
    "on_response_complete": ["self"],
    "pause_writing": ["self"],
    "resume_writing": ["self"],
    "_start_asgi_task": ["self", "cycle", "app"],
    "_unset_keepalive_if_required": ["self"],
}
# What the protocol reads or sets on itself once a request has arrived.
PROTOCOL_ATTRIBUTES = ["loop", "transport", "flow", "parser", "headers", "scope", "url", "pipeline", "tasks"]
PROTOCOL_ATTRIBUTES += ["connections", "client", "cycle"]
# What it reads or sets on a request's cycle.
CYCLE_ATTRIBUTES = ["scope", "body", "transport", "keep_alive", "disconnected", "message_event"]
CYCLE_ATTRIBUTES += ["response_started", "response_complete"]


@pytest.mark.parametrize(("name", "parameters"), METHODS.items(), ids=list(METHODS))
def test_the_methods_the_protocol_builds_on(name: str, parameters: list[str]) -> None:
    method = getattr(HttpToolsProtocol, name, None)
    assert method is not None, f"uvicorn's HttpToolsProtocol has no {name} any more"
    assert list(inspect.signature(method).parameters) == parameters, f"HttpToolsProtocol.{name} changed its parameters"


@pytest.mark.parametrize("caller", ["on_headers_complete", "on_response_complete"])
def test_a_request_starts_through_start_asgi_task(caller: str) -> None:
    # The gateway's protocol keeps each request's task (to cancel it when its client leaves) by
    # overriding _start_asgi_task; uvicorn must still start every request through it.
    assert "self._start_asgi_task(" in inspect.getsource(getattr(HttpToolsProtocol, caller))


def test_the_module_level_names() -> None:
    assert isinstance(httptools_impl.STATUS_LINE[408], bytes)
    assert httptools_impl.STATUS_LINE[408].startswith(b"HTTP/1.1 408 ")
    assert isinstance(flow_control.HIGH_WATER_LIMIT, int)


async def test_the_attributes_of_a_connection_and_its_request(app_gateway: AppGateway, timers: FakeTimers) -> None:
    conn = connect(app_gateway, timers)
    conn.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    await conn.settle()
    missing = [name for name in PROTOCOL_ATTRIBUTES if not hasattr(conn.protocol, name)]
    assert missing == [], f"uvicorn's HttpToolsProtocol no longer sets {missing}"
    cycle = conn.protocol.cycle
    assert isinstance(cycle, RequestResponseCycle)
    missing = [name for name in CYCLE_ATTRIBUTES if not hasattr(cycle, name)]
    assert missing == [], f"uvicorn's RequestResponseCycle no longer has {missing}"
    assert [answer.status for answer in conn.responses()] == [401]
