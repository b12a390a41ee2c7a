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
    """The next response on ``sock``; status 0 if the server closes first."""
    answers = read_responses(sock)
    return answers[0] if answers else (0, {}, b"")


def read_responses(sock: socket.socket, count: int = 1) -> list[Answer]:
    """The next ``count`` responses on ``sock`` (fewer if the server closes first)."""
    conn = h11.Connection(h11.CLIENT)
    answers: list[Answer] = []
    for _ in range(count):
        # h11 parses a response only after "sending" a request; the real bytes went out already.
        conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        status, headers, body = 0, {}, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                if not data and status == 0:
                    return answers  # closed before (another) answer began
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, dict(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                return answers
        answers.append((status, headers, body))
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            break
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            break
    return answers


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def is_closed(sock: socket.socket, timeout: float = 10.0) -> bool:
    """Whether the server closes the connection (within ``timeout``), reading past any bytes left."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def exchange_all(port: int, data: bytes, count: int = 1) -> tuple[list[Answer], bool]:
    """Send ``data`` at once; up to ``count`` responses, and whether the connection was then closed."""
    with connect(port) as sock:
        sock.sendall(data)
        answers = read_responses(sock, count)
        return answers, is_closed(sock, timeout=3)
