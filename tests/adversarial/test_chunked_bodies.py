"""Chunked request bodies: what follows the last chunk (trailers) is dropped, never read as headers;
a body in small chunks reaches the upstream whole, with its length; one in chunks so tiny that
each byte would cost a parser call is refused."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.conftest import GatewayFactory
from tests.rawhttp import connect, exchange, read_response
from tests.servers import GatewayProcess, ServerProcess, received_ids

# Every test here runs with each upstream client: the default and aiohttp.
UPSTREAM_CLIENTS = ("builtin", "aiohttp")


@pytest.fixture(scope="module")
def gw(gateway_factory: GatewayFactory) -> GatewayProcess:
    return gateway_factory()  # in front of the stub, whose echo shows what it received


def test_a_key_in_a_trailer_authenticates_nothing(gw: GatewayProcess, stub: ServerProcess) -> None:
    # Head, chunks and trailer in one piece: they arrive in one read, before the request is handled.
    data = (
        b"POST /__stub/echo HTTP/1.1\r\nHost: x\r\nX-Request-Id: trailer-key\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n" + gw.auth_line + b"\r\n"
    )
    status, _, body = exchange(gw.port, data)
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_credentials"
    assert "trailer-key" not in received_ids(stub)


def test_trailers_change_nothing_the_upstream_sees(gw: GatewayProcess, stub: ServerProcess) -> None:
    data = (
        b"POST /__stub/echo HTTP/1.1\r\nHost: api.example\r\n" + gw.auth_line + b"Transfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nHost: evil.example\r\nX-Trailer-Field: x\r\n\r\n"
    )
    status, _, body = exchange(gw.port, data)
    assert status == 200
    echoed = json.loads(body)
    received = echoed["headers"]
    assert [value for name, value in received if name == "host"] == [stub.url.removeprefix("http://")]
    assert [value for name, value in received if name == "x-forwarded-host"] == ["api.example"]
    assert "evil.example" not in body.decode()
    assert [name for name, _ in received if name == "x-trailer-field"] == []
    assert echoed["body_length"] == 5 and echoed["body_sha256"] == hashlib.sha256(b"hello").hexdigest()


def _upload_in_chunks(gw: GatewayProcess, body: bytes, size: int, request_id: str) -> tuple[int, bytes]:
    """POST ``body`` to the echo in chunks of ``size`` bytes, sent in a few large writes."""
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    chunks = b"".join(b"%x\r\n" % len(piece) + piece + b"\r\n" for piece in pieces) + b"0\r\n\r\n"
    with connect(gw.port, timeout=30) as sock:
        sock.sendall(
            b"POST /__stub/echo HTTP/1.1\r\nHost: x\r\n"
            + gw.auth_line
            + f"X-Request-Id: {request_id}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        step = len(chunks) // 4 + 1
        try:
            for start in range(0, len(chunks), step):
                sock.sendall(chunks[start : start + step])
        except OSError:
            pass  # refused and closed midway: the answer is still there to read
        status, _, answer = read_response(sock)
    return status, answer


def test_a_body_in_small_chunks_arrives_whole_with_its_length(gw: GatewayProcess) -> None:
    body = bytes(range(256)) * 256  # 64 KiB, in 4,096 chunks of 16 bytes
    status, answer = _upload_in_chunks(gw, body, 16, "small-chunks")
    assert status == 200
    echoed = json.loads(answer)
    assert echoed["body_length"] == len(body)
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()
    received = dict(echoed["headers"])
    assert received.get("content-length") == str(len(body))
    assert "transfer-encoding" not in received


def test_a_body_in_one_byte_chunks_is_refused(gw: GatewayProcess, stub: ServerProcess) -> None:
    # Past the first CHUNK_GRACE chunks, chunks must average MIN_CHUNK_AVERAGE bytes: a call per
    # byte would cost the event loop, and every other client, far more than the bytes are worth.
    status, answer = _upload_in_chunks(gw, bytes(64 * 1024), 1, "one-byte-chunks")
    assert status == 400 and json.loads(answer)["error"]["code"] == "bad_request"
    assert gw.access_entry("one-byte-chunks")["status"] == 400
    assert "one-byte-chunks" not in received_ids(stub)
