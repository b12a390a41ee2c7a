"""A recording, misbehaving upstream: a plain TCP server on loopback, in a thread of the test.

It keeps the exact bytes of every request head it receives, and of every request body it reads,
and answers by the path:

- ``/ok``: 200 with a small body, keeping the connection (a body the head declares is not read);
- ``/body``: reads the body the head declares (Content-Length or chunked), then answers 200 with
  ``<X-Request-Id>\\n<the body>``, keeping the connection;
- ``/early``: answers 200 right after the head, then reads as many body bytes as its
  Content-Length declares and goes on to the next head on the same connection, as a server does on
  a route that ignores the body;
- ``/close``: closes the connection without answering;
- ``/garbage``: a status line that is not HTTP;
- ``/huge-head``: a response header of 1 MiB;
- ``/status-999``, ``/status-600``: a response with that status code (no such status exists);
- ``/control-byte``: 200 with a header value holding the control byte 0x01;
- ``/utf8-header``: 200 with the header ``X-Utf8`` whose value is ``UTF8_VALUE``, UTF-8 bytes;
- ``/slow``: 200 ``slow`` after 0.3 s, keeping the connection;
- ``/late-extra``: 200 with a small body, then, 0.2 s later on the same connection, a second,
  unasked-for response (``forged``), recorded as an event once sent;
- ``/extra-now``: 200 carrying the request's own ``X-Request-Id`` (header and body), then at once,
  in a write of its own, a second, unasked-for response (``forged``, ``X-Request-Id: forged``);
- ``/hang``: never answers; the connection's end is recorded as an event;
- ``/interim-hang``: an interim answer (``103 Early Hints``), then nothing, as ``/hang``;
- ``/interim-drip``: a ``103 Early Hints`` every 0.2 s (at most 100), never a final answer;
- ``/stalled-body``: a head declaring 100 bytes of body, 3 of them, then nothing;
- ``/endless-header``: a header value that goes on (16 MiB at most);
- ``/trailers``: a chunked answer whose trailers (``Set-Cookie``, ``Location``) come in the same write;
- ``/early-refusal``: 413 right after the head, without reading the body, the connection kept
  open until the gateway closes it;
- ``/upgrade``: ``101 Switching Protocols``;
- ``/no-content-late``: ``204`` with ``Content-Length: 54``, and 0.3 s later, on the same
  connection, the 54 bytes: an answer (``forged``), recorded as an event once sent;
- ``/gzip-until-close``: ``Transfer-Encoding: gzip`` (no chunked), the body ending with the connection;
- ``/xchunked``: ``Transfer-Encoding: xchunked`` (not chunked), chunk-like bytes ending with the connection;
- ``/endless-trailer``: a chunked answer (``ok``) whose trailer's value goes on (16 MiB at most);
  ``trailer_cut`` is set if the connection is cut before the end;
- ``/big-head-one-read``: a response header of 100,000 bytes, head and body in one write;
- ``/big``: 200 with a 16 MiB body, sent as fast as it is taken, keeping the connection;
- ``/refuse-unread``: 400 right after the head, without reading the body, the connection kept
  (the body read and dropped) until the gateway closes it, then ``refusal_closed`` is set;
- ``/echo-id``: 200 carrying the request's own ``X-Request-Id``; ``/other-id``: 200 carrying
  ``X-Request-Id: not-yours``.

Any other path gets no answer; a query string is not matched. A head whose first line is not a
request line (a body read as a head) is recorded, and the connection closed.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field

UTF8_VALUE = "café ☕".encode()
BIG = 16 << 20

# Answers that need nothing from the request but its head, then close or keep the connection.
_CANNED: dict[bytes, bytes] = {
    b"/status-999": b"HTTP/1.1 999 Whatever\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
    b"/status-600": b"HTTP/1.1 600 Beyond\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
    b"/control-byte": b"HTTP/1.1 200 OK\r\nX-Control: a\x01b\r\nContent-Length: 2\r\n\r\nok",
    b"/utf8-header": b"HTTP/1.1 200 OK\r\nX-Utf8: " + UTF8_VALUE + b"\r\nContent-Length: 2\r\n\r\nok",
}


@dataclass
class Recording:
    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    received: threading.Condition = field(default_factory=threading.Condition)
    hang_closed: threading.Event = field(default_factory=threading.Event)
    trailer_cut: threading.Event = field(default_factory=threading.Event)
    refusal_closed: threading.Event = field(default_factory=threading.Event)
    late_extra_sent: threading.Event = field(default_factory=threading.Event)

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        with self.received:
            return self.received.wait_for(lambda: len(self.heads) >= count, timeout)


def header(head: bytes, name: bytes) -> bytes | None:
    """The value of the first header ``name`` (any case) in a raw request head, or None."""
    for line in head.split(b"\r\n")[1:]:
        field_name, _, value = line.partition(b":")
        if field_name.strip().lower() == name.lower():
            return value.strip()
    return None


class _Closed(Exception):
    """The gateway closed the connection."""


class _Reader:
    """Reads a socket by lines, heads and counts of bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise _Closed()
        self._buffer += chunk

    def until(self, mark: bytes) -> bytes:
        """Everything up to ``mark`` (which is consumed and not returned)."""
        while mark not in self._buffer:
            self._fill()
        found, _, self._buffer = self._buffer.partition(mark)
        return found

    def exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill()
        found, self._buffer = self._buffer[:count], self._buffer[count:]
        return found

    def body(self, head: bytes) -> bytes:
        """The body ``head`` declares: by its Content-Length, or chunked (trailers read and dropped)."""
        if (header(head, b"transfer-encoding") or b"").lower() == b"chunked":
            parts = []
            while size := int(self.until(b"\r\n").split(b";")[0], 16):
                parts.append(self.exactly(size))
                self.exactly(2)
            while self.until(b"\r\n"):
                pass
            return b"".join(parts)
        return self.exactly(int(header(head, b"content-length") or b"0"))


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        try:
            self._serve(self.request)
        except (_Closed, OSError):
            pass

    def _serve(self, sock: socket.socket) -> None:
        reader = _Reader(sock)
        recording = self.server.recording
        while True:
            head = reader.until(b"\r\n\r\n")
            with recording.received:
                recording.heads.append(head)
                recording.received.notify_all()
            request_line = head.split(b"\r\n", 1)[0].split(b" ")
            if len(request_line) != 3:
                return  # not a request: nothing more on this connection can be trusted
            path = request_line[1].split(b"?", 1)[0]  # the query is not matched
            if path == b"/ok":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
            elif path in (b"/body", b"/early"):
                if path == b"/early":
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nearly")
                body = reader.body(head)
                with recording.received:
                    recording.bodies.append(body)
                    recording.received.notify_all()
                if path == b"/body":
                    content = (header(head, b"x-request-id") or b"") + b"\n" + body
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(content) + content)
            elif path == b"/slow":
                time.sleep(0.3)
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
            elif path == b"/late-extra":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                # Long enough for the gateway to have put the connection back in its pool.
                time.sleep(0.2)
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
                recording.late_extra_sent.set()
            elif path == b"/extra-now":
                own = header(head, b"x-request-id") or b""
                answer = b"HTTP/1.1 200 OK\r\nX-Request-Id: %s\r\nContent-Length: %d\r\n\r\n%s"
                sock.sendall(answer % (own, len(own), own))
                sock.sendall(b"HTTP/1.1 200 OK\r\nX-Request-Id: forged\r\nContent-Length: 6\r\n\r\nforged")
            elif path in _CANNED:
                sock.sendall(_CANNED[path])
            elif path == b"/close":
                return
            elif path == b"/garbage":
                sock.sendall(b"HTTQ/9 what\r\n\r\n")
                return
            elif path == b"/huge-head":
                sock.sendall(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"a" * (1 << 20) + b"\r\nContent-Length: 0\r\n\r\n")
                return
            elif path == b"/interim-drip":
                for _ in range(100):
                    sock.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
                    time.sleep(0.2)
                return
            elif path == b"/stalled-body":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
                _wait_for_close(sock)
                return
            elif path == b"/endless-header":
                sock.sendall(b"HTTP/1.1 200 OK\r\nX-Big: ")
                _send_endlessly(sock)
                return
            elif path == b"/trailers":
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Set-Cookie\r\n\r\n"
                    b"2\r\nok\r\n0\r\nSet-Cookie: session=attacker\r\nLocation: https://evil.example/\r\n\r\n"
                )
            elif path == b"/early-refusal":
                sock.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 7\r\n\r\ntoo big")
                _wait_for_close(sock, read=False)
                return
            elif path == b"/upgrade":
                sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
                _wait_for_close(sock)
                return
            elif path == b"/no-content-late":
                forged = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Forged: 1\r\n\r\nforged"
                sock.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n" % len(forged))
                # Long enough for the gateway to have handed the connection to the next request.
                time.sleep(0.3)
                sock.sendall(forged)
                recording.late_extra_sent.set()
            elif path == b"/gzip-until-close":
                sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nnot really gzip")
                return
            elif path == b"/xchunked":
                sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
                return
            elif path == b"/endless-trailer":
                sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: ")
                try:
                    _send_endlessly(sock)
                except OSError:
                    recording.trailer_cut.set()
                return
            elif path == b"/big-head-one-read":
                sock.sendall(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\nContent-Length: 2\r\n\r\nok")
            elif path == b"/big":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG + bytes(BIG))
            elif path == b"/refuse-unread":
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 7\r\n\r\nrefused")
                _wait_for_close(sock)
                recording.refusal_closed.set()
                return
            elif path in (b"/echo-id", b"/other-id"):
                request_id = header(head, b"x-request-id") if path == b"/echo-id" else b"not-yours"
                sock.sendall(b"HTTP/1.1 200 OK\r\nX-Request-Id: %s\r\nContent-Length: 2\r\n\r\nok" % request_id)
            elif path in (b"/hang", b"/interim-hang"):
                if path == b"/interim-hang":
                    sock.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n")
                sock.settimeout(60)
                try:
                    while sock.recv(65536):
                        pass
                except OSError:
                    pass
                recording.hang_closed.set()
                return


def _send_endlessly(sock: socket.socket) -> None:
    """A header or trailer value that goes on: 16 MiB of "a" (raises OSError once the peer cuts it)."""
    for _ in range(256):
        sock.sendall(b"a" * 65536)


def _wait_for_close(sock: socket.socket, *, read: bool = True) -> None:
    """Keep the connection open until the other side closes it (60 s at most); without ``read``,
    take none of what it sends meanwhile (and hold the connection 10 s: its end cannot be seen
    behind unread bytes)."""
    if not read:
        time.sleep(10)
        return
    sock.settimeout(60)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


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
