"""A pooled upstream connection on which an answer nobody asked for has already arrived, but has not
been read yet, is never handed to the next request: each upstream client, driven in-process
against a plain socket server on loopback that writes what the test tells it to."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from gateway.config import UpstreamConfig
from gateway.upstream.auto import open_upstream_client

CLIENTS = ("builtin", "aiohttp")


class ScriptedUpstream:
    """Accepts connections and answers each request head with ``200`` and the connection's number
    as the body; the test holds every accepted socket, to write on it out of turn."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            number = len(self.accepted)
            self.accepted.append(sock)
            threading.Thread(target=self._answer, args=(sock, number), daemon=True).start()

    def _answer(self, sock: socket.socket, number: int) -> None:
        received = b""
        body = b"connection-%d" % number
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            received += data
            while b"\r\n\r\n" in received:
                _, received = received.split(b"\r\n\r\n", 1)
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    def close(self) -> None:
        self._stopped = True
        self.listener.close()
        for sock in self.accepted:
            sock.close()


@pytest.fixture
def scripted() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream()
    yield server
    server.close()


@pytest.mark.parametrize("client", CLIENTS)
async def test_bytes_waiting_unread_on_a_pooled_connection_close_it(scripted: ScriptedUpstream, client: str) -> None:
    upstream = await open_upstream_client(
        UpstreamConfig(url=f"http://127.0.0.1:{scripted.port}", client=client, max_connections=4)  # type: ignore[arg-type]
    )
    try:
        first = await upstream.request("GET", "/", [(b"Host", b"x")], None)
        assert (first.status, await first.read()) == (200, b"connection-0")
        await first.aclose()  # back in the pool

        # Nothing runs the loop from here to the next request: the forged answer is in the socket's
        # receive queue (loopback delivers within send), where only a look at the socket can see it.
        scripted.accepted[0].sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
        second = await upstream.request("GET", "/", [(b"Host", b"x")], None)
        assert (second.status, await second.read()) == (200, b"connection-1")
        await second.aclose()

        # A connection without such bytes is reused as before.
        third = await upstream.request("GET", "/", [(b"Host", b"x")], None)
        assert (third.status, await third.read()) == (200, b"connection-1")
        await third.aclose()
    finally:
        await upstream.aclose()


@pytest.mark.parametrize("client", CLIENTS)
async def test_part_of_an_answer_read_while_pooled_closes_the_connection(
    scripted: ScriptedUpstream, client: str
) -> None:
    upstream = await open_upstream_client(
        UpstreamConfig(url=f"http://127.0.0.1:{scripted.port}", client=client, max_connections=4)  # type: ignore[arg-type]
    )
    try:
        first = await upstream.request("GET", "/", [(b"Host", b"x")], None)
        assert await first.read() == b"connection-0"
        await first.aclose()

        # The start of an answer nobody asked for, which the loop reads while the connection is
        # idle (a few turns of the loop, no waiting on a clock): no whole message to show for it,
        # and nothing left in the socket. On that connection the next answer would be read after it.
        scripted.accepted[0].sendall(b"HTTP/1.1 20")
        for _ in range(5):
            await asyncio.sleep(0)
        second = await upstream.request("GET", "/", [(b"Host", b"x")], None)
        assert (second.status, await second.read()) == (200, b"connection-1")
        await second.aclose()
    finally:
        await upstream.aclose()


@pytest.mark.parametrize("client", CLIENTS)
async def test_an_answer_refused_for_its_request_id_closes_its_connection(
    scripted: ScriptedUpstream, client: str
) -> None:
    # upstream.check_request_id: the answer (whole, body and all, in one write) carries no id, so
    # the proxy abandons it. Its connection may hold a stray answer ahead of the next one's: it
    # must carry no other exchange, even where the client had pooled it as the body came in.
    upstream = await open_upstream_client(
        UpstreamConfig(
            url=f"http://127.0.0.1:{scripted.port}",
            client=client,  # type: ignore[arg-type]
            max_connections=4,
            check_request_id=True,
        )
    )
    try:
        first = await upstream.request("GET", "/", [(b"Host", b"x"), (b"X-Request-Id", b"r1")], None)
        assert first.status == 200
        await first.abandon()
        await first.aclose()  # as the proxy does after abandoning it
        second = await upstream.request("GET", "/", [(b"Host", b"x"), (b"X-Request-Id", b"r2")], None)
        assert (second.status, await second.read()) == (200, b"connection-1")
        await second.aclose()
    finally:
        await upstream.aclose()
