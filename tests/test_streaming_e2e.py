"""Bodies far larger than memory pass through the gateway both ways, intact: a request body is
buffered whole (in a temporary file past limits.body_buffer_bytes), a response body streams."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.servers import GatewayProcess, peak_rss_bytes

SIZE = 128 * 1024 * 1024 + 7  # not a multiple of any chunk size
# The gateway's peak memory after moving SIZE bytes each way stays far below SIZE itself.
MEMORY_HEADROOM = 48 * 1024 * 1024
_PERIOD = bytes(range(251))


def pattern_chunks(size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The stub's byte pattern (byte i is i % 251), generated chunk by chunk."""
    block = _PERIOD * (chunk // 251 + 2)
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        offset = sent % 251
        yield block[offset : offset + n]
        sent += n


def pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for chunk in pattern_chunks(size):
        digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def big_gateway(gateway_factory: GatewayFactory) -> GatewayProcess:
    return gateway_factory({"limits": {"max_body_bytes": "1GiB"}})


@pytest.fixture(scope="module")
def expected_sha256() -> str:
    return pattern_sha256(SIZE)


@pytest.fixture(scope="module")
def baseline_rss(big_gateway: GatewayProcess) -> int:
    # Warm the gateway up (imports, pools) before its baseline is taken.
    httpx.get(big_gateway.url + "/__stub/bytes/1000", headers=big_gateway.auth).raise_for_status()
    return peak_rss_bytes(big_gateway.pid)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_large_download_streams_intact(big_gateway: GatewayProcess, expected_sha256: str, baseline_rss: int, chunked):
    digest = hashlib.sha256()
    length = 0
    params = {"chunked": 1} if chunked else {}
    url = f"{big_gateway.url}/__stub/bytes/{SIZE}"
    with httpx.stream("GET", url, params=params, headers=big_gateway.auth, timeout=120) as response:
        assert response.status_code == 200
        assert ("content-length" in response.headers) is not chunked
        for chunk in response.iter_raw():
            digest.update(chunk)
            length += len(chunk)
    assert length == SIZE
    assert digest.hexdigest() == expected_sha256
    assert peak_rss_bytes(big_gateway.pid) < baseline_rss + MEMORY_HEADROOM


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_large_upload_arrives_intact(
    big_gateway: GatewayProcess, expected_sha256: str, baseline_rss: int, declare_length: bool
):
    headers = big_gateway.auth | ({"content-length": str(SIZE)} if declare_length else {})
    response = httpx.post(big_gateway.url + "/__stub/echo", content=pattern_chunks(SIZE), headers=headers, timeout=120)
    assert response.status_code == 200
    seen = response.json()
    assert seen["body_length"] == SIZE
    assert seen["body_sha256"] == expected_sha256
    sent_framing = dict(seen["headers"])
    # Read whole before it was sent, the body reaches the upstream with its length, however the
    # client framed it.
    assert sent_framing["content-length"] == str(SIZE)
    assert "transfer-encoding" not in sent_framing
    assert peak_rss_bytes(big_gateway.pid) < baseline_rss + MEMORY_HEADROOM
