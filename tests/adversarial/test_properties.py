"""Property-based attacks (hypothesis) on a live gateway over raw sockets: whatever the header
names, paths and keys, never a 500 and never a forwarded spoof."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.conftest import GatewayFactory
from tests.rawhttp import exchange_all as exchange
from tests.servers import GatewayProcess

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
IDENTITY = ("x-user-id", "x-api-key-id")
# Every request asks for the connection to be closed after the answer: exchange() waits for that.
HEAD = b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"


@pytest.fixture(scope="module")
def gw(gateway_factory: GatewayFactory) -> GatewayProcess:
    return gateway_factory()


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def disguised(name: str) -> st.SearchStrategy[str]:
    """``name`` in random letter case, with each hyphen written as ``-``, ``_`` or ``.``."""
    parts = name.split("-")
    return st.tuples(
        *(st.sampled_from([part, part.upper(), part.title()]) for part in parts),
        st.lists(st.sampled_from("-_."), min_size=len(parts) - 1, max_size=len(parts) - 1),
    ).map(lambda t: "".join(p + (t[-1][i] if i < len(parts) - 1 else "") for i, p in enumerate(t[:-1])))


header_name = st.one_of(disguised("x-user-id"), disguised("x-api-key-id"), st.text(TCHAR, min_size=1, max_size=20))
header_value = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)


@SETTINGS
@given(headers=st.lists(st.tuples(header_name, header_value), max_size=8))
def test_no_header_spoofs_an_identity(gw: GatewayProcess, headers: list[tuple[str, str]]) -> None:
    lines = b"".join(f"{name}: {value}\r\n".encode() for name, value in headers)
    [(status, _, body)], _ = exchange(gw.port, HEAD + gw.auth_line + lines + b"\r\n")
    assert status in (200, 400, 431)
    if status == 200:
        received = json.loads(body)["headers"]
        identity = [(canonical(name), value) for name, value in received if canonical(name) in IDENTITY]
        assert identity == [("x-user-id", gw.user_id), ("x-api-key-id", gw.key_id)]


path_char = st.sampled_from(list("abc/.%2F2e5cA-_~!$&'()*+,;=:@") + ["%2e%2e", "//", "/..", "%00", "%0d%0a"])


@SETTINGS
@given(path=st.lists(path_char, max_size=30).map(lambda parts: "/" + "".join(parts)))
def test_every_path_goes_to_the_upstream_as_sent(gw: GatewayProcess, path: str) -> None:
    [(status, _, body)], _ = exchange(
        gw.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode() + gw.auth_line + b"\r\n"
    )
    assert status in (200, 400, 404, 405), body
    if status == 200 and json.loads(body).get("raw_path") is not None:
        echoed = json.loads(body)
        assert echoed["raw_path"] == path.split("?", 1)[0]
        assert dict(echoed["headers"])["host"] != "x"


@SETTINGS
@given(token=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=80))
def test_no_made_up_key_gets_in(gw: GatewayProcess, token: str) -> None:
    head = HEAD + f"Authorization: Bearer {token}\r\n\r\n".encode()
    [(status, _, _)], _ = exchange(gw.port, head)
    assert status == (200 if token == gw.key else 401)
