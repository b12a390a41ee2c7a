"""A raw-socket HTTP/1.1 client for requests no library would send, and a check of what the
upstream stub received."""

from __future__ import annotations

import json
import socket
import urllib.request

import h11

from tests.servers import ServerProcess

Answer = tuple[int, dict[bytes, bytes], bytes]


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


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
                conn.receive_data(sock.recv(65536))
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


def exchange(port: int, data: bytes, count: int = 1) -> tuple[list[Answer], bool]:
    """Send ``data`` at once; up to ``count`` responses, and whether the connection was then closed."""
    with connect(port) as sock:
        sock.sendall(data)
        answers = read_responses(sock, count)
        return answers, is_closed(sock, timeout=3)


def received_paths(stub: ServerProcess) -> list[str]:
    """The raw paths of the requests the stub's echo received completely."""
    with urllib.request.urlopen(stub.url + "/__stub/received", timeout=10) as answer:
        return [r["raw_path"] for r in json.load(answer)["requests"]]
