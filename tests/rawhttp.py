"""HTTP/1.1 over a plain socket, for requests a client library would not send as written."""

from __future__ import annotations

import socket
from collections.abc import Sequence

import h11

Answer = tuple[int, dict[bytes, bytes], bytes]


def exchange(port: int, head: bytes, body_parts: Sequence[bytes] = (), *, timeout: float = 10.0) -> Answer:
    """Send ``head`` then ``body_parts`` to 127.0.0.1:``port``; the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
        return read_response(sock)


def read_response(sock: socket.socket) -> Answer:
    conn = h11.Connection(h11.CLIENT)
    # h11 needs to have "sent" a request to parse a response; the bytes went out on the socket.
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    status = 0
    headers: dict[bytes, bytes] = {}
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = dict(event.headers)
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return status, headers, body
