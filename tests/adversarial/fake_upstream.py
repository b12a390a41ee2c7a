"""A recording, misbehaving upstream: a plain TCP server on loopback, in a thread of the test.

It keeps the exact bytes of every request head it receives and answers by the path:

- ``/ok``: 200 with a small body, keeping the connection;
- ``/close``: closes the connection without answering;
- ``/garbage``: a status line that is not HTTP;
- ``/huge-head``: a response header of 1 MiB;
- ``/hang``: never answers; the connection's end is recorded as an event.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from dataclasses import dataclass, field


@dataclass
class Recording:
    heads: list[bytes] = field(default_factory=list)
    received: threading.Condition = field(default_factory=threading.Condition)
    hang_closed: threading.Event = field(default_factory=threading.Event)

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        with self.received:
            return self.received.wait_for(lambda: len(self.heads) >= count, timeout)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            recording = self.server.recording
            with recording.received:
                recording.heads.append(head)
                recording.received.notify_all()
            path = head.split(b" ", 2)[1]
            if path == b"/ok":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
            elif path == b"/close":
                return
            elif path == b"/garbage":
                sock.sendall(b"HTTQ/9 what\r\n\r\n")
                return
            elif path == b"/huge-head":
                sock.sendall(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"a" * (1 << 20) + b"\r\nContent-Length: 0\r\n\r\n")
                return
            elif path == b"/hang":
                sock.settimeout(60)
                try:
                    while sock.recv(65536):
                        pass
                except OSError:
                    pass
                recording.hang_closed.set()
                return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    recording: Recording


class FakeUpstream:
    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.recording = self.recording = Recording()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
